"""Per-cell dry mass: napari-qpi against DryMass on the real HL60 phase images.

    python benchmarks/drymass_compare.py --drymass-path /tmp/drymass   # compare, write the docs
    python benchmarks/drymass_compare.py --no-write                    # print only

DryMass (Müller et al., SoftwareX 2018; PyPI ``drymass``) is the QPI field's own tool for the dry
mass of spherical cells. It cannot go in the ``bench`` extra: drymass 0.12 pins
``tifffile==2020.5.25`` and napari-qpi needs ``tifffile>=2023.7``, so pip cannot install both in
one environment. Install it, without its dependencies, into a folder of its own; it runs with the
qpimage, scikit-image and lmfit napari-qpi's environment already has:

    pip install --no-deps --target /tmp/drymass drymass==0.12.0 qpsphere==0.5.9 \\
        qpformat==0.14.5 appdirs "setuptools<81"

Both tools read the *same* phase image and use the same refractive increment (alpha = 0.18
mL/g), wavelength (532 nm) and pixel size (0.08475 um) of the corpus:

* **DryMass**: ``qpsphere.analyze`` (edge detection, projection model: DryMass's default sphere
  analysis) gives the cell's radius and centre; ``drymass.anasphere.relative_dry_mass`` sums the
  phase in a disc of 1.2 radii (DryMass's default inclusion factor), taking the background as
  0 rad.
* **napari-qpi**: ``segment_cells`` then ``measure_cells``: the phase summed over the outline grown
  by 2 px, above a plane fitted to a ring around the cell (``background_phase_rad``); also without
  the local background (``local_background=False``), which takes the background as 0 rad like
  DryMass, to separate the outline from the background.

The phase images: the peers' reference phase of each corpus case (``references.npz``: qpretrieve
+ scikit-image unwrapping + qpimage background fit) and napari-qpi's own retrieval of the same
hologram (``retrieve_offaxis``, defaults).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from _docs import DOCS, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.18
INCLUSION = 1.2


def _import_drymass(path: str | None):
    for folder in (path, os.environ.get("NAPARI_QPI_DRYMASS_PATH")):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        import drymass
        import qpsphere
        from drymass.anasphere import relative_dry_mass
    except ImportError as error:
        raise SystemExit(
            f"DryMass is not importable ({error}). Install it into a folder of its own (see this "
            "script's docstring) and pass --drymass-path FOLDER."
        ) from None
    return drymass, qpsphere, relative_dry_mass


def measure_both(phase: np.ndarray, wavelength_nm: float, pixel_um: float, dm) -> list[dict]:
    """One row per cell: our dry mass (local background, and none) and DryMass's, in pg."""
    import qpimage

    from napari_qpi.morphology import measure_cells, segment_cells

    _, qpsphere, relative_dry_mass = dm
    labels = segment_cells(phase, pixel_size_um=pixel_um)
    args = {"pixel_size_um": pixel_um, "wavelength_nm": wavelength_nm, "alpha_um3_per_pg": ALPHA}
    ours = measure_cells(phase, labels, **args)
    plain = measure_cells(phase, labels, local_background=False, **args)
    meta = {
        "wavelength": wavelength_nm * 1e-9,
        "pixel size": pixel_um * 1e-6,
        "medium index": 1.335,
    }
    qpi = qpimage.QPImage(data=phase, which_data="phase", meta_data=meta)
    rows = []
    for k in range(len(ours)):
        r0 = ours["equivalent_diameter_um"][k] / 2 * 1e-6
        _, radius, centre = qpsphere.analyze(
            qpi, r0=r0, method="edge", model="projection", ret_center=True
        )[:3]
        theirs = relative_dry_mass(qpi, radius, centre, alpha=ALPHA, rad_fact=INCLUSION) * 1e12
        rows.append(
            {
                "ours": float(ours["dry_mass_pg"][k]),
                "ours_zero_bg": float(plain["dry_mass_pg"][k]),
                "background": float(ours["background_phase_rad"][k]),
                "drymass": float(theirs),
                "radius_um": float(radius * 1e6),
            }
        )
    return rows


def run(drymass_path: str | None) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_holograms as rh

    dm = _import_drymass(drymass_path)
    cases, manifest = rh.load_corpus()
    references = rh.load_references()
    wavelength, pixel = manifest["wavelength_nm"], manifest["pixel_size_um"]
    lines, errors = [], []
    seen: set[str] = set()
    for case in cases:
        hologram, background = rh.raw_planes(case)
        phases = [("napari-qpi", rh.our_phase(hologram, background))]
        if case.reference not in seen:  # the HDF5 cases share one reference phase
            phases.insert(0, ("peers'", references[case.reference]))
            seen.add(case.reference)
        for source, phase in phases:
            for row in measure_both(np.asarray(phase, np.float64), wavelength, pixel, dm):
                diff = 100 * (row["ours"] / row["drymass"] - 1)
                diff0 = 100 * (row["ours_zero_bg"] / row["drymass"] - 1)
                errors.append((source, diff, diff0))
                lines.append(
                    f"| {case.name} | {source} | {row['drymass']:.1f} | {row['ours']:.1f} | "
                    f"{diff:+.1f}% | {row['background']:+.3f} | {row['ours_zero_bg']:.1f} | "
                    f"{diff0:+.1f}% |"
                )
                print(lines[-1], flush=True)
    import drymass
    import qpimage

    summary = []
    for source in ("peers'", "napari-qpi"):
        d = np.array([abs(e[1]) for e in errors if e[0] == source])
        d0 = np.array([abs(e[2]) for e in errors if e[0] == source])
        summary.append(
            f"On the {source} phase: {int((d <= 2).sum())} of {d.size} cells within 2% of DryMass "
            f"(median |difference| {np.median(d):.1f}%); with the background taken as 0 rad like "
            f"DryMass, {int((d0 <= 2).sum())} of {d0.size} (median {np.median(d0):.1f}%)."
        )
    today = datetime.date.today().isoformat()
    return "\n".join(
        [
            "## Dry mass: napari-qpi against DryMass (`benchmarks/drymass_compare.py`)",
            "",
            f"Run {today} on {machine()}; drymass {drymass.__version__}, qpimage "
            f"{qpimage.__version__}. Command: `python benchmarks/drymass_compare.py "
            "--drymass-path FOLDER` (DryMass installed as the script's docstring says: it cannot "
            "share napari-qpi's environment through pip).",
            "",
            "Per-cell dry mass (pg) of the HL60 cells of the real-hologram corpus, from the same "
            f"phase image, alpha = {ALPHA} mL/g, 532 nm, 0.08475 um pixels. **DryMass**: sphere "
            "radius and centre from `qpsphere.analyze` (edge, projection model), phase summed in "
            f"a disc of {INCLUSION} radii, background taken as 0 rad. **napari-qpi**: "
            "`segment_cells` + `measure_cells`, phase summed over the outline grown by 2 px above "
            "the cell's local background (a plane fitted to a ring around it); the last two "
            "columns take the background as 0 rad like DryMass (`napari-qpi measure "
            "--cell-background zero`, *cell background: 0 rad* in the dock). Phase: the peers' "
            "reference "
            "(qpretrieve + qpimage background fit) and napari-qpi's own retrieval.",
            "",
            "| hologram | phase | DryMass (pg) | napari-qpi (pg) | difference | local "
            "background (rad) | napari-qpi, background 0 (pg) | difference |",
            "|---|---|---|---|---|---|---|---|",
            *lines,
            "",
            *summary,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drymass-path", help="folder DryMass was installed into (--target)")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the table into docs/benchmarks.md (default: yes)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    section = run(args.drymass_path)
    print()
    print(section)
    if args.write:
        write_section("drymass_compare", section)
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
