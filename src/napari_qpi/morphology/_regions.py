"""Region helpers of the segmentation: background, noise, holes, watershed markers, merges.

Pure numpy/scipy on 2-D arrays in pixels; :mod:`.segment` turns them into a segmentation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def lower_sigma(values: np.ndarray, level: float = 0.0) -> float:
    """Noise sigma from the values below ``level`` (a one-sided MAD: cells only add phase)."""
    below = level - values[values < level]
    return float(1.4826 * np.median(below)) if below.size else 0.0


def smooth_background(
    image: np.ndarray, valid: np.ndarray, sigma_px: float, fallback: float
) -> np.ndarray:
    """A smooth surface through the ``valid`` (background) pixels of ``image`` (rad).

    Normalised convolution: a Gaussian of ``sigma_px`` averages the background pixels only, so
    cells do not pull it up; where no background pixel is within reach, ``fallback`` is used.
    """
    weight = valid.astype(np.float64)
    num = ndi.gaussian_filter(np.where(valid, image, 0.0), sigma_px, mode="nearest")
    den = ndi.gaussian_filter(weight, sigma_px, mode="nearest")
    ok = den > 1e-3
    surface = np.full(image.shape, fallback, dtype=np.float64)
    surface[ok] = num[ok] / den[ok]
    return surface


def merge_small_regions(labels: np.ndarray, min_px: float) -> np.ndarray:
    """Merge regions smaller than ``min_px`` into the neighbour they share the longest border with.

    Watershed slivers at the edge of a cluster belong to a cell, not to a cell of their own;
    isolated small regions are left for the area filter. Labels are renumbered 1..N.
    """
    n = int(labels.max())
    if n < 2:
        return labels
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes[1:] < min_px) + 1
    if small.size == 0:
        return labels
    border: dict[tuple[int, int], int] = {}
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        for p, q in zip(a[touch].tolist(), b[touch].tolist(), strict=True):
            border[(p, q)] = border.get((p, q), 0) + 1
            border[(q, p)] = border.get((q, p), 0) + 1
    lut = np.arange(n + 1)
    for s in small[np.argsort(sizes[small])]:
        best = max(
            ((q, c) for (p, q), c in border.items() if p == s and sizes[q] >= min_px),
            key=lambda item: item[1],
            default=None,
        )
        if best is not None:
            lut[s] = best[0]
    _, renumbered = np.unique(lut, return_inverse=True)
    return renumbered.astype(np.int32)[labels]


def half_sample_mode(values: np.ndarray) -> float:
    """Mode of a sample by repeatedly keeping the densest half (Bickel's half-sample mode)."""
    x = np.sort(values, axis=None)
    while x.size > 3:
        half = (x.size + 1) // 2
        widths = x[half - 1 :] - x[: x.size - half + 1]
        start = int(np.argmin(widths))
        x = x[start : start + half]
    if x.size == 3:
        x = x[:2] if x[1] - x[0] < x[2] - x[1] else x[1:] if x[1] - x[0] > x[2] - x[1] else x[1:2]
    return float(np.mean(x))


def fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    holes, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    on_border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = sizes <= max_hole_px
    fill[0] = False
    fill[on_border] = False
    return mask | fill[holes]


def watershed_markers(
    mask: np.ndarray, smoothed: np.ndarray, kind: str, min_distance_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Watershed markers (int32) and the surface they are the peaks of."""
    from skimage.feature import peak_local_max

    components, n = ndi.label(mask)
    surface = ndi.distance_transform_edt(mask) if kind == "distance" else smoothed
    if kind == "distance":
        surface = ndi.gaussian_filter(surface, 0.5)
    peaks = peak_local_max(
        surface,
        min_distance=max(1, min_distance_px),
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    without = np.setdiff1d(np.arange(1, n + 1), np.unique(components[markers > 0]))
    if without.size:
        positions = ndi.maximum_position(surface, components, without)
        for k, pos in enumerate(positions, start=len(peaks) + 1):
            markers[pos] = k
    return markers, surface


def merge_wide_necks(labels: np.ndarray, surface: np.ndarray, ratio: float) -> np.ndarray:
    """Merge watershed regions joined by a neck nearly as wide as the smaller region.

    ``surface`` is the distance transform of the mask (px). Two touching cells meet at a narrow
    neck: the distance transform at the saddle between them is well below the smaller cell's peak
    (about 0.5-0.9 of it for cells overlapping by up to 15%). A bulge of one irregular cell is
    joined to the rest by a broad neck (0.91-1.0 on adherent-cell phantoms). Regions whose saddle
    is at least ``ratio`` times the smaller peak are merged; labels are renumbered 1..N.
    """
    n = int(labels.max())
    if n < 2:
        return labels
    keys, saddles = [], []
    for a, b, da, db in (
        (labels[:, :-1], labels[:, 1:], surface[:, :-1], surface[:, 1:]),
        (labels[:-1], labels[1:], surface[:-1], surface[1:]),
    ):
        touch = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        keys.append(lo.astype(np.int64) * (n + 1) + hi)
        saddles.append(np.minimum(da[touch], db[touch]))
    key, saddle = np.concatenate(keys), np.concatenate(saddles)
    if key.size == 0:
        return labels
    unique, inverse = np.unique(key, return_inverse=True)
    best = np.zeros(unique.size)
    np.maximum.at(best, inverse, saddle)
    peak = np.zeros(n + 1)
    peak[1:] = ndi.maximum(surface, labels, np.arange(1, n + 1))
    first, second = unique // (n + 1), unique % (n + 1)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(-best / np.minimum(peak[first], peak[second])):
        ra, rb = root(int(first[k])), root(int(second[k]))
        if ra != rb and best[k] >= ratio * min(peak[ra], peak[rb]):
            parent[rb] = ra
            peak[ra] = max(peak[ra], peak[rb])
    roots = np.array([root(i) for i in range(n + 1)])
    _, lut = np.unique(roots, return_inverse=True)
    return lut.astype(np.int32)[labels]


def _plane_level(ys: np.ndarray, xs: np.ndarray, values: np.ndarray, centre: np.ndarray) -> float:
    """Level at ``centre`` of a plane fitted to ring pixels, refitted without 3-sigma outliers."""
    design = np.column_stack([np.ones(ys.size), ys - centre[0], xs - centre[1]])
    keep = np.ones(values.size, dtype=bool)
    coef = np.zeros(3)
    for _ in range(2):
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = values - design @ coef
        spread = 1.4826 * np.median(np.abs(residual[keep])) + 1e-12
        keep = np.abs(residual) <= 3 * spread
        if keep.sum() < 3:
            break
    return float(coef[0])


def ring_backgrounds(
    image: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    margin_px: int,
    gap_px: int = 2,
    width_px: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local background of each cell from a ring around it (rad), and its integration region.

    Each cell's region is its label grown by ``margin_px`` (without entering another cell: the
    faint rim of a cell lies below the outline threshold and carries mass). Its ring lies
    ``gap_px`` beyond that and is ``width_px`` wide (default: half the median equivalent
    radius, at least 6 px); ring pixels closer to another cell, inside any cell's region or
    undefined (NaN) are left out. A plane is fitted to the ring (two passes, 3-sigma outliers
    out), and the background is its level at the region's centroid: the mean of the plane over the
    region, exact for a linear background. A ring of fewer than 12 pixels (a cell inside a
    cluster) falls back to its median, and an empty one to the median of all background pixels.

    Returns ``(background_rad per id, region labels, ring pixel count per id)``.
    """
    from skimage.segmentation import expand_labels

    valid = np.isfinite(image)
    region = expand_labels(labels, margin_px) if margin_px > 0 else labels
    if width_px is None:
        areas = np.bincount(labels.ravel())[ids] if ids.size else np.ones(1)
        width_px = max(6, round(np.sqrt(np.median(areas) / np.pi) / 2))
    guard = expand_labels(labels, margin_px + gap_px)
    outer = expand_labels(labels, margin_px + gap_px + width_px)
    ring = np.where((guard == 0) & valid, outer, 0)
    outside = image[(guard == 0) & valid]
    fallback = float(np.median(outside)) if outside.size else 0.0
    backgrounds = np.full(ids.size, fallback)
    counts = np.zeros(ids.size, dtype=np.int64)
    if ids.size == 0:
        return backgrounds, region, counts
    centres = np.asarray(ndi.center_of_mass(np.ones(labels.shape), region, ids)).reshape(-1, 2)
    ys, xs = np.nonzero(ring)
    owner = ring[ys, xs]
    order = np.argsort(owner, kind="stable")
    ys, xs, owner = ys[order], xs[order], owner[order]
    starts = np.searchsorted(owner, ids)
    ends = np.searchsorted(owner, ids, side="right")
    for k, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        counts[k] = hi - lo
        if hi - lo >= 12:
            y, x = ys[lo:hi], xs[lo:hi]
            backgrounds[k] = _plane_level(y, x, image[y, x], centres[k])
        elif hi > lo:
            backgrounds[k] = float(np.median(image[ys[lo:hi], xs[lo:hi]]))
    return backgrounds, region, counts


def outline(
    flat: np.ndarray, seeds: np.ndarray, valid: np.ndarray, edge_rad: float | None
) -> np.ndarray:
    """The connected regions of ``flat > edge_rad`` that hold a seed (hysteresis)."""
    if edge_rad is None:
        return seeds
    region = (flat > edge_rad) & valid
    region_labels, _ = ndi.label(region, structure=np.ones((3, 3)))
    keep = np.zeros(int(region_labels.max()) + 1, dtype=bool)
    keep[np.unique(region_labels[seeds & region])] = True
    keep[0] = False
    return keep[region_labels]


def typical_radius(mask: np.ndarray) -> float:
    """Typical inscribed radius (px) of the objects of ``mask``: the area-weighted median.

    Each object's inscribed radius is the peak of the distance transform (a cluster of touching
    cells has about one cell's). Weighting by area makes many small specks (noise, edge
    artefacts of the retrieval) count for little next to one large cell.
    """
    components, n = ndi.label(mask)
    if n == 0:
        return math.nan
    dist = ndi.distance_transform_edt(mask)
    index = np.arange(1, n + 1)
    peaks = np.asarray(ndi.maximum(dist, components, index), dtype=np.float64)
    areas = np.bincount(components.ravel(), minlength=n + 1)[1:].astype(np.float64)
    order = np.argsort(peaks)
    cumulative = np.cumsum(areas[order])
    return float(peaks[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def filter_objects(
    labels: np.ndarray,
    valid: np.ndarray,
    min_px: float,
    max_px: float | None,
    exclude_border: bool,
) -> tuple[np.ndarray, dict[str, int]]:
    """Remove objects that are too small or large, touch the border or an undefined region."""
    n = int(labels.max())
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    reasons = {
        "small": sizes < min_px,
        "large": sizes > max_px if max_px is not None else np.zeros(n + 1, bool),
        "border": np.zeros(n + 1, bool),
        "nan": np.zeros(n + 1, bool),
    }
    if exclude_border:
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        reasons["border"][np.unique(edge)] = True
    if not valid.all():
        reasons["nan"][np.unique(labels[ndi.binary_dilation(~valid)])] = True
    drop = np.zeros(n + 1, bool)
    removed = {}
    for name, flags in reasons.items():
        flags[0] = False
        removed[name] = int((flags & ~drop).sum())
        drop |= flags
    lut = np.zeros(n + 1, dtype=np.int32)
    kept = np.flatnonzero(~drop[1:]) + 1
    lut[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return lut[labels], removed
