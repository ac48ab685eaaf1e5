"""2-D phase unwrapping.

The default is the unweighted least-squares solution (Ghiglia & Romero 1994): the phase whose
gradient best matches the wrapped gradient of the data, found by solving a Poisson equation with
Neumann boundaries through the discrete cosine transform. It is then made congruent to the data
(``wrapped + 2 pi k``) so it keeps the data's values exactly. Where the wrapped gradient has no
residues (closed loops summing to a non-zero multiple of 2 pi) this is exact; with residues the
result is checked and, if it has many more 2 pi jumps than the residues require, the quality-guided
unwrapper of scikit-image (Herráez et al. 2002) is tried in boxes around the jumps (the whole image
if needed) and the result with fewer jumps kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import InputError
from ..threads import fft_workers

UnwrapMethod = Literal["auto", "ls", "quality"]
_TWO_PI = np.float32(2 * np.pi)
#: ``"auto"`` tries the quality-guided unwrapper when the least-squares result has more 2 pi jumps
#: than this many per residue. Short branch cuts between residue pairs need fewer; more means
#: least squares probably left 2 pi islands (seen on thick cells at 2048^2: 94 jumps for 46
#: residues with LS, 70 and a third of the error with the quality-guided repair).
JUMPS_PER_RESIDUE = 1
#: Pixels added around 2 pi jumps to form the boxes that ``"auto"`` re-unwraps locally.
REPAIR_MARGIN_PX = 8


@dataclass(frozen=True)
class UnwrapReport:
    """How an unwrapping went.

    Attributes
    ----------
    method
        The method whose result was kept: ``"ls"``, ``"ls+local"`` (least squares repaired
        locally with the quality-guided method) or ``"quality"``.
    residues
        Number of 2x2 loops of the wrapped data whose wrapped differences sum to +-2 pi.
    jumps
        Number of neighbour pairs in the result that differ by more than pi (0 is a clean result).
    """

    method: str
    residues: int
    jumps: int


def wrap(phase: np.ndarray) -> np.ndarray:
    """Phase wrapped into ``[-pi, pi)``."""
    return phase - _TWO_PI * np.floor(phase / _TWO_PI + np.float32(0.5))


def _wrapped_gradients(wrapped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(wrapped, dtype=np.float32)
    return wrap(np.diff(w, axis=0)), wrap(np.diff(w, axis=1))


def _residues(dy: np.ndarray, dx: np.ndarray) -> int:
    loop = dx[:-1, :] + dy[:, 1:] - dx[1:, :] - dy[:, :-1]
    return int(np.count_nonzero(np.abs(loop) > np.pi))


def count_residues(wrapped: np.ndarray) -> int:
    """Number of phase residues: 2x2 loops whose wrapped differences do not sum to zero."""
    return _residues(*_wrapped_gradients(wrapped))


def count_jumps(phase: np.ndarray) -> int:
    """Number of horizontally or vertically adjacent pixel pairs differing by more than pi."""
    p = np.asarray(phase, dtype=np.float32)
    return int(
        np.count_nonzero(np.abs(np.diff(p, axis=0)) > np.pi)
        + np.count_nonzero(np.abs(np.diff(p, axis=1)) > np.pi)
    )


def jump_mask(phase: np.ndarray) -> np.ndarray:
    """Pixels next to a 2 pi jump of an unwrapped phase (True): where unwrapping may have failed.

    A pixel is marked when it differs from a horizontal or vertical neighbour by more than pi, the
    same test :func:`count_jumps` counts; shown over the phase, it says which cells to distrust.
    """
    p = np.asarray(phase, dtype=np.float32)
    bad = np.zeros(p.shape, dtype=bool)
    jump_y = np.abs(np.diff(p, axis=0)) > np.pi
    jump_x = np.abs(np.diff(p, axis=1)) > np.pi
    bad[:-1] |= jump_y
    bad[1:] |= jump_y
    bad[:, :-1] |= jump_x
    bad[:, 1:] |= jump_x
    return bad


def least_squares_unwrap(wrapped: np.ndarray) -> np.ndarray:
    """Unweighted least-squares unwrapped phase (not yet congruent to the data), float32.

    Solves ``laplacian(phi) = div(wrap(grad(wrapped)))`` with Neumann boundaries via a DCT-II:
    ``Phi[k, l] = rho[k, l] / (2 cos(pi k / M) + 2 cos(pi l / N) - 4)``. The mean is free; it is
    set so that the result stays near the data.
    """
    w = np.asarray(wrapped, dtype=np.float32)
    return _least_squares(w, *_wrapped_gradients(w))


def _least_squares(w: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    m, n = w.shape
    rho = np.zeros((m, n), dtype=np.float32)
    rho[:, :-1] += dx
    rho[:, 1:] -= dx
    rho[:-1, :] += dy
    rho[1:, :] -= dy
    spec = sfft.dctn(rho, type=2, norm="ortho", workers=fft_workers())
    ky = np.cos(np.pi * np.arange(m, dtype=np.float32) / m)[:, None]
    kx = np.cos(np.pi * np.arange(n, dtype=np.float32) / n)[None, :]
    denom = 2 * ky + 2 * kx - 4
    denom[0, 0] = 1.0
    spec /= denom
    spec[0, 0] = 0.0
    phi = sfft.idctn(spec, type=2, norm="ortho", workers=fft_workers()).astype(
        np.float32, copy=False
    )
    phi += np.float32(np.mean(wrap(w - phi)))
    return phi


def make_congruent(wrapped: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """``wrapped + 2 pi k`` with the integer ``k`` per pixel nearest to ``estimate``."""
    return wrapped + _TWO_PI * np.round((estimate - wrapped) / _TWO_PI)


def _quality_unwrap(wrapped: np.ndarray) -> np.ndarray:
    from skimage.restoration import unwrap_phase as sk_unwrap

    return sk_unwrap(np.asarray(wrapped, dtype=np.float64)).astype(np.float32)


def _repair_locally(wrapped: np.ndarray, unwrapped: np.ndarray, margin: int) -> np.ndarray | None:
    """Re-unwrap with the quality-guided method only in boxes around 2 pi jumps.

    Each box (the jumps grown by ``margin`` pixels) is unwrapped on its own and shifted by the
    multiple of 2 pi that matches ``unwrapped`` on the box's border. ``None`` when the border does
    not agree on one multiple (the error reaches beyond the box) or the boxes cover a quarter of
    the image: then only a global unwrapping helps.
    """
    m, n = unwrapped.shape
    bad = jump_mask(unwrapped)
    grown = ndimage.maximum_filter(bad, size=2 * margin + 1)
    labels, _ = ndimage.label(grown)
    boxes = [b for b in ndimage.find_objects(labels) if b is not None]
    if sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes) > 0.25 * m * n:
        return None
    repaired = unwrapped.copy()
    for rows, cols in boxes:
        rows = slice(max(rows.start - 1, 0), min(rows.stop + 1, m))
        cols = slice(max(cols.start - 1, 0), min(cols.stop + 1, n))
        local = _quality_unwrap(wrapped[rows, cols])
        border = np.zeros(local.shape, dtype=bool)
        if rows.start > 0:
            border[0] = True
        if rows.stop < m:
            border[-1] = True
        if cols.start > 0:
            border[:, 0] = True
        if cols.stop < n:
            border[:, -1] = True
        if not border.any():
            return None
        turns = np.round((repaired[rows, cols][border] - local[border]) / _TWO_PI)
        if turns.min() != turns.max():
            return None
        repaired[rows, cols] = local + _TWO_PI * np.float32(turns[0])
    return repaired


@overload
def unwrap_phase(
    wrapped: np.ndarray, *, method: UnwrapMethod = ..., return_report: Literal[False] = ...
) -> np.ndarray: ...


@overload
def unwrap_phase(
    wrapped: np.ndarray, *, method: UnwrapMethod = ..., return_report: Literal[True]
) -> tuple[np.ndarray, UnwrapReport]: ...


def unwrap_phase(
    wrapped: np.ndarray, *, method: UnwrapMethod = "auto", return_report: bool = False
) -> np.ndarray | tuple[np.ndarray, UnwrapReport]:
    """Unwrap a 2-D phase map in radians (float32 out).

    Parameters
    ----------
    wrapped
        Wrapped phase in radians, any range (it is re-wrapped), 2-D, finite.
    method
        ``"ls"``: least squares made congruent to the data (fast; exact without residues).
        ``"quality"``: scikit-image's reliability-sorting unwrapper. ``"auto"``: ``"ls"``; where
        it leaves more than ``JUMPS_PER_RESIDUE`` 2 pi jumps per residue, ``"quality"`` is run
        in boxes around the jumps (or on the whole image if that cannot be matched up), and the
        result with fewer jumps is kept.
    return_report
        Also return an :class:`UnwrapReport`.
    """
    w = np.asarray(wrapped)
    if w.ndim != 2 or min(w.shape) < 2:
        raise InputError(f"Phase unwrapping needs a 2-D image, got shape {w.shape}.")
    if np.iscomplexobj(w):
        raise InputError("Phase unwrapping needs real phase values in radians, got complex values.")
    w = wrap(np.asarray(w, dtype=np.float32))
    if not np.isfinite(w).all():
        raise InputError("The wrapped phase contains NaN or infinite values.")
    if method not in ("auto", "ls", "quality"):
        raise InputError(f"Unknown unwrapping method {method!r}; use 'auto', 'ls' or 'quality'.")
    dy, dx = _wrapped_gradients(w)
    residues = _residues(dy, dx)
    if method == "quality":
        out = _quality_unwrap(w)
        report = UnwrapReport("quality", residues, count_jumps(out))
    else:
        out = make_congruent(w, _least_squares(w, dy, dx))
        jumps = count_jumps(out)
        report = UnwrapReport("ls", residues, jumps)
        if method == "auto" and jumps > JUMPS_PER_RESIDUE * residues:
            alt, name = _repair_locally(w, out, REPAIR_MARGIN_PX), "ls+local"
            if alt is None:
                alt, name = _quality_unwrap(w), "quality"
            alt_jumps = count_jumps(alt)
            if alt_jumps < jumps:
                out, report = alt, UnwrapReport(name, residues, alt_jumps)
    return (out, report) if return_report else out
