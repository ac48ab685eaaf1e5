"""Shared pieces of :mod:`napari_qpi.morphology`: the warning class, input checks, versions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..acquisition import is_real_number
from ..defaults import DEFAULT_ALPHA_UM3_PER_PG as DEFAULT_ALPHA_UM3_PER_PG
from ..errors import InputError


class MorphologyWarning(UserWarning):
    """Segmentation or measurement finished but the result needs the user's attention."""


def _versions() -> dict[str, str]:
    import scipy
    import skimage

    from .. import __version__

    return {
        "napari_qpi": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
    }


def _check_pixel_size(pixel_size_um: float | None) -> float | None:
    if pixel_size_um is None:
        return None
    if not (is_real_number(pixel_size_um) and math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise InputError(f"pixel_size_um must be a positive number in um, got {pixel_size_um!r}.")
    return float(pixel_size_um)


def _as_phase_image(phase: Any, name: str = "phase") -> np.ndarray:
    arr = np.asarray(phase)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D image (H, W), got shape {arr.shape}.")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}).")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must hold real numbers (rad), got dtype {arr.dtype}.")
    return arr.astype(np.float64, copy=False)
