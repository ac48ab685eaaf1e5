"""Planning a batch job: one job per input file, the planes still to do (resume), the plane
folder of a stack (checkpoint), the job manifest, and the carrier sign decided once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..acquisition import Acquisition
from ..calibration import decide_sign_carrier, voting_indices
from ..errors import InputError, QPIError
from ..io import atomic_write, read_image
from ..lazy import check_reference
from ..reconstruct import settings_record
from ..retrieval import OffAxisSettings
from .jobs import (
    LABELS_SUFFIX,
    PHASE_SUFFIX,
    PLANES_RECORD,
    TABLE_SUFFIX,
    BatchReport,
    _FileJob,
    _Recipe,
    output_stem,
)
from .reading import _open, _read_plane

#: Shortest interval between two writes of the job manifest, in seconds.
MANIFEST_INTERVAL_S = 2.0


class _Manifest:
    """The job's JSON record in the output folder, rewritten at most every few seconds."""

    def __init__(self, path: Path, command: str, recipe: _Recipe) -> None:
        from .. import __version__

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
