"""Batch reconstruction and measurement, one task per plane, on Dask or in this process.

The engine behind ``napari-qpi reconstruct`` and ``napari-qpi measure``:

* Work is split into one task per plane (a single hologram is one plane). Tasks run on a
  ``distributed`` cluster: a :class:`~distributed.LocalCluster` of worker processes sized to the
  machine by default, or an existing scheduler by address (``ClusterOptions.scheduler``). Small
  jobs, or ``workers=0``, run in this process with no Dask at all.
* Each worker retrieves phase with a retriever built once per process
  (:func:`napari_qpi.lazy.plane_retriever`), so a network is loaded once per worker, and limits
  torch to one thread per task.
* Workers write their outputs themselves, atomically (:func:`napari_qpi.io.atomic_write`), as each
  plane finishes: ``<stem>_phase.ome.tif`` for a single hologram; for a stack, one file per plane in
  ``<stem>.planes/`` and, once every plane is done, the stack ``<stem>_phase.ome.tif`` (and labels
  and table), after which the plane folder is removed. A crash, a kill or Ctrl-C loses at most the
  planes in flight; the next run skips every plane and file whose outputs exist.
* Files that cannot be read and planes that fail are reported with their reasons; the others go
  on. A full disk stops the job with a clear message and keeps everything finished.
* ``napari-qpi-<command>.json`` in the output folder records the job: its recipe, and per input
  file its status, planes done, outputs and the reason of a failure.

Nothing here imports napari or Qt.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .acquisition import Acquisition
from .calibration import decide_sign_carrier, voting_indices
from .errors import FileFormatError, InputError, QPIError
from .io import atomic_write, read_image, write_image, write_phase
from .io.images import SUPPORTED_EXTENSIONS, ImageData
from .io.tables import (
    read_labels_tiff,
    read_table_csv,
    table_sidecar_path,
    write_labels_tiff,
    write_table_csv,
)
from .lazy import check_reference, plane_retriever, retrieve_plane, retriever_builds
from .morphology import (
    DEFAULT_ALPHA_UM3_PER_PG,
    MorphologyTable,
    SegmentationSettings,
    combine_frames,
    measure_stack,
)
from .pairing import pair_backgrounds
from .reconstruct import CLASSICAL_METHODS, available_methods, output_acquisition, settings_record
from .retrieval import OffAxisSettings
from .threads import WORKERS_ENV, set_fft_workers

__all__ = [
    "COMBINED_TABLE",
    "LABELS_SUFFIX",
    "PHASE_SUFFIX",
    "PLANES_SUFFIX",
    "TABLE_SUFFIX",
    "BatchReport",
    "ClusterOptions",
    "DiskFullError",
    "MeasureOptions",
    "PlaneOutcome",
    "SchedulerError",
    "collect_inputs",
    "connect",
    "measure_batch",
    "open_executor",
    "output_stem",
    "reconstruct_batch",
    "start_local_cluster",
]

PHASE_SUFFIX = "_phase.ome.tif"
LABELS_SUFFIX = "_cells.ome.tif"
TABLE_SUFFIX = "_cells.csv"
#: Folder of the per-plane outputs of a stack while it is being processed.
PLANES_SUFFIX = ".planes"
#: Every cell of every file of a job, with a ``file`` column.
COMBINED_TABLE = "morphology.csv"
#: What made the planes in a ``.planes`` folder (checked before they are reused).
PLANES_RECORD = "job.json"

#: Seconds to wait for a scheduler (and for its first worker).
CONNECT_TIMEOUT_S = 10.0
#: With neither ``workers`` nor ``scheduler`` given, jobs with fewer pixels to process than this
#: run in this process: starting worker processes would take longer than the work.
LOCAL_CLUSTER_MIN_PIXELS = 16 * 512 * 512
#: Shortest interval between two writes of the job manifest, in seconds.
MANIFEST_INTERVAL_S = 2.0

_DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


class SchedulerError(QPIError):
    """The Dask scheduler cannot be reached, has no workers, or its workers lack napari-qpi."""


class DiskFullError(FileFormatError):
    """An output could not be written because the disk (or the user's quota) is full.

    ``report`` is the :class:`BatchReport` of the job so far, when the error ends a batch job.
    """

    def __init__(self, message: str, report: BatchReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class MeasureOptions:
    """How cells are segmented and measured on each phase plane."""

    alpha_um3_per_pg: float = DEFAULT_ALPHA_UM3_PER_PG
    min_area_um2: float | None = None
    threshold: str | float = "auto"
    split: bool = True

    def segmentation(self) -> SegmentationSettings:
        """Settings for :func:`~napari_qpi.morphology.segment_cells` (``None``: learnt)."""
        return SegmentationSettings(
            min_area_um2=self.min_area_um2, threshold=self.threshold, split_touching=self.split
        )


@dataclass(frozen=True)
class ClusterOptions:
    """Where the tasks run.

    Attributes
    ----------
    scheduler
        Address of a running Dask scheduler (``tcp://host:8786``) or the path of its scheduler
        file (``.json``); ``None`` starts a local cluster.
    workers
        Local worker processes; ``0`` runs in this process without Dask; ``None`` picks one per
        CPU core (capped by the number of planes), or this process for a small job.
    threads_per_worker
        Threads of each local worker process.
    timeout_s
        Seconds to wait for the scheduler and for its first worker.
    """

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    timeout_s: float = CONNECT_TIMEOUT_S


@dataclass
class BatchReport:
    """What a batch run did, for the summary line and the exit code.

    ``written`` holds one output per input file completed in this run (the phase image, or the
    table for ``measure``), ``skipped`` the outputs that existed already, ``failed`` the input
    files that could not be processed with the reason. ``planes`` counts the planes whose phase
    was retrieved in this run, ``resumed`` the planes found done by an earlier, interrupted run.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    planes: int = 0
    cells: int = 0
    dry_mass_pg: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    phase_min: float = np.inf
    phase_max: float = -np.inf
    resumed: int = 0
    tables: list[Path] = field(default_factory=list)
    combined_table: Path | None = None
    executor: str = ""
    manifest: Path | None = None
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    outcomes: list[PlaneOutcome] = field(default_factory=list)
    warnings: list[tuple[Path, int, str]] = field(default_factory=list)
    sign: dict[str, Any] = field(default_factory=dict)
    consistency: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PlaneOutcome:
    """What one plane task did (small: arrays stay on the worker and go to disk)."""

    source: str
    frame: int
    retrieved: bool = False
    measured: bool = False
    phase_min: float = np.inf
    phase_max: float = -np.inf
    cells: int = 0
    dry_mass_pg: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    disk_full: bool = False
    seconds: float = 0.0
    worker: str = ""
    peak_memory_mb: float | None = None
    retriever_builds: int = 0
    warnings: list[str] = field(default_factory=list)
    consistency: dict[str, Any] | None = None


@dataclass
class _FileOutcome:
    source: str
    written: list[str] = field(default_factory=list)
    error: str | None = None
    disk_full: bool = False


@dataclass(frozen=True)
class _Recipe:
    method: str | None
    settings: OffAxisSettings | None
    reference: Path | None
    measure: MeasureOptions | None
    overwrite: bool
    acquisition: Acquisition | None = None
    backgrounds: dict[Path, Path] = field(default_factory=dict)

    def acquisition_of(self, image: ImageData) -> Acquisition:
        """The file's acquisition with the user's (command line, profile) fields on top."""
        if self.acquisition is None:
            return image.acquisition
        return image.acquisition.merged(self.acquisition)

    def record(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "settings": settings_record(self.settings) if self.method else None,
            "acquisition": None if self.acquisition is None else self.acquisition.to_dict(),
            "reference": None if self.reference is None else str(self.reference),
            "measure": None if self.measure is None else dataclasses.asdict(self.measure),
            "overwrite": self.overwrite,
        }


@dataclass(frozen=True)
class _FileJob:
    """One input file: where its planes come from and where its outputs go."""

    source: Path
    stem: str
    shape: tuple[int, ...]
    axes: str
    out_dir: Path
    phase_final: Path | None
    compute_phase: bool
    measure: bool
    method_record: dict[str, Any] | None
    reference: Path | None = None

    @property
    def stacked(self) -> bool:
        return len(self.shape) > 2

    @property
    def planes_dir(self) -> Path:
        return self.out_dir / f"{self.stem}{PLANES_SUFFIX}"

    @property
    def labels_final(self) -> Path:
        return self.out_dir / f"{self.stem}{LABELS_SUFFIX}"

    @property
    def table_final(self) -> Path:
        return self.out_dir / f"{self.stem}{TABLE_SUFFIX}"

    @property
    def phase_input(self) -> Path:
        """The phase image measured when this job does not retrieve phase."""
        return self.phase_final if self.phase_final is not None else self.source

    def finals(self) -> list[Path]:
        outputs = [self.phase_final] if self.compute_phase and self.phase_final else []
        if self.measure:
            outputs += [self.labels_final, self.table_final]
        return outputs

    def planes(self) -> list[tuple[tuple[int, ...], int]]:
        return [(index, frame) for frame, index in enumerate(np.ndindex(*self.shape[:-2]))]

    def targets(self, frame: int) -> dict[str, Path]:
        """The files one plane writes: the final outputs, or per-plane files for a stack."""
        if not self.stacked:
            return {
                "phase": self.phase_final or self.source,
                "labels": self.labels_final,
                "table": self.table_final,
            }
        name = f"plane_{frame:05d}"
        return {
            "phase": self.planes_dir / f"{name}{PHASE_SUFFIX}",
            "labels": self.planes_dir / f"{name}{LABELS_SUFFIX}",
            "table": self.planes_dir / f"{name}{TABLE_SUFFIX}",
        }

    def plane_done(self, frame: int) -> bool:
        targets = self.targets(frame)
        needed = [targets["phase"]] if self.compute_phase else []
        if self.measure:
            needed += [targets["labels"], targets["table"]]
        return all(path.exists() for path in needed)

    def planes_record(self, recipe: _Recipe) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "shape": list(self.shape),
            "method": self.method_record if self.compute_phase else None,
            "measure": dataclasses.asdict(recipe.measure) if self.measure else None,
        }


def output_stem(path: Path) -> str:
    """The file name without its image extension (``a.ome.tif`` -> ``a``)."""
    name = path.name
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def collect_inputs(paths: Sequence[str | Path], *, phase: bool = False) -> list[Path]:
    """Files named, and the supported images inside named folders (sorted).

    Inside folders, hidden files, labels (``*_cells.ome.tif``), the per-plane folders of
    unfinished stacks and, unless ``phase`` (inputs of ``measure``), phase images
    (``*_phase.ome.tif``) are left out, so an output folder inside the data is not read back.
    """
    found: list[Path] = []
    excluded = (LABELS_SUFFIX,) if phase else (PHASE_SUFFIX, LABELS_SUFFIX)
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            found.append(path)
            continue
        found.extend(
            sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.lower().endswith(SUPPORTED_EXTENSIONS)
                and not p.name.endswith(excluded)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not any(part.endswith(PLANES_SUFFIX) for part in p.relative_to(path).parts)
            )
        )
    return found


# --------------------------------------------------------------------------------------------
# Worker side


_OPEN_LOCK = threading.Lock()
_OPEN: OrderedDict[tuple[str, int, int], ImageData] = OrderedDict()
_OPEN_SIZE = 4
_TORCH_LIMITED = {"done": False}


def _open(path: Path) -> ImageData:
    """An image opened lazily (every TIFF/NPY plane read on demand), kept for the next task."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _OPEN_LOCK:
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key]
    image = read_image(path, lazy_threshold_bytes=0)
    with _OPEN_LOCK:
        _OPEN[key] = image
        while len(_OPEN) > _OPEN_SIZE:
            _OPEN.popitem(last=False)
    return image


def _read_plane(path: Path, index: tuple[int, ...]) -> tuple[np.ndarray, ImageData]:
    import dask
    from dask.local import get_sync

    image = _open(path)
    # the synchronous scheduler as a function: its name makes dask import distributed
    with dask.config.set(scheduler=get_sync):
        return np.asarray(image.data[index]), image


def _limit_worker_threads(network: bool) -> None:
    """Inside a Dask worker: one FFT thread (and, for a network, one torch thread) per task.

    The worker processes already share the cores; FFTs (and torch) on every core in each of them
    would run cores^2 threads. ``NAPARI_QPI_FFT_WORKERS`` / ``NAPARI_QPI_TORCH_THREADS`` override.
    """
    if "distributed" not in sys.modules:  # no worker without it
        return
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    if WORKERS_ENV not in os.environ:
        set_fft_workers(1)
    if network and not _TORCH_LIMITED["done"]:
        _TORCH_LIMITED["done"] = True
        import torch

        torch.set_num_threads(int(os.environ.get("NAPARI_QPI_TORCH_THREADS", "1")))


def _peak_memory_mb() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into a :class:`DiskFullError` that names it."""
    try:
        yield
    except OSError as error:
        if error.errno in _DISK_FULL_ERRNOS:
            raise DiskFullError(
                f"no space left on the disk (or quota) to write {path} "
                f"({os.strerror(error.errno)})."
            ) from None
        raise


def _needs(path: Path, overwrite: bool) -> bool:
    return overwrite or not path.exists()


def _measure_plane(
    phase: np.ndarray,
    acquisition: Acquisition,
    options: MeasureOptions,
    frame: int,
    stacked: bool,
) -> tuple[MorphologyTable, np.ndarray]:
    kwargs = {
        "pixel_size_um": acquisition.pixel_size_um,
        "wavelength_nm": acquisition.wavelength_nm,
        "alpha_um3_per_pg": options.alpha_um3_per_pg,
        "settings": options.segmentation(),
    }
    if not stacked:
        return measure_stack(phase, **kwargs)
    table, labels = measure_stack(phase[np.newaxis], **kwargs)
    table.columns["frame"] = np.full(len(table), frame, dtype=table.columns["frame"].dtype)
    return table, labels[0]


def run_plane(job: _FileJob, recipe: _Recipe, index: tuple[int, ...], frame: int) -> PlaneOutcome:
    """Do one plane of one file: retrieve its phase and/or measure it, write what is missing.

    Runs on a worker (or in this process). Errors come back in the outcome, never raised.
    """
    started = time.perf_counter()
    outcome = PlaneOutcome(source=str(job.source), frame=frame)
    try:
        _run_plane(job, recipe, index, frame, outcome)
    except DiskFullError as error:
        outcome.error, outcome.disk_full = str(error), True
    except QPIError as error:
        outcome.error = str(error)
    except Exception as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.seconds = time.perf_counter() - started
    outcome.worker = f"{socket.gethostname()}:{os.getpid()}"
    outcome.peak_memory_mb = _peak_memory_mb()
    outcome.retriever_builds = retriever_builds()
    return outcome


def _run_plane(
    job: _FileJob, recipe: _Recipe, index: tuple[int, ...], frame: int, outcome: PlaneOutcome
) -> None:
    targets = job.targets(frame)
    phase: np.ndarray | None = None
    acquisition: Acquisition | None = None
    if job.compute_phase and recipe.method and _needs(targets["phase"], recipe.overwrite):
        _limit_worker_threads(network=recipe.method not in CLASSICAL_METHODS)
        hologram, image = _read_plane(job.source, index)
        reference = _plane_reference(job, image, index)
        retriever = plane_retriever(recipe.method, recipe.settings)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = retrieve_plane(
                hologram, index, retriever, reference, recipe.acquisition_of(image)
            )
        outcome.warnings = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        outcome.consistency = result.info.get("consistency")
        phase = result.phase
        acquisition = output_acquisition(recipe.acquisition_of(image), result.pixel_size_factor)
        method = {**(job.method_record or {}), "retrieval": retrieval_record(result.info)}
        with _writing(targets["phase"]):
            write_phase(
                targets["phase"],
                phase,
                acquisition=acquisition,
                method=method,
                overwrite=recipe.overwrite,
            )
        outcome.retrieved = True
        outcome.phase_min = float(np.nanmin(phase))
        outcome.phase_max = float(np.nanmax(phase))
    if not job.measure or recipe.measure is None:
        return
    if not (
        _needs(targets["labels"], recipe.overwrite) or _needs(targets["table"], recipe.overwrite)
    ):
        return
    if phase is None or acquisition is None:
        if job.compute_phase:
            phase, image = _read_plane(targets["phase"], ())
        else:
            phase, image = _read_plane(job.phase_input, index)
        phase = np.asarray(phase, dtype=np.float32)
        acquisition = recipe.acquisition_of(image)
    table, labels = _measure_plane(phase, acquisition, recipe.measure, frame, job.stacked)
    if _needs(targets["labels"], recipe.overwrite):
        with _writing(targets["labels"]):
            write_labels_tiff(
                targets["labels"],
                labels,
                pixel_size_um=acquisition.pixel_size_um,
                overwrite=recipe.overwrite,
            )
    if _needs(targets["table"], recipe.overwrite):
        with _writing(targets["table"]):
            write_table_csv(targets["table"], table, overwrite=recipe.overwrite)
    outcome.measured = True
    outcome.cells = len(table)
    if "dry_mass_pg" in table.columns:
        outcome.dry_mass_pg = [float(m) for m in table["dry_mass_pg"] if np.isfinite(m)]
    outcome.notes = [n for n in table.metadata.get("notes", []) if n.startswith("No ")]


def _plane_reference(job: _FileJob, image: ImageData, index: tuple[int, ...]) -> Any:
    """The background hologram of one plane: ``--reference`` or the folder's pairing (both in
    ``job.reference``), else the one stored in the file itself, else ``None``."""
    if job.reference is not None:
        ref_image = _open(job.reference)
        per_plane = check_reference(tuple(ref_image.data.shape), job.shape)
        return _read_plane(job.reference, index if per_plane else ())[0]
    return image.background


#: Keys of a retrieval's ``info`` kept in the output's method record (the rest is timing).
RECORDED_INFO = (
    "carrier_cycles_per_px",
    "carrier_from",
    "sign",
    "sign_from",
    "sign_evidence",
    "filter",
    "crop_factor",
    "radius_cycles_per_px",
    "reference",
    "background",
    "unwrap",
    "warnings",
    "refocus_um",
    "consistency",
    "training_range",
)


def retrieval_record(info: dict[str, Any]) -> dict[str, Any]:
    """What a plane's retrieval found and used (carrier, sign, filter, background, unwrapping
    quality, warnings), JSON-ready, for the output's metadata."""
    return {key: info[key] for key in RECORDED_INFO if key in info}


class _PlaneFiles:
    """A stack whose planes are image files, read one at a time (to write it plane by plane)."""

    def __init__(self, paths: list[Path], lead: tuple[int, ...], dtype: Any = None) -> None:
        import tifffile

        first = tifffile.imread(paths[0])
        self.paths = paths
        self.lead = lead
        self.dtype = np.dtype(dtype or first.dtype)
        self.shape = (*lead, *first.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, index: tuple[int, ...]) -> np.ndarray:
        import tifffile

        flat = int(np.ravel_multi_index(index, self.lead))
        return tifffile.imread(self.paths[flat]).astype(self.dtype, copy=False)


def assemble_file(job: _FileJob, recipe: _Recipe) -> _FileOutcome:
    """Write a stack's outputs from its per-plane files, then remove the plane folder."""
    outcome = _FileOutcome(source=str(job.source))
    try:
        _assemble(job, recipe, outcome)
    except DiskFullError as error:
        outcome.error, outcome.disk_full = str(error), True
    except QPIError as error:
        outcome.error = str(error)
    except Exception as error:
        outcome.error = f"{type(error).__name__}: {error}"
    return outcome


def _assemble(job: _FileJob, recipe: _Recipe, outcome: _FileOutcome) -> None:
    import tifffile

    lead = job.shape[:-2]
    plane = [job.targets(frame) for _, frame in job.planes()]
    if job.compute_phase and job.phase_final and _needs(job.phase_final, recipe.overwrite):
        stack = _PlaneFiles([p["phase"] for p in plane], lead, np.float32)
        first = read_image(plane[0]["phase"])
        records = [
            (first if i == 0 else read_image(p["phase"])).extra.get("method", {}).get("retrieval")
            for i, p in enumerate(plane)
        ]
        with _writing(job.phase_final):
            write_phase(
                job.phase_final,
                stack,
                acquisition=first.acquisition,
                method={**(job.method_record or {}), "planes": records},
                overwrite=recipe.overwrite,
                axes=job.axes,
            )
        outcome.written.append(str(job.phase_final))
    if job.measure and _needs(job.labels_final, recipe.overwrite):
        high = max(int(tifffile.imread(p["labels"]).max()) for p in plane)
        pixel_size = read_labels_tiff(plane[0]["labels"])[1]
        labels = _PlaneFiles(
            [p["labels"] for p in plane], lead, np.uint16 if high < 2**16 else np.uint32
        )
        with _writing(job.labels_final):
            write_image(
                job.labels_final,
                labels,
                acquisition=Acquisition(pixel_size_um=pixel_size),
                overwrite=recipe.overwrite,
                content="labels",
            )
        outcome.written.append(str(job.labels_final))
    if job.measure and _needs(job.table_final, recipe.overwrite):
        tables = [read_table_csv(p["table"]) for p in plane]
        phase_shape = _PlaneFiles([p["labels"] for p in plane], lead).shape
        with _writing(job.table_final):
            write_table_csv(
                job.table_final, combine_frames(tables, phase_shape), overwrite=recipe.overwrite
            )
        outcome.written.append(str(job.table_final))
    shutil.rmtree(job.planes_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Executors


class Executor(Protocol):
    """Runs tasks and hands back their results as they finish."""

    description: str

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, priority: int = 0) -> None: ...

    def completed(self) -> Iterator[tuple[Any, Any]]: ...

    def cancel(self) -> None: ...


class _SerialExecutor:
    """Runs tasks one after the other in this process, in the order submitted."""

    description = "in this process"

    def __init__(self) -> None:
        self._queue: deque[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = deque()

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, priority: int = 0) -> None:
        if priority > 0:
            self._queue.appendleft((tag, fn, args))
        else:
            self._queue.append((tag, fn, args))

    def completed(self) -> Iterator[tuple[Any, Any]]:
        while self._queue:
            tag, fn, args = self._queue.popleft()
            yield tag, fn(*args)

    def cancel(self) -> None:
        self._queue.clear()


class _DaskExecutor:
    """Runs tasks on a ``distributed`` cluster; results come back in the order they finish."""

    def __init__(self, client: Any, description: str) -> None:
        from distributed import as_completed

        self.client = client
        self.description = description
        self._pending = as_completed(loop=client.loop)
        self._futures: dict[str, tuple[Any, Any]] = {}

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, priority: int = 0) -> None:
        future = self.client.submit(fn, *args, pure=False, priority=priority)
        self._futures[future.key] = (tag, future)
        self._pending.add(future)

    def completed(self) -> Iterator[tuple[Any, Any]]:
        for future in self._pending:
            tag, _ = self._futures.pop(future.key)
            try:
                result = future.result()
            except Exception as error:
                result = error
            future.release()
            yield tag, result

    def cancel(self) -> None:
        futures = [future for _, future in self._futures.values()]
        self._pending.clear()
        self._futures.clear()
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)


def available_cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def connect(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (or its scheduler file).

    Waits up to ``timeout_s`` for the scheduler file to appear, for the scheduler and for its first
    worker, and checks that the workers have napari-qpi installed.

    Raises
    ------
    SchedulerError
        Unreachable or malformed address, missing scheduler file, no workers, napari-qpi
        missing on the workers.
    """
    from distributed import Client

    file = Path(address).expanduser()
    if file.suffix == ".json":
        deadline = time.monotonic() + timeout_s
        while not file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not file.is_file():
            raise SchedulerError(
                f"No scheduler file {file} (waited {timeout_s:g} s): start the scheduler with "
                f"`dask scheduler --scheduler-file {file}` first, or give its address "
                "(tcp://host:8786)."
            )
        kwargs: dict[str, Any] = {"scheduler_file": str(file)}
    else:
        kwargs = {"address": address}
    try:
        client = Client(**kwargs, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise SchedulerError(
            f"Could not reach the Dask scheduler at {address} within {timeout_s:g} s ({error}). "
            "Check the address (the scheduler prints it when it starts: tcp://host:8786), that "
            "the scheduler is running, and that this machine can reach it (firewall, VPN, SSH "
            "tunnel); or leave out --scheduler to run on this machine."
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout_s)
        _check_workers(client, address)
    except TimeoutError:
        client.close()
        raise SchedulerError(
            f"The Dask scheduler at {address} has no workers (none joined within "
            f"{timeout_s:g} s). Start some (`dask worker {address}`, or scale your "
            "dask-jobqueue cluster) and run again."
        ) from None
    except BaseException:
        client.close()
        raise
    return client


def _check_workers(client: Any, address: str) -> None:
    from . import __version__

    def installed() -> str | None:
        from importlib import metadata

        try:
            return metadata.version("napari-qpi")
        except metadata.PackageNotFoundError:
            return None

    versions = client.run(installed)
    missing = sorted(worker for worker, version in versions.items() if version is None)
    if missing:
        raise SchedulerError(
            f"napari-qpi is not installed on {len(missing)} of the {len(versions)} worker(s) of "
            f"the scheduler at {address} (e.g. {missing[0]}). Install napari-qpi {__version__} in "
            "the workers' Python environment and restart them."
        )
    other = sorted({version for version in versions.values() if version != __version__})
    if other:
        warnings.warn(
            f"The cluster's workers run napari-qpi {', '.join(other)}, this machine "
            f"{__version__}: results may differ from a local run.",
            stacklevel=3,
        )


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Processes started in this block ignore SIGINT: Ctrl-C reaches only this process.

    This process then cancels the job and stops its local workers itself, instead of every
    worker dying mid-task with its own traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_local_cluster(workers: int, threads_per_worker: int = 1) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` processes set up for this work.

    Unlike Dask's default, the workers keep glibc's adaptive ``malloc`` trimming: Dask sets
    ``MALLOC_TRIM_THRESHOLD_``, which makes every large temporary array a fresh ``mmap`` and
    nearly doubled the CPU time of a 512^2 classical retrieval here. The workers ignore Ctrl-C
    (this process stops them), and there is no dashboard. Close it when done.
    """
    import dask
    from distributed import LocalCluster

    with (
        _workers_ignore_ctrl_c(),
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
    ):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=max(1, threads_per_worker),
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


@contextlib.contextmanager
def open_executor(
    options: ClusterOptions | None = None, *, tasks: int = 1, pixels: int = 0, client: Any = None
) -> Iterator[Executor]:
    """Where a job's tasks run, for the duration of the ``with`` block.

    ``client``, if given, is used as is (and not closed). Otherwise ``options.scheduler``
    connects to a running scheduler; else a local cluster of ``options.workers`` processes with
    ``threads_per_worker`` threads each is started (and stopped afterwards), never more workers
    than ``tasks``. ``workers=0``, or ``workers=None`` with fewer than
    :data:`LOCAL_CLUSTER_MIN_PIXELS` ``pixels`` to process or a single core, runs in this process.
    """
    options = options or ClusterOptions()
    if client is not None:
        address = getattr(client.scheduler, "address", "?")
        yield _DaskExecutor(client, f"on the cluster at {address}")
        return
    if options.scheduler:
        if options.workers is not None:
            raise InputError(
                "--workers sets the size of a local cluster; with --scheduler the workers of "
                "that cluster are used. Give one or the other."
            )
        remote = connect(options.scheduler, timeout_s=options.timeout_s)
        try:
            yield _DaskExecutor(remote, f"on the cluster at {options.scheduler}")
        finally:
            remote.close()
        return
    workers = options.workers
    if workers is None:
        cores = available_cores()
        workers = 0 if cores < 2 or pixels < LOCAL_CLUSTER_MIN_PIXELS else cores
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}.")
    workers = min(workers, max(tasks, 1))
    if workers == 0:
        yield _SerialExecutor()
        return
    from distributed import Client

    cluster = start_local_cluster(workers, options.threads_per_worker)
    local = Client(cluster, set_as_default=False)
    try:
        yield _DaskExecutor(local, f"on {workers} local worker(s)")
    finally:
        with contextlib.suppress(Exception):
            local.close()
        with contextlib.suppress(Exception):
            cluster.close()


# --------------------------------------------------------------------------------------------
# Client side: planning, running, the manifest


class _Manifest:
    """The job's JSON record in the output folder, rewritten at most every few seconds."""

    def __init__(self, path: Path, command: str, recipe: _Recipe) -> None:
        from . import __version__

        self.path = path
        self.data: dict[str, Any] = {
            "napari_qpi_version": __version__,
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "recipe": recipe.record(),
            "files": {},
        }
        self._saved = 0.0

    def file(self, source: Path, **fields: Any) -> None:
        self.data["files"].setdefault(str(source), {}).update(fields)

    def save(self, *, force: bool = False, status: str | None = None) -> None:
        if status is not None:
            self.data["status"] = status
        if not force and time.monotonic() - self._saved < MANIFEST_INTERVAL_S:
            return
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = json.dumps(self.data, indent=1, default=str) + "\n"
        with contextlib.suppress(OSError), atomic_write(self.path, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self._saved = time.monotonic()


@dataclass
class _Work:
    job: _FileJob
    given: Path
    todo: list[tuple[tuple[int, ...], int]]


def _prepare_planes_dir(job: _FileJob, recipe: _Recipe) -> None:
    """Create (or check) the plane folder of a stack; refuse planes made another way."""
    record = job.planes_record(recipe)
    record_path = job.planes_dir / PLANES_RECORD
    if recipe.overwrite and job.planes_dir.exists():
        shutil.rmtree(job.planes_dir)
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        same = all(previous.get(key) == record[key] for key in ("source", "shape"))
        for key in ("method", "measure"):
            if previous.get(key) is not None and record[key] is not None:
                same = same and previous[key] == record[key]
            record[key] = record[key] if record[key] is not None else previous.get(key)
        if not same:
            raise InputError(
                f"{job.planes_dir} holds planes of an earlier run with other settings (or of "
                "another file); pass --overwrite to redo them, or delete that folder."
            )
    job.planes_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(record_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _plan(
    inputs: Sequence[Path],
    out_dir: Path,
    recipe: _Recipe,
    report: BatchReport,
    manifest: _Manifest,
) -> tuple[list[_Work], list[str]]:
    """The work of each input file; also the stems of the inputs not failed already."""
    works: list[_Work] = []
    claimed: dict[str, Path] = {}
    kept: list[str] = []
    reference_shape = None
    if recipe.reference is not None:
        reference_shape = tuple(_open(recipe.reference).data.shape)
    for raw in inputs:
        source = Path(raw).absolute()
        stem = output_stem(source)
        if recipe.method is None:
            stem = stem.removesuffix("_phase")
        try:
            if stem in claimed:
                raise InputError(
                    f"its outputs would have the same names as those of {claimed[stem]}; rename "
                    "one of them or process them into different folders."
                )
            claimed[stem] = source
            job = _job_for(source, stem, out_dir, recipe, reference_shape)
            if job is not None and job.stacked:
                _prepare_planes_dir(job, recipe)
        except (QPIError, OSError) as error:
            report.failed.append((Path(raw), str(error)))
            manifest.file(source, status="failed", reason=str(error))
            continue
        kept.append(stem)
        if job is None:
            first = out_dir / f"{stem}{PHASE_SUFFIX if recipe.method else TABLE_SUFFIX}"
            report.skipped.append(first)
            manifest.file(source, status="skipped", outputs=[str(first)])
            continue
        planes = job.planes()
        todo = [
            (index, frame)
            for index, frame in planes
            if recipe.overwrite or not (job.stacked and job.plane_done(frame))
        ]
        report.resumed += len(planes) - len(todo)
        works.append(_Work(job, Path(raw), todo))
        manifest.file(
            source,
            status="pending",
            planes=len(planes),
            planes_done=len(planes) - len(todo),
            outputs=[str(p) for p in job.finals()],
        )
    return works, kept


def _job_for(
    source: Path,
    stem: str,
    out_dir: Path,
    recipe: _Recipe,
    reference_shape: tuple[int, ...] | None,
) -> _FileJob | None:
    """The job of one input file, or ``None`` when all its outputs exist (and no overwrite)."""
    measure = recipe.measure is not None
    phase_final = out_dir / f"{stem}{PHASE_SUFFIX}" if recipe.method else None
    finals = [phase_final] if phase_final else []
    if measure:
        finals += [out_dir / f"{stem}{LABELS_SUFFIX}", out_dir / f"{stem}{TABLE_SUFFIX}"]
    if not recipe.overwrite and all(path.exists() for path in finals):
        return None
    compute_phase = phase_final is not None and (recipe.overwrite or not phase_final.exists())
    measured = source if compute_phase or phase_final is None else phase_final
    image = read_image(measured, lazy_threshold_bytes=0)
    shape = tuple(int(n) for n in image.data.shape)
    reference = recipe.reference or recipe.backgrounds.get(source)
    if compute_phase and reference is not None:
        check_reference(reference_shape or tuple(_open(reference).data.shape), shape)
    method_record = None
    if recipe.method:
        method_record = {
            "name": recipe.method,
            "settings": settings_record(recipe.settings),
            "source": source.name,
            "reference": None if reference is None else reference.name,
            "background_in_file": reference is None and image.background is not None,
        }
        if recipe.settings is not None and recipe.settings.refocus_um is not None:
            method_record["refocus_um"] = recipe.settings.refocus_um  # the z the user looks for
    return _FileJob(
        source=source,
        stem=stem,
        shape=shape,
        axes=image.axes,
        out_dir=out_dir,
        phase_final=phase_final,
        compute_phase=compute_phase,
        measure=measure,
        method_record=method_record,
        reference=reference,
    )


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


def _decide_sign(
    first: Path,
    settings: OffAxisSettings,
    acquisition: Acquisition | None,
    reference: Path | None,
    backgrounds: dict[Path, Path],
) -> tuple[OffAxisSettings, dict[str, Any]]:
    """Settings with the ``+phi`` carrier voted once on the first file's planes
    (:mod:`napari_qpi.calibration`), unless the carrier or the sign is known already."""
    given = settings.carrier or settings.sign_carrier
    if given is not None or (acquisition and acquisition.carrier_cycles_per_px):
        return settings, {"from": "settings or profile"}
    try:
        image = _open(first)
    except QPIError:
        return settings, {}
    if image.acquisition.carrier_cycles_per_px is not None:
        return settings, {"from": "file metadata"}
    acq = image.acquisition.merged(acquisition) if acquisition else image.acquisition
    shape = tuple(image.data.shape)
    source = reference or backgrounds.get(first.absolute())
    planes = []
    try:
        for index in voting_indices(shape):
            background = image.background
            if source is not None:
                per_plane = tuple(_open(source).data.shape) == shape and len(shape) > 2
                background = _read_plane(source, index if per_plane else ())[0]
            planes.append((_read_plane(first, index)[0], background))
    except (QPIError, OSError):
        return settings, {}
    carrier, record = decide_sign_carrier(planes, acquisition=acq, settings=settings)
    record["from"] = f"decided once on {first.name}"
    if carrier is None:
        return settings, record
    return dataclasses.replace(settings, sign_carrier=carrier), record


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
