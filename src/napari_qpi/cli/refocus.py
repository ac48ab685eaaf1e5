"""``napari-qpi reconstruct --refocus auto|Z_UM`` and ``--zstack START STOP STEP``.

Refocusing works on the complex field of an off-axis hologram (the classical method), so it needs
the wavelength and the pixel size in the sample plane (file metadata, a JSON sidecar, a profile or
the command line) and is refused for networks (phase out, no field) and CDP stacks. ``auto`` finds
the plane per file and, for a stack, per plane (``--refocus-hold``: one z for the stack, found on
up to :data:`AUTOFOCUS_PLANES` of its planes); the z (a list, one per plane, for a stack focused
plane by plane) goes into the output's method record under ``refocus_um`` and the summary.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import InputError, QPIError
from ..retrieval import OffAxisSettings
from ..retrieval.autofocus import check_distance, check_range
from .refocus_options import (
    ZSTACK_AMPLITUDE_SUFFIX,
    ZSTACK_PHASE_SUFFIX,
    add_refocus_arguments,
    check_refocus_request,
    refocus_requested,
)

#: Planes of a stack scored together by ``--refocus auto`` (evenly spaced).
AUTOFOCUS_PLANES = 8
#: Most planes ``--zstack`` writes.
MAX_ZSTACK_PLANES = 400


def _acquisition(path: Path, args: argparse.Namespace) -> tuple[Any, Acquisition]:
    """The image (lazy) and its acquisition with the command line's optics on top."""
    from ..io import read_image
    from ..retrieval.refocus import optics
    from .acquisition import acquisition_override

    image = read_image(path)
    override = acquisition_override(args)
    acquisition = image.acquisition.merged(override) if override else image.acquisition
    try:
        optics(acquisition)
    except QPIError as error:
        raise type(error)(f"{path.name}: {error}") from None
    return image, acquisition


def _reference(args: argparse.Namespace) -> np.ndarray | None:
    if not args.reference:
        return None
    from ..io import read_image

    return np.asarray(read_image(args.reference).data)


def _focus_planes(data: Any) -> tuple[np.ndarray, list[int]]:
    """The planes autofocus scores: the image, or up to AUTOFOCUS_PLANES of a stack."""
    if data.ndim == 2:
        return np.asarray(data), []
    flat = data.reshape(-1, *data.shape[-2:])
    picks = sorted({int(i) for i in np.linspace(0, len(flat) - 1, AUTOFOCUS_PLANES)})
    return np.stack([np.asarray(flat[i]) for i in picks]), picks


def file_refocus(
    path: Path, args: argparse.Namespace, settings: OffAxisSettings, reference: Any
) -> tuple[float, str]:
    """The refocus distance (um) for one file and how it was found."""
    from ..retrieval.refocus import hologram_autofocus

    image, acquisition = _acquisition(path, args)
    if (args.refocus or "").lower() != "auto":
        z = float(args.refocus)
        check_distance(z, image.data.shape, acquisition.pixel_size_um)
        return z, "given"
    planes, picks = _focus_planes(image.data)
    if reference is not None and np.ndim(reference) > 2 and picks:
        reference = np.asarray(reference).reshape(-1, *planes.shape[-2:])[picks]
    z, search = hologram_autofocus(
        planes,
        reference=reference,
        acquisition=acquisition,
        settings=settings,
        z_range=args.refocus_range,
        metric=args.focus_metric,
    )
    held = f", one z for {len(picks)} planes" if picks else ""
    return z, f"autofocus, {search.metric}, {search.evaluations} planes searched{held}"


def write_zstack(
    path: Path, args: argparse.Namespace, settings: OffAxisSettings, reference: Any
) -> list[Path]:
    """Phase and amplitude of one hologram refocused over ``--zstack``, written as ZYX stacks."""
    from ..batch import output_stem
    from ..io import write_image, write_phase
    from ..reconstruct import output_acquisition, settings_record
    from ..retrieval.refocus import zstack

    start, stop, step = args.zstack
    if not (step > 0 and start <= stop):
        raise InputError(
            f"--zstack {start:g} {stop:g} {step:g} is empty: give START <= STOP and STEP > 0 (um)."
        )
    zs = np.arange(start, stop + step / 2, step)
    if len(zs) > MAX_ZSTACK_PLANES:
        raise InputError(
            f"--zstack asks for {len(zs)} planes; at most {MAX_ZSTACK_PLANES}: take a larger STEP."
        )
    image, acquisition = _acquisition(path, args)
    if image.data.ndim != 2:
        raise InputError(
            f"{path.name} is a stack of {image.data.shape[0]} images; --zstack works on a single "
            "hologram (the z-stack is its third axis)."
        )
    hologram = np.asarray(image.data)
    check_range((zs[0] - 1e-9, zs[-1] + 1e-9), hologram.shape, acquisition.pixel_size_um)
    phase, amplitude = zstack(
        hologram, zs, reference=reference, acquisition=acquisition, settings=settings
    )
    factor = hologram.shape[-1] / phase.shape[-1]
    out_acq = output_acquisition(acquisition, factor)
    record = {
        "name": "classical",
        "settings": settings_record(settings),
        "source": path.name,
        "reference": reference is not None,
        "zstack_um": [float(z) for z in zs],
        "z_step_um": float(step),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(path)
    written = [
        write_phase(
            out / f"{stem}{ZSTACK_PHASE_SUFFIX}",
            phase,
            acquisition=out_acq,
            method=record,
            overwrite=args.overwrite,
            axes="ZYX",
        ),
        write_image(
            out / f"{stem}{ZSTACK_AMPLITUDE_SUFFIX}",
            amplitude,
            acquisition=out_acq,
            overwrite=args.overwrite,
            axes="ZYX",
            method=record,
            units="amplitude relative to the background median",
        ),
    ]
    return written


def _per_plane(path: Path, args: argparse.Namespace) -> bool:
    """Whether this file is a stack to focus plane by plane."""
    from ..io import read_image

    if (args.refocus or "").lower() != "auto" or args.refocus_hold:
        return False
    return read_image(path).data.ndim > 2


def write_per_plane(
    path: Path, args: argparse.Namespace, settings: OffAxisSettings, reference: Any
) -> Path:
    """A stack focused plane by plane: each plane's z found and applied, written as one stack."""
    from ..batch import PHASE_SUFFIX, output_stem
    from ..io import write_phase
    from ..reconstruct import output_acquisition, settings_record
    from ..retrieval import retrieve_offaxis
    from ..retrieval.refocus import hologram_autofocus

    if args.measure:
        raise InputError(
            f"{path.name}: --measure with a stack focused plane by plane is not supported; run "
            "`napari-qpi measure` on the output, or add --refocus-hold."
        )
    image, acquisition = _acquisition(path, args)
    out = Path(args.out) / f"{output_stem(path)}{PHASE_SUFFIX}"
    if out.exists() and not args.overwrite:
        print(f"napari-qpi: {path.name}: {out} exists, skipped (--overwrite to redo)")
        return out
    lead = image.data.shape[:-2]
    references = np.asarray(reference) if reference is not None else None
    phases, zs, factor = [], [], 1.0
    for index in np.ndindex(*lead):
        plane = np.asarray(image.data[index])
        ref = references
        if references is not None and references.ndim > 2:
            ref = references[index]
        z, _ = hologram_autofocus(
            plane,
            reference=ref,
            acquisition=acquisition,
            settings=settings,
            z_range=args.refocus_range,
            metric=args.focus_metric,
        )
        result = retrieve_offaxis(
            plane, reference=ref, acquisition=acquisition, settings=replace(settings, refocus_um=z)
        )
        phases.append(result.phase)
        zs.append(round(z, 3))
        factor = result.pixel_size_factor
    phase = np.stack(phases).reshape(*lead, *phases[0].shape)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_phase(
        out,
        phase,
        acquisition=output_acquisition(acquisition, factor),
        method={
            "name": "classical",
            "settings": settings_record(settings),
            "source": path.name,
            "reference": reference is not None,
            "refocus_um": zs,
        },
        overwrite=args.overwrite,
        axes=image.axes,
    )
    print(
        f"napari-qpi: {path.name}: refocus_um per plane {min(zs):+.2f} to {max(zs):+.2f} "
        f"({len(zs)} planes, autofocus, {args.focus_metric}) -> {out}"
    )
    return out


def cmd_reconstruct_refocus(
    args: argparse.Namespace,
    inputs: Sequence[Path],
    settings: OffAxisSettings,
    run_batch: Callable[[OffAxisSettings, Sequence[Path]], int],
) -> int:
    """Reconstruct with refocus (one batch per file for ``auto``) and write any z-stacks."""
    reference = _reference(args)
    status = 0
    if args.zstack is not None:
        for path in inputs:
            written = write_zstack(path, args, settings, reference)
            print(
                f"napari-qpi: {path.name}: z-stack of {args.zstack} um -> "
                + ", ".join(str(p) for p in written)
            )
        if args.refocus is None:
            return status
    for path in inputs:
        if _per_plane(path, args):
            write_per_plane(path, args, settings, reference)
            continue
        z, how = file_refocus(path, args, settings, reference)
        print(f"napari-qpi: {path.name}: refocus_um = {z:+.2f} ({how})", file=sys.stdout)
        status = max(status, run_batch(replace(settings, refocus_um=z), [path]))
    return status


__all__ = [
    "AUTOFOCUS_PLANES",
    "ZSTACK_AMPLITUDE_SUFFIX",
    "ZSTACK_PHASE_SUFFIX",
    "add_refocus_arguments",
    "check_refocus_request",
    "cmd_reconstruct_refocus",
    "file_refocus",
    "refocus_requested",
    "write_per_plane",
    "write_zstack",
]
