"""Holograms recorded out of focus: the sample's field carried to another plane before recording.

The camera is focused ``defocus_um`` upstream of the sample (towards the illumination). The field
it records is the sample's field ``A exp(i phi)`` propagated by ``-defocus_um`` with the
angular-spectrum method of :mod:`napari_qpi.retrieval.propagation` (plain numpy/scipy), so that
refocusing by ``refocus_um = defocus_um`` (positive downstream) brings the cells back into focus.
The propagation is periodic over the field (no padding), as the refocus is.
"""

from __future__ import annotations

import numpy as np

from ..retrieval.propagation import propagate
from .hologram import OffAxisSystem, SeedLike, simulate_hologram
from .phantoms import Phantom


def defocused_field(
    phantom: Phantom, defocus_um: float, *, medium_index: float | None = None
) -> np.ndarray:
    """The field (complex64) in the plane ``defocus_um`` upstream of the phantom's cells."""
    field = phantom.amplitude * np.exp(1j * phantom.phase.astype(np.float64))
    return propagate(
        field,
        -float(defocus_um),
        wavelength_nm=phantom.wavelength_nm,
        pixel_size_um=phantom.pixel_size_um,
        medium_index=medium_index or 1.0,
    )


def simulate_defocused_hologram(
    phantom: Phantom,
    defocus_um: float,
    system: OffAxisSystem | None = None,
    *,
    seed: SeedLike = None,
    noise: bool = True,
) -> np.ndarray:
    """Hologram (uint16 counts, or float64 with ``noise=False``) of ``phantom`` out of focus.

    ``system`` must use the phantom's wavelength and pixel size; its ``medium_index`` is the
    index the light travels through between the two planes.
    """
    system = system or OffAxisSystem(
        wavelength_nm=phantom.wavelength_nm, pixel_size_um=phantom.pixel_size_um
    )
    field = defocused_field(phantom, defocus_um, medium_index=system.medium_index)
    return simulate_hologram(np.angle(field), np.abs(field), system, seed=seed, noise=noise)


__all__ = ["defocused_field", "simulate_defocused_hologram"]
