"""Phase of a lazily opened hologram stack, retrieved only for the planes that are looked at.

napari opens large stacks as dask arrays (:func:`napari_qpi.io.read_image`, one plane per chunk).
:func:`lazy_reconstruct` turns such a stack into a phase stack of the same kind whose planes are
retrieved when napari (or anyone) reads them; :func:`reconstruct_plane` retrieves one plane now.
Both keep each method's retriever, and so its network, loaded between planes
(:func:`plane_retriever`); the batch engine (:mod:`napari_qpi.batch`) uses the same cache, once per
Dask worker. No napari or Qt here.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .acquisition import Acquisition
from .errors import InputError
from .io import validate_hologram
from .reconstruct import (
    CLASSICAL_METHODS,
    PlaneResult,
    make_retriever,
    output_acquisition,
    plane_indices,
    settings_record,
)
from .retrieval import OffAxisSettings

#: ``retriever(plane, reference_plane_or_None, acquisition_or_None) -> PhaseResult``.
Retriever = Callable[[np.ndarray, "np.ndarray | None", "Acquisition | None"], Any]

#: Retrievers (and so loaded networks) kept per process.
RETRIEVER_CACHE_SIZE = 4

#: Planes of phase a :func:`lazy_reconstruct` stack keeps, so going back to a plane is instant.
PLANE_CACHE_SIZE = 8

_LOCK = threading.Lock()
_RETRIEVERS: OrderedDict[tuple[str, str, str | None], Retriever] = OrderedDict()
_BUILDS = {"count": 0}


def _model_stamp(method: str) -> str | None:
    if method in CLASSICAL_METHODS:
        return None
    from .models import get_card

    return get_card(method).sha256


def plane_retriever(
    method: str = "classical", settings: OffAxisSettings | None = None
) -> Retriever:
    """The function that retrieves one plane with ``method``, built once per process.

    For a network this loads the model once; later calls with the same method, settings and
    weights return the same function. Safe to call from several threads.

    Raises
    ------
    InputError
        Unknown method.
    ModelError
        The model cannot be loaded.
    """
    key = (method, json.dumps(settings_record(settings), sort_keys=True), _model_stamp(method))
    with _LOCK:
        if key in _RETRIEVERS:
            _RETRIEVERS.move_to_end(key)
            return _RETRIEVERS[key]
        retriever = make_retriever(method, settings)
        _BUILDS["count"] += 1
        _RETRIEVERS[key] = retriever
        while len(_RETRIEVERS) > RETRIEVER_CACHE_SIZE:
            _RETRIEVERS.popitem(last=False)
    return retriever


def retriever_builds() -> int:
    """How many retrievers this process has built (a network is loaded once per build)."""
    return _BUILDS["count"]


def check_reference(reference_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether a reference of ``reference_shape`` is one hologram per plane of ``shape``.

    Raises
    ------
    InputError
        The reference fits neither one plane nor the whole stack.
    """
    if reference_shape != shape[-2:] and reference_shape != shape:
        raise InputError(
            f"The reference hologram has shape {reference_shape} but the holograms have "
            f"planes of shape {shape[-2:]}: use a background hologram taken with the same "
            "camera region, or none."
        )
    return reference_shape == shape and len(shape) > 2


def _plane_index(index: int | tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    lead = shape[:-2]
    index = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
    if len(index) != len(lead) or any(not 0 <= i < n for i, n in zip(index, lead, strict=True)):
        raise InputError(f"Plane {index} does not exist in a stack of shape {shape}.")
    return tuple(int(i) for i in index)


def _read(array: Any, index: tuple[int, ...]) -> np.ndarray:
    import dask
    from dask.local import get_sync

    # the synchronous scheduler as a function: its name makes dask import distributed
    with dask.config.set(scheduler=get_sync):
        return np.asarray(array[index])


def _plane_name(index: tuple[int, ...]) -> str:
    return "hologram" if not index else f"hologram plane {index}"


def retrieve_plane(
    plane: np.ndarray,
    index: tuple[int, ...],
    retriever: Retriever,
    reference: np.ndarray | None,
    acquisition: Acquisition | None,
) -> PlaneResult:
    """Check one hologram plane and retrieve its phase with ``retriever``."""
    validate_hologram(plane, name=_plane_name(index))
    result = retriever(plane, reference, acquisition)
    return PlaneResult(index, result.phase, result.pixel_size_factor, dict(result.info))


def reconstruct_plane(
    data: Any,
    index: int | tuple[int, ...] = (),
    *,
    method: str = "classical",
    reference: Any = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> PlaneResult:
    """The phase of one plane of ``data``, reading only that plane.

    Parameters
    ----------
    data
        A hologram ``(H, W)`` or a stack ``(..., H, W)``: numpy, dask, or anything indexable.
    index
        The plane: an int or a tuple over the leading axes (``()`` for a 2-D hologram).
    method, reference, acquisition, settings
        As in :func:`napari_qpi.reconstruct.iter_reconstruct`; the result is the same as that
        function's for this plane.

    Raises
    ------
    InputError
        A plane that does not exist, a reference of the wrong shape, a plane that is not a
        hologram (flat, saturated, non-finite), an unknown method.
    """
    shape = tuple(data.shape)
    plane_indices(shape)
    index = _plane_index(index, shape)
    ref = None
    if reference is not None:
        per_plane = check_reference(tuple(reference.shape), shape)
        ref = _read(reference, index if per_plane else ())
    retriever = plane_retriever(method, settings)
    return retrieve_plane(_read(data, index), index, retriever, ref, acquisition)


@dataclass
class LazyPhase:
    """A phase stack whose planes are retrieved when read.

    Attributes
    ----------
    data
        Phase in radians, float32: a dask array with one plane per chunk for a stack (reading a
        plane retrieves it, or takes it from a small cache), a numpy array for a single hologram.
    pixel_size_factor
        Output pixel size / input pixel size (multiply the layer's Y, X ``scale`` by it).
    acquisition
        The acquisition record of the phase (:func:`~napari_qpi.reconstruct.output_acquisition`).
    first
        The plane retrieved to learn the output shape (the first one); its ``phase`` is a good
        sample for contrast limits.
    """

    data: Any
    pixel_size_factor: float
    acquisition: Acquisition
    first: PlaneResult
    info: dict[str, Any] = field(default_factory=dict)


def lazy_reconstruct(
    data: Any,
    *,
    method: str = "classical",
    reference: Any = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
    cache_planes: int = PLANE_CACHE_SIZE,
) -> LazyPhase:
    """Phase of a hologram stack as a lazy array: only the planes that are read are retrieved.

    The first plane is retrieved at once (to learn the output shape and pixel size, and to fail
    early on a wrong method or reference); every other plane when it is first read, e.g. when
    napari shows it. The hologram planes are read the same way, so a dask stack opened lazily
    stays lazy. For a whole stack at once use :func:`napari_qpi.reconstruct.iter_reconstruct`
    (with progress) or ``LazyPhase.data.compute()``.

    Raises
    ------
    InputError, ModelError
        As :func:`reconstruct_plane`, for the first plane.
    """
    import dask.array as da

    from .calibration import with_stack_sign

    shape = tuple(data.shape)
    settings = with_stack_sign(
        data, method=method, reference=reference, acquisition=acquisition, settings=settings
    )
    first_index = (0,) * (len(shape) - 2)
    first = reconstruct_plane(
        data,
        first_index,
        method=method,
        reference=reference,
        acquisition=acquisition,
        settings=settings,
    )
    out_acquisition = output_acquisition(acquisition, first.pixel_size_factor)
    if len(shape) == 2:
        return LazyPhase(first.phase, first.pixel_size_factor, out_acquisition, first, first.info)

    per_plane = reference is not None and check_reference(tuple(reference.shape), shape)
    retriever = plane_retriever(method, settings)
    lead = len(shape) - 2
    cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict({first_index: first.phase})
    lock = threading.Lock()

    def phase_block(block_id: tuple[int, ...] | None = None) -> np.ndarray:
        index = tuple(int(i) for i in (block_id or ())[:lead])
        with lock:
            if index in cache:
                cache.move_to_end(index)
                return cache[index][(np.newaxis,) * lead]
        ref = None
        if reference is not None:
            ref = _read(reference, index if per_plane else ())
        phase = retrieve_plane(_read(data, index), index, retriever, ref, acquisition).phase
        with lock:
            cache[index] = phase
            while len(cache) > max(1, cache_planes):
                cache.popitem(last=False)
        return phase[(np.newaxis,) * lead]

    phase = da.map_blocks(
        phase_block,
        dtype=np.float32,
        chunks=tuple((1,) * n for n in shape[:-2]) + tuple((n,) for n in first.phase.shape),
        meta=np.empty((0,) * len(shape), dtype=np.float32),
        name=f"qpi-phase-{uuid.uuid4().hex}",
    )
    return LazyPhase(phase, first.pixel_size_factor, out_acquisition, first, first.info)
