"""The per-cell table of a labels layer in the *Cell morphology* dock.

A ``QTableView`` over ``layer.features`` (a pandas DataFrame, one row per cell) with readable
headers and units (``dry mass (pg)``, ``area (µm²)``, from ``metadata["qpi_morphology"]``), numbers
rounded per column, numeric sorting by a click on a header (empty values last), and selection both
ways: a row selects its cell in the viewer (``selected_label``, moving to the cell's frame in a
stack), picking a label selects and shows its row. In a stack, *this frame only* keeps the rows of
the frame on screen. *Export table…* writes the whole table as CSV with its JSON sidecar of units
and parameters (:func:`napari_qpi.io.tables.write_table_csv`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, Label, PushButton
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QSizePolicy, QTableView

from .layers import MORPHOLOGY_KEY

__all__ = ["CellsTable", "CellsTableModel", "column_title", "number_format"]

#: Identity columns, shown first (in this order) when present.
_LEAD = ("index", "label", "frame", "track_id", "parent_track_id")
#: The measurements a biologist reads first, right after the identity columns (when present).
_FIRST = ("dry_mass_pg", "area_um2", "area_px2")
_TITLES = {"index": "value", "track_id": "track", "parent_track_id": "parent track"}
_UNIT_SUFFIX = re.compile(r"(_(um|px|pg|rad|per|h|s|frames)\d?)+$")
_GUESSED_UNITS = {"_um2": "um^2", "_um3": "um^3", "_um": "um", "_px2": "px^2", "_px": "px"}
_GUESSED_UNITS.update({"_pg": "pg", "_rad": "rad"})


def pretty_unit(unit: str) -> str:
    """``"um^2"`` -> ``"µm²"``, ``"rad um^2"`` -> ``"rad·µm²"``, ``"pg/um^2"`` -> ``"pg/µm²"``."""
    text = re.sub(r"\bum\b", "µm", unit.strip())
    return text.replace("^2", "²").replace("^3", "³").replace(" ", "·")


def column_title(name: str, unit: str | None = None) -> str:
    """The header shown for a column: words without the unit suffix, the unit in brackets."""
    if unit is None:  # a table without its units record: read the unit from the name
        unit = next((u for s, u in _GUESSED_UNITS.items() if name.endswith(s)), "")
    words = _TITLES.get(name) or _UNIT_SUFFIX.sub("", name).replace("_", " ") or name
    return f"{words} ({pretty_unit(unit)})" if unit else words


def number_format(values: np.ndarray) -> str:
    """A format for a column: integers as they are, floats to about 4 significant digits.

    One number of decimals per column (from its median magnitude), so the column lines up.
    """
    if values.dtype.kind in "biu":
        return "{:d}"
    finite = np.abs(values[np.isfinite(values)])
    finite = finite[finite > 0]
    if finite.size == 0:
        return "{:.4g}"
    typical = float(np.median(finite))
    if typical >= 1e6 or typical < 1e-4:
        return "{:.3e}"
    decimals = int(np.clip(3 - math.floor(math.log10(typical)), 0, 6))
    return f"{{:.{decimals}f}}"


class CellsTableModel(QAbstractTableModel):
    """Rows of a features table in a chosen order, with a frame filter; read-only."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.titles: list[str] = []
        self.units: list[str] = []
        self._columns: list[np.ndarray] = []
        self._formats: list[str] = []
        self.values = np.zeros(0, dtype=np.int64)  # label value of each row of the features
        self.frames: np.ndarray | None = None
        self._frame: int | None = None
        self._sort: tuple[int, Qt.SortOrder] = (-1, Qt.SortOrder.AscendingOrder)
        self.rows = np.zeros(0, dtype=np.int64)  # features row of each shown row

    def set_features(
        self, features: Any, units: dict[str, str] | None, *, stack: bool = True
    ) -> None:
        """Show ``features`` (a DataFrame); ``units`` maps a column name to its unit.

        Without ``stack`` (a single image) the ``frame`` column, all zeros, is not shown.
        """
        self.beginResetModel()
        names = [c for c in features.columns if np.issubdtype(features[c].dtype, np.number)]
        if not stack and "frame" in names:
            names.remove("frame")
        if "index" in names and "label" in names:
            if np.array_equal(features["index"], features["label"]):
                names.remove("index")  # a single image: the value is the label
        lead = [c for c in (*_LEAD, *_FIRST) if c in names]
        self.names = lead + [c for c in names if c not in lead]
        self._columns = [np.asarray(features[c]) for c in self.names]
        self._formats = [number_format(c) for c in self._columns]
        self.units = [(units or {}).get(c, "") for c in self.names]
        self.titles = [column_title(c, (units or {}).get(c) if units else None) for c in self.names]
        key = "index" if "index" in features.columns else "label"
        count = len(features)
        self.values = (
            np.asarray(features[key], dtype=np.int64)
            if key in features
            else np.arange(1, count + 1)
        )
        self.frames = np.asarray(features["frame"], np.int64) if "frame" in features else None
        self.rows = self._ordered()
        self.endResetModel()

    # -- Qt model -------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        value = self._columns[index.column()][self.rows[index.row()]]
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, float | np.floating) and not np.isfinite(value):
                return "" if np.isnan(value) else str(float(value))
            return self._formats[index.column()].format(value)
        if role == Qt.ItemDataRole.UserRole:
            return value.item()
        if role == Qt.ItemDataRole.ToolTipRole:
            return repr(value.item())
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.names):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.titles[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            unit = f" in {self.units[section]}" if self.units[section] else ""
            return f"{self.names[section]}{unit}: click to sort"
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by the numbers of ``column`` (stable; empty values last; -1: table order)."""
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self._reorder(self._ordered())
        self.layoutChanged.emit()

    # -- order and filter -----------------------------------------------------------------------
    @property
    def frame(self) -> int | None:
        """The frame whose rows are shown (``None``: every row)."""
        return self._frame

    def set_frame(self, frame: int | None) -> None:
        """Show only the rows of ``frame`` (``None``: every row)."""
        if frame == self._frame:
            return
        self.beginResetModel()
        self._frame = frame
        self.rows = self._ordered()
        self.endResetModel()

    def _ordered(self) -> np.ndarray:
        rows = np.arange(len(self.values), dtype=np.int64)
        if self._frame is not None and self.frames is not None:
            rows = rows[self.frames == self._frame]
        column, order = self._sort
        if 0 <= column < len(self._columns):
            keys = self._columns[column][rows].astype(np.float64)
            if order == Qt.SortOrder.DescendingOrder:
                keys = -keys  # NaN stays NaN: last either way
            rows = rows[np.argsort(keys, kind="stable")]
        return rows

    def _reorder(self, rows: np.ndarray) -> None:
        """New row order, keeping persistent indexes (the selection) on their cells."""
        where = {int(r): i for i, r in enumerate(rows)}
        old = self.persistentIndexList()
        new = [
            self.index(where[int(self.rows[i.row()])], i.column())
            if int(self.rows[i.row()]) in where
            else QModelIndex()
            for i in old
        ]
        self.rows = rows
        self.changePersistentIndexList(old, new)

    def row_of(self, value: int) -> int | None:
        """The shown row of the cell whose label value is ``value``, if shown."""
        hits = np.flatnonzero(self.values[self.rows] == value)
        return int(hits[0]) if hits.size else None


class CellsTable(Container):
    """The cells of one labels layer: caption, sortable table, frame filter, export button."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.layer: Any = None
        self.caption = Label(value="")
        self.this_frame = CheckBox(
            label="this frame only", value=False, tooltip="show only the cells of the frame shown"
        )
        self.export_button = PushButton(
            text="Export table…", tooltip="write the whole table as CSV with its units (.json)"
        )
        self.model = CellsTableModel()
        self.view = _table_view(self.model)
        super().__init__(
            widgets=[self.caption, self.this_frame, self.export_button], labels=False, visible=False
        )
        self.native.layout().insertWidget(2, self.view, 1)
        policy = QSizePolicy.Policy
        self.native.setSizePolicy(policy.Preferred, policy.Expanding)
        self._syncing = False
        self._stack = False
        self.view.selectionModel().selectionChanged.connect(self._on_row_selected)
        self.this_frame.changed.connect(self._follow_frame)
        viewer.dims.events.current_step.connect(self._follow_frame)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.export_button.clicked.connect(self._ask_export)

    # -- which layer ----------------------------------------------------------------------------
    def show_layer(self, layer: Any) -> None:
        """Show the features of ``layer`` (a labels layer) and follow its selected label."""
        self._disconnect()
        self.layer = layer
        layer.events.selected_label.connect(self._on_selected_label)
        layer.events.features.connect(self.refresh)
        self.refresh()

    def clear(self) -> None:
        """Show nothing (no labels layer, or one without a table)."""
        self._disconnect()
        self.layer = None
        self.refresh()

    def _disconnect(self) -> None:
        if self.layer is not None:
            self.layer.events.selected_label.disconnect(self._on_selected_label)
            self.layer.events.features.disconnect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Read the layer's features and units again."""
        layer = self.layer
        features = getattr(layer, "features", None)
        if layer is None or features is None or len(features) == 0:
            self.model.set_features(_empty_frame(), {})
            self.visible = False
            return
        record = (layer.metadata or {}).get(MORPHOLOGY_KEY) or {}
        self._stack = "frame" in features.columns and layer.ndim > 2
        self.model.set_features(features, record.get("units"), stack=self._stack)
        self.this_frame.visible = self._stack
        self._follow_frame()
        self.view.resizeColumnsToContents()
        self.visible = True

    def _on_layer_removed(self, event: Any) -> None:
        if event.value is self.layer:
            self.clear()

    # -- selection both ways --------------------------------------------------------------------
    def _on_row_selected(self, *_: Any) -> None:
        rows = self.view.selectionModel().selectedRows()
        if self._syncing or not rows or self.layer is None:
            return
        position = int(self.model.rows[rows[0].row()])
        self._syncing = True
        try:
            if self.model.frames is not None and self.layer.ndim > 2:
                self._go_to_frame(int(self.model.frames[position]))
            self.layer.selected_label = int(self.model.values[position])
            self.layer.show_selected_label = True  # the cell alone, as a click on a plot shows it
        finally:
            self._syncing = False
        self._update_caption()

    def _on_selected_label(self, *_: Any) -> None:
        if self._syncing or self.layer is None:
            return
        self.select_label(int(self.layer.selected_label))

    def select_label(self, value: int) -> None:
        """Select and scroll to the row of label ``value`` (no row: clear the selection)."""
        row = self.model.row_of(value)
        self._syncing = True
        try:
            if row is None:
                self.view.clearSelection()
            else:
                self.view.selectRow(row)
                self.view.scrollTo(self.model.index(row, 0))
        finally:
            self._syncing = False
        self._update_caption()

    def _go_to_frame(self, frame: int) -> None:
        """Move the viewer's sliders to flat frame ``frame`` of the layer's leading axes."""
        leading = tuple(self.layer.data.shape[:-2])
        indices = np.unravel_index(frame, leading) if leading else ()
        world = self.layer.data_to_world([*indices, 0, 0])
        first = self.viewer.dims.ndim - self.layer.ndim
        for axis, value in enumerate(world[: len(leading)]):
            self.viewer.dims.set_point(first + axis, value)

    def shown_frame(self) -> int | None:
        """The flat frame index of the layer's plane on screen (``None`` for an image)."""
        leading = tuple(self.layer.data.shape[:-2]) if self.layer is not None else ()
        if not leading:
            return None
        data = self.layer.world_to_data(self.viewer.dims.point)[: len(leading)]
        indices = np.clip(np.round(data).astype(int), 0, np.array(leading) - 1)
        return int(np.ravel_multi_index(tuple(indices), leading))

    def _follow_frame(self, *_: Any) -> None:
        if self.layer is None:
            return
        frame = self.shown_frame() if self.this_frame.value and self._stack else None
        if frame != self.model.frame:
            self.model.set_frame(frame)
            self.select_label(int(self.layer.selected_label))
        self._update_caption()

    def _update_caption(self) -> None:
        if self.layer is None:
            self.caption.value = ""
            return
        total, shown = len(self.model.values), len(self.model.rows)
        where = f"{shown} of {total} cells" if shown != total else f"{total} cells"
        self.caption.value = f"{where} in '{self.layer.name}'"

    # -- export ---------------------------------------------------------------------------------
    def export(self, path: str | Path, *, overwrite: bool = False) -> Path | None:
        """Write the layer's whole table as CSV (+ ``.csv.json`` units and parameters).

        Errors become a napari notification; the CSV path, or ``None`` when nothing was written.
        """
        from ..errors import QPIError
        from ..io.tables import write_table_csv
        from .writer import table_of

        if self.layer is None:
            return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_name(path.name + ".csv")
        table = table_of({"features": self.layer.features, "metadata": self.layer.metadata})
        try:
            written = write_table_csv(path, table, overwrite=overwrite)
        except (QPIError, OSError) as error:
            show_warning(f"Could not export the table: {error}")
            return None
        show_info(f"Wrote {len(table)} cells to {written}")
        return written

    def _ask_export(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        if self.layer is None:
            return
        name, _ = QFileDialog.getSaveFileName(
            self.native, "Export table", f"{self.layer.name}.csv", "CSV (*.csv)"
        )
        if name:  # the dialog has asked before replacing that file (not one with .csv added)
            self.export(name, overwrite=name.lower().endswith(".csv"))


def _table_view(model: CellsTableModel) -> QTableView:
    """A compact, read-only, row-selecting, sortable view of ``model``."""
    view = QTableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setAlternatingRowColors(True)
    # Qt's default alternate colour is light whatever the theme: under napari's dark theme every
    # other row was light text on a light ground. A faint lightening of the theme's own base works
    # on dark and light themes alike.
    view.setStyleSheet("QTableView { alternate-background-color: rgba(128, 128, 128, 40); }")
    view.setWordWrap(False)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 6)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
    view.setSortingEnabled(True)
    view.setMinimumHeight(6 * (view.fontMetrics().height() + 6))
    policy = QSizePolicy.Policy
    view.setSizePolicy(policy.Expanding, policy.Expanding)
    return view


def _empty_frame() -> Any:
    import pandas as pd

    return pd.DataFrame()
