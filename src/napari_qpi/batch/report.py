"""The batch report: plane and file outcomes accounted, and the table of every file's cells."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..io import atomic_write
from ..io.tables import table_sidecar_path
from .jobs import BatchReport, PlaneOutcome, _writing
from .plan import _Manifest, _Work


def _account(report: BatchReport, outcome: PlaneOutcome) -> None:
    if outcome.retrieved:
        report.planes += 1
        report.phase_min = min(report.phase_min, outcome.phase_min)
        report.phase_max = max(report.phase_max, outcome.phase_max)
    report.cells += outcome.cells
    report.dry_mass_pg.extend(outcome.dry_mass_pg)
    report.notes.extend(n for n in outcome.notes if n not in report.notes)
    for message in outcome.warnings:
        report.warnings.append((Path(outcome.source), outcome.frame, message))
    if outcome.consistency is not None:
        report.consistency.append(outcome.consistency)
    if outcome.peak_memory_mb is not None:
        previous = report.peak_memory_mb.get(outcome.worker, 0.0)
        report.peak_memory_mb[outcome.worker] = max(previous, outcome.peak_memory_mb)


def _fail(report: BatchReport, manifest: _Manifest, work: _Work, errors: list[str]) -> None:
    reason = errors[0] + (f" (and {len(errors) - 1} more plane(s))" if len(errors) > 1 else "")
    report.failed.append((work.given, reason))
    manifest.file(work.job.source, status="failed", reason=reason)


def _finish(report: BatchReport, manifest: _Manifest, work: _Work) -> None:
    job = work.job
    report.written.append(job.phase_final if job.phase_final else job.table_final)
    if job.measure:
        report.tables.append(job.table_final)
    manifest.file(job.source, status="done")


def gather_tables(tables: Sequence[tuple[str, Path]], path: Path) -> Path | None:
    """Write every row of the per-file tables into one CSV with a leading ``file`` column.

    The values are copied as written (no rounding); columns missing from a file are left empty.
    A JSON sidecar ``<path>.json`` lists the files and the units. Returns ``None`` when there is
    no table. The file is replaced if it exists: it is rebuilt from the per-file tables.
    """
    columns: list[str] = ["file"]
    units: dict[str, str] = {"file": ""}
    rows: list[dict[str, str]] = []
    files: dict[str, str] = {}
    for stem, table in tables:
        if not table.is_file():
            continue
        with open(table, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for name in reader.fieldnames or []:
                if name not in columns:
                    columns.append(name)
            rows.extend({**row, "file": stem} for row in reader)
        sidecar = table_sidecar_path(table)
        if sidecar.is_file():
            with contextlib.suppress(OSError, ValueError):
                for name, unit in json.loads(sidecar.read_text(encoding="utf-8"))["units"].items():
                    units.setdefault(name, unit)
        files[stem] = table.name
    if not files:
        return None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    record = {
        "format": "napari-qpi morphology table, all files",
        "columns": columns,
        "units": {name: units.get(name, "") for name in columns},
        "files": files,
    }
    with _writing(path), atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    sidecar = table_sidecar_path(path)
    with _writing(sidecar), atomic_write(sidecar, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path
