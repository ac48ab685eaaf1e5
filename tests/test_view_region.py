"""The image pixels a 2-D canvas shows (the refocus panel's "current view"), without Qt."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_qpi._napari.view_region import visible_box
from napari_qpi.errors import InputError


def test_the_view_box_follows_centre_zoom_canvas_scale_and_translate():
    # 0.2 um pixels, image origin at (10, -4) um; the camera at (30, 16) um, 2 canvas px per um
    # on a 100 x 60 canvas: the world from (5, 1) to (55, 31) um, i.e. data rows -25 .. 225
    # (clipped to 0 .. 200) and columns 25 .. 175
    box = visible_box(
        (30.0, 16.0), 2.0, (100, 60), (200, 300), scale=(0.2, 0.2), translate=(10.0, -4.0)
    )
    assert box == (0, 200, 25, 176)  # column 175 is half in view
    # zoomed in 4x about the same centre: rows 100 +- 31.25, columns 100 +- 18.75
    box = visible_box(
        (30.0, 16.0), 8.0, (100, 60), (200, 300), scale=(0.2, 0.2), translate=(10.0, -4.0)
    )
    assert box == (69, 132, 81, 120)


def test_the_whole_image_in_view_is_the_whole_field_and_none_of_it_is_refused():
    assert visible_box((50.0, 50.0), 1.0, (400, 400), (100, 100)) is None
    with pytest.raises(InputError, match="no part of the hologram"):
        visible_box((500.0, 50.0), 4.0, (100, 100), (100, 100))
    with pytest.raises(InputError, match="no extent"):
        visible_box((50.0, 50.0), 0.0, (100, 100), (100, 100))


def test_a_flipped_layer_gives_the_same_pixels_from_the_other_side():
    # scale -1: pixel i at world -i; the view from world -30 to -10 shows pixels 10 .. 30
    assert visible_box((-20.0, 5.0), 1.0, (20, 10), (64, 64), scale=(-1.0, 1.0)) == (
        10,
        31,
        0,
        11,
    )


def test_the_geometry_needs_no_qt():
    code = (
        "import sys, napari_qpi._napari.view_region; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
