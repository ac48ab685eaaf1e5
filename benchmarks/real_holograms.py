"""Real holograms: napari-qpi against the peers' own pipeline on the HL60 corpus in tests/data.

    python benchmarks/real_holograms.py            # compare and write docs/benchmarks.md
    python benchmarks/real_holograms.py --store    # also (re)compute tests/data/.../references.npz
    python benchmarks/real_holograms.py --no-write # print only

The corpus (``tests/data/real_holograms/corpus.json``) holds the real off-axis holograms of HL60
cells that qpretrieve 0.7.0, qpimage 0.9.3 and qpformat 0.14.5 publish in their source
distributions. For each plane:

* **peer**: ``qpretrieve.OffAxisHologram`` with the smooth disk filter of 1/2 the carrier distance
  (qpimage's example settings), minus the background hologram's phase where the case has one,
  ``skimage.restoration.unwrap_phase``, then ``qpimage.bg_estimate.estimate`` with an offset and a
  tilt (or, for the curved-background JPEG, a second-order polynomial) fitted on a border frame of
  5 (10) pixels, as in qpimage's examples. qpimage's ``QPImage`` itself cannot run with qpretrieve
  0.7 (it broadcasts a 2-D tilt over qpretrieve's 3-D output), so its steps are called one by one.
* **ours**: ``retrieve_offaxis`` with default settings (automatic sideband, sign and background),
  with the background hologram where the case has one.

Agreement is measured inside the cell (:func:`cell_mask` of the peer's phase): correlation,
contrast (least-squares slope of ours against the peer's), pixels more than pi apart (2 pi off),
and the background's RMS outside the cell after removing its median. Times: median of repeats of
each whole pipeline, array in memory to phase out. ``--store`` writes the peer's phase, in 1/255
steps of its range, for the tests (``tests/test_real_holograms.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from _docs import DOCS, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = ROOT / "tests" / "data" / "real_holograms"
REFERENCES = CORPUS_DIR / "references.npz"


@dataclass(frozen=True)
class Case:
    """One plane of the corpus, as ``corpus.json`` describes it."""

    name: str
    file: str
    frame: int | None
    background: str
    peer_profile: str
    peer_border_px: int
    reference: str


def store_references(phases: dict[str, np.ndarray], path: Path = REFERENCES) -> None:
    """Write reference phases small: uint8 steps of (max - min) / 255 rad, compressed."""
    arrays = {}
    for key, phase in phases.items():
        offset = float(phase.min())
        step = max(float(phase.max()) - offset, 1e-6) / 255
        arrays[key] = np.round((phase - offset) / step).astype(np.uint8)
        arrays[f"{key}.offset"] = np.float32(offset)
        arrays[f"{key}.step"] = np.float32(step)
    np.savez_compressed(path, **arrays)


def load_references(path: Path = REFERENCES) -> dict[str, np.ndarray]:
    """The reference phases of :func:`store_references`, float32 radians."""
    with np.load(path) as stored:
        return {
            key: stored[key] * stored[f"{key}.step"] + stored[f"{key}.offset"]
            for key in stored.files
            if "." not in key
        }


def load_corpus() -> tuple[list[Case], dict]:
    """The cases of the corpus and the manifest they come from."""
    manifest = json.loads((CORPUS_DIR / "corpus.json").read_text())
    return [Case(**case) for case in manifest["cases"]], manifest


def raw_planes(case: Case) -> tuple[np.ndarray, np.ndarray | None]:
    """The hologram and background hologram of ``case``, read with the formats' own libraries."""
    path = CORPUS_DIR / case.file
    background = None
    if path.suffix == ".npz":
        with np.load(path) as data:
            hologram = data["data"]
            if case.background == "bg_data":
                background = data["bg_data"]
    elif path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as h5:
            hologram = h5[str(case.frame or 0)][()]
    elif path.suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            hologram = tif.pages[0].asarray()
    else:
        import imageio.v3 as iio

        hologram = iio.imread(path)
    return np.asarray(hologram), background


def peer_phase(hologram: np.ndarray, background: np.ndarray | None, case: Case) -> np.ndarray:
    """The peers' pipeline (module docstring), float32 radians."""
    import qpretrieve
    from qpimage import bg_estimate
    from skimage.restoration import unwrap_phase

    holo = qpretrieve.OffAxisHologram(hologram)
    holo.run_pipeline(filter_name="smooth disk", filter_size=1 / 2)
    wrapped = np.squeeze(holo.phase)
    if background is not None:
        bg = qpretrieve.OffAxisHologram(background)
        bg.process_like(holo)
        wrapped = wrapped - np.squeeze(bg.phase)
    unwrapped = unwrap_phase(wrapped)
    fit = bg_estimate.estimate(
        unwrapped, fit_offset="fit", fit_profile=case.peer_profile, border_px=case.peer_border_px
    )
    return np.asarray(unwrapped - fit, dtype=np.float32)


def our_phase(hologram: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """napari-qpi's default classical pipeline, float32 radians."""
    from napari_qpi.retrieval import retrieve_offaxis

    return retrieve_offaxis(hologram, reference=background).phase


def cell_mask(reference: np.ndarray) -> np.ndarray:
    """The cell: the largest region above a quarter of the reference's 99th percentile, holes
    filled, eroded by 2 pixels (so the comparison does not hinge on edge resolution)."""
    above = reference > 0.25 * np.percentile(reference, 99)
    labels, n = ndimage.label(above)
    if n == 0:
        return above
    sizes = ndimage.sum_labels(above, labels, index=np.arange(1, n + 1))
    cell = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    return ndimage.binary_erosion(cell, iterations=2)


def agreement(phase: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How ``phase`` agrees with ``reference`` (both radians, same grid), inside and outside the
    cell of :func:`cell_mask`."""
    phase = np.asarray(phase, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if phase.shape != reference.shape:
        raise ValueError(f"shapes differ: {phase.shape} vs {reference.shape}")
    cell = cell_mask(reference)
    x, y = reference[cell], phase[cell]
    slope = float(np.polyfit(x, y, 1)[0])
    outside = ~ndimage.binary_dilation(cell, iterations=8)
    background = phase[outside]
    return {
        "correlation": float(np.corrcoef(x, y)[0, 1]),
        "slope": slope,
        "mean_in_cell_rad": float(y.mean()),
        "off_2pi_fraction": float(np.mean(np.abs(y - x) > np.pi)),
        "background_rms_rad": float(np.sqrt(np.mean((background - np.median(background)) ** 2))),
        "cell_fraction": float(cell.mean()),
    }


def _median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def run(store: bool, repeats: int) -> str:
    import qpimage
    import qpretrieve
    import skimage

    cases, manifest = load_corpus()
    references = {} if store else load_references()
    rows = []
    for case in cases:
        hologram, background = raw_planes(case)
        peer = peer_phase(hologram, background, case)
        if store:
            references.setdefault(case.reference, peer)
        ours = our_phase(hologram, background)
        reference = references[case.reference]
        ours_stats = agreement(ours, reference)
        peer_stats = agreement(peer, reference)
        t_ours = _median_ms(lambda h=hologram, b=background: our_phase(h, b), repeats)
        t_peer = _median_ms(lambda h=hologram, b=background, c=case: peer_phase(h, b, c), repeats)
        shape = "x".join(map(str, hologram.shape))
        rows.append(
            f"| {case.name} | {shape} | {ours_stats['correlation']:.3f} | "
            f"{ours_stats['slope']:.2f} | {'+' if ours_stats['mean_in_cell_rad'] > 0 else '-'} | "
            f"{100 * ours_stats['off_2pi_fraction']:.2f}% | "
            f"{ours_stats['background_rms_rad']:.2f} / {peer_stats['background_rms_rad']:.2f} | "
            f"{t_ours:.1f} | {t_peer:.1f} | {t_peer / t_ours:.0f}x |"
        )
        print(rows[-1], flush=True)
    if store:
        store_references(references)
        print(f"stored {REFERENCES.relative_to(ROOT)} ({REFERENCES.stat().st_size // 1024} KiB)")
    today = datetime.date.today().isoformat()
    return "\n".join(
        [
            "## Real holograms: the HL60 corpus (`benchmarks/real_holograms.py`)",
            "",
            f"Run {today} on {machine()}; qpretrieve {qpretrieve.__version__}, qpimage "
            f"{qpimage.__version__}, scikit-image {skimage.__version__}.",
            "",
            "Real off-axis holograms of HL60 cells published in the peers' source distributions "
            "(`tests/data/real_holograms/`, origin and licence in its README). **Reference**: the "
            "peers' pipeline (qpretrieve smooth disk of 1/2 the carrier distance, the background "
            "hologram's phase subtracted where there is one, scikit-image unwrapping, qpimage's "
            "offset + tilt fit on a 5-pixel border frame; offset + second-order polynomial on a "
            "10-pixel frame for the JPEG). **Ours**: `retrieve_offaxis` at default settings "
            "(automatic sideband, sign and background), with the background hologram where the "
            "case has one. Inside the cell: Pearson correlation with the reference, contrast = "
            "least-squares slope of ours against the reference, sign of our mean phase, pixels "
            "more than pi from the reference. Background: RMS outside the cell after removing its "
            "median (ours / peer). Times: median of "
            f"{repeats} runs of each whole pipeline, array in memory to phase out.",
            "",
            "| hologram | pixels | correlation in cell | contrast (slope) | sign | 2 pi off | "
            "background RMS (rad), ours / peer | ours (ms) | peer (ms) | speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"{manifest['acquisition_note']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="store_true", help="recompute and store the peers' reference phases"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per pipeline")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the table into docs/benchmarks.md (default: yes)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Interface .* unavailable")
    section = run(args.store, args.repeats)
    print()
    print(section)
    if args.write:
        write_section("real_holograms", section)
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
