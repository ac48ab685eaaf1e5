"""Procedural piecewise-constant objects: sharp-edged phase plates unlike cells or photographs.

Simulated cells are smooth domes and crops of photographs are textured; a CDP network trained on
those alone has never seen a field that is flat over large areas and jumps by a large fraction
of its range across one pixel (a binary phase plate, a lithographic test target, an etched
pattern, a silhouette). :func:`shape_objects` draws such fields from four kinds of generator, all
written here from random numbers (no stored image is used):

``"shapes"``
    A random background level and 1 to 8 filled figures painted over each other, each with its
    own random level: ellipses (any axis ratio and orientation), rotated rectangles and
    star-shaped polygons of 3 to 9 random vertices.
``"blobs"``
    Gaussian white noise low-pass filtered at a random correlation length (1.5 to 10 px),
    thresholded at 1 to 3 random quantiles: a field of 2 to 4 levels with curved, random
    boundaries.
``"periodic"``
    Square-wave stripes, or the product of two square waves (a checker or a grid), at a random
    period (4 to 32 px), orientation, duty cycle and phase offset; two random levels.
``"mixture"``
    A figure or blob field of the kinds above plus a smooth random field (correlation length 4
    to 16 px) of random weight: sharp edges over a smooth background.

Figures are rasterised on a grid ``SUPERSAMPLE`` times finer and block-averaged, so an edge is
the pixel-area average of the two levels (as a camera integrates it), not a staircase.

Each field I is scaled to [0, 1] (min 0, max 1) and used as phase ``phi = p * I`` radians with
``p`` drawn from ``max_phase_rad``; a fraction of the objects also gets an amplitude
``a0 + (a1 - a0) * I2`` from an independent field I2: the conventions of
:func:`napari_qpi.physics.cdp.image_objects`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.ndimage

from ..errors import InputError

SeedLike = int | np.random.Generator | None

#: The generators :func:`shape_objects` draws from, and how often (probabilities sum to 1).
SHAPE_KINDS: dict[str, float] = {"shapes": 0.35, "blobs": 0.25, "periodic": 0.15, "mixture": 0.25}
#: Rasterisation grid is this many times finer than the object grid (edges are area averages).
SUPERSAMPLE = 4


def _normalise(field: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant field becomes 0."""
    field = field - field.min()
    span = float(field.max())
    return field / span if span > 1e-9 else np.zeros_like(field)


def _downsample(fine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Block mean of a (SUPERSAMPLE * H, SUPERSAMPLE * W) field to (H, W)."""
    h, w = shape
    return fine.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))


def _fine_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (y, x) of the fine grid's sample centres, in object pixels."""
    h, w = shape
    y = (np.arange(h * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    x = (np.arange(w * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    return np.meshgrid(y, x, indexing="ij")


def _figure(rng: np.random.Generator, fine_shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Fine-grid pixel indices (rows, cols) of one random ellipse, rectangle or polygon."""
    from skimage.draw import ellipse, polygon

    h, w = fine_shape
    cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
    radius = min(h, w) * rng.uniform(0.06, 0.45)
    angle = rng.uniform(0, np.pi)
    kind = rng.integers(3)
    if kind == 0:
        aspect = rng.uniform(0.25, 1.0)
        return ellipse(cy, cx, aspect * radius, radius, shape=fine_shape, rotation=angle)
    if kind == 1:  # rectangle: corners (+-1, +-aspect) * radius, rotated
        aspect = rng.uniform(0.1, 1.0)
        theta = angle + np.arctan2([aspect, aspect, -aspect, -aspect], [1, -1, -1, 1])
        r = np.full(4, radius * np.hypot(1.0, aspect))
    else:  # star-shaped polygon: 3 to 9 vertices at sorted random angles, straight edges
        vertices = int(rng.integers(3, 10))
        theta = angle + np.sort(rng.uniform(0, 2 * np.pi, vertices))
        r = radius * rng.uniform(0.35, 1.0, vertices)
    return polygon(cy + r * np.sin(theta), cx + r * np.cos(theta), shape=fine_shape)


def figures_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """``"shapes"``: figures of random levels painted over a random background, (H, W)."""
    fine = np.full((shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE), rng.uniform())
    for _ in range(int(rng.integers(1, 9))):
        fine[_figure(rng, fine.shape)] = rng.uniform()
    return _downsample(fine, shape)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], length_px: float) -> np.ndarray:
    """White Gaussian noise low-pass filtered (Gaussian, sigma ``length_px``), wrapped, (H, W)."""
    noise = rng.standard_normal(shape)
    return scipy.ndimage.gaussian_filter(noise, length_px, mode="wrap")


def blobs_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """``"blobs"``: smooth noise thresholded at 1 to 3 random quantiles, 2 to 4 levels, (H, W)."""
    noise = scipy.ndimage.zoom(
        smooth_noise(rng, shape, rng.uniform(1.5, 10.0)), SUPERSAMPLE, order=1, mode="grid-wrap"
    )
    cuts = np.quantile(noise, np.sort(rng.uniform(0.2, 0.8, int(rng.integers(1, 4)))))
    levels = rng.permutation(rng.uniform(size=len(cuts) + 1))
    return _downsample(levels[np.searchsorted(cuts, noise)], shape)


def periodic_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """``"periodic"``: square-wave stripes, checker or grid at a random period and angle."""
    y, x = _fine_grid(shape)
    period = rng.uniform(4.0, 32.0)
    angle = rng.uniform(0, np.pi)
    duty = rng.uniform(0.3, 0.7)

    def wave(theta: float) -> np.ndarray:
        t = (x * np.cos(theta) + y * np.sin(theta)) / period + rng.uniform()
        return (t - np.floor(t)) < duty

    pattern = wave(angle)
    style = rng.integers(3)
    if style == 1:  # checker
        pattern = pattern ^ wave(angle + np.pi / 2)
    elif style == 2:  # grid of lines
        pattern = pattern | wave(angle + np.pi / 2)
    low, high = rng.uniform(size=2)
    return _downsample(np.where(pattern, high, low), shape)


def mixture_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """``"mixture"``: a figure or blob field plus a smooth random field of random weight."""
    sharp = figures_field(rng, shape) if rng.random() < 0.5 else blobs_field(rng, shape)
    smooth = _normalise(smooth_noise(rng, shape, rng.uniform(4.0, 16.0)))
    return _normalise(sharp) + rng.uniform(0.2, 1.0) * smooth


FIELDS: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "shapes": figures_field,
    "blobs": blobs_field,
    "periodic": periodic_field,
    "mixture": mixture_field,
}


def shape_field(
    rng: np.random.Generator, shape: tuple[int, int], kind: str | None = None
) -> np.ndarray:
    """One field of ``kind`` (default: drawn with :data:`SHAPE_KINDS`), float64 in [0, 1], (H, W).

    Redrawn (up to 10 times) while it is flat: a constant field carries no phase.
    """
    if kind is not None and kind not in FIELDS:
        raise InputError(f"Unknown shape kind {kind!r}: choose from {sorted(FIELDS)}.")
    for _ in range(10):
        pick = kind or str(rng.choice(list(SHAPE_KINDS), p=list(SHAPE_KINDS.values())))
        field = _normalise(FIELDS[pick](rng, shape))
        if field.std() > 0.05:
            break
    return field


def shape_objects(
    n: int,
    shape: tuple[int, int],
    *,
    max_phase_rad: float | tuple[float, float] = (0.5, 3.0),
    amplitude_range: tuple[float, float] = (0.5, 1.0),
    phase_only_fraction: float = 0.5,
    kinds: Sequence[str] | None = None,
    seed: SeedLike = None,
) -> np.ndarray:
    """Piecewise-constant objects (see the module docstring), complex64 (n, H, W).

    Phase ``p * I`` in [0, p] radians with ``p`` drawn from ``max_phase_rad``; a
    ``phase_only_fraction`` of the objects has unit amplitude, the others an amplitude in
    ``amplitude_range`` from an independent field. ``kinds``: restrict to these generators
    (drawn uniformly among them; default all, with the weights of :data:`SHAPE_KINDS`).
    """
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"Shape objects need a 2-D shape (H, W), got {shape}.")
    lo, hi = amplitude_range
    if not 0 <= lo <= hi:
        raise InputError(f"amplitude_range must satisfy 0 <= low <= high, got {amplitude_range}.")
    rng = np.random.default_rng(seed)
    out = np.empty((n, *shape), np.complex64)
    for i in range(n):
        kind = None if kinds is None else str(rng.choice(list(kinds)))
        peak = (
            float(max_phase_rad)
            if isinstance(max_phase_rad, (int, float))
            else rng.uniform(*max_phase_rad)
        )
        phase = peak * shape_field(rng, shape, kind)
        if rng.random() < phase_only_fraction:
            amplitude = np.ones(shape)
        else:
            amplitude = lo + (hi - lo) * shape_field(rng, shape)
        out[i] = amplitude * np.exp(1j * phase)
    return out


__all__ = ["FIELDS", "SHAPE_KINDS", "shape_field", "shape_objects", "smooth_noise"]
