"""Running a batch job: the tasks submitted and gathered, and the two public entry points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import InputError
from ..io import read_image
from ..io.images import SUPPORTED_EXTENSIONS
from ..pairing import pair_backgrounds
from ..reconstruct import CLASSICAL_METHODS, available_methods
from ..retrieval import OffAxisSettings
from .executors import Executor, open_executor
from .jobs import (
    COMBINED_TABLE,
    TABLE_SUFFIX,
    BatchReport,
    ClusterOptions,
    DiskFullError,
    MeasureOptions,
    PlaneOutcome,
    _FileOutcome,
    _Recipe,
)
from .plan import _decide_sign, _Manifest, _plan, _Work
from .report import _account, _fail, _finish, gather_tables
from .worker import assemble_file, run_plane


def _execute(
    works: list[_Work],
    recipe: _Recipe,
    executor: Executor,
    report: BatchReport,
    manifest: _Manifest,
    progress: Callable[[int, int], None] | None,
) -> str | None:
    """Run every task; return the message of a full disk if one stopped the job."""
    by_source = {str(work.job.source): work for work in works}
    remaining = {key: {frame for _, frame in work.todo} for key, work in by_source.items()}
    errors: dict[str, list[str]] = {key: [] for key in by_source}
    done_planes = {key: len(work.job.planes()) - len(work.todo) for key, work in by_source.items()}
    total = sum(len(work.todo) for work in works)
    for work in works:
        for index, frame in work.todo:
            tag = ("plane", str(work.job.source), frame)
            executor.submit(tag, run_plane, work.job, recipe, index, frame)
        if not work.todo:
            tag = ("file", str(work.job.source), -1)
            executor.submit(tag, assemble_file, work.job, recipe, priority=1)
    if progress is not None:
        progress(0, total)
    done = 0
    for (kind, key, frame), result in executor.completed():
        work = by_source[key]
        if kind == "plane":
            done += 1
            outcome = _plane_outcome(key, frame, result)
            report.outcomes.append(outcome)
            _account(report, outcome)
            remaining[key].discard(outcome.frame)
            if outcome.disk_full:
                return outcome.error
            if outcome.error:
                errors[key].append(
                    f"plane {outcome.frame}: {outcome.error}" if work.job.stacked else outcome.error
                )
            else:
                done_planes[key] += 1
            manifest.file(work.job.source, planes_done=done_planes[key])
            if not remaining[key]:
                if errors[key]:
                    _fail(report, manifest, work, errors[key])
                elif work.job.stacked:
                    executor.submit(("file", key, -1), assemble_file, work.job, recipe, priority=1)
                else:
                    _finish(report, manifest, work)
            if progress is not None:
                progress(done, total)
        else:
            outcome = result if isinstance(result, _FileOutcome) else _FileOutcome(key)
            if not isinstance(result, _FileOutcome):
                outcome.error = _crash_message(result)
            if outcome.disk_full:
                return outcome.error
            if outcome.error:
                _fail(report, manifest, work, [outcome.error])
            else:
                _finish(report, manifest, work)
        manifest.save()
    return None


def _plane_outcome(source: str, frame: int, result: Any) -> PlaneOutcome:
    if isinstance(result, PlaneOutcome):
        return result
    return PlaneOutcome(source=source, frame=frame, error=_crash_message(result))


def _crash_message(error: Any) -> str:
    name = type(error).__name__
    if name == "KilledWorker":
        return (
            "the worker processing it died (out of memory?); it was tried on several workers. "
            "Run with fewer --workers, or give each more memory."
        )
    return f"{name}: {error}"


def _run(
    command: str,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    recipe: _Recipe,
    cluster: ClusterOptions | None,
    client: Any,
    progress: Callable[[int, int], None] | None,
) -> BatchReport:
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    manifest = _Manifest(out / f"napari-qpi-{command}.json", command, recipe)
    report.manifest = manifest.path
    works, stems = _plan(inputs, out, recipe, report, manifest)
    tasks = sum(len(work.todo) for work in works)
    pixels = sum(int(np.prod(work.job.shape[-2:])) * len(work.todo) for work in works)
    disk_full = None
    status = "finished"
    try:
        if works:
            with open_executor(cluster, tasks=tasks, pixels=pixels, client=client) as executor:
                report.executor = executor.description
                manifest.data["executor"] = executor.description
                manifest.save(force=True)
                try:
                    disk_full = _execute(works, recipe, executor, report, manifest, progress)
                finally:
                    executor.cancel()
        if recipe.measure is not None and disk_full is None:
            tables = [(stem, out / f"{stem}{TABLE_SUFFIX}") for stem in sorted(stems)]
            try:
                report.combined_table = gather_tables(tables, out / COMBINED_TABLE)
            except DiskFullError as error:
                disk_full = str(error)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as error:
        status = f"stopped: {error}"
        raise
    finally:
        if disk_full is not None:
            status = "stopped: disk full"
        manifest.save(force=True, status=status)
    report.written.sort()
    report.tables.sort()
    if disk_full is not None:
        finished = len(report.written)
        raise DiskFullError(
            f"The disk is full: {disk_full} Stopped; the {finished} file(s) finished in this run "
            "and every plane written so far are complete and kept (planes in flight were "
            "dropped). Free some space (or choose another --out) and run the same command "
            "again: finished files and planes are skipped.",
            report,
        )
    return report


def reconstruct_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "classical",
    settings: OffAxisSettings | None = None,
    reference: str | Path | None = None,
    acquisition: Acquisition | None = None,
    measure: MeasureOptions | None = None,
    overwrite: bool = False,
    cluster: ClusterOptions | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Retrieve the phase of every plane of every input file; optionally measure the cells.

    Parameters
    ----------
    inputs
        Hologram files (see :func:`collect_inputs` to expand folders).
    out_dir
        Output folder (created): ``<stem>_phase.ome.tif`` per input, and with ``measure``
        ``<stem>_cells.ome.tif``, ``<stem>_cells.csv`` and :data:`COMBINED_TABLE` for all files.
        Workers write into it, so on a remote cluster it must be on a shared file system, at the
        same path for every machine.
    method, settings, reference
        As in :func:`napari_qpi.reconstruct.iter_reconstruct`; ``reference`` is a file used for
        every input. Without it, inputs named as backgrounds (:mod:`napari_qpi.pairing`:
        ``background.tif``, ``cell_bg.tif``) are paired with their holograms and not
        reconstructed, and a background stored in a file (an NPZ's ``bg_data``) is used.
    acquisition
        Fields that override each file's own metadata (command line, microscope profile).
    measure
        Segment and measure cells on each phase plane with these options.
    overwrite
        Redo everything; without it, outputs and stack planes that exist are kept and skipped.
    cluster
        Where to run (:class:`ClusterOptions`); ``client``, a ``distributed.Client``, overrides it.
    progress
        Called as ``progress(planes_done, planes_total)`` after each plane (it may raise
        ``KeyboardInterrupt`` to stop the job as Ctrl-C does).

    Returns
    -------
    BatchReport

    Raises
    ------
    InputError
        Unknown method, or a reference with a network.
    SchedulerError
        The scheduler cannot be used.
    DiskFullError
        The disk filled up; finished outputs are kept (``error.report`` says what was done).
    """
    names = available_methods()
    if method not in names:
        raise InputError(f"Unknown retrieval method {method!r}. Available: {', '.join(names)}.")
    if reference is not None and method not in CLASSICAL_METHODS:
        raise InputError(
            f"Model '{method}' works on the hologram alone; a background hologram is used only by "
            "the classical method. Leave out the reference."
        )
    reference_path = None if reference is None else Path(reference).absolute()
    if reference_path is not None:
        read_image(reference_path, lazy_threshold_bytes=0)
    pairing = pair_backgrounds([Path(p) for p in inputs], SUPPORTED_EXTENSIONS)
    holograms = [*pairing.holograms] if reference_path is None else [Path(p) for p in inputs]
    backgrounds = (
        {}
        if reference_path is not None
        else {h.absolute(): b.absolute() for h, b in pairing.backgrounds.items()}
    )
    settings = settings or OffAxisSettings()
    sign: dict[str, Any] = {}
    if method in CLASSICAL_METHODS and holograms:
        settings, sign = _decide_sign(
            holograms[0], settings, acquisition, reference_path, backgrounds
        )
    recipe = _Recipe(method, settings, reference_path, measure, overwrite, acquisition, backgrounds)
    report = _run("reconstruct", holograms, out_dir, recipe, cluster, client, progress)
    if reference_path is None:
        report.failed.extend(pairing.problems)
        report.warnings.extend((path, 0, message) for path, message in pairing.notes)
    report.sign = sign
    return report


def measure_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    measure: MeasureOptions | None = None,
    acquisition: Acquisition | None = None,
    overwrite: bool = False,
    cluster: ClusterOptions | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Segment and measure the cells of every plane of every phase image.

    Writes ``<stem>_cells.ome.tif`` and ``<stem>_cells.csv`` per input (``<stem>`` without a
    trailing ``_phase``) and :data:`COMBINED_TABLE`. Other arguments as
    :func:`reconstruct_batch`.
    """
    recipe = _Recipe(None, None, None, measure or MeasureOptions(), overwrite, acquisition)
    return _run("measure", inputs, out_dir, recipe, cluster, client, progress)
