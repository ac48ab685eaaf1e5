"""Plots of a cells table in the dock: dry mass over time per track, histograms and scatters.

matplotlib draws in a Qt canvas (``FigureCanvasQTAgg``) inside the *Cell morphology* dock. The
plot follows the labels layer it shows: selecting a cell in the viewer (the layer's selected
label) highlights its track's curve or its point, and clicking a curve selects that track's cell
in the current frame (or its first frame). *Save plot* writes PNG or SVG (by the file's suffix)
and the plotted numbers as CSV next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton

__all__ = ["HISTOGRAM", "MASS_OVER_TIME", "SCATTER", "CellPlots"]

MASS_OVER_TIME = "dry mass over time"
HISTOGRAM = "histogram"
SCATTER = "scatter"
_HIDDEN = {"index", "label", "frame", "track_id", "parent_track_id"}
_NORMAL, _BOLD = 1.0, 3.5


class CellPlots(Container):
    """A matplotlib canvas with the plot kind, the columns and a save button."""

    def __init__(self, viewer: Any) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = viewer
        self.layer: Any = None
        self.kind = ComboBox(label="plot", choices=[MASS_OVER_TIME, HISTOGRAM, SCATTER])
        self.x = ComboBox(label="x", choices=[])
        self.y = ComboBox(label="y", choices=[])
        self.save_button = PushButton(text="Save plot…")
        self.figure = Figure(figsize=(4.0, 2.4), layout="constrained")  # 240 px: its minimum
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(240)
        self.lines: dict[int, Any] = {}
        self.points: Any = None
        super().__init__(widgets=[self.kind, self.x, self.y, self.save_button], visible=False)
        self.native.layout().addWidget(self.canvas)
        self.canvas.mpl_connect("pick_event", self._on_pick)
        for widget in (self.kind, self.x, self.y):
            widget.changed.connect(self.redraw)
        self.save_button.clicked.connect(self._ask_save)

    # -- data -----------------------------------------------------------------------------------
    def show_layer(self, layer: Any) -> None:
        """Plot the features of ``layer`` (a labels layer) and follow its selected label."""
        if self.layer is not None:
            self.layer.events.selected_label.disconnect(self._on_selected_label)
        self.layer = layer
        features = layer.features
        numeric = [
            c
            for c in features.columns
            if c not in _HIDDEN and np.issubdtype(features[c].dtype, np.number)
        ]
        tracked = "track_id" in features.columns
        kinds = [MASS_OVER_TIME, HISTOGRAM, SCATTER] if tracked else [HISTOGRAM, SCATTER]
        with self.kind.changed.blocked(), self.x.changed.blocked(), self.y.changed.blocked():
            self.kind.choices = kinds
            self.x.choices = numeric
            self.y.choices = numeric
            mass = "dry_mass_pg" if "dry_mass_pg" in numeric else (numeric or [None])[0]
            self.kind.value = kinds[0]
            if numeric:
                self.x.value = next((c for c in numeric if c.startswith("area")), numeric[0])
                self.y.value = mass
        layer.events.selected_label.connect(self._on_selected_label)
        self.visible = True
        self.redraw()

    def _column(self, name: str) -> np.ndarray:
        return np.asarray(self.layer.features[name], dtype=np.float64)

    # -- drawing --------------------------------------------------------------------------------
    def redraw(self, *_: Any) -> None:
        """Draw the chosen plot of the current layer's table."""
        self.axes.clear()
        self.lines, self.points = {}, None
        if self.layer is None or len(self.layer.features) == 0:
            self.canvas.draw_idle()
            return
        kind = self.kind.value
        self.y.visible = kind == SCATTER
        self.x.visible = kind != MASS_OVER_TIME
        if kind == MASS_OVER_TIME:
            self._draw_tracks()
        elif kind == HISTOGRAM:
            values = self._column(self.x.value)
            self.axes.hist(values[np.isfinite(values)], bins="auto", color="0.5")
            self.axes.set_xlabel(self.x.value)
            self.axes.set_ylabel("cells")
        else:
            self.points = self.axes.scatter(
                self._column(self.x.value), self._column(self.y.value), s=14, picker=True
            )
            self.axes.set_xlabel(self.x.value)
            self.axes.set_ylabel(self.y.value)
        self._highlight(self.layer.selected_label)
        self.canvas.draw_idle()

    def _draw_tracks(self) -> None:
        features = self.layer.features
        mass = "dry_mass_pg" if "dry_mass_pg" in features.columns else self.y.value
        for track_id, rows in features.groupby("track_id", sort=True):
            rows = rows.sort_values("frame")
            (line,) = self.axes.plot(
                rows["frame"], rows[mass], "-o", ms=3, lw=_NORMAL, alpha=0.6, picker=True
            )
            line.set_pickradius(5)
            line.set_gid(str(int(track_id)))
            self.lines[int(track_id)] = line
        self.axes.set_xlabel("frame")
        self.axes.set_ylabel(mass)

    def _highlight(self, label_value: int) -> None:
        features = self.layer.features
        track = None
        rows = features[features["index"] == label_value] if "index" in features else features[:0]
        if len(rows) and "track_id" in features:
            track = int(rows["track_id"].iloc[0])
        for track_id, line in self.lines.items():
            chosen = track_id == track
            line.set_linewidth(_BOLD if chosen else _NORMAL)
            line.set_alpha(1.0 if chosen else 0.4 if track is not None else 0.6)
        if self.points is not None:
            sizes = np.full(len(features), 14.0)
            if len(rows):
                sizes[np.flatnonzero(features["index"] == label_value)] = 80.0
            self.points.set_sizes(sizes)

    @property
    def highlighted_track(self) -> int | None:
        """The track whose curve is drawn bold, if any."""
        return next((t for t, line in self.lines.items() if line.get_linewidth() == _BOLD), None)

    # -- selection both ways --------------------------------------------------------------------
    def _on_selected_label(self, *_: Any) -> None:
        self._highlight(self.layer.selected_label)
        self.canvas.draw_idle()

    def _on_pick(self, event: Any) -> None:
        features = self.layer.features
        if event.artist is self.points and len(getattr(event, "ind", [])):
            self.select_cell(int(features["index"].iloc[int(event.ind[0])]))
        elif event.artist.get_gid() is not None:
            self.select_track(int(event.artist.get_gid()))

    def select_track(self, track_id: int) -> None:
        """Select the track's cell in the frame shown (or the track's first frame)."""
        features = self.layer.features
        rows = features[features["track_id"] == track_id]
        if not len(rows):
            return
        frame = int(self.viewer.dims.current_step[0]) if self.layer.ndim >= 3 else 0
        here = rows[rows["frame"] == frame]
        row = here.iloc[0] if len(here) else rows.sort_values("frame").iloc[0]
        if not len(here) and self.layer.ndim >= 3:
            self.viewer.dims.set_current_step(0, int(row["frame"]))
        self.select_cell(int(row["index"]))

    def select_cell(self, label_value: int) -> None:
        """Make ``label_value`` the selected label of the layer (the plot follows)."""
        self.layer.selected_label = label_value
        self.layer.show_selected_label = True

    # -- saving ---------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Write the figure (PNG or SVG, by suffix) and the plotted columns as CSV beside it.

        Both are written to a temporary name and moved into place; existing files are replaced
        only with ``overwrite=True``.
        """
        from ..errors import InputError
        from ..io._atomic import atomic_write, check_writable

        path = Path(path)
        if path.suffix.lower() not in (".png", ".svg"):
            raise InputError(f"Save the plot as .png or .svg, not {path.suffix or 'no suffix'}.")
        table = path.with_suffix(".csv")
        check_writable(path, overwrite)
        check_writable(table, overwrite)
        columns = ["index", "track_id", "frame", self.x.value, self.y.value, "dry_mass_pg"]
        features = self.layer.features
        kept = [c for c in dict.fromkeys(columns) if c in features.columns]
        with atomic_write(path, overwrite) as tmp:
            self.figure.savefig(tmp, dpi=150, format=path.suffix[1:].lower())
        with atomic_write(table, overwrite) as tmp:
            features[kept].to_csv(tmp, index=False)
        return [path, table]

    def _ask_save(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        name, _ = QFileDialog.getSaveFileName(
            self.native, "Save plot", "cells_plot.png", "Images (*.png *.svg)"
        )
        if name:  # the dialog has asked before replacing a file
            self.save(name, overwrite=True)
