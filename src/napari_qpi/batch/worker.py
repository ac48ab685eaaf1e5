"""The worker side of a batch job: one plane retrieved and/or measured, a stack assembled.

Everything here runs on a Dask worker (or in this process) and writes its outputs itself;
errors come back in the outcome records, never raised.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import QPIError
from ..io import read_image, write_image, write_phase
from ..io.images import ImageData
from ..io.tables import read_labels_tiff, read_table_csv, write_labels_tiff, write_table_csv
from ..lazy import check_reference, plane_retriever, retrieve_plane, retriever_builds
from ..morphology import MorphologyTable, combine_frames, measure_stack
from ..reconstruct import CLASSICAL_METHODS, output_acquisition
from ..threads import WORKERS_ENV, set_fft_workers
from .jobs import (
    DiskFullError,
    MeasureOptions,
    PlaneOutcome,
    _FileJob,
    _FileOutcome,
    _Recipe,
    _writing,
)
from .reading import _open, _read_plane

_TORCH_LIMITED = {"done": False}


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
        "local_background": options.local_background,
    }
    if not stacked:
        return measure_stack(phase, **kwargs)
    table, labels = measure_stack(phase[np.newaxis], **kwargs)
    table.columns["frame"] = np.full(len(table), frame, dtype=table.columns["frame"].dtype)
    return table, labels[0]


@contextlib.contextmanager
def _errors_into(outcome: PlaneOutcome | _FileOutcome) -> Iterator[None]:
    """Record an error of the block in ``outcome`` (``disk_full`` for a full disk), not raise it."""
    try:
        yield
    except DiskFullError as error:
        outcome.error, outcome.disk_full = str(error), True
    except QPIError as error:
        outcome.error = str(error)
    except Exception as error:
        outcome.error = f"{type(error).__name__}: {error}"


def run_plane(job: _FileJob, recipe: _Recipe, index: tuple[int, ...], frame: int) -> PlaneOutcome:
    """Do one plane of one file: retrieve its phase and/or measure it, write what is missing.

    Runs on a worker (or in this process). Errors come back in the outcome, never raised.
    """
    started = time.perf_counter()
    outcome = PlaneOutcome(source=str(job.source), frame=frame)
    with _errors_into(outcome):
        _run_plane(job, recipe, index, frame, outcome)
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
    with _errors_into(outcome):
        _assemble(job, recipe, outcome)
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
