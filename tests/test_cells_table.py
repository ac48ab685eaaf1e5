"""The cells table of the *Cell morphology* dock, used as a person would in a real window.

Open the sample, retrieve, measure; then read the table, click its headers and rows, pick cells
in the viewer, export it, and check what that person would see.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_qpi._napari.cells_table import CellsTable
from napari_qpi._napari.morphology_widget import CellMorphologyWidget
from napari_qpi.io.tables import read_table_csv
from test_gui import _add_timelapse, _click_run, _dock, _measured_sample, _window

USER = Qt.ItemDataRole.UserRole


def _titles(table: CellsTable) -> list[str]:
    model = table.model
    return [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]


def _column(table: CellsTable, title: str) -> list[float]:
    """The numbers of the column headed ``title``, top to bottom, as the view shows them."""
    model, column = table.model, _titles(table).index(title)
    return [model.data(model.index(r, column), USER) for r in range(model.rowCount())]


def _click_header(table: CellsTable, title: str, qtbot) -> None:
    header = table.view.horizontalHeader()
    column = _titles(table).index(title)
    table.view.scrollTo(table.model.index(0, column))
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(
        header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2)
    )


def _click_row(table: CellsTable, row: int, qtbot) -> None:
    index = table.model.index(row, 0)
    table.view.scrollTo(index)
    qtbot.mouseClick(
        table.view.viewport(), Qt.MouseButton.LeftButton, pos=table.view.visualRect(index).center()
    )


def _selected_row(table: CellsTable) -> int | None:
    rows = table.view.selectionModel().selectedRows()
    return rows[0].row() if rows else None


@pytest.fixture
def measured_sample(make_napari_viewer, qtbot):
    return _measured_sample(make_napari_viewer, qtbot)


def test_the_table_shows_every_cell_with_units_and_sorts_by_number(measured_sample, qtbot):
    viewer, morphology, labels = measured_sample
    table = morphology.table
    features = labels.features
    assert table.native.isVisibleTo(morphology.native)
    assert table.model.rowCount() == len(features) >= 3
    titles = _titles(table)
    assert {"dry mass (pg)", "area (µm²)", "mean phase (rad)", "label"} <= set(titles)
    assert "value" not in titles and "frame" not in titles, "a single image: value = label"
    assert f"{len(features)} cells" in table.caption.value
    shown = table.model.data(table.model.index(0, titles.index("dry mass (pg)")))
    assert len(shown.split(".")[-1]) <= 4, shown  # rounded, not 17 digits
    # the window keeps its size (the dock scrolls); a window tall enough for all the fields gives
    # the table the room left over: as many rows as fit
    qtbot.wait(300)
    window, scroll = viewer.window._qt_window, morphology.native
    assert window.height() == 900 and scroll.verticalScrollBar().maximum() > 0
    before = table.view.height()
    for _ in range(15):  # the two docks share each growth of the window
        if scroll.verticalScrollBar().maximum() == 0:
            break
        window.resize(1400, window.height() + 200)
        qtbot.wait(100)
    window.resize(1400, window.height() + 300)
    qtbot.wait(300)
    assert scroll.verticalScrollBar().maximum() == 0
    assert table.view.height() > before
    # a click on a header sorts by the numbers; a second click reverses
    mass = np.asarray(features["dry_mass_pg"], dtype=float)
    assert sorted(mass, key=str) != sorted(mass), "the sample tells a text sort from a numeric one"
    _click_header(table, "dry mass (pg)", qtbot)
    assert _column(table, "dry mass (pg)") == pytest.approx(np.sort(mass))
    _click_header(table, "dry mass (pg)", qtbot)
    assert _column(table, "dry mass (pg)") == pytest.approx(np.sort(mass)[::-1])
    # rows keep their cells: each shown label has its own dry mass
    by_label = dict(zip(features["label"], features["dry_mass_pg"], strict=True))
    pairs = zip(_column(table, "label"), _column(table, "dry mass (pg)"), strict=True)
    assert all(by_label[label] == pytest.approx(m) for label, m in pairs)


def test_rows_and_cells_select_each_other(measured_sample, qtbot):
    _, morphology, labels = measured_sample
    table = morphology.table
    _click_header(table, "dry mass (pg)", qtbot)
    assert not labels.show_selected_label
    for row in (2, 0):
        _click_row(table, row, qtbot)
        assert labels.selected_label == _column(table, "label")[row]
        # the viewer shows that cell alone, as selecting it on a plot does
        assert labels.show_selected_label
        plotted = morphology.plots
        labels.show_selected_label = False
        plotted.select_cell(int(labels.selected_label))
        assert labels.show_selected_label
    _click_header(table, "dry mass (pg)", qtbot)  # sorting again keeps the cell selected
    assert _column(table, "label")[_selected_row(table)] == labels.selected_label
    # the reverse: picking a label in the viewer selects its row
    for value in _column(table, "label")[::-1][:2]:
        labels.selected_label = int(value)
        row = _selected_row(table)
        assert row is not None and _column(table, "label")[row] == value
    labels.selected_label = int(max(labels.features["label"])) + 100  # a label for painting
    assert _selected_row(table) is None


def test_export_writes_a_csv_that_reads_back_the_same(
    measured_sample, qtbot, tmp_path, monkeypatch
):
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QFileDialog

    _, morphology, labels = measured_sample
    table = morphology.table
    target = tmp_path / "cells.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    table.export_button.native.click()
    back = read_table_csv(target)
    features = labels.features
    assert back.names == list(features.columns)
    for name in features.columns:
        np.testing.assert_allclose(back[name], features[name], equal_nan=True)
    assert back.units["dry_mass_pg"] == "pg" and back.units["area_um2"] == "um^2"
    # without the dialog's consent an existing file is never replaced: a notification, no traceback
    before = target.read_text()
    count = len(notification_manager.records)
    assert table.export(target) is None
    assert target.read_text() == before
    assert any("already exists" in str(n.message) for n in notification_manager.records[count:])
    table.export_button.native.click()  # the dialog asked: replaced
    assert read_table_csv(target).names == back.names


def test_the_labels_picker_and_removing_the_layer_change_the_table(measured_sample, qtbot):
    viewer, morphology, labels = measured_sample
    table = morphology.table
    painted = viewer.add_labels(np.zeros(labels.data.shape, dtype=np.int32), name="painted")
    morphology.user_labels.value = painted
    assert not table.native.isVisibleTo(morphology.native), "no cells measured on it yet"
    morphology.user_labels.value = labels
    assert table.native.isVisibleTo(morphology.native)
    assert table.model.rowCount() == len(labels.features)
    morphology.user_labels.value = None
    viewer.layers.remove(labels)
    assert table.layer is None and table.model.rowCount() == 0
    assert not table.native.isVisibleTo(morphology.native)


def test_a_stack_row_moves_the_viewer_to_its_frame(make_napari_viewer, qtbot):
    viewer = _window(make_napari_viewer)
    _add_timelapse(viewer)
    (morphology,) = _dock(viewer, CellMorphologyWidget(viewer))
    _click_run(morphology, qtbot)
    labels, table = viewer.layers["timelapse cells"], morphology.table
    features = labels.features
    assert table.model.rowCount() == len(features) >= 6
    assert {"value", "label", "frame"} <= set(_titles(table))
    viewer.dims.set_current_step(0, 0)
    _click_header(table, "frame", qtbot)
    _click_header(table, "frame", qtbot)  # last frame first
    _click_row(table, 0, qtbot)
    assert viewer.dims.current_step[0] == 2 == _column(table, "frame")[0]
    assert labels.selected_label == _column(table, "value")[0]
    # picking a cell of frame 0 in the viewer selects its row
    first = features[features["frame"] == 0].iloc[0]
    labels.selected_label = int(first["index"])
    assert _column(table, "value")[_selected_row(table)] == first["index"]
    # this frame only: the rows of the frame on screen
    table.this_frame.value = True
    viewer.dims.set_current_step(0, 1)
    assert set(_column(table, "frame")) == {1}
    assert table.model.rowCount() == int((features["frame"] == 1).sum())
    assert "of" in table.caption.value
    table.this_frame.value = False
    assert table.model.rowCount() == len(features)
