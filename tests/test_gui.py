"""The widgets as a user meets them, in a real (shown) napari window under Xvfb.

Each test acts as a person would (open a sample, pick, click Run, hover, save, reopen) and checks
what that person would see.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.status_messages import format_feature_value  # how napari prints a value

from _heartbeat import GAP_MS, Heartbeat, load, warm_ups_done
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


def _add_timelapse(viewer) -> None:
    """A 3-frame stack of 3 round cells each (0.2 um pixels) as the image layer 'timelapse'."""
    stack = np.stack(
        [
            random_cells(
                (128, 128), n_cells=3, kinds=("round",), allow_touching=False, seed=s
            ).phase
            for s in range(3)
        ]
    )
    viewer.add_image(stack, name="timelapse", scale=(1, 0.2, 0.2), metadata={"qpi": ACQ})


def _canvas_width(viewer, qtbot) -> int:
    qtbot.wait(300)  # let the layout settle (the dock resizes on a later event)
    return viewer.window._qt_viewer.canvas.native.width()


def _click_run(widget, qtbot, timeout=60_000):
    """Click Run and wait until the run is over (its result shown, or its error reported)."""
    widget.controls.run_button.native.click()
    if widget.controls.running:  # not refused at once (bad input)
        with qtbot.waitSignal(widget.controls.finished, timeout=timeout):
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
    for widget in (retrieval, morphology):
        _assert_shown_whole(widget)


def _assert_shown_whole(widget) -> None:
    """The whole wrapped status text of ``widget`` is laid out (scrolled to if need be): the
    label is as tall as its text at its width, and no row holding it is shorter than it."""
    label = widget.controls.status.native
    assert label.height() >= label.heightForWidth(label.width()) > 30, label.size()
    inner = label
    while inner is not widget.body:
        outer = inner.parentWidget()
        assert inner.geometry().bottom() < outer.height(), (type(outer), outer.height())
        inner = outer


def test_the_docks_scroll_and_share_the_height_instead_of_growing_the_window(
    make_napari_viewer, qtbot
):
    """Two docks stacked on the right: each gets about half the height and scrolls its fields;
    the window keeps its size when the result rows (progress, table, plots) appear."""
    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    retrieval, morphology = _dock(
        viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
    )
    docks = [widget.native.parentWidget() for widget in (retrieval, morphology)]

    def shared() -> bool:
        heights = [dock.height() for dock in docks]
        return min(heights) > 0.8 * max(heights)  # Qt alone gave the second ~90 px of ~850

    qtbot.waitUntil(shared, timeout=5000)
    _click_run(retrieval, qtbot)
    _click_run(morphology, qtbot)
    qtbot.wait(300)
    assert viewer.window._qt_window.height() == 900  # it grew to 2143 px before
    bar = morphology.native.verticalScrollBar()
    assert bar.maximum() > 0  # the table and plots are below: scrolled to, not cut off
    bar.setValue(bar.maximum())
    qtbot.wait(100)
    plot = morphology.plots.canvas
    top = plot.mapTo(morphology.native.viewport(), plot.rect().topLeft()).y()
    assert 0 <= top and top + plot.height() <= morphology.native.viewport().height()


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


def _measured_sample(make_napari_viewer, qtbot):
    """Open the sample, retrieve (classical) and measure, as a user would: viewer, the morphology
    dock and the labels layer with its features."""
    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    retrieval, morphology = _dock(
        viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
    )
    _click_run(retrieval, qtbot)
    _click_run(morphology, qtbot)
    return viewer, morphology, viewer.layers["hologram phase (classical) cells"]


def test_hovering_every_measured_cell_shows_its_own_row(make_napari_viewer, qtbot):
    viewer, _, labels = _measured_sample(make_napari_viewer, qtbot)
    assert _hover_every_cell(viewer, labels, qtbot) == len(labels.features) >= 3


def test_hovering_every_cell_of_a_stack_shows_its_own_row(make_napari_viewer, qtbot):
    viewer = _window(make_napari_viewer)
    _add_timelapse(viewer)
    (morphology,) = _dock(viewer, CellMorphologyWidget(viewer))
    assert morphology.phase.value.name == "timelapse"
    _click_run(morphology, qtbot)
    labels = viewer.layers["timelapse cells"]
    frames = set(labels.features["frame"])
    assert frames == {0, 1, 2}
    per_frame_labels = labels.features.groupby("frame")["label"].apply(set)
    assert per_frame_labels[0] & per_frame_labels[1], "labels restart each frame in the table"
    assert _hover_every_cell(viewer, labels, qtbot) == len(labels.features) >= 6


# 4. names, runnable methods, tooltips, remembered settings, no unit warnings --------------------


def _unit_warnings() -> int:
    from napari.utils.notifications import notification_manager

    return sum("Inconsistent units" in str(n.message) for n in notification_manager.records)


def test_cdp_offers_only_runnable_methods_and_names_results_without_unit_warnings(
    make_napari_viewer, qtbot
):
    viewer = _window(make_napari_viewer)
    warnings_before = _unit_warnings()
    viewer.open_sample("napari-qpi", "hologram")
    viewer.open_sample("napari-qpi", "cdp")
    (retrieval,) = _dock(viewer, PhaseRetrievalWidget(viewer))
    single = viewer.layers["cells_cdp_single"]
    assert retrieval.hologram.value is single  # the newest measurement
    assert "cdp-student" in retrieval.method.choices  # trained with exactly these masks
    assert retrieval.method.value == "phase object"  # the default for one pattern
    assert not retrieval.background_order.native.isVisibleTo(retrieval.native)
    other = dict(single.metadata, qpi_cdp=dict(single.metadata["qpi_cdp"]))
    other["qpi_cdp"]["masks"] = np.zeros_like(other["qpi_cdp"]["masks"])
    data, kwargs, _ = single.as_layer_data_tuple()
    viewer.add_image(data, **dict(kwargs, name="other optics", metadata=other))
    retrieval.hologram.value = viewer.layers["other optics"]
    assert "cdp-student" not in retrieval.method.choices  # its masks are not these
    assert "hio" in retrieval.method.choices
    retrieval.hologram.value = single
    retrieval.method.value = "gerchberg-saxton"
    _click_run(retrieval, qtbot)
    qtbot.wait(200)
    assert "cells_cdp_single phase (gerchberg-saxton)" in viewer.layers
    assert _unit_warnings() == warnings_before

    retrieval.hologram.value = viewer.layers["hologram"]
    assert retrieval.background_order.native.isVisibleTo(retrieval.native)
    assert retrieval.wavelength.value == pytest.approx(532.0)
    assert retrieval.pixel_size.value == pytest.approx(0.2)


def _fields(container) -> list:
    """The widgets a user fills in or clicks, outside the Run/Cancel controls."""
    from magicgui.widgets import Container, Label

    from napari_qpi._napari.task import TaskControls

    found = []
    for widget in container:
        if isinstance(widget, TaskControls):
            continue
        if isinstance(widget, Container):
            found += _fields(widget)
        elif not isinstance(widget, Label):
            found.append(widget)
    return found


def test_every_field_has_a_tooltip(make_napari_viewer):
    from napari_qpi._napari.finetune_widget import FinetuneWidget

    viewer = make_napari_viewer()
    for widget in _dock(viewer, PhaseRetrievalWidget(viewer), FinetuneWidget(viewer)):
        fields = _fields(widget)
        assert len(fields) >= 10
        missing = [f.label or f.text for f in fields if not f.tooltip]
        assert not missing, f"{type(widget).__name__}: no tooltip on {missing}"


def test_settings_are_remembered_when_the_dock_is_closed_and_reopened(make_napari_viewer):
    from napari_qpi._napari.finetune_widget import FinetuneWidget

    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    retrieval, finetune = PhaseRetrievalWidget(viewer), FinetuneWidget(viewer)
    docks = [
        viewer.window.add_dock_widget(w, name=n) for w, n in ((retrieval, "a"), (finetune, "b"))
    ]
    retrieval.filter.value = "gaussian"
    retrieval.radius_fraction.value = 0.45
    retrieval.background_order.value = 1
    retrieval.resolution.value = "native"
    finetune.epochs.value, finetune.lr.value, finetune.augment.value = 7, 0.002, False
    for dock in docks:
        viewer.window.remove_dock_widget(dock)
    again, finetune_again = PhaseRetrievalWidget(viewer), FinetuneWidget(viewer)
    viewer.window.add_dock_widget(again)
    assert again.filter.value == "gaussian" and again.radius_fraction.value == pytest.approx(0.45)
    assert again.background_order.value == 1 and again.resolution.value == "native"
    assert finetune_again.epochs.value == 7 and finetune_again.lr.value == pytest.approx(0.002)
    assert finetune_again.augment.value is False


#: A model a user may have chosen that napari-qpi no longer ships (dropped in issue 18).
DROPPED_MODEL = "prnet-searched-transfer"


def test_a_remembered_model_that_is_gone_falls_back_without_a_traceback(make_napari_viewer):
    """Settings saved with a model since removed (a dropped shipped model, a deleted user model):
    the widget offers what exists and keeps the other remembered settings; a dropped hologram
    opens without its phase and says why."""
    from napari.utils.notifications import notification_manager

    from napari_qpi._napari import gui_settings
    from napari_qpi.models import list_models

    assert DROPPED_MODEL not in [card.name for card in list_models()]
    gui_settings.save("retrieval", {"method": DROPPED_MODEL, "filter": "gaussian"})
    gui_settings.save("reader", {"reconstruct": True, "method": DROPPED_MODEL})
    viewer = make_napari_viewer()
    viewer.open_sample("napari-qpi", "hologram")
    (retrieval,) = _dock(viewer, PhaseRetrievalWidget(viewer))
    assert DROPPED_MODEL not in retrieval.method.choices
    assert retrieval.method.value in retrieval.method.choices
    assert retrieval.method.value == "classical"  # the default for a hologram
    assert retrieval.filter.value == "gaussian"
    seen = len(notification_manager.records)
    layers = viewer.open(str(_sample_hologram_path()), plugin="napari-qpi")
    assert [layer.name for layer in layers] == ["cells_hologram"]
    said = [str(n.message) for n in notification_manager.records[seen:]]
    assert any("without its phase" in m and DROPPED_MODEL in m for m in said), said


# 5. nothing blocks the GUI thread ----------------------------------------------------------------


def test_gui_thread_gaps_while_retrieving_and_measuring_and_again(make_napari_viewer, qtbot):
    """From the click to the result on screen (layer added, table and plots filled, the window
    repainted), how long the GUI thread works without returning to the event loop. The bound is
    on the GUI thread's CPU time between two ticks, which is the wall-clock gap on an idle
    machine; the wall-clock gaps are printed (on the shared 2-core test machine other processes
    stretch them)."""
    from napari_qpi._napari.task import warm_up_display

    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    retrieval, morphology = _dock(
        viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
    )
    warm_ups_done(qtbot, warm_up_display())  # done while a user would still be choosing settings
    qtbot.wait(300)
    wall, cpu = {}, {}
    runs = [("retrieval", retrieval), ("measure", morphology)] * 2  # first runs, then reruns
    for number, (name, widget) in enumerate(runs):
        key = f"{name} {1 + number // 2}"
        heartbeat = Heartbeat()
        _click_run(widget, qtbot)
        qtbot.wait(300)  # napari and the dock paint the result
        wall[key], cpu[key] = heartbeat.max_gaps_ms()
        assert widget.controls.status.value == "done", widget.controls.status.value
    cells = viewer.layers["hologram phase (classical) cells"]
    assert morphology.table.model.rowCount() == len(cells.features) > 0
    assert morphology.plots.visible
    print(f"{load()}; longest gap, click to result shown (ms):")
    print("  wall clock:", {k: round(v) for k, v in wall.items()})
    print("  GUI thread CPU:", {k: round(v) for k, v in cpu.items()})
    # The first Run and the first Measure add their image or labels layer in turns
    # (layer_insert.add_layer_steps: the model, napari's visual, its controls widget, the
    # selection): their longest turns 79-135 and 89-130 ms of CPU time at load 2.8-4.3 (shared
    # 2-core machine, Xvfb), where napari's insert in one turn took 125-210 and 142-249 (same
    # runs). Reruns update the layers in place: 30-110 ms.
    assert max(cpu.values()) < GAP_MS, cpu


def test_garbage_is_collected_on_the_gui_thread_while_a_job_runs(make_napari_viewer, qtbot):
    """Python's collector never runs in our worker threads: there it could free Qt objects of a
    closed dock and crash napari (see napari_qpi._napari.gc_pin)."""
    import gc
    import threading
    import weakref

    from napari_qpi._napari.gc_pin import gui_thread_collector
    from napari_qpi._napari.task import TaskControls

    class Node:
        """A reference cycle: freed by the cyclic collector only."""

        def __init__(self) -> None:
            self.me = self

    collections: list[str] = []

    def heard(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(threading.current_thread().name)

    def job():
        cycle = Node()
        freed = weakref.ref(cycle)
        del cycle
        for step in range(40):  # allocate well past the collector's thresholds, for 2 s
            _ = [Node() for _ in range(2000)]
            yield step, 40
            threading.Event().wait(0.05)
        return {"enabled while running": gc.isenabled(), "cycle freed": freed() is None}

    results = []
    controls = TaskControls(lambda: job(), results.append)
    _window(make_napari_viewer).window.add_dock_widget(controls)
    collector = gui_thread_collector()
    qtbot.waitUntil(lambda: collector.pins == 0, timeout=60_000)  # the warm-up imports are done
    assert gc.isenabled()
    gc.callbacks.append(heard)
    try:
        _click_run(type("W", (), {"controls": controls})(), qtbot)
    finally:
        gc.callbacks.remove(heard)
    assert results == [{"enabled while running": False, "cycle freed": True}]
    assert collections and set(collections) == {threading.main_thread().name}, collections
    assert gc.isenabled() and collector.pins == 0  # given back as it was found


# 6. save the analysis, open it again --------------------------------------------------------------


def test_save_analysis_and_reopen_restores_data_scale_units_metadata_and_table(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from qtpy.QtWidgets import QFileDialog

    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    retrieval, morphology = _dock(
        viewer, PhaseRetrievalWidget(viewer), CellMorphologyWidget(viewer)
    )
    _click_run(retrieval, qtbot)
    _click_run(morphology, qtbot)
    phase = viewer.layers["hologram phase (classical)"]
    cells = viewer.layers["hologram phase (classical) cells"]
    folder = tmp_path / "analysis"
    folder.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    retrieval.actions.save_button.native.click()  # Save analysis... -> the folder
    written = sorted(p.name for p in folder.iterdir())
    assert written == sorted(
        [
            "hologram_phase__classical.ome.tif",
            "hologram_phase__classical__cells.ome.tif",
            "hologram_phase__classical__cells.csv",
            "hologram_phase__classical__cells.csv.json",
            "true_phase.ome.tif",
        ]
    ), written

    again = make_napari_viewer()
    for path in sorted(folder.glob("*.ome.tif")):
        again.open(str(path), plugin="napari-qpi")  # File > Open, our reader
    phase2 = again.layers["hologram_phase__classical"]
    cells2 = again.layers["hologram_phase__classical__cells"]
    np.testing.assert_array_equal(np.asarray(phase2.data), np.asarray(phase.data))
    np.testing.assert_allclose(phase2.scale, phase.scale)
    assert [str(u) for u in phase2.units] == [str(u) for u in phase.units] == ["micrometer"] * 2
    assert phase2.metadata["qpi"] == phase.metadata["qpi"]
    assert phase2.metadata["qpi_method"]["name"] == "classical"
    assert phase2.metadata["qpi_method"]["settings"] == phase.metadata["qpi_method"]["settings"]

    assert isinstance(cells2, type(cells))  # opened as labels, not as an image
    np.testing.assert_array_equal(np.asarray(cells2.data), np.asarray(cells.data))
    np.testing.assert_allclose(cells2.scale, cells.scale)
    assert [str(u) for u in cells2.units] == [str(u) for u in cells.units]
    assert list(cells2.features.columns) == list(cells.features.columns)
    for column in cells.features.columns:
        np.testing.assert_allclose(cells2.features[column], cells.features[column], rtol=1e-12)
    units = cells2.metadata["qpi_morphology"]["units"]
    assert units["dry_mass_pg"] == cells.metadata["qpi_morphology"]["units"]["dry_mass_pg"]
    assert cells2.metadata["qpi"]["wavelength_nm"] == pytest.approx(532.0)
    assert _hover_every_cell(again, cells2, qtbot) == len(cells.features)

    from qtpy.QtWidgets import QMessageBox

    asked = []  # saving again: the files exist, so the user is asked; "No" keeps them
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No,
    )
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    retrieval.actions.save_button.native.click()
    assert asked and before == {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# 7. drop a hologram, see its phase -------------------------------------------------------------


def _sample_hologram_path():
    from importlib.resources import files

    from napari_qpi._napari.sample_data import HOLOGRAM_FILE, SAMPLE_PACKAGE

    return files(SAMPLE_PACKAGE) / HOLOGRAM_FILE


def _hologram_files(tmp_path):
    """The sample hologram, an 8-bit BMP of it with a JSON sidecar, and a 16-plane TIFF stack."""
    import imageio.v3 as iio
    import tifffile

    from napari_qpi.acquisition import Acquisition
    from napari_qpi.io import read_image, write_sidecar

    sample = read_image(_sample_hologram_path())
    hologram = np.asarray(sample.data, dtype=np.float64)
    eight_bit = np.clip(255 * hologram / hologram.max(), 0, 255).astype(np.uint8)
    bmp = tmp_path / "cells.bmp"
    iio.imwrite(bmp, eight_bit)
    write_sidecar(bmp, Acquisition(wavelength_nm=532.0, pixel_size_um=0.2))
    stack = tmp_path / "timelapse.tif"
    planes = [np.roll(sample.data, 3 * k, axis=1)[:256, :256] for k in range(16)]
    tifffile.imwrite(stack, np.stack(planes))
    write_sidecar(stack, Acquisition(wavelength_nm=532.0, pixel_size_um=0.25))
    return {"sample": str(_sample_hologram_path()), "bmp": str(bmp), "stack": str(stack)}


def test_dropping_holograms_gives_hologram_and_phase_layers_with_the_right_scale(
    make_napari_viewer, tmp_path, monkeypatch
):
    import napari_qpi.lazy as lazy
    from napari_qpi.reconstruct import iter_reconstruct

    files = _hologram_files(tmp_path)
    viewer = _window(make_napari_viewer)
    retrieved = []
    plane = lazy.retrieve_plane
    monkeypatch.setattr(
        lazy, "retrieve_plane", lambda *a, **k: retrieved.append(a[1]) or plane(*a, **k)
    )
    expected_pixel = {"sample": 0.2, "bmp": 0.2, "stack": 0.25}
    for key, path in files.items():
        layers = viewer.open(path, plugin="napari-qpi")
        assert len(layers) == 2, [layer.name for layer in layers]
        hologram, phase = layers
        assert phase.name.endswith("phase (classical)")
        assert phase.metadata["qpi"]["modality"] == "phase"
        assert hologram.scale[-1] == phase.scale[-1] == pytest.approx(expected_pixel[key])
        assert phase.data.shape[-2:] == hologram.data.shape[-2:]
    stack = viewer.layers["timelapse phase (classical)"]
    assert stack.data.shape == (16, 256, 256) and not isinstance(stack.data, np.ndarray)
    stack_planes = {index for index in retrieved if index}
    print(f"planes retrieved on opening the 16-plane stack: {sorted(stack_planes)}")
    assert len(stack_planes) <= 4  # the first plane and the sign-voting planes, not 16
    viewer.dims.set_point(0, 9)  # the user moves to plane 9: it is retrieved then
    hologram = np.asarray(viewer.layers["timelapse"].data[9])
    expected = next(
        iter_reconstruct(hologram, acquisition=_acquisition_of(viewer.layers["timelapse"].metadata))
    ).phase
    np.testing.assert_allclose(np.asarray(stack.data[9]), expected, atol=0.05)


def _acquisition_of(metadata):
    from napari_qpi._napari.layers import acquisition_of

    return acquisition_of(metadata)


def test_reader_setting_off_opens_the_hologram_alone(make_napari_viewer):
    from napari_qpi._napari import gui_settings

    gui_settings.save("reader", {"reconstruct": False})
    viewer = make_napari_viewer()
    layers = viewer.open(str(_sample_hologram_path()), plugin="napari-qpi")
    assert [layer.name for layer in layers] == ["cells_hologram"]


def test_one_click_makes_napari_qpi_the_reader_for_holograms(make_napari_viewer, tmp_path):
    from napari.settings import get_settings

    files = _hologram_files(tmp_path)
    viewer = _window(make_napari_viewer)
    (retrieval,) = _dock(viewer, PhaseRetrievalWidget(viewer))
    from napari.errors import MultipleReaderError

    with pytest.raises(MultipleReaderError):  # what makes napari ask "Choose reader"
        viewer.open(files["bmp"], plugin=None)
    retrieval.actions.reader_button.native.click()
    table = get_settings().plugins.extension2reader
    assert {table[p] for p in ("*.tif", "*.tiff", "*.bmp", "*.png")} == {"napari-qpi"}
    viewer.window._qt_viewer._qt_open([files["bmp"]], stack=False)  # what a drop does
    assert [layer.name for layer in viewer.layers] == ["cells", "cells phase (classical)"]
    assert {layer.source.reader_plugin for layer in viewer.layers} == {"napari-qpi"}


# 8. acquisition fields and microscope profiles -------------------------------------------------


def test_load_profile_fills_the_fields_and_the_run_uses_them(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from qtpy.QtWidgets import QFileDialog

    from napari_qpi.profile import MicroscopeProfile, save_profile

    path = save_profile(
        MicroscopeProfile(
            name="bench scope",
            wavelength_nm=633.0,
            pixel_size_um=0.25,
            medium_index=1.337,
            filter="disk",
            background_order=1,
        ),
        tmp_path / "scope.json",
    )
    viewer = _window(make_napari_viewer)
    viewer.open_sample("napari-qpi", "hologram")
    (retrieval,) = _dock(viewer, PhaseRetrievalWidget(viewer))
    assert retrieval.wavelength.value == pytest.approx(532.0)  # from the layer's metadata
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    retrieval.profile_button.native.click()
    assert retrieval.wavelength.value == pytest.approx(633.0)
    assert retrieval.pixel_size.value == pytest.approx(0.25)
    assert retrieval.medium_index.value == pytest.approx(1.337)
    assert retrieval.filter.value == "disk" and retrieval.background_order.value == 1
    _click_run(retrieval, qtbot)
    phase = viewer.layers["hologram phase (classical)"]
    assert phase.metadata["qpi"]["wavelength_nm"] == pytest.approx(633.0)
    assert phase.scale[-1] == pytest.approx(0.25)
    assert phase.metadata["qpi_method"]["settings"]["filter"] == "disk"
    assert viewer.layers["hologram"].metadata["qpi"]["wavelength_nm"] == pytest.approx(532.0)


# 10. retrieval warnings reach the user as one clean notification; 2 pi jumps as a layer ---------


def test_a_retrieval_warning_is_one_clean_notification_and_jumps_are_marked(
    make_napari_viewer, qtbot
):
    from napari.utils.notifications import notification_manager

    from napari_qpi.retrieval import jump_mask

    viewer = _window(make_napari_viewer)
    y, x = np.mgrid[:192, :192]
    noise = np.random.default_rng(0).normal(0, 2, y.shape)
    fringes = 100 * (1 + 0.8 * np.cos(2 * np.pi * (0.23 * x + 0.11 * y))) + noise
    viewer.add_image(fringes.astype(np.float32), name="no cells", scale=(0.2, 0.2))
    (retrieval,) = _dock(viewer, PhaseRetrievalWidget(viewer))
    retrieval.method.value = "classical"
    retrieval.mark_jumps.value = True
    before = len(notification_manager.records)
    _click_run(retrieval, qtbot)
    qtbot.waitUntil(lambda: len(notification_manager.records) > before, timeout=5000)
    messages = [str(n.message) for n in notification_manager.records[before:]]
    warning = next(m for m in messages if "No cells stand out" in m)
    assert "\n" not in warning and ".py" not in warning  # no source path, no code line
    assert sum("No cells stand out" in m for m in messages) == 1
    assert "No cells stand out" in retrieval.controls.status.value  # also on the dock's line

    phase = viewer.layers["no cells phase (classical)"]
    jumps = viewer.layers["no cells phase (classical) 2π jumps"]
    assert jumps.data.shape == phase.data.shape
    assert tuple(jumps.scale) == tuple(phase.scale) == (0.2, 0.2)
    np.testing.assert_array_equal(jumps.data.astype(bool), jump_mask(phase.data))

    _click_run(retrieval, qtbot)  # a rerun refreshes the same layer (no removal, no copy)
    assert viewer.layers["no cells phase (classical) 2π jumps"] is jumps
    assert sum("2π jumps" in layer.name for layer in viewer.layers) == 1

    retrieval.mark_jumps.value = False  # a rerun without the option adds no new jumps layer
    viewer.layers.remove(jumps)
    _click_run(retrieval, qtbot)
    assert not any("2π jumps" in layer.name for layer in viewer.layers)


def test_jump_labels_mark_a_2pi_step_plane_by_plane():
    from napari_qpi._napari.layers import jump_labels

    stack = np.zeros((3, 16, 16), dtype=np.float32)
    stack[0, :, 8:] = 2 * np.pi  # a 2 pi step between columns 7 and 8
    stack[2] = np.nan  # a cancelled plane
    labels = jump_labels(stack)
    assert labels.shape == stack.shape and labels.dtype == np.uint8
    assert labels[0, :, 7:9].all() and labels[0].sum() == 2 * 16
    assert not labels[1].any() and not labels[2].any()


def test_the_same_warning_on_every_plane_is_shown_once_and_counted(qtbot, monkeypatch) -> None:
    """A stack whose planes each warn with their own figures gives one notification of that
    kind, and the status line says how many more there were; another kind is shown too."""
    import warnings

    from napari_qpi._napari import task

    shown: list[str] = []
    monkeypatch.setattr(task, "show_warning", shown.append)

    def job():
        warnings.warn("No cells stand out of the noise", UserWarning, stacklevel=1)
        for plane in range(4):
            percent = 0.1 * (plane + 1)
            message = f"Phase unwrapping left {percent:.2f}% of the pixels next to a 2 pi jump"
            warnings.warn(message, UserWarning, stacklevel=1)
            yield plane + 1, 4
        return "ok"

    results: list[str] = []
    controls = task.TaskControls(lambda: job(), results.append)
    with qtbot.waitSignal(controls.finished, timeout=30_000):
        controls.start()
    qtbot.waitUntil(lambda: controls.status.value.startswith("done"), timeout=10_000)
    assert results == ["ok"]
    assert shown == [
        "No cells stand out of the noise",
        "Phase unwrapping left 0.10% of the pixels next to a 2 pi jump",
    ]
    assert controls.status.value == (
        "done; Phase unwrapping left 0.10% of the pixels next to a 2 pi jump (and 3 more like it)"
    )
    assert len(controls.status.native.toolTip().splitlines()) == 5
