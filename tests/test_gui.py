"""The widgets as a user meets them, in a real (shown) napari window under Xvfb.

Each test acts as a person would (open a sample, pick, click Run, hover, save, reopen) and checks
what that person would see.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.status_messages import format_feature_value  # how napari prints a value

from napari_qpi._napari.morphology_widget import CellMorphologyWidget
from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi.physics import random_cells

ACQ = {"wavelength_nm": 532.0, "pixel_size_um": 0.2, "modality": "phase"}


def _window(make_napari_viewer, width: int = 1400):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(width, 900)
    return viewer


def _dock(viewer, *widgets):
    for widget in widgets:
        viewer.window.add_dock_widget(widget, name=type(widget).__name__, area="right")
    return widgets


def _canvas_width(viewer, qtbot) -> int:
    qtbot.wait(300)  # let the layout settle (the dock resizes on a later event)
    return viewer.window._qt_viewer.canvas.native.width()


def _click_run(widget, qtbot, timeout=60_000):
    widget.controls.run_button.native.click()
    worker = widget.controls.worker
    if worker is not None:
        with qtbot.waitSignal(worker.finished, timeout=timeout):
            pass


# 1. messages never squeeze the canvas ----------------------------------------------------------


def test_a_very_long_message_never_squeezes_the_canvas(make_napari_viewer, qtbot):
    from napari.utils.notifications import notification_manager

    viewer = _window(make_napari_viewer)
    viewer.add_image(np.full((64, 64), 100, dtype=np.uint16), name="flat")
    retrieval, morphology = _dock(
        viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
    )
    before = _canvas_width(viewer, qtbot)
    assert before > 600
    retrieval.hologram.value = viewer.layers["flat"]
    _click_run(retrieval, qtbot)  # a real failure: no fringes in a flat image
    assert retrieval.controls.status.value and retrieval.controls.status.value != "done"
    after_error = _canvas_width(viewer, qtbot)
    path = "/".join(["a_very_long_folder_name_without_spaces"] * 30)
    message = f"Could not read {path}: " + "the words of a long explanation " * 30
    retrieval.controls.say(message)
    morphology.controls.say(message)
    after_long = _canvas_width(viewer, qtbot)
    print(
        f"canvas width: {before} px, after the error {after_error}, after a long message "
        f"{after_long}"
    )
    assert after_error >= 0.95 * before and after_long >= 0.95 * before
    assert retrieval.controls.status.native.toolTip() == message
    assert any(message in str(n.message) for n in notification_manager.records)


# 2. pickers default to the right layer -----------------------------------------------------------


@pytest.mark.parametrize("dock_first", [False, True], ids=["sample-then-dock", "dock-then-sample"])
def test_pickers_choose_the_right_layers_after_open_sample(make_napari_viewer, qtbot, dock_first):
    viewer = _window(make_napari_viewer)
    if dock_first:
        retrieval, morphology = _dock(
            viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
        )
    viewer.open_sample("napari-qpi", "hologram")
    if not dock_first:
        retrieval, morphology = _dock(
            viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
        )
    assert retrieval.hologram.value.name == "hologram"
    assert retrieval.reference.value.name == "background hologram"
    assert "true phase" not in retrieval.hologram.choices
    assert morphology.phase.value.name == "true phase"  # the only phase image so far
    assert "hologram" not in [c.name for c in morphology.phase.choices]
    _click_run(retrieval, qtbot)
    assert retrieval.controls.status.value == "done"
    assert morphology.phase.value.name == "hologram phase (classical)"
    assert retrieval.hologram.value.name == "hologram"

    viewer.open_sample("napari-qpi", "cdp")
    assert retrieval.hologram.value.name in ("cells_cdp", "cells_cdp_single")
    assert all("masks" not in layer.name for layer in morphology.phase.choices)
    assert morphology.phase.value.name == "hologram phase (classical)"


# 3. hovering a cell shows its own row -----------------------------------------------------------


def _hover_every_cell(viewer, labels, qtbot) -> int:
    """Move over one pixel of every cell, as napari does, and check the status shows its row."""
    features = labels.features
    assert "index" in features.columns
    assert len(set(features["index"])) == len(features), "label values must be unique"
    checked = 0
    for row in features.itertuples(index=False):
        where = np.argwhere(np.asarray(labels.data) == row.index)
        assert len(where), f"no pixel has the value {row.index}"
        point = where[len(where) // 2]
        if labels.ndim == 3:
            viewer.dims.set_point(0, point[0])
        world = labels.data_to_world(point)
        status = labels.get_status(world, world=True)["coordinates"]
        assert f"label: {row.label}" in status, (row, status)
        assert f"area_um2: {format_feature_value(row.area_um2)}" in status, (row, status)
        if "frame" in features.columns:
            assert f"frame: {row.frame}" in status, (row, status)
        checked += 1
    return checked


def test_hovering_every_measured_cell_shows_its_own_row(make_napari_viewer, qtbot):
    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    retrieval, morphology = _dock(
        viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
    )
    _click_run(retrieval, qtbot)
    _click_run(morphology, qtbot)
    labels = viewer.layers["hologram phase (classical) cells"]
    assert _hover_every_cell(viewer, labels, qtbot) == len(labels.features) >= 3


def test_hovering_every_cell_of_a_stack_shows_its_own_row(make_napari_viewer, qtbot):
    viewer = _window(make_napari_viewer)
    stack = np.stack(
        [
            random_cells(
                (128, 128), n_cells=3, kinds=("round",), allow_touching=False, seed=s
            ).phase
            for s in range(3)
        ]
    )
    viewer.add_image(stack, name="timelapse", scale=(1, 0.2, 0.2), metadata={"qpi": ACQ})
    (morphology,) = _dock(viewer, CellMorphologyWidget(viewer))
    assert morphology.phase.value.name == "timelapse"
    _click_run(morphology, qtbot)
    labels = viewer.layers["timelapse cells"]
    frames = set(labels.features["frame"])
    assert frames == {0, 1, 2}
    per_frame_labels = labels.features.groupby("frame")["label"].apply(set)
    assert per_frame_labels[0] & per_frame_labels[1], "labels restart each frame in the table"
    assert _hover_every_cell(viewer, labels, qtbot) == len(labels.features) >= 6
