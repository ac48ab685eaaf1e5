"""The *Cell morphology* widget: phase layer in, labels layer with a per-cell table out."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, create_widget
from napari.utils.notifications import show_warning

from ..errors import InputError
from ..morphology import (
    DEFAULT_ALPHA_UM3_PER_PG,
    MorphologyTable,
    SegmentationSettings,
    combine_frames,
    iter_measure_frames,
)
from ..morphology.tracking import Tracks, track_cells, tracks_layer_data
from .cells_table import CellsTable
from .dock import DockContainer
from .layer_insert import add_layer_steps
from .layers import MORPHOLOGY_KEY, acquisition_of
from .pickers import layer_picker, phase_rank
from .plots import CellPlots
from .task import Job, TaskControls


class CellMorphologyWidget(DockContainer):
    """Segment cells on a phase layer (or take a painted labels layer) and measure them."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.phase = layer_picker(
            viewer,
            phase_rank,
            label="phase",
            tooltip="phase image in radians (retrieved phase first)",
            follow=1,
        )
        self.user_labels = create_widget(
            annotation=napari.layers.Labels | None,
            label="labels (optional)",
            options={"nullable": True},
        )
        fields = self._make_fields(SegmentationSettings())
        self.controls = TaskControls(self._make_job, self._add_result, run_text="Measure")
        self.table = CellsTable(viewer)
        self.plots = CellPlots(viewer)
        super().__init__(
            widgets=[
                self.phase,
                self.user_labels,
                *fields,
                self.controls,
                self.table,
                self.plots,
            ]
        )
        give_room(self, self.table, 3)  # room the dock gains goes to the table first
        give_room(self, self.plots, 1)
        self.phase.changed.connect(self._fill_wavelength)
        self.user_labels.changed.connect(self._on_labels_picked)
        self.reset_choices()
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._fill_wavelength()

    def _make_fields(self, defaults: SegmentationSettings) -> list[Any]:
        """The segmentation and measurement settings, in the order the dock shows them."""
        self.threshold = LineEdit(
            label="threshold",
            value=str(defaults.threshold),
            tooltip="auto (8 noise sigmas), triangle, otsu, li, or a level in rad above the "
            "background",
        )
        self.smoothing = FloatSpinBox(
            label="smoothing (px)", value=defaults.smoothing_sigma_px, min=0.0, max=10.0, step=0.5
        )
        self.min_area = FloatSpinBox(
            label="min area (um²)",
            value=0.0,
            min=0.0,
            max=1e5,
            step=5.0,
            tooltip="0: learnt from the image (px² without a pixel size)",
        )
        self.split = CheckBox(label="split touching cells", value=defaults.split_touching)
        self.exclude_border = CheckBox(label="exclude border cells", value=defaults.exclude_border)
        self.wavelength = FloatSpinBox(
            label="wavelength (nm)",
            value=0.0,
            min=0.0,
            max=2000.0,
            step=1.0,
            tooltip="0: take it from the layer's metadata",
        )
        self.alpha = FloatSpinBox(
            label="α (um³/pg)",
            value=DEFAULT_ALPHA_UM3_PER_PG,
            min=0.01,
            max=1.0,
            step=0.005,
            tooltip="refractive increment for dry mass (0.18 mL/g)",
        )
        self.cell_background = ComboBox(
            label="cell background",
            choices=[("local ring", "local"), ("0 rad (as DryMass)", "zero")],
            value="local",
            tooltip="phase a cell's dry mass is counted above: a plane fitted to a ring around "
            "each cell (removes a residual offset or curved background), or 0 rad as DryMass "
            "does (for phase whose background is already flat at 0)",
        )
        self.track = CheckBox(
            label="track cells",
            value=False,
            tooltip="link cells across the frames of a time-lapse (T, Y, X): drift, divisions; "
            "adds a Tracks layer and track_id to the table",
        )
        self.frame_interval = FloatSpinBox(
            label="frame interval (s)",
            value=0.0,
            min=0.0,
            max=1e7,
            step=10.0,
            tooltip="0: unknown (growth per frame only)",
        )
        return [
            self.threshold,
            self.smoothing,
            self.min_area,
            self.split,
            self.exclude_border,
            self.wavelength,
            self.alpha,
            self.cell_background,
            self.track,
            self.frame_interval,
        ]

    def _fill_wavelength(self, *_: Any) -> None:
        layer = self.phase.value
        if layer is not None:
            wavelength = acquisition_of(layer.metadata).wavelength_nm
            self.wavelength.value = wavelength or 0.0

    def _on_labels_picked(self, layer: Any) -> None:
        """Show the table of a labels layer picked in *labels (optional)*; clear it for one
        without a table (painted, not measured yet). Unpicking keeps the table shown."""
        if layer is not None:
            self.show_cells(layer)

    def show_cells(self, labels_layer: Any) -> None:
        """Table and plots of ``labels_layer``'s cells (cleared when it has none)."""
        if labels_layer is None or len(labels_layer.features) == 0:
            self.table.clear()
            self.plots.visible = False
            return
        self.table.show_layer(labels_layer)
        self.plots.show_layer(labels_layer)

    def settings(self) -> SegmentationSettings:
        text = self.threshold.value.strip() or "auto"
        try:
            threshold: str | float = float(text)
        except ValueError:
            threshold = text
        return SegmentationSettings(
            threshold=threshold,
            smoothing_sigma_px=float(self.smoothing.value),
            min_area_um2=float(self.min_area.value) or None,
            split_touching=bool(self.split.value),
            exclude_border=bool(self.exclude_border.value),
        )

    def _make_job(self) -> Job:
        layer = self.phase.value
        if layer is None:
            raise InputError("Choose a phase layer: run Phase retrieval first, or open one.")
        labels_layer = self.user_labels.value
        phase = layer.data
        # a copy: the user may paint on the layer while the worker measures
        labels = None if labels_layer is None else np.array(labels_layer.data, copy=True)
        if labels is not None and tuple(labels.shape) != tuple(phase.shape):
            raise InputError(
                f"Labels layer '{labels_layer.name}' has shape {tuple(labels.shape)} but phase "
                f"layer '{layer.name}' has shape {tuple(phase.shape)}: paint labels on this phase "
                "image, or leave labels empty to segment automatically."
            )
        acquisition = acquisition_of(layer.metadata)
        pixel = acquisition.pixel_size_um
        if pixel is None and float(layer.scale[-1]) != 1.0:
            pixel = float(layer.scale[-1])
        wavelength = float(self.wavelength.value) or acquisition.wavelength_nm
        options = {
            "pixel_size_um": pixel,
            "wavelength_nm": wavelength,
            "alpha_um3_per_pg": float(self.alpha.value),
            "settings": self.settings(),
            "local_background": self.cell_background.value == "local",
        }
        shape = tuple(phase.shape)
        total = int(np.prod(shape[:-2], dtype=int))
        track = bool(self.track.value)
        if track and (len(shape) != 3 or shape[0] < 2):
            raise InputError(
                f"Track cells needs a time-lapse: layer '{layer.name}' has shape {shape}, not "
                "(T, Y, X) with at least 2 frames. Untick Track cells, or open the movie as one "
                "stack."
            )
        interval = float(self.frame_interval.value) or None
        make_layer = self._layer_maker(layer, len(shape))

        def run() -> Job:
            out_labels = np.zeros(shape, dtype=np.int32)
            tables: list[MorphologyTable] = []
            offsets: list[int] = []
            top = 0
            for done, (position, plane_labels, table) in enumerate(
                iter_measure_frames(phase, labels, **options), start=1
            ):
                offsets.append(top)
                top = unique_frame_labels(out_labels, position, plane_labels, top)
                tables.append(table)
                yield done, total
            table = with_index(combine_frames(tables, shape), offsets)
            result = {"layer": layer, "labels": out_labels, "table": table, "tracks": None}
            if track:
                result["tracks"] = track_cells(table, frame_interval_s=interval)
                order = np.argsort(result["tracks"].table["index"], kind="stable")
                columns = {k: v[order] for k, v in result["tracks"].table.columns.items()}
                units = result["tracks"].table.units
                result["table"] = MorphologyTable(columns, units, table.metadata)
            result.update(make_layer(out_labels, result["table"]))
            return result

        return run()

    def _layer_maker(self, source: Any, ndim: int) -> Any:
        """What the worker calls to build the result's features table and metadata, and the
        labels layer itself when there is none to refresh in place.

        A napari layer is a plain Python model until it is added to the viewer; building it (and
        its pandas table) in the worker keeps ~20-40 ms off the GUI thread's busiest turn.
        """
        name = f"{source.name} cells"
        old = self.viewer.layers[name] if name in self.viewer.layers else None
        fresh = not (isinstance(old, napari.layers.Labels) and old.ndim == ndim)
        kwargs = {
            "name": name,
            "scale": tuple(source.scale),
            "translate": tuple(source.translate),
            "units": tuple(str(u) for u in source.units),
        }
        qpi = source.metadata.get("qpi", {})

        def make(labels: np.ndarray, table: MorphologyTable) -> dict[str, Any]:
            metadata = {
                "qpi": qpi,
                MORPHOLOGY_KEY: {"units": table.units, "metadata": table.metadata},
            }
            features = table.to_dataframe()  # its "index" column maps label value -> row
            parts = {"features": features, "metadata": metadata, "new_layer": None}
            if fresh:
                parts["new_layer"] = napari.layers.Labels(
                    labels, features=features, metadata=metadata, **kwargs
                )
            return parts

        return make

    def _add_result(self, result: dict[str, Any]) -> Iterator[None]:
        """Show a measurement: labels layer, tracks, table, plots, each in an event-loop turn.

        In one turn they cost the GUI thread ~300 ms on the sample the first time (napari adding
        the labels layer ~115-160 ms of CPU time, the table ~15 ms, the plot's draw ~60 ms, then the
        window's repaint); between the steps napari repaints and the dock answers the user (see
        TaskControls). The plots are shown and filled in one step, so that matplotlib draws the
        figure once (drawing the empty axes first cost another ~55 ms).
        """
        source = result["layer"]
        table: MorphologyTable = result["table"]
        labels_layer = yield from self._labels_layer(source, result)
        yield
        if result.get("tracks") is not None:
            self._add_tracks(source, result["tracks"])
            yield
        if len(labels_layer.features) == 0:
            self.show_cells(labels_layer)
        else:
            self.table.show_layer(labels_layer)
            yield
            self.plots.show_layer(labels_layer)  # draws on a later turn (draw_idle)
        _warn_about(source.name, table)

    def _labels_layer(self, source: Any, result: dict[str, Any]) -> Generator[None, None, Any]:
        """The labels layer of ``source``'s cells, refreshed in place if it is already there
        (a new one is added in several turns: :func:`.layer_insert.add_layer_steps`)."""
        name = f"{source.name} cells"
        labels = result["labels"]
        old = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(old, napari.layers.Labels) and old.ndim == labels.ndim:
            # in place: removing a layer makes napari collect garbage (0.7 s on the GUI thread)
            old.metadata, old.features = result["metadata"], result["features"]
            old.data = labels
            return old
        if result["new_layer"] is None:  # there was one to refresh when the job started
            return self.viewer.add_labels(
                labels,
                name=name,
                features=result["features"],
                metadata=result["metadata"],
                scale=source.scale,
                translate=source.translate,
                units=tuple(str(u) for u in source.units),
            )
        return (yield from add_layer_steps(self.viewer, result["new_layer"]))

    def _add_tracks(self, source: Any, tracks: Tracks) -> None:
        """A Tracks layer with the table's track ids (same scale as the phase layer)."""
        name = f"{source.name} tracks"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data = tracks_layer_data(tracks)
        if len(data) == 0:
            return
        self.viewer.add_tracks(
            data,
            graph=tracks.graph,
            name=name,
            scale=source.scale,
            translate=source.translate,
            metadata={MORPHOLOGY_KEY: {"summary": tracks.summary.columns}},
        )


def _warn_about(name: str, table: MorphologyTable) -> None:
    """Tell the user what a measurement of layer ``name`` lacks (pixel size, wavelength, cells)."""
    if table.metadata.get("pixel_size_missing"):
        show_warning(
            f"'{name}' has no pixel size: areas are in pixels and dry mass is empty. "
            "Set the pixel size in the file's metadata or sidecar."
        )
    elif table.metadata.get("wavelength_nm") is None:
        show_warning(
            f"'{name}': no dry mass without the wavelength; enter it in the "
            "wavelength field (nm) and measure again."
        )
    if len(table) == 0:
        show_warning(
            f"No cells found in '{name}': set a lower threshold (a level in rad) or a "
            "smaller min area."
        )


def give_room(container: Container, widget: Any, stretch: int) -> None:
    """Let ``widget`` take a share ``stretch`` of the height ``container`` gains."""
    from qtpy.QtWidgets import QSizePolicy

    body = container.body if isinstance(container, DockContainer) else container.native
    item = widget.native  # magicgui wraps a labelled widget in a row of its own
    while item.parentWidget() is not None and item.parentWidget() is not body:
        item = item.parentWidget()
    item.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    body.layout().setStretchFactor(item, stretch)


def unique_frame_labels(
    out: np.ndarray, position: Any, plane_labels: np.ndarray, offset: int
) -> int:
    """Write one frame's labels into ``out``, shifted by ``offset``; the next frame's offset.

    napari looks a hovered label up by value alone (``features["index"]``), so every cell of a
    stack gets a value of its own: frame k's labels are shifted past the largest value of
    frames 0..k-1. The table keeps each frame's own ``label`` and gets the shown value as ``index``.
    """
    out[position] = np.where(plane_labels > 0, plane_labels + offset, 0)
    return offset + int(plane_labels.max(initial=0))


def with_index(table: MorphologyTable, offsets: list[int]) -> MorphologyTable:
    """``table`` with an ``index`` column: the value of each cell in the labels layer."""
    labels = np.asarray(table.columns["label"], dtype=np.int64)
    frames = np.asarray(table.columns.get("frame", np.zeros(len(labels), int)), dtype=np.int64)
    shift = np.asarray(offsets, dtype=np.int64)[frames] if len(labels) else labels
    columns = {"index": labels + shift, **table.columns}
    units = {"index": "", **table.units}
    return MorphologyTable(columns=columns, units=units, metadata=table.metadata)
