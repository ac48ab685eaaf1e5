"""Tracking cells through a simulated time-lapse (laptrack), growth fits and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cell_fields import make_timelapse
from napari_qpi.errors import InputError
from napari_qpi.morphology import MorphologyWarning, measure_cells, measure_stack
from napari_qpi.morphology.tracking import track_cells


@pytest.fixture(scope="module")
def lapse():
    movie = make_timelapse(n_frames=8, n_cells=10, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MorphologyWarning)
        table, labels = measure_stack(
            movie.phase, pixel_size_um=movie.pixel_size_um, wavelength_nm=movie.wavelength_nm
        )
    return movie, table, labels


def _track_of(tracks, movie, cell: int, frame: int) -> int | None:
    """The track id of the detection at the truth cell's centre in ``frame`` (within 3 px)."""
    table = tracks.table
    rows = np.flatnonzero(table["frame"] == frame)
    centre = movie.centres[cell][frame] * movie.pixel_size_um
    found = np.column_stack([table["centroid_y_um"][rows], table["centroid_x_um"][rows]])
    dist = np.hypot(*(found - centre).T)
    k = int(np.argmin(dist))
    return int(table["track_id"][rows[k]]) if dist[k] < 3 * movie.pixel_size_um else None


def test_drifting_growing_cells_tracked_through_all_frames_with_growth_within_10pct(lapse):
    movie, table, _ = lapse
    tracks = track_cells(table, frame_interval_s=600.0)
    summary = {int(t): k for k, t in enumerate(tracks.summary["track_id"])}
    n_frames = movie.phase.shape[0]
    whole = [c for c, path in movie.centres.items() if np.isfinite(path).all()]
    assert len(whole) == 9  # 10 cells, one divides
    through = 0
    for cell in whole:
        ids = {_track_of(tracks, movie, cell, t) for t in range(n_frames)}
        if len(ids) == 1 and None not in ids:
            through += 1
            row = summary[ids.pop()]
            assert tracks.summary["n_frames"][row] == n_frames
            rate = tracks.summary["growth_rate_per_frame"][row]
            truth = movie.rate_per_frame[cell]
            assert rate == pytest.approx(truth, rel=0.10), cell
            per_h = tracks.summary["growth_rate_per_h"][row]
            assert per_h == pytest.approx(rate * 6.0)  # 600 s frames: 6 per hour
            assert tracks.summary["doubling_time_h"][row] == pytest.approx(np.log(2) / per_h)
    assert through >= 0.95 * len(whole)


def test_a_division_gives_two_daughters_that_record_their_parent(lapse):
    movie, table, _ = lapse
    tracks = track_cells(table)
    (mother,) = set(movie.parent.values())
    mother_track = _track_of(tracks, movie, mother, 0)
    last = movie.phase.shape[0] - 1
    daughters = {_track_of(tracks, movie, d, last) for d in movie.parent}
    assert len(daughters) == 2 and None not in daughters
    parent_of = dict(
        zip(tracks.summary["track_id"], tracks.summary["parent_track_id"], strict=True)
    )
    assert all(parent_of[d] == mother_track for d in daughters)
    assert tracks.graph == {d: [mother_track] for d in daughters}
    rows = tracks.table["track_id"] == next(iter(daughters))
    assert (tracks.table["parent_track_id"][rows] == mother_track).all()


def test_the_field_drift_is_estimated_from_the_cells(lapse):
    movie, table, _ = lapse
    drift = track_cells(table).table.metadata["tracking"]["drift"]
    for frame in range(movie.phase.shape[0]):
        # truth: 2.5, -1.5 px per frame plus the cells' own random steps (1 px), whose median
        # over ten cells is a fraction of a pixel
        expected = np.array([2.5, -1.5]) * frame * movie.pixel_size_um
        assert np.allclose(drift[str(frame)], expected, atol=2 * movie.pixel_size_um)  # 2 px


def test_cells_entering_and_leaving_start_and_end_tracks_without_disturbing_others():
    movie = make_timelapse(n_frames=8, n_cells=8, enter_frame=3, leave_frame=5, seed=4)
    table, _ = measure_stack(
        movie.phase, pixel_size_um=movie.pixel_size_um, wavelength_nm=movie.wavelength_nm
    )
    tracks = track_cells(table)
    summary = tracks.summary
    row = {int(t): k for k, t in enumerate(summary["track_id"])}
    entering = {_track_of(tracks, movie, 7, t) for t in range(3, 8)}
    leaving = {_track_of(tracks, movie, 8, t) for t in range(5)}
    assert len(entering) == 1 and len(leaving) == 1 and None not in entering | leaving
    assert summary["first_frame"][row[entering.pop()]] == 3
    assert summary["last_frame"][row[leaving.pop()]] == 4
    for cell in range(2, 7):  # the cells there all along (1 divides)
        assert len({_track_of(tracks, movie, cell, t) for t in range(8)}) == 1, cell


def test_user_labels_with_gaps_in_their_numbering_are_tracked_with_their_values(lapse):
    movie, _, labels = lapse
    gapped = np.where(labels > 0, labels * 7 + 100, 0)  # 107, 114, ...: gaps everywhere
    table, _ = measure_stack(movie.phase, gapped, pixel_size_um=movie.pixel_size_um)
    tracks = track_cells(table)
    assert set(np.unique(tracks.table["label"])) <= set(np.unique(gapped[gapped > 0]))
    assert len(tracks.table) == len(table) and tracks.summary["track_id"].size >= 11


def test_a_single_image_or_one_frame_cannot_be_tracked(lapse):
    movie, table, labels = lapse
    one = measure_cells(movie.phase[0], labels[0], pixel_size_um=movie.pixel_size_um)
    with pytest.raises(InputError, match="no frame column"):
        track_cells(one)
    first = type(table)(
        columns={k: v[table["frame"] == 0] for k, v in table.columns.items()},
        units=table.units,
    )
    with pytest.raises(InputError, match="at least 2 frames"):
        track_cells(first)
    with pytest.raises(InputError, match="frame_interval_s"):
        track_cells(table, frame_interval_s=0.0)


def test_frames_of_different_shapes_are_refused():
    with pytest.raises(InputError, match="frame 1 has shape"):
        measure_stack([np.zeros((32, 32)), np.zeros((32, 30))])
