"""Cell segmentation on a phase image (rad), with sizes and levels learnt from the image.

1. Non-finite pixels (NaN regions: outside an aperture, failed unwrapping) are set aside: they are
   filled with the background level for the filters, and cells touching them are dropped (their
   mass is incomplete) with a warning that counts them.
2. Background and noise. The phase is smoothed with a Gaussian (``smoothing_sigma_px``). A first
   background level is the mode of the smoothed phase (background pixels outnumber any single
   phase level inside cells). With ``flatten_background`` a smooth surface is then fitted to the
   pixels outside the cells (normalised Gaussian convolution over 1/8 of the field, twice, the cell
   mask refined in between), so a residual offset, slope or bump left by the retrieval's background
   fit does not decide which pixels are cells. The noise sigma is a one-sided robust spread (MAD)
   of the pixels *below* that background: cells only add phase, so it includes correlated noise
   and background roughness and is not inflated by cells. The offset (median of the background
   surface) is reported.
3. Detection: a connected region is a cell when its smoothed phase rises above the background by
   the *detection level*: ``"auto"`` (default) is 8 noise sigmas of the smoothed phase, so a field
   of noise yields no cells whatever its amplitude; ``"triangle"``, ``"otsu"``, ``"li"`` are the
   scikit-image thresholds of the flattened smoothed phase (never below the auto level); a number
   is a level in rad above the background.
4. Outline (hysteresis): each detected region is traced on the *unsmoothed* flattened phase where
   it exceeds ``edge_snr`` noise sigmas. A threshold on the smoothed image spreads the steep edge of
   a cell outwards and the detection level cuts the rim off; the raw phase keeps areas right.
5. The typical cell size is learnt from the mask: the inscribed radius ``r`` (peak of the distance
   transform) of each connected object, median over objects weighted by their area (so specks of
   noise or retrieval artefacts at the edge do not outvote one large cell). Holes smaller than
   ``pi (1.5 r)^2`` are filled (the dimple of a red blood cell, a ring-shaped cell: filled, not
   split).
6. Touching cells are split by a marker-controlled watershed on the distance transform
   (``split_markers="distance"``): markers at its peaks no closer than ``min_distance_um``, or, by
   default, ``0.5 r``, so the spacing follows the cells in the image and not a constant in um read
   as pixels when the pixel size is missing (the cause of "pie slices"). Two regions joined by a
   neck nearly as wide as the smaller one (saddle of the distance transform >= 0.94 of its peak)
   are one irregular cell and merged. Slivers smaller than the minimum area are merged into the
   neighbour they share the longest border with. ``"phase"`` markers (peaks of the smoothed phase)
   follow nuclei but split a red blood cell, whose phase peaks on a ring.
7. Objects smaller than ``min_area_um2`` (default: ``0.1 pi r^2``, learnt) or larger than
   ``max_area_um2``, and with ``exclude_border`` objects touching the border of the field, are
   removed; labels are renumbered 1..N.

Without a pixel size only the user's own um-valued settings are read in pixels; the learnt
defaults need none, so the same image gives the same cells with and without one.

Failures: a field with no cells, a field that one object covers (no background to separate cells
from) and fields whose objects are all filtered out return all-zero labels and emit a
:class:`MorphologyWarning` that says why and which option to change (``--threshold``,
``--min-area``); napari shows warnings as notifications, and a stack goes on frame by frame.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ._common import MorphologyWarning, _as_phase_image, _check_pixel_size
from ._regions import (
    fill_small_holes,
    filter_objects,
    half_sample_mode,
    lower_sigma,
    merge_small_regions,
    merge_wide_necks,
    outline,
    smooth_background,
    typical_radius,
    watershed_markers,
)

__all__ = ["Segmentation", "SegmentationSettings", "segment_cells", "segment_field"]

_DETECTION_SNR = 8.0
_MASK_SNR = 4.0
_MAX_FOREGROUND_FRACTION = 0.9
_OFFSET_HINT_RAD = 0.1
_NECK_MERGE_RATIO = 0.94
_MIN_AREA_OF_TYPICAL = 0.1
_MARKER_SPACING_OF_RADIUS = 0.5
_AUTO_THRESHOLDS = ("auto", "otsu", "li", "triangle")


@dataclass(frozen=True)
class SegmentationSettings:
    """Parameters of :func:`segment_cells`. Lengths in um, areas in um^2, phase in rad.

    Without a pixel size the um-valued settings are read in pixels (and px^2); the defaults
    (``None``) are learnt from the image and need no pixel size.

    Attributes
    ----------
    smoothing_sigma_px
        Gaussian smoothing before detection and watershed, in pixels (0 disables it).
    threshold
        Detection level above the background: ``"auto"`` (8 noise sigmas), ``"otsu"``, ``"li"``
        or ``"triangle"`` (scikit-image, on the flattened smoothed phase, never below auto), or a
        phase in radians above the background.
    edge_snr
        The outline is traced on the unsmoothed phase where it exceeds the background by this many
        noise standard deviations. ``None`` uses the detection level on the smoothed phase instead
        (plain thresholding: smaller, smoother outlines).
    min_area_um2, max_area_um2
        Objects outside this area range are removed. ``min_area_um2=None`` learns it: 0.1 pi r^2
        with r the typical inscribed radius of the cells; ``max_area_um2=None``: no upper bound.
    split_touching
        Split touching cells with a marker-controlled watershed.
    split_markers
        ``"distance"``: markers at peaks of the distance transform of the mask; ``"phase"``: at
        peaks of the smoothed phase.
    min_distance_um
        Minimum distance between two markers; ``None`` learns it (half the typical inscribed
        radius of the cells).
    exclude_border
        Remove objects that touch the border of the field (their area and mass are incomplete).
    fill_holes
        Fill holes inside objects smaller than a disc of 1.5 typical cell radii.
    flatten_background
        Fit and remove a smooth background (residual offset, slope, bump) before detection.
    """

    smoothing_sigma_px: float = 1.0
    threshold: str | float = "auto"
    edge_snr: float | None = 3.0
    min_area_um2: float | None = None
    max_area_um2: float | None = None
    split_touching: bool = True
    split_markers: Literal["distance", "phase"] = "distance"
    min_distance_um: float | None = None
    exclude_border: bool = True
    fill_holes: bool = True
    flatten_background: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.threshold, str):
            if self.threshold not in _AUTO_THRESHOLDS:
                raise InputError(
                    f"Unknown threshold {self.threshold!r}: use one of "
                    f"{', '.join(_AUTO_THRESHOLDS)} or a phase level in radians."
                )
        elif isinstance(self.threshold, bool) or not math.isfinite(float(self.threshold)):
            raise InputError(
                f"threshold must be a method name or a finite phase in rad, got {self.threshold!r}."
            )
        if self.split_markers not in ("distance", "phase"):
            raise InputError(
                f"split_markers must be 'distance' or 'phase', got {self.split_markers!r}."
            )
        for name in ("smoothing_sigma_px", "min_area_um2", "min_distance_um"):
            value = getattr(self, name)
            if value is None and name != "smoothing_sigma_px":
                continue
            if isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}.")
        if self.edge_snr is not None and not (math.isfinite(self.edge_snr) and self.edge_snr >= 0):
            raise InputError(f"edge_snr must be >= 0 or None, got {self.edge_snr!r}.")
        if self.max_area_um2 is not None and not self.max_area_um2 > (self.min_area_um2 or 0):
            raise InputError(
                f"max_area_um2 ({self.max_area_um2}) must exceed min_area_um2 "
                f"({self.min_area_um2})."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the settings."""
        return asdict(self)


@dataclass
class Segmentation:
    """Labels and what was learnt from the image to make them.

    Attributes
    ----------
    labels
        int32 labels, 0 = background, cells 1..N.
    background_rad
        The background surface that was removed before detection (rad, same shape).
    offset_rad
        Median of that surface: the residual global phase offset of the image (rad).
    noise_rad, noise_smoothed_rad
        Noise sigma of the phase and of the smoothed phase (rad).
    level_rad
        Detection level above the background (rad, on the smoothed phase).
    cell_radius_px
        Typical inscribed radius of the cells (px; NaN when none was found).
    min_area_px, min_distance_px
        The minimum object area and marker spacing used (px^2, px).
    removed
        Objects removed by each filter: ``small``, ``large``, ``border``, ``nan``.
    """

    labels: np.ndarray
    background_rad: np.ndarray
    offset_rad: float
    noise_rad: float
    noise_smoothed_rad: float
    level_rad: float
    cell_radius_px: float
    min_area_px: float
    min_distance_px: float
    removed: dict[str, int] = field(default_factory=dict)

    def record(self, pixel_size_um: float | None) -> dict[str, Any]:
        """What the segmentation learnt, as plain numbers for a table's metadata."""
        px = pixel_size_um or 1.0
        unit = "um" if pixel_size_um else "px"
        return {
            "background_offset_rad": self.offset_rad,
            "noise_rad": self.noise_rad,
            "detection_level_rad": self.level_rad,
            f"cell_radius_{unit}": self.cell_radius_px * px,
            f"min_area_{unit}2": self.min_area_px * px**2,
            f"min_distance_{unit}": self.min_distance_px * px,
            "removed_objects": dict(self.removed),
        }


def _auto_threshold(image: np.ndarray, method: str) -> float:
    from skimage import filters

    funcs = {
        "otsu": filters.threshold_otsu,
        "li": filters.threshold_li,
        "triangle": filters.threshold_triangle,
    }
    return float(funcs[method](image))


def _background(
    image: np.ndarray, smoothed: np.ndarray, valid: np.ndarray, flatten: bool
) -> np.ndarray:
    """Background surface (rad): the mode of the phase, or a smooth fit outside the cells."""
    level = half_sample_mode(smoothed[valid])
    background = np.full(image.shape, level)
    if not flatten:
        return background
    sigma_px = max(min(image.shape) / 8.0, 4.0)
    for _ in range(2):
        flat = smoothed - background
        noise = lower_sigma(flat[valid])
        cells = ndi.binary_dilation(flat > _MASK_SNR * noise, iterations=3)
        outside = valid & ~cells
        if outside.mean() < 0.05:
            break
        background = smooth_background(image, outside, sigma_px, level)
    return background


def _split(
    mask: np.ndarray, smoothed: np.ndarray, settings: SegmentationSettings, spacing_px: float
) -> np.ndarray:
    from skimage.segmentation import watershed

    if not settings.split_touching:
        return ndi.label(mask)[0].astype(np.int32)
    markers, surface = watershed_markers(
        mask, smoothed, settings.split_markers, max(1, round(spacing_px))
    )
    labels = watershed(-surface, markers, mask=mask)
    if settings.split_markers == "distance":
        labels = merge_wide_necks(labels, surface, _NECK_MERGE_RATIO)
    return labels.astype(np.int32)


def _valid_pixels(image: np.ndarray) -> np.ndarray:
    valid = np.isfinite(image)
    if not valid.any():
        raise InputError(
            "The phase image has no finite pixel (all NaN or infinite): there is nothing to "
            "segment. Check the retrieval that made it."
        )
    return valid


def _warn(message: str) -> None:
    warnings.warn(message, MorphologyWarning, stacklevel=3)


def _detection_level(
    flat_s: np.ndarray, settings: SegmentationSettings, noise_s: float, peak: float
) -> float:
    """Detection level above the background (rad) on the flattened smoothed phase."""
    level = max(_DETECTION_SNR * noise_s, 0.01 * peak)
    if settings.threshold == "auto":
        return level
    if isinstance(settings.threshold, str):
        return max(level, _auto_threshold(flat_s, settings.threshold))
    return float(settings.threshold)


def _warn_no_seeds(level: float, offset: float, noise: float) -> None:
    hint = (
        f" The background sits at {offset:.3g} rad, not 0: one cell may fill the field, or "
        "the phase is not background-corrected."
        if abs(offset) > 3 * noise + _OFFSET_HINT_RAD
        else ""
    )
    warnings.warn(
        f"No cells found: no region rises {level:.3g} rad above the background "
        f"({offset:.3g} rad, noise {noise:.2g} rad).{hint} Check that this is a phase image "
        "with cells above the background, or set a lower level (--threshold RAD, or the "
        "widget's threshold).",
        MorphologyWarning,
        stacklevel=4,
    )


def _learnt_sizes(
    settings: SegmentationSettings, radius_px: float, px: float
) -> tuple[float, float]:
    """Minimum area (px^2) and marker spacing (px): the user's, or learnt from the radius."""
    min_px = (
        _MIN_AREA_OF_TYPICAL * math.pi * radius_px**2
        if settings.min_area_um2 is None
        else settings.min_area_um2 / px**2
    )
    spacing = (
        _MARKER_SPACING_OF_RADIUS * radius_px
        if settings.min_distance_um is None
        else settings.min_distance_um / px
    )
    return min_px, spacing


def segment_field(
    phase: Any,
    *,
    pixel_size_um: float | None = None,
    settings: SegmentationSettings | None = None,
) -> Segmentation:
    """Segment cells in a phase image (rad) and say what was learnt; see the module docstring.

    Parameters are those of :func:`segment_cells`; returns a :class:`Segmentation`.
    """
    settings = settings or SegmentationSettings()
    image = _as_phase_image(phase)
    valid = _valid_pixels(image)
    px = _check_pixel_size(pixel_size_um)
    user_um = _settings_in_um(settings)
    if px is None and user_um:
        _warn(
            f"No pixel size given: {', '.join(user_um)} are read in pixels (px, px^2). Give the "
            "pixel size (--pixel-size UM) or leave them unset to learn them from the image."
        )
    px = px or 1.0
    fill = float(np.median(image[valid]))
    image = np.where(valid, image, fill)
    sigma = settings.smoothing_sigma_px
    smoothed = ndi.gaussian_filter(image, sigma, mode="nearest") if sigma > 0 else image
    background = _background(image, smoothed, valid, settings.flatten_background)
    flat, flat_s = image - background, smoothed - background
    noise, noise_s = lower_sigma(flat[valid]), lower_sigma(flat_s[valid])
    offset = float(np.median(background[valid]))
    result = _no_cells(background, offset, noise, noise_s)
    peak = float(np.max(flat_s[valid]))
    if peak <= 1e-12 * max(1.0, float(np.max(np.abs(smoothed)))):
        _warn(f"No cells found: the phase is flat ({fill:.3g} rad everywhere).")
        return result
    level = _detection_level(flat_s[valid], settings, noise_s, peak)
    result.level_rad = level
    seeds = (flat_s > level) & valid
    if not seeds.any():
        _warn_no_seeds(level, offset, noise)
        return result
    edge = None if settings.edge_snr is None else max(settings.edge_snr * noise, 1e-3 * level)
    mask = outline(flat, seeds, valid, None if edge is None else min(edge, level))
    radius = typical_radius(mask)
    if settings.fill_holes:
        mask = fill_small_holes(mask, math.pi * (1.5 * radius) ** 2)
    fraction = float(mask[valid].mean())
    if fraction > _MAX_FOREGROUND_FRACTION:
        _warn(
            f"Objects cover {100 * fraction:.0f}% of the field: there is too little background "
            "to separate cells from (one cell fills the field, or the phase has an offset or "
            "tilt). Use a larger field of view, a background-corrected phase, or paint labels."
        )
        return result
    min_px, spacing = _learnt_sizes(settings, radius, px)
    result.cell_radius_px, result.min_area_px, result.min_distance_px = radius, min_px, spacing
    labels = _split(mask, smoothed, settings, spacing)
    labels = merge_small_regions(labels, min_px)
    max_px = None if settings.max_area_um2 is None else settings.max_area_um2 / px**2
    labels, removed = filter_objects(labels, valid, min_px, max_px, settings.exclude_border)
    result.labels, result.removed = labels, removed
    if removed["nan"]:
        _warn(
            f"{removed['nan']} object(s) touching NaN or infinite phase were left out (their "
            f"dry mass would be incomplete); {int(labels.max())} cell(s) kept."
        )
    if labels.max() == 0:
        unit = "um^2" if pixel_size_um is not None else "px^2"
        _warn(
            f"No cells left: {sum(removed.values())} object(s) found, {removed['small']} smaller "
            f"than the minimum area {min_px * px**2:.3g} {unit} (--min-area), {removed['large']} "
            f"larger than the maximum, {removed['border']} touching the border of the field, "
            f"{removed['nan']} touching NaN phase."
        )
    return result


def _settings_in_um(settings: SegmentationSettings) -> list[str]:
    """The names of the settings the user gave in um or um^2 (they need a pixel size)."""
    return [
        name
        for name in ("min_area_um2", "max_area_um2", "min_distance_um")
        if getattr(settings, name) is not None
    ]


def _no_cells(background: np.ndarray, offset: float, noise: float, noise_s: float) -> Segmentation:
    """A segmentation without cells yet: all-zero labels, the fitted background (rad), its
    median offset and the noise (rad) of the flattened and the smoothed phase; levels and sizes
    NaN until learnt."""
    return Segmentation(
        labels=np.zeros(background.shape, dtype=np.int32),
        background_rad=background,
        offset_rad=offset,
        noise_rad=noise,
        noise_smoothed_rad=noise_s,
        level_rad=math.nan,
        cell_radius_px=math.nan,
        min_area_px=math.nan,
        min_distance_px=math.nan,
    )


def segment_cells(
    phase: Any,
    *,
    pixel_size_um: float | None = None,
    settings: SegmentationSettings | None = None,
) -> np.ndarray:
    """Segment cells in a phase image (rad); see the module docstring.

    Parameters
    ----------
    phase
        2-D phase image in radians, cells positive. A residual background offset or smooth
        variation is removed (``settings.flatten_background``); NaN regions are set aside.
    pixel_size_um
        Pixel pitch in the sample plane (um). Only needed for settings given in um / um^2.
    settings
        :class:`SegmentationSettings`; the defaults learn sizes and levels from the image.

    Returns
    -------
    numpy.ndarray
        int32 labels of the same shape, 0 = background, cells 1..N. All zero (with a
        :class:`MorphologyWarning`) when there is no cell, or no background to separate cells from.

    Raises
    ------
    InputError
        ``phase`` is not a 2-D real image, or has no finite pixel at all.
    """
    return segment_field(phase, pixel_size_um=pixel_size_um, settings=settings).labels
