"""Cell morphology in napari: widget, labels + table writers, analysis folder."""

from __future__ import annotations

import numpy as np
import pytest

from napari_qpi._napari.morphology_widget import CellMorphologyWidget
from napari_qpi.io import read_image
from napari_qpi.io.tables import read_labels_tiff, read_table_csv
from napari_qpi.physics import random_cells

ACQ = {"wavelength_nm": 532.0, "pixel_size_um": 0.2, "modality": "phase"}


@pytest.fixture
def phase_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    phantom = random_cells((256, 256), n_cells=4, kinds=("round",), allow_touching=False, seed=5)
    viewer.add_image(phantom.phase, name="phase", scale=(0.2, 0.2), metadata={"qpi": ACQ})
    return viewer, phantom


def _run(widget, qtbot):
    with qtbot.waitSignal(widget.controls.finished, timeout=30_000):
        assert widget.controls.start() is not None


def test_widget_adds_labels_with_features(phase_viewer, qtbot):
    viewer, phantom = phase_viewer
    widget = CellMorphologyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.phase.value = viewer.layers["phase"]
    assert widget.wavelength.value == pytest.approx(532.0)
    _run(widget, qtbot)
    labels = viewer.layers["phase cells"]
    found = labels.features
    inside = phantom.labels > 0
    border = np.unique(
        np.r_[phantom.labels[0], phantom.labels[-1], phantom.labels[:, 0], phantom.labels[:, -1]]
    )
    expected = len(set(np.unique(phantom.labels[inside])) - set(border))
    assert len(found) == expected
    assert {"area_um2", "dry_mass_pg"} <= set(found.columns)
    assert labels.scale[-1] == pytest.approx(0.2)
    assert widget.table.native.isVisibleTo(widget.native)
    assert widget.table.model.rowCount() == expected


def test_cell_background_zero_counts_an_offset_as_drymass_does(phase_viewer, qtbot):
    from napari_qpi._napari.layers import MORPHOLOGY_KEY

    viewer, _ = phase_viewer
    viewer.layers["phase"].data = viewer.layers["phase"].data + 0.2  # a background offset
    widget = CellMorphologyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.phase.value = viewer.layers["phase"]
    masses = {}
    for mode in ("local", "zero"):
        widget.cell_background.value = mode
        _run(widget, qtbot)
        labels = viewer.layers["phase cells"]
        assert labels.metadata[MORPHOLOGY_KEY]["metadata"]["cell_background"] == mode
        masses[mode] = np.sort(labels.features["dry_mass_pg"].to_numpy())
    assert (masses["zero"] > 1.05 * masses["local"]).all()


def test_user_labels_of_wrong_shape_are_refused(phase_viewer, qtbot):
    viewer, _ = phase_viewer
    viewer.add_labels(np.zeros((10, 10), dtype=np.int32), name="small")
    widget = CellMorphologyWidget(viewer)
    widget.phase.value = viewer.layers["phase"]
    widget.user_labels.value = viewer.layers["small"]
    assert widget.controls.start() is None
    assert "shape" in widget.controls.status.value


def test_save_labels_layer_writes_tiff_and_csv(phase_viewer, qtbot, tmp_path):
    viewer, _ = phase_viewer
    widget = CellMorphologyWidget(viewer)
    widget.phase.value = viewer.layers["phase"]
    _run(widget, qtbot)
    target = tmp_path / "cells.ome.tif"
    written = viewer.layers["phase cells"].save(str(target), plugin="napari-qpi")
    assert sorted(written) == sorted([str(target), str(tmp_path / "cells.csv")])
    labels, pixel = read_labels_tiff(target)
    np.testing.assert_array_equal(labels, viewer.layers["phase cells"].data)
    assert pixel == pytest.approx(0.2)
    table = read_table_csv(tmp_path / "cells.csv")
    np.testing.assert_allclose(
        table["dry_mass_pg"], viewer.layers["phase cells"].features["dry_mass_pg"]
    )


def test_analysis_folder_round_trip(phase_viewer, qtbot, tmp_path):
    import npe2

    viewer, _ = phase_viewer
    widget = CellMorphologyWidget(viewer)
    widget.phase.value = viewer.layers["phase"]
    _run(widget, qtbot)
    layers = [viewer.layers["phase"], viewer.layers["phase cells"]]
    data = [layer.as_layer_data_tuple() for layer in layers]
    written = npe2.write(str(tmp_path / "analysis"), data, plugin_name="napari-qpi")
    assert len(written) == 3
    phase = read_image(tmp_path / "analysis" / "phase.ome.tif")
    np.testing.assert_array_equal(np.asarray(phase.data), viewer.layers["phase"].data)
    assert phase.acquisition.pixel_size_um == pytest.approx(0.2)


def test_missing_pixel_size_measures_in_pixels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    phantom = random_cells((192, 192), n_cells=3, kinds=("round",), allow_touching=False, seed=9)
    viewer.add_image(phantom.phase, name="no scale", metadata={"qpi": {"wavelength_nm": 532.0}})
    widget = CellMorphologyWidget(viewer)
    widget.phase.value = viewer.layers["no scale"]
    _run(widget, qtbot)
    features = viewer.layers["no scale cells"].features
    assert "area_px2" in features.columns and "area_um2" not in features.columns
    assert features["dry_mass_pg"].isna().all(), "the column is there, empty"
    metadata = viewer.layers["no scale cells"].metadata["qpi_morphology"]["metadata"]
    assert metadata["pixel_size_missing"]


@pytest.fixture
def movie_viewer(make_napari_viewer):
    from cell_fields import make_timelapse

    viewer = make_napari_viewer()
    movie = make_timelapse(n_frames=8, n_cells=6, seed=2)
    px = movie.pixel_size_um
    qpi = {"wavelength_nm": 633.0, "pixel_size_um": px, "modality": "phase"}
    viewer.add_image(movie.phase, name="movie", scale=(1.0, px, px), metadata={"qpi": qpi})
    return viewer, movie


def test_track_cells_adds_a_tracks_layer_with_the_tables_track_ids(movie_viewer, qtbot):
    viewer, _ = movie_viewer
    widget = CellMorphologyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.phase.value = viewer.layers["movie"]
    widget.track.value = True
    widget.frame_interval.value = 600.0
    _run(widget, qtbot)
    features = viewer.layers["movie cells"].features
    tracks = viewer.layers["movie tracks"]
    assert set(np.unique(tracks.data[:, 0])) == set(features["track_id"])
    assert len(set(features["track_id"])) == 8  # 5 whole tracks, a mother and two daughters
    assert len(tracks.graph) == 2 and len({p for v in tracks.graph.values() for p in v}) == 1
    first = tracks.data[tracks.data[:, 1] == 0]
    rows = features[features["frame"] == 0]
    for track_id, _, y, x in first:  # a track starts on its cell: same id at the same place
        row = rows[rows["track_id"] == track_id].iloc[0]
        assert viewer.layers["movie cells"].data[0, round(y), round(x)] == row["index"]
    assert np.allclose(tracks.scale, viewer.layers["movie"].scale)


def test_track_cells_on_a_single_image_says_it_needs_a_time_lapse(phase_viewer, qtbot):
    viewer, _ = phase_viewer
    widget = CellMorphologyWidget(viewer)
    widget.phase.value = viewer.layers["phase"]
    widget.track.value = True
    assert widget.controls.start() is None
    assert "needs a time-lapse" in widget.controls.status.value


def _click(qtbot, canvas, axes, xy) -> None:
    """A real left click on the matplotlib canvas at data coordinates ``xy``."""
    from qtpy.QtCore import QPoint, Qt

    canvas.draw()
    x, y = axes.transData.transform(xy)
    ratio = canvas.device_pixel_ratio or 1.0
    point = QPoint(round(x / ratio), round(canvas.figure.bbox.height / ratio - y / ratio))
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=point)


def test_plots_mass_curves_and_selection_both_ways(movie_viewer, qtbot, tmp_path):
    from napari_qpi._napari.plots import HISTOGRAM, MASS_OVER_TIME, SCATTER

    viewer, _ = movie_viewer
    widget = CellMorphologyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.phase.value = viewer.layers["movie"]
    widget.track.value = True
    _run(widget, qtbot)
    plots, cells = widget.plots, viewer.layers["movie cells"]
    features = cells.features
    assert plots.native.isVisibleTo(widget.native) and plots.kind.value == MASS_OVER_TIME
    assert set(plots.lines) == set(features["track_id"])
    # click the middle of the longest track's curve: its cell is selected in the viewer
    track = int(features.groupby("track_id").size().idxmax())
    rows = features[features["track_id"] == track].sort_values("frame")
    middle = rows.iloc[len(rows) // 2]
    _click(qtbot, plots.canvas, plots.axes, (middle["frame"], middle["dry_mass_pg"]))
    frame = viewer.dims.current_step[0]
    expected = rows[rows["frame"] == frame]["index"].iloc[0]
    assert cells.selected_label == expected
    assert plots.highlighted_track == track
    # the reverse: select another cell in the viewer, its curve is highlighted
    other = features[features["track_id"] != track].iloc[0]
    cells.selected_label = int(other["index"])
    assert plots.highlighted_track == int(other["track_id"])
    # histogram and scatter of any columns; saved as PNG and SVG with the numbers
    plots.kind.value = SCATTER
    plots.x.value, plots.y.value = "area_um2", "dry_mass_pg"
    assert len(plots.points.get_offsets()) == len(features)
    written = plots.save(tmp_path / "scatter.svg")
    assert written[0].read_text().lstrip().startswith("<?xml")
    assert written[1].read_text().splitlines()[0].startswith("index,track_id,frame,area_um2")
    plots.kind.value = HISTOGRAM
    png = plots.save(tmp_path / "hist.png")[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception, match="already exists"):
        plots.save(tmp_path / "hist.png")
