"""``napari-qpi measure STACK --track``: link the cells of each measured time-lapse."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import TABLE_SUFFIX
from ..errors import QPIError

if TYPE_CHECKING:
    from ..batch import BatchReport

__all__ = ["TRACKS_SUFFIX", "TRACK_SUMMARY_SUFFIX", "add_track_options", "track_tables"]

TRACKS_SUFFIX = "_tracks.csv"
TRACK_SUMMARY_SUFFIX = "_track_summary.csv"


def add_track_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--track",
        action="store_true",
        help="link cells across the frames of each stack (laptrack: drift, divisions); writes "
        f"<stem>{TRACKS_SUFFIX} and <stem>{TRACK_SUMMARY_SUFFIX} (growth rate, doubling time)",
    )
    parser.add_argument(
        "--frame-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time between frames, for growth per hour and doubling times in hours",
    )
    parser.add_argument(
        "--max-step",
        type=float,
        default=None,
        metavar="DIST",
        help="largest move of a cell between frames after drift, um (px without a pixel size); "
        "default: 0.75 of the median cell diameter",
    )


def track_tables(report: BatchReport, args: argparse.Namespace) -> int:
    """Track every per-file table the run wrote or kept; 0 if all could be tracked, else 1."""
    from ..io.tables import read_table_csv, write_table_csv
    from ..morphology.tracking import track_cells

    tables = [Path(p) for p in [*report.written, *report.skipped] if str(p).endswith(TABLE_SUFFIX)]
    status = 0
    for path in tables:
        stem = str(path)[: -len(TABLE_SUFFIX)]
        try:
            tracks = track_cells(
                read_table_csv(path), max_step=args.max_step, frame_interval_s=args.frame_interval
            )
            write_table_csv(stem + TRACKS_SUFFIX, tracks.table, overwrite=args.overwrite)
            write_table_csv(stem + TRACK_SUMMARY_SUFFIX, tracks.summary, overwrite=args.overwrite)
        except QPIError as error:
            print(f"napari-qpi: {path.name}: cannot track: {error}", file=sys.stderr)
            status = 1
            continue
        summary = tracks.summary
        whole = int((summary["n_frames"] == summary["n_frames"].max()).sum())
        divisions = int((summary["parent_track_id"] > 0).sum()) // 2
        print(
            f"napari-qpi: {Path(stem).name}: {len(summary)} track(s), {whole} through all "
            f"frames, {divisions} division(s) -> {Path(stem + TRACKS_SUFFIX).name}, "
            f"{Path(stem + TRACK_SUMMARY_SUFFIX).name}"
        )
    return status
