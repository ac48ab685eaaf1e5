"""Where an autofocus searches: the z range (um) and the pixels it scores.

A range is checked before any plane is formed: two finite numbers, not empty, and no farther than
:data:`MAX_RANGE_FIELD_WIDTHS` field widths (no image is that far out of focus; a larger value
means wrong units). The depth of field ``1 / (lambda_m f^2)`` of a field of band ``f``
(cycles/um) sets the search's steps and precision. The pixels scored leave out a band along each
border (:data:`BORDER_FRACTION`) unless a region is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

#: Band along each border left out of the score when no region is given, as a fraction of the
#: side. A field is not periodic (a tilt, the cells cut by the border): the jump where it wraps
#: rings at the borders and spreads inwards as it is propagated. Measured on 512^2 holograms
#: without a reference (tilt 3 rad): the whole field found 1 um for a true 25 um, a 5% band
#: 24.6 um, 10% 25.2 um.
BORDER_FRACTION = 0.1
#: Largest |z| accepted, in field widths: farther planes are not a refocus of this image.
MAX_RANGE_FIELD_WIDTHS = 100.0


def default_range(shape: Sequence[int], pixel_size_um: float) -> tuple[float, float]:
    """Default search range: plus or minus the field width (the larger side), um."""
    width = max(int(shape[-1]), int(shape[-2])) * float(pixel_size_um)
    return (-width, width)


def check_range(
    z_range: Sequence[float], shape: Sequence[int], pixel_size_um: float
) -> tuple[float, float]:
    """Validate a search range ``(min, max)`` in um.

    Raises
    ------
    InputError
        Not two finite numbers, empty (``min >= max``), or reaching beyond
        :data:`MAX_RANGE_FIELD_WIDTHS` field widths (no image is that far out of focus).
    """
    try:
        lo, hi = (float(v) for v in z_range)
    except (TypeError, ValueError):
        raise InputError(
            f"The refocus range must be two numbers MIN MAX in um, got {z_range!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"The refocus range must be finite, got {lo:g} to {hi:g} um.")
    if lo >= hi:
        raise InputError(
            f"The refocus range {lo:g} to {hi:g} um is empty: give MIN < MAX, e.g. -50 50."
        )
    check_distance(max(abs(lo), abs(hi)), shape, pixel_size_um, what=f"range {lo:g} to {hi:g} um")
    return lo, hi


def check_distance(
    z_um: float, shape: Sequence[int], pixel_size_um: float, *, what: str | None = None
) -> float:
    """Refuse a refocus distance beyond :data:`MAX_RANGE_FIELD_WIDTHS` field widths (um).

    Raises
    ------
    InputError
        ``|z_um|`` larger than that: no image is that far out of focus (wrong units?).
    """
    z = float(z_um)
    width = max(int(shape[-1]), int(shape[-2])) * float(pixel_size_um)
    limit = MAX_RANGE_FIELD_WIDTHS * width
    if not abs(z) <= limit:
        raise InputError(
            f"The refocus {what or f'distance {z:g} um'} reaches beyond "
            f"{MAX_RANGE_FIELD_WIDTHS:g}x the field width ({width:.4g} um), up to {limit:.4g} um: "
            "no image is that far out of focus. Check the units (um) and the pixel size."
        )
    return z


def region_view(
    field: np.ndarray, region: tuple[slice, slice] | Sequence[int] | None
) -> tuple[slice, slice]:
    """``region`` as two slices: a pair of slices, or a box ``(y0, y1, x0, x1)`` in pixels."""
    h, w = field.shape[-2:]
    if region is None:  # the borders are not periodic: their ringing would dominate the score
        my, mx = int(h * BORDER_FRACTION), int(w * BORDER_FRACTION)
        return slice(my, h - my), slice(mx, w - mx)
    if len(region) == 2 and all(isinstance(r, slice) for r in region):
        rows, cols = region
    else:
        try:
            y0, y1, x0, x1 = (int(v) for v in region)
        except (TypeError, ValueError):
            raise InputError(
                f"A focus region is two slices or a box (y0, y1, x0, x1), got {region!r}."
            ) from None
        rows, cols = slice(y0, y1), slice(x0, x1)
    ry, rx = range(h)[rows], range(w)[cols]
    if len(ry) < 8 or len(rx) < 8:
        raise InputError(
            f"The focus region {region!r} holds {len(ry)} x {len(rx)} pixels of a {h} x {w} "
            "field; it needs at least 8 x 8."
        )
    return rows, cols


def depth_of_field(band_cycles_per_um: float, wavelength_um_medium: float) -> float:
    """Depth of field ``1 / (lambda_m f^2)`` (um) of a field of band ``f`` (cycles/um): the
    defocus at which the band edge gains a phase of ``pi`` more than the axis."""
    return 1.0 / (wavelength_um_medium * band_cycles_per_um**2)


__all__ = [
    "BORDER_FRACTION",
    "MAX_RANGE_FIELD_WIDTHS",
    "check_distance",
    "check_range",
    "default_range",
    "depth_of_field",
    "region_view",
]
