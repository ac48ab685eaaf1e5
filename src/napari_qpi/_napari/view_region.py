"""The part of an image that a 2-D napari canvas shows, as a box of the image's pixels.

napari's camera looks at ``center`` (world coordinates of the two displayed axes, ``(y, x)``) with
``zoom`` canvas pixels per world unit, on a canvas (or grid viewbox) of ``(height, width)`` canvas
pixels; the canvas therefore shows the world from ``center - size / (2 zoom)`` to
``center + size / (2 zoom)`` along each axis (whatever the orientation of the axes). An image
layer puts the centre of pixel ``i`` at ``translate + scale * i`` and each pixel covers half a
pixel either side. Pure geometry (no napari, no Qt): the refocus panel feeds it the camera's
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import InputError


def visible_box(
    center: Sequence[float],
    zoom: float,
    canvas_size: Sequence[float],
    shape: Sequence[int],
    *,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
) -> tuple[int, int, int, int] | None:
    """Pixel box ``(y0, y1, x0, x1)`` (ends excluded) of an image of ``shape`` that the canvas
    shows, clipped to the image; a pixel counts if any part of it is in view.

    Parameters
    ----------
    center, zoom
        The camera's centre (world units, ``(y, x)`` of the displayed axes) and zoom (canvas
        pixels per world unit).
    canvas_size
        ``(height, width)`` of the canvas (or of one viewbox in grid mode), canvas pixels.
    shape
        ``(H, W)`` of the image.
    scale, translate
        The layer's scale and translate along those two axes (world units per pixel; world
        position of pixel 0's centre); a negative scale (flipped layer) is fine.

    Returns ``None`` when the whole image is in view (the whole field).

    Raises
    ------
    InputError
        No part of the image is in view, or the zoom or canvas size is not a positive number.
    """
    if not (zoom > 0 and math.isfinite(zoom)) or min(canvas_size) <= 0:
        raise InputError(
            f"The view has no extent (zoom {zoom!r}, canvas {tuple(canvas_size)}); "
            "show the hologram in the viewer first."
        )
    box: list[int] = []
    axes = zip(center[-2:], canvas_size[-2:], shape[-2:], scale[-2:], translate[-2:], strict=True)
    for c, size, n, s, t in axes:
        half = 0.5 * float(size) / float(zoom)
        ends = sorted(((float(c) - half - t) / s, (float(c) + half - t) / s))
        # pixel i covers [i - 1/2, i + 1/2] in data units: in view if it overlaps the ends
        start = max(0, math.floor(ends[0] + 0.5))
        stop = min(int(n), math.ceil(ends[1] + 0.5))
        if stop <= start:
            raise InputError(
                "The current view shows no part of the hologram: pan or zoom out to it, or "
                "choose another focus region."
            )
        box += [start, stop]
    y0, y1, x0, x1 = box
    if (y0, y1, x0, x1) == (0, int(shape[-2]), 0, int(shape[-1])):
        return None
    return y0, y1, x0, x1


__all__ = ["visible_box"]
