"""Does a retrieved phase explain the hologram it came from? A physics check for networks.

An off-axis hologram records, in its sideband, the band-limited object field
``U = BL[a_r |O| exp(i (phi + W))]`` (:mod:`.fourier`): ``phi`` the object phase, ``W`` the
smooth aberrations of the optics, ``a_r |O|`` the amplitude. A phase map ``p`` proposed by a
network re-forms that sideband as

    ``P = BL[A exp(i s p)] exp(i b)``

with ``A = |U|`` the amplitude the classical demodulation measures, ``BL`` the same filter the
demodulation used (centred on the carrier), ``s = +-1`` the sign of the sideband (a hologram
cannot tell it; the better one is taken) and ``b`` a polynomial of degree
:data:`BACKGROUND_ORDER` (tilt, defocus, astigmatism, coma and a constant: the aberrations a
compensated phase leaves out, fitted to ``arg(U conj(P))`` over the pixels ``p`` claims are
background, :func:`claimed_background`). These numbers say how well ``p`` explains the
measurement, over the whole field:

``residual``
    Normalised residual energy in the sideband, ``sum |U - P|^2 / sum |U|^2`` (Parseval: the same
    in the Fourier domain inside the filter). 0 for a phase that explains the sideband exactly;
    for a phase error ``d`` it is the amplitude-weighted mean of ``4 sin^2(d / 2)`` (about ``d^2``
    for small errors, up to 4 for errors of ``pi``); unrelated phases give about 2.
``baseline`` and ``relative``
    ``baseline`` is the residual of a flat phase (``p = 0``): the part of the sideband that the
    background polynomial alone does not explain, i.e. the cells. ``relative = residual /
    baseline`` is the share of it the phase leaves unexplained: near 0 for a good phase, 1 for a
    phase no better than nothing, above 1 for a phase worse than nothing (cells are a small part
    of most fields, so the plain residual of a wrong phase can still be small).
``correlation``
    ``|sum U conj(P)| / sqrt(sum |U|^2 sum |P|^2)``, in [0, 1].

The residual map is ``arg(U conj(P))`` (radians, wrapped to [-pi, pi)): where the phase disagrees
with the recorded fringes. The classical method's own phase scores near 0 by construction, so the
check compares a network with the physics, not with the classical method's unwrapping or
background choices. :func:`consistency_loss` is the same residual as a differentiable torch loss
that needs no target phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as sfft

from ..acquisition import Acquisition
from ..errors import InputError
from ..threads import fft_workers
from .background import evaluate_polynomial
from .fourier import Sideband, as_image, demodulate, filter_window, find_sideband, half_spectrum
from .unwrap import least_squares_unwrap

#: Degree of the background polynomial ``b`` (3: up to coma, the aberrations of the training data).
BACKGROUND_ORDER = 3
#: The background is fitted on a grid of at most this many block-averaged pixels a side.
FIT_GRID = 256
#: A phase is reported as not explaining its hologram when its residual passes ``RESIDUAL_WARN``
#: and its relative residual passes ``RELATIVE_WARN`` (a field with little structure has a small
#: baseline, so the relative residual alone would be noisy there). Calibrated by
#: ``benchmarks/consistency.py``; the figures are in ``docs/consistency.md``.
RESIDUAL_WARN = 0.01
RELATIVE_WARN = 0.35
#: Relative difference of the two signs' residuals below which they tie (float noise).
_TIE = 1e-5

#: Fit the background polynomial over every pixel (True) instead of the pixels the phase claims
#: are background (False, :func:`claimed_background`). A fit over every pixel forgives low-order
#: errors of the phase: on 256^2 fields a cubic absorbs most of 96 px blocks offset by 2-4 rad
#: (measured, see ``docs/consistency.md``).
FREE_BACKGROUND = False
#: A pixel is claimed as background when its phase is within this many radians of the median.
BACKGROUND_TOLERANCE = 0.5
#: Fewer claimed background pixels than this share and the fit uses all pixels.
MIN_BACKGROUND_SHARE = 0.1


@dataclass(frozen=True)
class SidebandTarget:
    """What the camera recorded, ready to compare a phase with.

    Attributes
    ----------
    field
        (H, W) complex64 demodulated field ``U`` at full resolution (hologram units).
    window
        (H, W) float32 filter of the demodulation, centred on zero frequency (fft order).
    sideband
        The sideband it came from.
    """

    field: np.ndarray
    window: np.ndarray
    sideband: Sideband

    @property
    def amplitude(self) -> np.ndarray:
        """``|U|``, float32."""
        return np.abs(self.field)


@dataclass(frozen=True)
class Consistency:
    """How well a phase map explains a hologram's sideband (see the module docstring)."""

    residual: float
    baseline: float
    correlation: float
    sign: int
    background_order: int
    residual_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def relative(self) -> float:
        """``residual / baseline``: the share of the sideband's structure left unexplained."""
        return self.residual / max(self.baseline, 1e-12)

    @property
    def trusted(self) -> bool:
        """False when both the residual and the relative residual pass their thresholds."""
        return not (self.residual > RESIDUAL_WARN and self.relative > RELATIVE_WARN)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (without the map)."""
        return {
            "residual": round(self.residual, 5),
            "baseline": round(self.baseline, 5),
            "relative": round(self.relative, 4),
            "correlation": round(self.correlation, 5),
            "sign": self.sign,
            "background_order": self.background_order,
            "thresholds": {"residual": RESIDUAL_WARN, "relative": RELATIVE_WARN},
            "trusted": self.trusted,
        }


def sideband_target(
    hologram: np.ndarray,
    *,
    acquisition: Acquisition | None = None,
    sideband: Sideband | None = None,
    filter: str = "smooth_disk",
) -> SidebandTarget:
    """Demodulate ``hologram`` once for :func:`consistency` or :func:`consistency_loss`.

    The sideband is found as the classical method finds it (the carrier of ``acquisition`` when
    known); no fringes raise :class:`~napari_qpi.errors.SidebandError`.
    """
    img = as_image(hologram)
    spectrum = half_spectrum(img)
    if sideband is None:
        carrier = (acquisition or Acquisition()).carrier_cycles_per_px
        sideband = find_sideband(img, carrier=carrier, spectrum=spectrum)
    u = demodulate(img, sideband, filter=filter, resolution="full", spectrum=spectrum)
    h, w = img.shape
    fy = sfft.fftfreq(h).astype(np.float32)[:, None]
    fx = sfft.fftfreq(w).astype(np.float32)[None, :]
    window = filter_window(np.sqrt(fy * fy + fx * fx), sideband.radius_cycles_per_px, filter)
    return SidebandTarget(u, window.astype(np.float32), sideband)


def _band_limit(field_: np.ndarray, window: np.ndarray) -> np.ndarray:
    workers = fft_workers()
    return sfft.ifft2(sfft.fft2(field_, workers=workers) * window, workers=workers)


def _cis(phase: np.ndarray) -> np.ndarray:
    """``exp(i phase)`` as complex64 from float32 ``cos`` and ``sin`` (vectorised; a complex
    ``np.exp`` is some 20 times slower)."""
    out = np.empty(phase.shape, dtype=np.complex64)
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    return out


def _mirror_symmetric(window: np.ndarray) -> bool:
    """``window[-k] == window[k]`` (fft order): then the filter's kernel is real and even, and
    ``BL[conj(z)] = conj(BL[z])``."""
    return bool(np.array_equal(window, np.roll(window[::-1, ::-1], 1, axis=(0, 1))))


def _block_mean(z: np.ndarray, k: int) -> np.ndarray:
    h, w = (z.shape[0] // k) * k, (z.shape[1] // k) * k
    if k == 1:
        return z[:h, :w]
    # strided slice sums: a reduction over a short inner axis is several times slower
    cols = z[:h, 0:w:k].copy()
    for j in range(1, k):
        cols += z[:h, j:w:k]
    out = cols[0:h:k].copy()
    for i in range(1, k):
        out += cols[i:h:k]
    return out / (k * k)


def claimed_background(phase: np.ndarray, tolerance: float = BACKGROUND_TOLERANCE) -> np.ndarray:
    """Pixels a phase map claims are background: within ``tolerance`` rad of its median.

    A compensated phase is flat (its median, usually 0) over the medium; there the recorded
    phase must be the optics' aberrations alone. Falls back to every pixel when fewer than
    :data:`MIN_BACKGROUND_SHARE` of them qualify.
    """
    p = np.asarray(phase, dtype=np.float32)
    mask = np.abs(p - np.median(p[:: max(1, p.size // 65536)])) < tolerance
    return mask if mask.mean() >= MIN_BACKGROUND_SHARE else np.ones_like(mask)


def _weighted_polyfit(
    values: np.ndarray, weight: np.ndarray, y: np.ndarray, x: np.ndarray, order: int
) -> np.ndarray:
    """Weighted least-squares coefficients (``_powers`` order) of ``sum c_ij y^i x^j`` on the
    grid ``y`` (rows) by ``x`` (columns): the normal equations from separable moments
    ``sum w y^a x^b`` (the basis is of low degree on [-1, 1], well conditioned)."""
    n = np.arange(2 * order + 1)
    ypow, xpow = y[:, None] ** n, x[:, None] ** n
    moments = ypow.T @ weight @ xpow
    rhs = ypow.T @ (weight * values) @ xpow
    powers = [(i, t - i) for t in range(order + 1) for i in range(t + 1)]
    gram = np.array([[moments[i + a, j + b] for a, b in powers] for i, j in powers])
    return np.linalg.lstsq(gram, np.array([rhs[i, j] for i, j in powers]), rcond=None)[0]


def _fit_rotation(
    measured: np.ndarray, predicted: np.ndarray, order: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The polynomial of :func:`fit_phase_background` (float32, without the piston), its
    ``exp(i b)`` (complex64) and the piston (radians)."""
    h, w = measured.shape
    cross = measured * np.conj(predicted)
    k = max(1, math.ceil(max(h, w) / FIT_GRID))
    small = _block_mean(cross, k)
    sh, sw = small.shape
    weight = np.abs(small).astype(np.float64)
    if mask is not None:
        weight *= _block_mean(np.asarray(mask, dtype=np.float32), k) >= 0.5
    unwrapped = least_squares_unwrap(np.angle(small).astype(np.float32)).astype(np.float64)
    # block centres in the [-1, 1] coordinates of the full grid (as evaluate_polynomial uses)
    y = 2.0 * (k * np.arange(sh) + (k - 1) / 2) / max(h - 1, 1) - 1.0
    x = 2.0 * (k * np.arange(sw) + (k - 1) / 2) / max(w - 1, 1) - 1.0
    coef = _weighted_polyfit(unwrapped, weight / (weight.max() + 1e-30), y, x, order)
    background = evaluate_polynomial(coef, (h, w), order)
    rotation = _cis(background)
    # sum over the mask of conj(predicted exp(i b)) measured = sum of conj(exp(i b)) cross
    piston = float(np.angle(np.vdot(rotation, cross if mask is None else cross * mask)))
    return background, rotation, piston


def fit_phase_background(
    measured: np.ndarray,
    predicted: np.ndarray,
    order: int = BACKGROUND_ORDER,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Smooth phase ``b`` (radians, float32) that best turns ``predicted`` into ``measured``.

    ``arg(measured conj(predicted))`` is averaged over blocks (at most :data:`FIT_GRID` a side),
    unwrapped by least squares (smooth, so local disagreements do not tear it) and fitted with a
    polynomial of total degree ``order`` weighted by ``|measured conj(predicted)|`` over the
    blocks mostly inside ``mask`` (all if ``None``); the constant is then set to the best piston
    over the ``mask`` pixels of the full grid.
    """
    background, _, piston = _fit_rotation(measured, predicted, order, mask)
    return (background + np.float32(piston)).astype(np.float32)


def _background(
    target: SidebandTarget, predicted: np.ndarray, phase: np.ndarray, free: bool
) -> np.ndarray:
    """``b`` fitted over the pixels the phase claims are background (all of them if ``free``)."""
    mask = None if free else claimed_background(phase)
    return fit_phase_background(target.field, predicted, BACKGROUND_ORDER, mask)


def _fitted(
    u: np.ndarray, blank: np.ndarray, mask: np.ndarray | None, energy: float
) -> tuple[float, np.ndarray]:
    """Residual and prediction ``blank exp(i b)`` with ``b`` fitted over ``mask``."""
    _, rotation, piston = _fit_rotation(u, blank, BACKGROUND_ORDER, mask)
    predicted = blank * rotation
    predicted *= np.complex64(complex(math.cos(piston), math.sin(piston)))
    return float(np.sum(np.abs(u - predicted) ** 2) / energy), predicted


def _score(
    target: SidebandTarget, phase: np.ndarray, sign: int, free: bool = FREE_BACKGROUND
) -> tuple[float, np.ndarray]:
    u = target.field
    blank = _band_limit(
        target.amplitude * _cis(sign * np.asarray(phase, np.float32)), target.window
    )
    mask = None if free else claimed_background(phase)
    return _fitted(u, blank, mask, float(np.vdot(u, u).real) + 1e-30)


def _scores(
    target: SidebandTarget, phase: np.ndarray
) -> tuple[dict[int, tuple[float, np.ndarray]], float]:
    """:func:`_score` of both signs and of a flat phase (the baseline), sharing their work: one
    amplitude, one mask for both signs and, when the filter is symmetric in ``k`` (as
    :func:`sideband_target` makes it), ``BL[A exp(-i p)] = conj(BL[A exp(i p)])``: one band
    limit for both signs."""
    u, window = target.field, target.window
    amplitude = np.abs(u)
    energy = float(np.vdot(u, u).real) + 1e-30
    blank = _band_limit(amplitude * _cis(phase), window)
    if _mirror_symmetric(window):
        mirrored = np.conj(blank)
    else:
        mirrored = _band_limit(amplitude * _cis(-phase), window)
    mask = None if FREE_BACKGROUND else claimed_background(phase)
    scores = {1: _fitted(u, blank, mask, energy), -1: _fitted(u, mirrored, mask, energy)}
    # the flat phase exactly as a flat ``phase`` would go (relative exactly 1 for it)
    flat = np.zeros_like(phase)
    flat_mask = None if FREE_BACKGROUND else claimed_background(flat)
    flat_blank = _band_limit(amplitude * _cis(flat), window)
    return scores, _fitted(u, flat_blank, flat_mask, energy)[0]


def network_residual(
    hologram: np.ndarray, phase: np.ndarray, acquisition: Acquisition | None = None
) -> np.ndarray:
    """Per-pixel phase (radians, (H, W) float32, in [-pi, pi]) of what ``phase`` leaves
    unexplained in ``hologram``'s sideband: ``angle(U conj(BL[A exp(i s phase)] exp(i b)))``,
    the measured band-limited field against the one re-formed from the phase and the measured
    amplitude (sign and background fitted as in :func:`consistency`). Near 0 where the physics
    agrees; the pattern of a wrong phase where it does not."""
    found = consistency(hologram, phase, acquisition=acquisition, residual_map=True)
    return np.asarray(found.residual_map, dtype=np.float32)


def consistency(
    hologram: np.ndarray | SidebandTarget,
    phase: np.ndarray,
    *,
    acquisition: Acquisition | None = None,
    residual_map: bool = False,
) -> Consistency:
    """Score how well ``phase`` (radians, (H, W), same grid as the hologram) explains it.

    ``hologram`` may be a :class:`SidebandTarget` made once by :func:`sideband_target`. The
    sign whose residual is lower by more than float noise wins; a tie (a flat phase) is +1.

    Raises
    ------
    SidebandError
        The hologram shows no fringes.
    InputError
        ``phase`` is not a finite real image of the hologram's shape.
    """
    target = hologram if isinstance(hologram, SidebandTarget) else None
    if target is None:
        target = sideband_target(hologram, acquisition=acquisition)
    p = np.asarray(phase)
    if p.shape != target.field.shape or np.iscomplexobj(p) or not np.isfinite(p).all():
        raise InputError(
            f"The phase to check must be a finite real image of the hologram's shape "
            f"{target.field.shape}, got shape {p.shape}."
        )
    scores, baseline = _scores(target, p.astype(np.float32))
    sign = -1 if scores[-1][0] < scores[1][0] * (1 - _TIE) else 1
    residual, predicted = scores[sign]
    u = target.field
    norms = np.vdot(u, u).real * np.vdot(predicted, predicted).real
    corr = float(abs(np.vdot(predicted, u)) / math.sqrt(norms + 1e-30))
    rmap = None
    if residual_map:
        rmap = np.angle(u * np.conj(predicted)).astype(np.float32)
    return Consistency(residual, baseline, corr, sign, BACKGROUND_ORDER, rmap)


def consistency_loss(phase: Any, targets: Sequence[SidebandTarget], *, free: bool = False) -> Any:
    """Differentiable mean sideband residual of a batch of phases: a loss without targets.

    ``phase`` is a torch tensor (B, 1, H, W) or (B, H, W) in radians; ``targets`` the
    :func:`sideband_target` of each hologram. For each image the sign and the background ``b``
    are chosen on the detached phase (as :func:`consistency` does; ``free`` as
    :data:`FREE_BACKGROUND`); the residual ``sum |U - BL[A exp(i s p)] exp(i b)|^2 / sum |U|^2``
    is then differentiated through ``p``.
    """
    import torch

    if phase.ndim == 4:
        phase = phase[:, 0]
    if phase.ndim != 3 or phase.shape[0] != len(targets):
        raise InputError(
            f"consistency_loss needs (B, 1, H, W) or (B, H, W) phases, one per target; got "
            f"shape {tuple(phase.shape)} for {len(targets)} target(s)."
        )
    losses = []
    detached = phase.detach().float().cpu().numpy()
    for p, p0, target in zip(phase, detached, targets, strict=True):
        scores = {sign: _score(target, p0, sign, free)[0] for sign in (1, -1)}
        sign = min(scores, key=scores.__getitem__)
        blank = _band_limit(target.amplitude * np.exp(1j * sign * p0), target.window)
        background = _background(target, blank, p0, free)
        device = p.device
        u = torch.from_numpy(target.field).to(device)
        amp = torch.from_numpy(target.amplitude).to(device)
        window = torch.from_numpy(target.window).to(device)
        rotate = torch.from_numpy(np.exp(1j * background).astype(np.complex64)).to(device)
        predicted = torch.fft.ifft2(torch.fft.fft2(torch.polar(amp, sign * p.float())) * window)
        residual = u - predicted * rotate
        losses.append((residual.abs() ** 2).sum() / (u.abs() ** 2).sum())
    return torch.stack(losses).mean()


__all__ = [
    "BACKGROUND_ORDER",
    "FREE_BACKGROUND",
    "RELATIVE_WARN",
    "RESIDUAL_WARN",
    "Consistency",
    "SidebandTarget",
    "consistency",
    "consistency_loss",
    "fit_phase_background",
    "network_residual",
    "sideband_target",
]
