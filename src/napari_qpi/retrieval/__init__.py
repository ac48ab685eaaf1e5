"""Classical phase retrieval (numpy/scipy only): off-axis holograms to phase in radians.

:func:`retrieve_offaxis` runs the whole pipeline; its steps are public too: sideband search and
demodulation (:mod:`.fourier`), phase unwrapping (:mod:`.unwrap`) and the background fit
(:mod:`.background`).
"""

from .background import background_mask, fit_background
from .fourier import (
    FILTERS,
    Sideband,
    crop_factor,
    demodulate,
    filter_radius,
    find_sideband,
    looks_like_hologram,
)
from .offaxis import OffAxisSettings, PhaseResult, retrieve_offaxis
from .unwrap import (
    UnwrapReport,
    count_jumps,
    count_residues,
    jump_mask,
    unwrap_phase,
    wrap,
)

__all__ = [
    "FILTERS",
    "OffAxisSettings",
    "PhaseResult",
    "Sideband",
    "UnwrapReport",
    "background_mask",
    "count_jumps",
    "count_residues",
    "crop_factor",
    "demodulate",
    "filter_radius",
    "find_sideband",
    "fit_background",
    "jump_mask",
    "looks_like_hologram",
    "retrieve_offaxis",
    "unwrap_phase",
    "wrap",
]
