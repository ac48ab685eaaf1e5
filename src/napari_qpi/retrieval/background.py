"""Background phase: which pixels are background, and a low-order polynomial fitted to them.

After demodulation the phase still holds the smooth aberrations of the optics (tilt from a
mis-set carrier, defocus, curvature of the wavefronts) and an arbitrary constant. Over the
medium around the cells the true phase is constant, so a 2-D polynomial fitted to background pixels
estimates those aberrations; subtracting it sets the medium to 0 rad.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from ..errors import InputError

#: Most pixels used by one least-squares fit; larger images are fitted on a regular subgrid.
MAX_FIT_SAMPLES = 16384
#: :func:`background_mask` works on a regular subgrid at most this many pixels on a side.
MASK_GRID = 256


def _check_phase(phase: np.ndarray) -> np.ndarray:
    p = np.asarray(phase)
    if p.ndim != 2 or min(p.shape) < 2:
        raise InputError(f"The phase must be a 2-D image, got shape {p.shape}.")
    if np.iscomplexobj(p):
        raise InputError("The phase must be real (radians), got complex values.")
    return np.asarray(p, dtype=np.float32)


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise InputError(f"The background polynomial order must be an integer 0-5, got {order!r}.")
    return int(order)


def _powers(order: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of the terms ``y^i x^j`` with ``i + j <= order``."""
    return [(i, t - i) for t in range(order + 1) for i in range(t + 1)]


def _axis(n: int) -> np.ndarray:
    """Pixel coordinates scaled to [-1, 1] (well-conditioned powers)."""
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


class PolynomialBasis:
    """The terms ``y^i x^j`` (``i + j <= order``, coordinates in [-1, 1]) of one grid, built once.

    A robust fit refits the same grid a dozen times with different pixel sets; building the
    design matrix once (on the regular subgrid of at most ``MAX_FIT_SAMPLES`` pixels that every
    fit here uses) leaves each refit a masked product and a small solve.
    """

    def __init__(self, shape: tuple[int, int], order: int) -> None:
        h, w = shape
        self.shape = (int(h), int(w))
        self.order = _check_order(order)
        self.step = max(1, math.ceil(math.sqrt(h * w / MAX_FIT_SAMPLES)))
        y = _axis(h)[:: self.step]
        x = _axis(w)[:: self.step]
        #: (terms, subgrid pixels) float64, terms ordered as :func:`polynomial_coefficients`'s.
        self.design = np.stack([np.outer(y**i, x**j).ravel() for i, j in _powers(self.order)])
        #: The same, one row per pixel (rows of a pixel set are gathered fast).
        self.rows = np.ascontiguousarray(self.design.T)
        #: (terms, terms) normal matrix of the whole subgrid.
        self.gram = self.design @ self.design.T
        for array in (self.design, self.rows, self.gram):
            array.setflags(write=False)  # shared by every fit of this grid (polynomial_basis)

    def coefficients(self, phase: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Least-squares coefficients over the finite ``keep`` pixels of ``phase`` (both full
        grid; ``keep`` True = use)."""
        sub = phase[:: self.step, :: self.step].ravel()
        used = keep[:: self.step, :: self.step].ravel() & np.isfinite(sub)
        terms = self.design.shape[0]
        if np.count_nonzero(used) < max(terms * 4, 16):
            raise InputError(
                f"Too few background pixels ({int(np.count_nonzero(keep))}) to fit a polynomial "
                f"of order {self.order}; mark more background or lower the order."
            )
        # The normal matrix from the smaller of the used and the unused columns: the whole
        # subgrid's less the unused ones' when most pixels are used (a background mask).
        if 2 * np.count_nonzero(used) <= used.size:
            rows = self.rows.take(np.flatnonzero(used), axis=0)
            gram = rows.T @ rows
        else:
            rows = self.rows.take(np.flatnonzero(~used), axis=0)
            gram = self.gram - rows.T @ rows
        values = np.where(used, sub, 0.0).astype(np.float64)
        try:
            return np.linalg.solve(gram, self.design @ values)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(self.design[:, used].T, values[used], rcond=None)[0]

    def evaluate(self, coef: np.ndarray) -> np.ndarray:
        """The polynomial ``coef`` on the full grid (float32)."""
        if self.step == 1:
            return (coef @ self.design).reshape(self.shape).astype(np.float32)
        return evaluate_polynomial(coef, self.shape, self.order)

    def fit(self, phase: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """The least-squares polynomial over ``keep`` on the full grid (float32)."""
        return self.evaluate(self.coefficients(phase, keep))


@functools.lru_cache(maxsize=16)
def polynomial_basis(shape: tuple[int, int], order: int) -> PolynomialBasis:
    """The :class:`PolynomialBasis` of a grid, built once per process and shape (each image of a
    stack, and the mask's and the final fit of one image, share it; read-only)."""
    return PolynomialBasis(shape, order)


def polynomial_coefficients(
    phase: np.ndarray, *, order: int = 2, mask: np.ndarray | None = None
) -> np.ndarray:
    """Least-squares coefficients of ``sum c_ij y^i x^j`` (coordinates in [-1, 1]) over ``mask``.

    Terms are ordered as total degree, then by power of ``y`` (``1, x, y, x^2, xy, y^2, ...``).
    The fit uses a regular subgrid of at most ``MAX_FIT_SAMPLES`` pixels and ignores non-finite
    pixels.
    """
    p = _check_phase(phase)
    if mask is None:
        keep = np.ones(p.shape, dtype=bool)
    else:
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != p.shape:
            raise InputError(
                f"The background mask has shape {keep.shape} but the phase has shape {p.shape}."
            )
    return polynomial_basis(p.shape, _check_order(order)).coefficients(p, keep)


def evaluate_polynomial(coef: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """The polynomial of :func:`polynomial_coefficients` on a ``shape`` grid (float32)."""
    h, w = shape
    y = _axis(h)
    x = _axis(w)
    out = np.zeros((h, w), dtype=np.float32)
    by_y: dict[int, np.ndarray] = {}
    for c, (i, j) in zip(coef, _powers(order), strict=True):
        by_y[i] = by_y.get(i, 0.0) + c * x**j
    for i, row in by_y.items():
        out += np.outer(y**i, row).astype(np.float32)
    return out


def fit_background(
    phase: np.ndarray, *, order: int = 2, mask: np.ndarray | None = None
) -> np.ndarray:
    """Least-squares 2-D polynomial of total degree ``order`` over the ``mask`` pixels (float32).

    ``order`` 0 is the mean background phase, 1 adds tilt, 2 defocus and astigmatism, 3 coma.
    ``mask`` (True = background) defaults to all pixels. Returns the background on the full grid,
    in the units of ``phase`` (radians).
    """
    p = _check_phase(phase)
    coef = polynomial_coefficients(p, order=order, mask=mask)
    return evaluate_polynomial(coef, p.shape, order)


def _thin(values: np.ndarray, limit: int = 16384) -> np.ndarray:
    """A regular subsample of at most about ``limit`` values (for medians)."""
    return values[:: max(1, values.size // limit)]


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array of finite values, rounded as it rounds (the mean of the two
    middle values in the array's dtype), without its general-purpose overhead (the background
    fits take a few dozen medians of a few thousand values per image)."""
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)  # np.median's mean of integers is a float
    n = values.size
    middle = n // 2
    if n % 2:
        return float(np.partition(values, middle)[middle])
    pair = np.partition(values, (middle - 1, middle))[middle - 1 : middle + 1]
    return float(values.dtype.type(pair.sum() / 2))


def noise_sigma(residual: np.ndarray) -> float:
    """Standard deviation of the background noise in a residual whose background sits at 0.

    Cells make a one-sided tail (all of them rise above the medium, or all sink below it, depending
    on the sign convention), so each side's median absolute value is computed apart and the smaller
    one, the side the cells do not reach, is taken (``1.4826 * median`` of a half-normal is its
    sigma). In radians when the residual is.
    """
    r = _thin(residual[np.isfinite(residual)])
    # median(|side|) of the negative side is -median(side): no absolute values needed
    sides = [(r[r < 0], -1.0), (r[r > 0], 1.0)]
    sigmas = [1.4826 * sign * _median(side) for side, sign in sides if side.size >= 8]
    if not sigmas:
        return 1e-6
    return min(sigmas) + 1e-6


def border_frame(shape: tuple[int, int], width: int) -> np.ndarray:
    """True on a frame ``width`` pixels wide along the image border."""
    frame = np.zeros(shape, dtype=bool)
    frame[:width] = frame[-width:] = True
    frame[:, :width] = frame[:, -width:] = True
    return frame


#: Tukey biweight tuning constant (95% efficiency for Gaussian noise), in noise sigmas.
BIWEIGHT_C = 4.685


def robust_fit(
    phase: np.ndarray,
    *,
    order: int,
    mask: np.ndarray,
    iterations: int = 6,
    basis: PolynomialBasis | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial background over ``mask`` that ignores the cells among those pixels.

    Least squares refitted with a hard cut-off (at Tukey's biweight limit): pixels more than
    ``BIWEIGHT_C`` noise sigmas (:func:`noise_sigma`) from the current fit get no weight, so a cell
    that covers part of ``mask`` (a border frame crossed by cells, a crowded field) does not pull
    the fit. Returns the background (float32, on the full grid) and the pixels that kept weight.
    ``basis`` (of ``phase``'s grid and ``order``) saves building the polynomial terms again.
    """
    keep = mask & np.isfinite(phase)
    values = np.where(keep, phase, 0).astype(np.float32)
    if basis is None or basis.shape != values.shape or basis.order != order:
        basis = polynomial_basis(values.shape, order)
    background = basis.fit(values, keep)
    inliers = keep
    for _ in range(iterations):
        resid = values - background
        sigma = noise_sigma(resid[keep])
        new = keep & (np.abs(resid) < BIWEIGHT_C * sigma)
        if np.count_nonzero(new) < max(4 * len(_powers(order)), 16):
            break
        if np.array_equal(new, inliers):
            break
        inliers = new
        background = basis.fit(values, inliers)
    return background, inliers


def background_mask(
    phase: np.ndarray,
    *,
    order: int = 2,
    threshold: float = 3.0,
    margin_px: int | None = None,
    iterations: int = 4,
    return_background: bool = False,
    grid: int = MASK_GRID,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Automatic background pixels (True) of an unwrapped phase image.

    The medium is flat once a smooth background is removed, with only noise left, while cells are
    excursions of one sign. Three steps, each robust to cells covering much of the field:

    1. a robust polynomial fit (:func:`robust_fit`) on a border frame, 5% of the smaller side wide,
       where cells are rarest (qpimage's border fit, with the cells that cross it rejected);
    2. every pixel within ``threshold`` noise sigmas (:func:`noise_sigma`, from the side the cells
       do not reach) of that fit is background, less a guard band of ``margin_px`` around what is
       not (the ringing halo at cell edges);
    3. a robust refit over those pixels and a new classification, ``iterations`` times or until
       the mask stops changing.

    Works when one cell fills half the field, when cells crowd it and on curved backgrounds
    (measured on the real HL60 corpus, ``benchmarks/real_holograms.py``). Sign-agnostic, so the
    result can decide the sign of the phase. Large images are classified on a subgrid of at most
    ``grid`` pixels on a side (default :data:`MASK_GRID`).

    Parameters
    ----------
    phase
        Unwrapped phase in radians.
    order
        Polynomial order of the background.
    threshold
        Deviation from the background, in noise sigmas, that marks a cell pixel.
    margin_px
        Width of the guard band around excluded regions; by default 1% of the smaller side (>= 2).
    iterations
        Refit / classify rounds after the border fit.
    return_background
        Also return the last fitted background (float32, full grid).
    grid
        Most pixels on a side of the subgrid the pixels are classified on (every ``stride``-th
        pixel, ``stride = ceil(max(shape) / grid)``; the mask is then repeated to the full grid).
    """
    full = _check_phase(phase)
    order = _check_order(order)
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 8:
        raise InputError(f"The mask grid must be an integer >= 8 pixels, got {grid!r}.")
    stride = max(1, math.ceil(max(full.shape) / grid))
    p = full[::stride, ::stride]
    h, w = p.shape
    if margin_px is None:
        margin_px = max(2, round(0.01 * min(full.shape)))
    margin_px = math.ceil(margin_px / stride)
    finite = np.isfinite(p)
    pf = np.where(finite, p, 0).astype(np.float32)
    frame = border_frame((h, w), max(2, round(0.05 * min(h, w))))
    basis = polynomial_basis((h, w), order)
    background, _ = robust_fit(pf, order=order, mask=frame & finite, basis=basis)
    mask = frame & finite
    for _ in range(iterations + 1):
        resid = pf - background
        sigma = noise_sigma(resid[mask])
        new = finite & (np.abs(resid) <= threshold * sigma)
        if margin_px > 0:
            new &= ~ndimage.binary_dilation(~new & finite, iterations=margin_px)
        if np.count_nonzero(new) < max(4 * len(_powers(order)), 16):
            break
        if np.array_equal(new, mask):
            break
        mask = new
        background, _ = robust_fit(pf, order=order, mask=mask, basis=basis)
    if stride > 1:
        mask = np.repeat(np.repeat(mask, stride, axis=0), stride, axis=1)
        mask = mask[: full.shape[0], : full.shape[1]] & np.isfinite(full)
    if not return_background:
        return mask
    return mask, fit_background(full, order=order, mask=mask)
