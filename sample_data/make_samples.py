"""Simulate the sample files that ship with napari-qpi (``make samples``).

Writes, into ``src/napari_qpi/sample_data/`` by default:

- ``cells_hologram.ome.tif``: a 512 x 512 off-axis hologram (12-bit counts in uint16) of a field of
  cells (round, red blood cells, adherent), 532 nm, 0.2 um pixels, carrier period 4.5 px at 35
  degrees, tilt + defocus + astigmatism, shot and read noise;
- ``cells_background.ome.tif``: the same system with no cells (for reference-field division);
- ``cells_phase_truth.ome.tif``: the true phase of the cells in radians (float32);
- ``cells_cdp.npz``: coded diffraction patterns (oversampling 2) of a 64 x 64 field of cells
  (0.6 um pixels, phase only) through the K masks of the shipped teacher ``cdp-teacher``, with
  the masks, at 100 photons per pattern pixel (the noise the CDP models were trained at);
- ``cells_cdp_single.npz``: one pattern of the same field through the mask of the shipped
  single-snapshot student ``cdp-student``.

The CDP stacks need the shipped CDP models (their masks are the optics the networks expect).

Everything is seeded: running it again writes identical data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_qpi.io import CDPStack, write_cdp_stack, write_image, write_phase
from napari_qpi.physics import (
    OffAxisSystem,
    add_poisson_noise,
    coded_diffraction_patterns,
    random_cells,
    simulate_background,
    simulate_hologram,
)

SEED = 20261122
SYSTEM = OffAxisSystem(
    wavelength_nm=532.0,
    pixel_size_um=0.2,
    carrier_period_px=4.5,
    carrier_angle_deg=35.0,
    aberrations_rad={"tilt_x": 3.0, "tilt_y": -2.0, "defocus": 4.0, "astig_0": 1.5},
)


def make_samples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    phantom = random_cells(
        (512, 512),
        pixel_size_um=SYSTEM.pixel_size_um,
        wavelength_nm=SYSTEM.wavelength_nm,
        n_cells=7,
        seed=rng,
    )
    hologram = simulate_hologram(phantom.phase, phantom.amplitude, SYSTEM, seed=rng)
    background = simulate_background(phantom.phase.shape, SYSTEM, seed=rng)
    acquisition = SYSTEM.acquisition()
    written = [
        write_image(
            out / "cells_hologram.ome.tif", hologram, acquisition=acquisition, overwrite=True
        ),
        write_image(
            out / "cells_background.ome.tif", background, acquisition=acquisition, overwrite=True
        ),
        write_phase(
            out / "cells_phase_truth.ome.tif",
            phantom.phase,
            acquisition=acquisition.replace(modality="phase", carrier_cycles_per_px=None),
            method={"name": "ground truth", "source": "sample_data/make_samples.py", "seed": SEED},
            overwrite=True,
        ),
    ]
    written += make_cdp_samples(out, acquisition, rng)
    return written


def make_cdp_samples(
    out: Path, acquisition, rng: np.random.Generator, photons_per_pixel: float = 100.0
) -> list[Path]:
    """CDP stacks of one cell field through the shipped teacher's and student's masks."""
    from napari_qpi.models import load_model

    teacher, _ = load_model("cdp-teacher", device="cpu")
    student, _ = load_model("cdp-student", device="cpu")
    shape = tuple(teacher.config.shape)
    pixel_size_um = 0.6
    cells = random_cells(
        shape,
        pixel_size_um=pixel_size_um,
        wavelength_nm=SYSTEM.wavelength_nm,
        n_cells=3,
        peak_phase_rad=(1.0, 2.5),
        absorption=0.0,
        margin_px=-2.0,
        seed=rng,
    )
    obj = (cells.amplitude * np.exp(1j * cells.phase)).astype(np.complex64)
    record = acquisition.replace(
        modality="cdp", carrier_cycles_per_px=None, pixel_size_um=pixel_size_um
    )
    written = []
    for name, model in (("cells_cdp.npz", teacher), ("cells_cdp_single.npz", student)):
        masks = model.masks.export()
        oversampling = model.config.oversampling
        patterns = add_poisson_noise(
            coded_diffraction_patterns(obj, masks, oversampling=oversampling),
            photons_per_pixel=photons_per_pixel,
            seed=rng,
        )
        stack = CDPStack(
            patterns=patterns,
            masks=masks,
            oversampling=oversampling,
            truth=obj,
            acquisition=record,
            extra={"photons_per_pixel": photons_per_pixel},
        )
        written.append(write_cdp_stack(out / name, stack, overwrite=True))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/napari_qpi/sample_data"))
    args = parser.parse_args()
    for path in make_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
