"""Forward models: synthetic cells, off-axis holograms and coded diffraction patterns.

Plain numpy; used to make training data, sample files and test fixtures with known ground truth.
"""

from .cdp import (
    add_poisson_noise,
    coded_diffraction_patterns,
    quantise_phase,
    random_phase_masks,
)
from .hologram import (
    ZERNIKE_TERMS,
    OffAxisSystem,
    aberration_phase,
    hologram_intensity,
    random_system,
    simulate_background,
    simulate_hologram,
    zernike_term,
)
from .phantoms import CELL_KINDS, CellSpec, Phantom, random_cells

__all__ = [
    "CELL_KINDS",
    "ZERNIKE_TERMS",
    "CellSpec",
    "OffAxisSystem",
    "Phantom",
    "aberration_phase",
    "add_poisson_noise",
    "coded_diffraction_patterns",
    "hologram_intensity",
    "quantise_phase",
    "random_cells",
    "random_phase_masks",
    "random_system",
    "simulate_background",
    "simulate_hologram",
    "zernike_term",
]
