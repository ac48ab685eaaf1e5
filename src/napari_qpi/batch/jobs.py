"""What a batch job is made of: output names, options, errors, the per-file job and its records.

Plain data shared by the client (:mod:`.plan`, :mod:`.engine`) and the workers (:mod:`.worker`);
nothing here reads an image or starts a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..defaults import CONNECT_TIMEOUT_S, LABELS_SUFFIX, PHASE_SUFFIX, TABLE_SUFFIX
from ..errors import FileFormatError, QPIError
from ..io.images import SUPPORTED_EXTENSIONS, ImageData
from ..morphology import DEFAULT_ALPHA_UM3_PER_PG, SegmentationSettings
from ..reconstruct import settings_record
from ..retrieval import OffAxisSettings

#: Folder of the per-plane outputs of a stack while it is being processed.
PLANES_SUFFIX = ".planes"
#: Every cell of every file of a job, with a ``file`` column.
COMBINED_TABLE = "morphology.csv"
#: What made the planes in a ``.planes`` folder (checked before they are reused).
PLANES_RECORD = "job.json"


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
    #: False: the background is taken as 0 rad, as DryMass does (the phase must be corrected).
    local_background: bool = True

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
