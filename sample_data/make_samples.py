"""Simulate the sample files that ship with napari-qpi (``make samples``).

Writes, into ``src/napari_qpi/sample_data/`` by default:

- ``cells_hologram.ome.tif``: a 512 x 512 off-axis hologram (12-bit counts in uint16) of a field of
  cells (round, red blood cells, adherent), 532 nm, 0.2 um pixels, carrier period 4.5 px at 35
  degrees, tilt + defocus + astigmatism, shot and read noise;
- ``cells_background.ome.tif``: the same system with no cells (for reference-field division);
- ``cells_phase_truth.ome.tif``: the true phase of the cells in radians (float32);
- ``cells_cdp.npz``: four coded diffraction patterns (oversampling 2) of a 128 x 128 crop of the
  same cells through random phase masks, with the masks, at 1000 photons per pixel.

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
    random_phase_masks,
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
    crop = (slice(192, 320), slice(192, 320))
    obj = phantom.amplitude[crop] * np.exp(1j * phantom.phase[crop])
    masks = random_phase_masks(4, obj.shape, seed=rng)
    patterns = add_poisson_noise(
        coded_diffraction_patterns(obj, masks, oversampling=2), photons_per_pixel=1000.0, seed=rng
    )
    stack = CDPStack(
        patterns=patterns,
        masks=masks,
        oversampling=2,
        truth=obj.astype(np.complex64),
        acquisition=acquisition.replace(modality="cdp", carrier_cycles_per_px=None),
    )
    written.append(write_cdp_stack(out / "cells_cdp.npz", stack, overwrite=True))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/napari_qpi/sample_data"))
    args = parser.parse_args()
    for path in make_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
