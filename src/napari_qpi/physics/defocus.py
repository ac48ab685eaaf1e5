"""Holograms recorded out of focus: the sample's field carried to another plane before recording.

The camera is focused ``defocus_um`` upstream of the sample (towards the illumination). The field
it records is the sample's field ``A exp(i phi)`` propagated by ``-defocus_um`` with the
angular-spectrum method of :mod:`napari_qpi.retrieval.propagation` (plain numpy/scipy), so that
refocusing by ``refocus_um = defocus_um`` (positive downstream) brings the cells back into focus.
The sample sits in an empty medium twice the field's size, so the field is not periodic.
"""

from __future__ import annotations

import numpy as np

from ..retrieval.propagation import propagate
from .hologram import OffAxisSystem, SeedLike, simulate_hologram
from .phantoms import Phantom


def defocused_field(
    phantom: Phantom, defocus_um: float, *, medium_index: float | None = None
) -> np.ndarray:
    """The field (complex64) in the plane ``defocus_um`` upstream of the phantom's cells.

    The phantom lies in an empty medium twice its size (plane wave outside), so light that
    leaves the field is lost and none comes back in from the opposite border, as on a camera.
    """
    field = phantom.amplitude * np.exp(1j * phantom.phase.astype(np.float64))
    h, w = field.shape
    padded = np.pad(field, ((h // 2, h // 2), (w // 2, w // 2)), constant_values=1.0)
    out = propagate(
        padded,
        -float(defocus_um),
        wavelength_nm=phantom.wavelength_nm,
        pixel_size_um=phantom.pixel_size_um,
        medium_index=medium_index or 1.0,
    )
    return np.ascontiguousarray(out[h // 2 : h // 2 + h, w // 2 : w // 2 + w])


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
