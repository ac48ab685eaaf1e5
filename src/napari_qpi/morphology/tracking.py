"""Cells linked across the frames of a time-lapse, and their growth.

Linking uses laptrack (Fukai & Kawaguchi 2023), the linear-assignment tracker of Jaqaman et al.
(Nat. Methods 2008): frame-to-frame links, gap closing and *splitting* are each solved as one
global assignment, so a division gives a daughter track that records its parent, and cells that
enter or leave the field start or end tracks. trackpy (Crocker-Grier linking) was the other
candidate and installs here too, but it has no divisions; laptrack does, with the same per-frame
DataFrame in and out.

Drift: the whole field may move between frames (stage drift, flow). Before linking, the drift of
each frame is estimated from the centroids themselves: each cell's nearest neighbour in the next
frame gives a displacement, and their median is the frame's drift (twice: the second pass on the
drift-corrected positions, with neighbours closer than the linking distance only). Links are
made on drift-corrected positions; the tables keep the measured ones.

Growth: a track's dry mass ``m(t)`` is fitted by ``log m = log m0 + r t`` (least squares over the
frames it spans); ``r`` is the exponential growth rate per frame, ``r * 3600 / dt`` per hour with
``dt`` the frame interval in seconds, and ``ln 2 / r`` the doubling time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .table import MorphologyTable

__all__ = ["Tracks", "estimate_drift", "growth_summary", "track_cells", "tracks_layer_data"]

#: Linking distance as a fraction of the median equivalent diameter (per frame, after drift).
_STEP_OF_DIAMETER = 0.75


@dataclass
class Tracks:
    """Linked cells: one row per cell per frame, and one row per track.

    Attributes
    ----------
    table
        The morphology table with ``track_id`` (1..N), ``parent_track_id`` (0: none; else the
        track it divided from), ``drift_y`` / ``drift_x`` (the frame's cumulative drift, in the
        centroid units) first, then every morphology column; sorted by track then frame.
    summary
        One row per track: ``track_id``, ``parent_track_id``, ``first_frame``, ``last_frame``,
        ``n_frames``, ``start_dry_mass_pg``, ``end_dry_mass_pg``, ``growth_rate_per_frame``,
        ``growth_rate_per_h`` (NaN without a frame interval), ``doubling_time_frames``,
        ``doubling_time_h``.
    graph
        ``{child track: [parent track]}``, as napari's Tracks layer wants it.
    """

    table: MorphologyTable
    summary: MorphologyTable
    graph: dict[int, list[int]]


def _centroid_columns(table: MorphologyTable) -> tuple[str, str]:
    for y, x in (("centroid_y_um", "centroid_x_um"), ("centroid_y_px", "centroid_x_px")):
        if y in table.columns and x in table.columns:
            return y, x
    raise InputError(
        "The table has no centroid columns (centroid_y_um/_px, centroid_x_um/_px): track a table "
        "made by napari-qpi measure or the Cell morphology widget."
    )


def _check_frames(table: MorphologyTable) -> np.ndarray:
    if "frame" not in table.columns:
        raise InputError(
            "Tracking needs a time-lapse: this table has no frame column (one image). Measure a "
            "stack of shape (T, Y, X) with at least 2 frames."
        )
    frames = np.asarray(table["frame"], dtype=np.int64)
    if np.unique(frames).size < 2:
        raise InputError(
            f"Tracking needs a time-lapse of at least 2 frames with cells; found cells in "
            f"{np.unique(frames).size} frame(s). Measure a stack of shape (T, Y, X)."
        )
    return frames


def estimate_drift(
    frames: np.ndarray, points: np.ndarray, max_step: float
) -> dict[int, np.ndarray]:
    """Cumulative drift of each frame (same units as ``points``), frame 0 at (0, 0).

    The median nearest-neighbour displacement of the cells from one frame to the next, in two
    passes (the second keeps neighbours within ``max_step`` of the first estimate).
    """
    from scipy.spatial import cKDTree

    order = np.unique(frames)
    drift = {int(order[0]): np.zeros(2)}
    for before, after in itertools.pairwise(order):
        a, b = points[frames == before], points[frames == after]
        step = np.zeros(2)
        if len(a) and len(b):
            tree = cKDTree(b)
            for limit in (np.inf, max_step):
                dist, idx = tree.query(a + step, distance_upper_bound=limit)
                ok = np.isfinite(dist)
                if ok.any():
                    step = np.median(b[idx[ok]] - a[ok], axis=0)
        drift[int(after)] = drift[int(before)] + step
    return drift


def _fit_growth(frame: np.ndarray, mass: np.ndarray) -> float:
    ok = np.isfinite(mass) & (mass > 0)
    if ok.sum() < 3:
        return math.nan
    slope = np.polyfit(frame[ok].astype(np.float64), np.log(mass[ok]), 1)[0]
    return float(slope)


def growth_summary(
    tracks_table: MorphologyTable, frame_interval_s: float | None = None
) -> MorphologyTable:
    """One row per track of a tracks table: span, start/end mass, fitted growth (module doc)."""
    tid = np.asarray(tracks_table["track_id"], dtype=np.int64)
    parent = np.asarray(tracks_table["parent_track_id"], dtype=np.int64)
    frame = np.asarray(tracks_table["frame"], dtype=np.int64)
    mass = np.asarray(tracks_table.columns.get("dry_mass_pg", np.full(tid.size, np.nan)), float)
    ids = np.unique(tid)
    rows: dict[str, list[float]] = {
        name: []
        for name in (
            "track_id",
            "parent_track_id",
            "first_frame",
            "last_frame",
            "n_frames",
            "start_dry_mass_pg",
            "end_dry_mass_pg",
            "growth_rate_per_frame",
            "growth_rate_per_h",
            "doubling_time_frames",
            "doubling_time_h",
        )
    }
    hours = None if not frame_interval_s else frame_interval_s / 3600.0
    for track in ids:
        sel = tid == track
        order = np.argsort(frame[sel])
        f, m = frame[sel][order], mass[sel][order]
        rate = _fit_growth(f, m)
        doubling = math.log(2) / rate if rate and math.isfinite(rate) else math.nan
        rows["track_id"].append(int(track))
        rows["parent_track_id"].append(int(parent[sel][0]))
        rows["first_frame"].append(int(f[0]))
        rows["last_frame"].append(int(f[-1]))
        rows["n_frames"].append(int(f.size))
        rows["start_dry_mass_pg"].append(float(m[0]))
        rows["end_dry_mass_pg"].append(float(m[-1]))
        rows["growth_rate_per_frame"].append(rate)
        rows["growth_rate_per_h"].append(rate / hours if hours else math.nan)
        rows["doubling_time_frames"].append(doubling)
        rows["doubling_time_h"].append(doubling * hours if hours else math.nan)
    ints = {"track_id", "parent_track_id", "first_frame", "last_frame", "n_frames"}
    columns = {
        k: np.asarray(v, dtype=np.int64 if k in ints else np.float64) for k, v in rows.items()
    }
    units = {k: "" for k in columns}
    units.update(
        start_dry_mass_pg="pg",
        end_dry_mass_pg="pg",
        growth_rate_per_frame="1/frame",
        growth_rate_per_h="1/h",
        doubling_time_frames="frame",
        doubling_time_h="h",
    )
    metadata = {
        "frame_interval_s": frame_interval_s,
        "growth_fit": "log(dry_mass_pg) = log(m0) + rate * frame, least squares, >= 3 frames",
        "notes": []
        if hours
        else ["No frame interval: growth per hour and doubling time in hours are empty."],
    }
    return MorphologyTable(columns=columns, units=units, metadata=metadata)


def track_cells(
    table: MorphologyTable,
    *,
    max_step: float | None = None,
    frame_interval_s: float | None = None,
    divisions: bool = True,
) -> Tracks:
    """Link the cells of a stack's morphology table across frames (see the module docstring).

    Parameters
    ----------
    table
        A table with ``frame`` and centroid columns (from :func:`measure_stack`), one row per
        cell per frame; label numbers may have gaps (rows are linked, not label values).
    max_step
        Largest distance a cell moves between frames after drift correction, in the centroid
        units (um, or px without a pixel size). Default: 0.75 of the median equivalent diameter.
    frame_interval_s
        Time between frames, s: gives growth per hour and doubling times in hours.
    divisions
        Allow a track to split in two (a division); the daughter records its parent.

    Raises
    ------
    InputError
        No frame column or fewer than 2 frames with cells (not a time-lapse), no centroids, or
        a non-positive ``max_step`` / ``frame_interval_s``.
    """
    import pandas as pd
    from laptrack import LapTrack

    frames = _check_frames(table)
    ycol, xcol = _centroid_columns(table)
    points = np.column_stack([table[ycol], table[xcol]]).astype(np.float64)
    if max_step is None:
        dcol = next((c for c in table.names if c.startswith("equivalent_diameter")), None)
        diameter = float(np.median(table[dcol])) if dcol else 10.0
        max_step = _STEP_OF_DIAMETER * diameter
    if not (math.isfinite(max_step) and max_step > 0):
        raise InputError(f"max_step must be a positive distance, got {max_step!r}.")
    if frame_interval_s is not None and not (frame_interval_s > 0):
        raise InputError(f"frame_interval_s must be > 0 s, got {frame_interval_s!r}.")
    drift = estimate_drift(frames, points, max_step)
    shift = np.array([drift[int(f)] for f in frames])
    corrected = points - shift
    cutoff = float(max_step) ** 2
    tracker = LapTrack(
        cutoff=cutoff,
        gap_closing_cutoff=cutoff,
        gap_closing_max_frame_count=1,
        splitting_cutoff=cutoff if divisions else False,
    )
    frame_df = pd.DataFrame(
        {"frame": frames, "y": corrected[:, 0], "x": corrected[:, 1], "row": np.arange(frames.size)}
    ).sort_values("frame", kind="stable")
    track_df, split_df, _ = tracker.predict_dataframe(
        frame_df, ["y", "x"], only_coordinate_cols=False
    )
    track_df = track_df.sort_values("row")
    tid = track_df["track_id"].to_numpy(dtype=np.int64) + 1
    parents = {
        int(c) + 1: int(p) + 1
        for p, c in zip(split_df["parent_track_id"], split_df["child_track_id"], strict=True)
    }
    parent = np.array([parents.get(int(t), 0) for t in tid], dtype=np.int64)
    order = np.lexsort((frames, tid))
    columns: dict[str, np.ndarray] = {
        "track_id": tid[order],
        "parent_track_id": parent[order],
        "drift_y": shift[order, 0],
        "drift_x": shift[order, 1],
    }
    for name in table.names:
        columns[name] = np.asarray(table[name])[order]
    unit = table.units.get(ycol, "")
    units = {"track_id": "", "parent_track_id": "", "drift_y": unit, "drift_x": unit}
    units.update(table.units)
    metadata: dict[str, Any] = dict(table.metadata)
    metadata["tracking"] = {
        "library": "laptrack",
        "max_step": float(max_step),
        "divisions": divisions,
        "frame_interval_s": frame_interval_s,
        "drift": {str(k): v.tolist() for k, v in drift.items()},
    }
    tracks_table = MorphologyTable(columns=columns, units=units, metadata=metadata)
    summary = growth_summary(tracks_table, frame_interval_s)
    graph: dict[int, list[int]] = {}
    for child, par in parents.items():
        graph.setdefault(child, []).append(par)
    return Tracks(table=tracks_table, summary=summary, graph=graph)


def tracks_layer_data(tracks: Tracks) -> np.ndarray:
    """``(N, 4)`` rows ``[track_id, frame, y_px, x_px]`` for napari's Tracks layer.

    Centroids in um are divided by the table's pixel size, so the layer takes the phase layer's
    own ``scale``; rows are sorted by track then frame, as napari wants them.
    """
    table = tracks.table
    ycol, xcol = _centroid_columns(table)
    pixel = table.metadata.get("pixel_size_um") if ycol.endswith("_um") else None
    factor = 1.0 / pixel if pixel else 1.0
    return np.column_stack(
        [
            np.asarray(table["track_id"], dtype=np.float64),
            np.asarray(table["frame"], dtype=np.float64),
            np.asarray(table[ycol], dtype=np.float64) * factor,
            np.asarray(table[xcol], dtype=np.float64) * factor,
        ]
    )
