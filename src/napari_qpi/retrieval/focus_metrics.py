"""Focus metrics of a complex field, and the sign of a focused field's phase.

For a phase object (cells are nearly transparent) the amplitude of the field is flattest in the
plane of focus: out of focus, the phase structure turns into intensity contrast (the transport of
intensity), with bright and dark rings growing with the defocus. The metrics here all measure that
amplitude contrast and are **smallest at focus** (for an amplitude object they would be largest):

``"tamura"``
    Tamura coefficient of the amplitude, ``sqrt(std(|U|) / mean(|U|))`` (Memmolo et al., Opt.
    Express 19, 23215 (2011)); scale-free.
``"variance"``
    Minimum amplitude variance ``var(|U|) / mean(|U|)^2`` (Dubois et al., Appl. Opt. 45, 864
    (2006); Langehanenberg et al., Appl. Opt. 47, D176 (2008)), normalised so the illumination
    level does not matter.
``"gradient"``
    Gradient energy (Tenengrad) of the amplitude, ``mean(|grad |U||^2) / mean(|U|)^2``. The
    total gradient energy ``|grad U|^2 = |grad |U||^2 + |U|^2 |grad phi|^2`` is the same in every
    plane (Parseval: propagation only changes spectral phases), so its minimum is where the phase
    is sharpest.

:func:`phase_sign` tells, for a field in focus, whether the cells' phase is positive (the sideband
carries ``+phi``) or negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..defaults import DEFAULT_FOCUS_METRIC
from .background import background_mask, fit_background
from .unwrap import unwrap_phase


def amplitude_of(field: np.ndarray) -> np.ndarray:
    """Amplitude ``|U|`` of a field (or of its planes), float32: what every metric scores."""
    return np.abs(field).astype(np.float32, copy=False)


def _tamura_of(amp: np.ndarray) -> float:
    mean = float(amp.mean(dtype=np.float64))
    return math.sqrt(float(amp.std(dtype=np.float64)) / mean) if mean > 0 else math.inf


def _variance_of(amp: np.ndarray) -> float:
    mean = float(amp.mean(dtype=np.float64))
    return float(amp.var(dtype=np.float64)) / mean**2 if mean > 0 else math.inf


def _gradient_of(amp: np.ndarray) -> float:
    mean = float(amp.mean(dtype=np.float64))
    if mean <= 0:
        return math.inf
    gy = np.diff(amp, axis=0)
    gx = np.diff(amp, axis=1)
    energy = float(np.mean(gy * gy, dtype=np.float64) + np.mean(gx * gx, dtype=np.float64))
    return energy / mean**2


def tamura(field: np.ndarray) -> float:
    """Tamura coefficient ``sqrt(std / mean)`` of the amplitude (smallest at focus)."""
    return _tamura_of(amplitude_of(field))


def amplitude_variance(field: np.ndarray) -> float:
    """Normalised amplitude variance ``var / mean^2`` (smallest at focus)."""
    return _variance_of(amplitude_of(field))


def gradient_energy(field: np.ndarray) -> float:
    """Normalised mean squared gradient of the amplitude (smallest at focus)."""
    return _gradient_of(amplitude_of(field))


#: Focus metrics by name: ``f(field) -> float``, smallest in focus for phase objects.
METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "tamura": tamura,
    "variance": amplitude_variance,
    "gradient": gradient_energy,
}
#: The same metrics of an amplitude (float32) rather than a field.
OF_AMPLITUDE: dict[str, Callable[[np.ndarray], float]] = {
    "tamura": _tamura_of,
    "variance": _variance_of,
    "gradient": _gradient_of,
}
DEFAULT_METRIC = DEFAULT_FOCUS_METRIC


def phase_sign(field: np.ndarray, *, order: int = 2) -> int:
    """+1 if the non-background pixels of the field's phase rise above the background on balance.

    The phase is unwrapped, a polynomial background of ``order`` fitted over the automatically
    found background pixels and removed; cells (denser than the medium) then have a positive
    phase if ``field`` carries ``+phi``. Meant for a field in focus.
    """
    unwrapped = unwrap_phase(np.angle(field).astype(np.float32))
    mask = background_mask(unwrapped, order=order)
    corrected = unwrapped - fit_background(unwrapped, order=order, mask=mask)
    cells = corrected[~mask]
    if cells.size == 0:
        return 1
    return 1 if float(cells.sum(dtype=np.float64)) >= 0 else -1


__all__ = [
    "DEFAULT_METRIC",
    "METRICS",
    "OF_AMPLITUDE",
    "amplitude_of",
    "amplitude_variance",
    "gradient_energy",
    "phase_sign",
    "tamura",
]
