"""Autofocus of a complex field: a coarse-to-fine search over z for the plane of best focus.

The focus metrics (smallest at focus for a phase object) are in :mod:`.focus_metrics`, the
checks of the range searched and the pixels scored in :mod:`.focus_bounds`.

The search scores a coarse grid over the range on the field low-passed to the band ``f_c`` whose
depth of field ``1 / (lambda_m f_c^2)`` makes :data:`COARSE_STEPS` planes at half that depth
cover the range (formed together: one batched inverse FFT), then minimises the score of the whole
field between the neighbours of the best coarse point (bounded Brent search to
:data:`FINE_DEPTH_FRACTION` of the field's own depth of field, at most
:data:`REFINED_SEARCH_PLANES` planes when the band refinement below follows, then the vertex of a
parabola through the best plane and its two neighbours); each plane costs one transfer function
(written into a reused buffer), one multiply and one inverse FFT
(:class:`~napari_qpi.retrieval.propagation.Propagator`).

Band limit: a strong phase object seen through a hologram's band is not flat in focus (the light
its rims scatter beyond the band is lost), which moves the minimum of every amplitude metric off
focus by about a tenth of the depth of field (:mod:`.band_loss`). When the band's window is known
(``band_window``), the search ends with :func:`_band_refine`: three planes around the plane found,
scored with the band's own loss added back to the amplitude (one :func:`.band_loss` and one
propagation per plane).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy.optimize import minimize_scalar

from ..errors import InputError
from .band_loss import band_compensated_amplitude, band_loss
from .focus_bounds import (
    BORDER_FRACTION,
    MAX_RANGE_FIELD_WIDTHS,
    check_distance,
    check_range,
    default_range,
    depth_of_field,
    region_view,
)
from .focus_metrics import (
    DEFAULT_METRIC,
    METRICS,
    OF_AMPLITUDE,
    amplitude_of,
    amplitude_variance,
    gradient_energy,
    phase_sign,
    tamura,
)
from .propagation import Propagator

#: Planes of the coarse grid over the range, sampled at half the depth of field of the coarse
#: field: the field is low-passed until that many planes cover the range (fewer if its own band is
#: narrower), so the grid step follows the optics instead of a fixed count.
COARSE_STEPS = 24
#: Most bytes of coarse planes formed together (one batched inverse FFT; progress is reported
#: after each batch).
COARSE_BATCH_BYTES = 32 << 20
#: Smallest side (samples) of the coarse field: cells must stay a few samples wide.
COARSE_MIN_SIZE = 64
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
#: Precision of the fine search as a fraction of the depth of field ``1 / (lambda_m f^2)`` of the
#: field's band ``f`` (cycles/um; ``lambda_m`` the wavelength in the medium): the phase error of a
#: refocus grows with ``z`` error over that depth (0.25 um pixels, filter band 0.7 cycles/um:
#: depth 5.1 um; 0.5 um off the true z costs 1.3x the phase RMSE in cells, 1 um 1.7x).
FINE_DEPTH_FRACTION = 1.0 / 16
#: Most planes the band-compensated refinement (:func:`_band_refine`) walks beyond its first
#: three when the best is at an end.
BAND_REFINE_EXTRA = 3
#: Passes of the refinement that take the loss again in the plane the last one found (a fixed
#: point: the loss is the focused object's). 1024^2 benchmark cases at 0.5 um pixels, true z 50 /
#: 100 um: 0 passes +0.58 / +0.58 um, 1 pass +0.38 / +0.40 um, 2 passes +0.33 / +0.37 um (0.25 um
#: pixels, 25 / -60 um: +0.08 / +0.34, +0.07 / +0.33, +0.07 / +0.33); each pass costs one
#: :func:`band_loss` and three scores, so none by default.
BAND_REFINE_PASSES = 0
#: Most planes of the bounded Brent search when the band refinement follows it (which then
#: decides the z: its three planes are 1/8 of the depth of field apart and it walks on when the
#: best is at an end). 1024^2 benchmark cases (pixel um / true z um), z error with the search run
#: to its tolerance (5-11 planes) -> capped at 5: 0.1 / +10 +0.000 -> +0.001, 0.1 / -30 -0.004 ->
#: +0.003, 0.25 / +25 +0.087 -> +0.084, 0.25 / -60 +0.340 -> +0.338, 0.5 / +50 +0.622 -> +0.622,
#: 0.5 / +100 +0.568 -> +0.582 um; capped at 4: -0.060, +0.436, +0.012, +0.312, +0.613, +0.466.
REFINED_SEARCH_PLANES = 5


@dataclass
class FocusResult:
    """Result of :func:`autofocus`.

    Attributes
    ----------
    z_um
        Best plane, um (in the sign convention of :mod:`.propagation`, for the field's sideband).
    score
        Metric value there.
    zs, scores
        Every plane evaluated and its metric, in the order evaluated.
    metric
        Name of the metric.
    """

    z_um: float
    score: float
    zs: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    metric: str = DEFAULT_METRIC

    @property
    def evaluations(self) -> int:
        """Number of planes scored (one propagation each, but for the band refinement's later
        passes, which rescore the planes they hold)."""
        return len(self.zs)


def iter_autofocus(
    field: np.ndarray | Propagator,
    *,
    wavelength_nm: float | None = None,
    pixel_size_um: float | None = None,
    medium_index: float = 1.0,
    sign: int = 1,
    z_range: Sequence[float] | None = None,
    metric: str = DEFAULT_METRIC,
    region: tuple[slice, slice] | Sequence[int] | None = None,
    tolerance_um: float | None = None,
    band_cycles_per_um: float | None = None,
    band_window: np.ndarray | None = None,
) -> Generator[tuple[int, int], None, FocusResult]:
    """Search the plane of best focus of a field (or a stack scored together), coarse to fine.

    Parameters
    ----------
    field
        Complex field ``(H, W)`` or ``(N, H, W)`` (one z for all planes: the metric is summed),
        or a :class:`Propagator` already holding one.
    wavelength_nm, pixel_size_um, medium_index, sign
        Optics and sideband sign as in :func:`~napari_qpi.retrieval.propagation.propagate`
        (taken from the propagator when one is given).
    z_range
        ``(min, max)`` in um; default :func:`default_range`.
    metric
        A name in :data:`METRICS`.
    region
        Pixels scored: two slices or a box ``(y0, y1, x0, x1)``; the whole field is propagated.
        Default: all but a band of :data:`BORDER_FRACTION` along each border.
    tolerance_um
        Precision of the fine search, um; default :data:`FINE_DEPTH_FRACTION` of the depth of
        field of the field's band.
    band_cycles_per_um
        Highest spatial frequency in the field (the sideband filter's radius in the sample
        plane); default the Nyquist frequency of its grid.
    band_window
        The band's filter on the field's FFT grid (fft order, shape of the field's last two
        axes): the search then ends with a refinement that scores the amplitude with the band's
        own loss added back (see the module notes); ``None`` scores the amplitude as it is.

    Yields ``(planes done, planes in all)`` after each plane (a GUI worker can stop there) and
    returns the :class:`FocusResult`; :func:`autofocus` runs it to the end.
    """
    if metric not in METRICS:
        raise InputError(f"Unknown focus metric {metric!r}; choose one of {', '.join(METRICS)}.")
    if isinstance(field, Propagator):
        prop = field
    else:
        prop = Propagator(
            field,
            wavelength_nm=wavelength_nm,
            pixel_size_um=pixel_size_um,
            medium_index=medium_index,
            sign=sign,
        )
    shape = prop.shape
    if band_window is not None and np.shape(band_window) != tuple(shape[-2:]):
        raise InputError(
            f"The band window has shape {np.shape(band_window)}; the field's planes are "
            f"{tuple(shape[-2:])}."
        )
    lo, hi = check_range(
        default_range(shape, prop.pixel_size_um) if z_range is None else z_range,
        shape,
        prop.pixel_size_um,
    )
    lam = prop.wavelength_nm * 1e-3 / prop.medium_index
    band = 0.5 / prop.pixel_size_um
    band = min(band, float(band_cycles_per_um)) if band_cycles_per_um else band
    tol = float(tolerance_um or FINE_DEPTH_FRACTION * depth_of_field(band, lam))
    coarse, steps = _coarse(prop, hi - lo, band)
    rows, cols = region_view(np.empty(shape[-2:], np.bool_), region)
    grid = np.linspace(lo, hi, steps)
    fine_steps = 2 + max(
        0, math.ceil(math.log(tol / (2 * (grid[1] - grid[0]))) / math.log(_INV_PHI))
    )
    if band_window is not None:  # the band refinement after it only needs a plane near focus
        fine_steps = min(fine_steps, REFINED_SEARCH_PLANES)
    result = FocusResult(z_um=0.0, score=math.inf, metric=metric)
    refine = 0 if band_window is None else 3 * (1 + BAND_REFINE_PASSES)
    scorer = _Scorer(OF_AMPLITUDE[metric], result, len(grid) + fine_steps + refine)
    c_rows, c_cols = _scaled_region((rows, cols), shape[-2:], coarse.shape[-2:])
    values: list[float] = []
    per_batch = max(1, COARSE_BATCH_BYTES // (8 * math.prod(coarse.shape)))
    for start in range(0, len(grid), per_batch):
        values += scorer.many(coarse, grid[start : start + per_batch], c_rows, c_cols)
        yield scorer.progress()
    best = int(np.argmin(values))
    # bounded Brent search (parabolic steps, golden-section fallback) of the whole field between
    # the neighbours of the best coarse point; its planes are reported once it has converged
    lo_f, hi_f = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, len(grid) - 1)])
    minimize_scalar(
        lambda z: scorer(prop, float(z), rows, cols),
        bounds=(lo_f, hi_f),
        method="bounded",
        options={"xatol": tol, "maxiter": fine_steps},
    )
    for _ in scorer.fine:
        yield scorer.progress()
    result.z_um, result.score = _vertex(scorer.fine)
    if band_window is not None:
        z, result.score = yield from _band_refine(
            scorer, prop, result.z_um, 2.0 * tol, (rows, cols), band_window
        )
        result.z_um = min(max(z, lo), hi)
    return result


def _band_refine(
    scorer: _Scorer,
    prop: Propagator,
    z0: float,
    step: float,
    region: tuple[slice, slice],
    window: np.ndarray,
) -> Generator[tuple[int, int], None, tuple[float, float]]:
    """Plane near ``z0`` where the amplitude, with the band limit's loss in that plane added
    back, is flattest.

    The loss (:func:`band_loss`) is a property of the object in focus, so it is taken in the plane
    sought: first in ``z0`` (the search's plane, near focus, where the phase and so the loss change
    slowly with z), then :data:`BAND_REFINE_PASSES` times in the plane just found (a fixed-point
    iteration: each pass takes the loss in the last plane and rescores the same planes). Planes
    ``z0 - step, z0, z0 + step`` (walking on while the best is at an end, up to
    :data:`BAND_REFINE_EXTRA` more), then the vertex of the parabola through the best and its
    neighbours.
    """
    first = (z0, z0 - step, z0 + step)
    planes: dict[float, np.ndarray] = dict(zip(first, prop.at_many(first), strict=True))
    z_loss, value = z0, math.inf
    for _ in range(1 + BAND_REFINE_PASSES):
        loss = band_loss(prop.spectrum * prop.transfer(z_loss), window)
        points: list[tuple[float, float]] = []
        z = z0
        for k in range(3 + BAND_REFINE_EXTRA):
            if k >= 3:  # walk on while the best is at an end
                pts = sorted(points)
                i = min(range(len(pts)), key=lambda j: pts[j][1])
                if 0 < i < len(pts) - 1:
                    break
                z = pts[i][0] + (step if i else -step)
            else:
                z = first[k]
            if z not in planes:
                planes[z] = prop.at(z)
            points.append((z, scorer(prop, z, *region, fine=False, loss=loss, planes=planes[z])))
            yield scorer.progress()
        z_loss, value = _vertex(points)
    return z_loss, value


class _Scorer:
    """Scores planes into ``result`` (every plane) and keeps the fine planes apart.

    ``fn`` is a metric of the amplitude (float32). Each propagator's planes are formed in one
    buffer of its own and their amplitude in another, reused from plane to plane.
    """

    def __init__(self, fn: Callable[[np.ndarray], float], result: FocusResult, total: int):
        self.fn, self.result, self.total = fn, result, total
        self.fine: list[tuple[float, float]] = []
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _plane(self, prop: Propagator, z: float, rows: slice, cols: slice) -> np.ndarray:
        """Amplitude of the planes at ``z`` in the region, ``(N, h, w)`` float32 (a buffer)."""
        key = id(prop)
        if key not in self._buffers:
            shape = prop.shape
            region = np.empty(shape[-2:], np.bool_)[rows, cols].shape
            lead = (int(np.prod(shape[:-2])),)
            self._buffers[key] = (
                np.empty(shape, np.complex64),
                np.empty(lead + region, np.float32),
            )
        work, amp = self._buffers[key]
        planes = prop.at(z, out=work).reshape(-1, *work.shape[-2:])
        return np.abs(planes[:, rows, cols], out=amp)

    def __call__(
        self,
        prop: Propagator,
        z: float,
        rows: slice,
        cols: slice,
        *,
        fine: bool = True,
        loss: np.ndarray | None = None,
        planes: np.ndarray | None = None,
    ) -> float:
        """Score of the plane ``z`` (summed over a stack; ``planes``: that plane already
        propagated); with ``loss``, of :func:`band_compensated_amplitude`. ``fine`` planes are
        kept apart for the vertex of the search."""
        if loss is None and planes is None:
            value = sum(self.fn(a) for a in self._plane(prop, z, rows, cols))
        else:
            planes = prop.at(z) if planes is None else planes
            planes = planes.reshape(-1, *planes.shape[-2:])
            if loss is None:
                value = sum(self.fn(amplitude_of(q[rows, cols])) for q in planes)
            else:
                losses = loss.reshape(-1, *loss.shape[-2:])
                value = sum(
                    self.fn(band_compensated_amplitude(q, lost)[rows, cols])
                    for q, lost in zip(planes, losses, strict=True)
                )
        self.result.zs.append(float(z))
        self.result.scores.append(value)
        if fine:
            self.fine.append((float(z), value))
        return value

    def many(self, prop: Propagator, zs: Sequence[float], rows: slice, cols: slice) -> list[float]:
        """Scores of the planes ``zs`` (not fine ones), formed together
        (:meth:`Propagator.at_many`)."""
        fields = prop.at_many(zs)
        amp = np.abs(fields.reshape(len(zs), -1, *prop.shape[-2:])[..., rows, cols])
        values = [sum(self.fn(a) for a in planes) for planes in amp]
        self.result.zs += [float(z) for z in zs]
        self.result.scores += values
        return values

    def progress(self) -> tuple[int, int]:
        done = len(self.result.zs)
        return min(done, self.total), max(self.total, done)


def _vertex(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Best ``(z, score)``: the vertex of the parabola through the best plane scored and its
    neighbours on either side when it is a minimum between them, else the best plane."""
    pts = sorted(points)
    i = min(range(len(pts)), key=lambda k: pts[k][1])
    z1, f1 = pts[i]
    if 0 < i < len(pts) - 1:
        (z0, f0), (z2, f2) = pts[i - 1], pts[i + 1]
        num = (z1 - z0) ** 2 * (f1 - f2) - (z1 - z2) ** 2 * (f1 - f0)
        den = (z1 - z0) * (f1 - f2) - (z1 - z2) * (f1 - f0)
        if den != 0:
            z = z1 - 0.5 * num / den
            if z0 < z < z2:
                return float(z), float(f1)
    return float(z1), float(f1)


def autofocus(
    field: np.ndarray | Propagator,
    *,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> FocusResult:
    """Plane of best focus of a complex field or stack; arguments of :func:`iter_autofocus`.

    ``progress(done, total)`` is called after each plane.
    """
    return drain(iter_autofocus(field, **kwargs), progress)


def drain(
    steps: Generator[tuple[int, int], None, Any], progress: Callable[[int, int], None] | None
) -> Any:
    """Run a generator of ``(done, total)`` steps to its end; return what it returns."""
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def _coarse(prop: Propagator, span_um: float, band: float) -> tuple[Propagator, int]:
    """The field low-passed for the coarse grid, and the number of planes of that grid.

    Its band ``f_c`` is the one whose depth of field, sampled every half depth, gives
    :data:`COARSE_STEPS` planes over ``span_um`` (no more than the field's own ``band``, no fewer
    than :data:`COARSE_MIN_SIZE` samples a side); the spectrum is cropped to it, no transform.
    """
    lam = prop.wavelength_nm * 1e-3 / prop.medium_index
    target = math.sqrt(COARSE_STEPS / (2.0 * span_um * lam))
    h, w = prop.shape[-2:]
    sizes = []
    for n in (h, w):
        width = n * prop.pixel_size_um
        size = max(COARSE_MIN_SIZE, 2 * math.ceil(width * min(target, band)))
        sizes.append(min(n, sfft.next_fast_len(size)))
    my, mx = sizes
    f_coarse = min(band, 0.5 * min(my / (h * prop.pixel_size_um), mx / (w * prop.pixel_size_um)))
    steps = max(3, math.ceil(2.0 * span_um * lam * f_coarse**2) + 1)
    if (my, mx) == (h, w):
        return prop, steps
    rows = np.r_[0 : (my + 1) // 2, h - my // 2 : h]
    cols = np.r_[0 : (mx + 1) // 2, w - mx // 2 : w]
    spectrum = prop.spectrum[..., rows[:, None], cols[None, :]] * np.float32(my * mx / (h * w))
    coarse = Propagator.from_spectrum(
        spectrum,
        wavelength_nm=prop.wavelength_nm,
        pixel_size_um=prop.pixel_size_um * (h / my + w / mx) / 2,
        medium_index=prop.medium_index,
        sign=prop.sign,
        workers=prop.workers,
    )
    return coarse, steps


def _scaled_region(
    region: tuple[slice, slice], shape: Sequence[int], to: Sequence[int]
) -> tuple[slice, slice]:
    """Slices of a region of a field of ``shape`` on the same field sampled on ``to``."""
    out = []
    for sl, n, m in zip(region, shape, to, strict=True):
        start = None if sl.start is None else int(sl.start * m / n)
        stop = None if sl.stop is None else max(int(sl.stop * m / n), (start or 0) + 2)
        out.append(slice(start, stop))
    return out[0], out[1]


def autofocus_stack(
    fields: np.ndarray,
    *,
    per_plane: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **kwargs,
) -> list[FocusResult]:
    """Focus each plane of a stack ``(N, H, W)``, or one z for all (``per_plane=False``).

    Returns one :class:`FocusResult` per plane (the same one repeated when a single z is held).
    Other arguments as :func:`autofocus`.
    """
    stack = np.asarray(fields)
    if stack.ndim != 3:
        raise InputError(f"A stack of fields has shape (N, H, W), got {stack.shape}.")
    if not per_plane:
        return [autofocus(stack, progress=progress, **kwargs)] * len(stack)
    results = []
    for i, plane in enumerate(stack):
        if progress is not None:
            progress(i, len(stack))
        results.append(autofocus(plane, **kwargs))
    if progress is not None:
        progress(len(stack), len(stack))
    return results


__all__ = [
    "BAND_REFINE_EXTRA",
    "BORDER_FRACTION",
    "COARSE_BATCH_BYTES",
    "COARSE_MIN_SIZE",
    "COARSE_STEPS",
    "DEFAULT_METRIC",
    "FINE_DEPTH_FRACTION",
    "MAX_RANGE_FIELD_WIDTHS",
    "METRICS",
    "REFINED_SEARCH_PLANES",
    "FocusResult",
    "amplitude_variance",
    "autofocus",
    "autofocus_stack",
    "check_distance",
    "check_range",
    "default_range",
    "depth_of_field",
    "drain",
    "gradient_energy",
    "iter_autofocus",
    "phase_sign",
    "tamura",
]
