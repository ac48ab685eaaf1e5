"""Run a retrieval method over one hologram or a whole stack, plane by plane.

This is the one loop shared by the napari widget and the command line: it walks the leading axes of
a stack (a time-lapse or z-stack), materialises one plane at a time (so a lazy dask stack is never
loaded whole), retrieves its phase and yields it with its index. Callers decide where the planes go.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .acquisition import Acquisition
from .errors import InputError
from .io import validate_hologram
from .retrieval import OffAxisSettings, retrieve_offaxis

#: Retrieval methods for off-axis holograms that need no trained model.
CLASSICAL_METHODS = ("classical",)


def available_methods(modality: str = "hologram") -> list[str]:
    """The classical method, then every registered model (shipped, then the user's)."""
    from .models import list_models

    return [*CLASSICAL_METHODS, *(card.name for card in list_models(modality))]


@dataclass
class PlaneResult:
    """The phase of one plane of a stack.

    Attributes
    ----------
    index
        Position of the plane along the stack's leading axes (``()`` for a single image).
    phase
        Unwrapped, background-corrected phase in radians, float32.
    pixel_size_factor
        Output pixel size divided by input pixel size (1.0 at full resolution).
    info
        What the method found (sideband position, filter radius, sign decision, ...).
    """

    index: tuple[int, ...]
    phase: np.ndarray
    pixel_size_factor: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)


def plane_indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Indices of the 2-D planes of an array of ``shape`` (the last two axes are Y, X)."""
    if len(shape) < 2:
        raise InputError(
            f"Expected an image (2-D) or a stack of images, got an array of shape {shape}."
        )
    return list(itertools.product(*(range(n) for n in shape[:-2])))


def iter_reconstruct(
    data: Any,
    *,
    method: str = "classical",
    reference: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> Iterator[PlaneResult]:
    """Yield the phase of every plane of ``data`` (a 2-D hologram or a stack), in order.

    ``data`` may be a numpy array or any lazy array (dask, zarr) indexable plane by plane; only the
    plane being processed is loaded. ``reference`` is an optional background hologram of the same
    field of view without cells (2-D, or a stack of the same shape as ``data``).
    """
    retrieve = _retriever(method, settings)
    shape = tuple(data.shape)
    indices = plane_indices(shape)
    reference_planes = None
    if reference is not None:
        reference_shape = tuple(reference.shape)
        if reference_shape != shape[-2:] and reference_shape != shape:
            raise InputError(
                f"The reference hologram has shape {reference_shape} but the holograms have "
                f"planes of shape {shape[-2:]}: use a background hologram taken with the same "
                "camera region, or none."
            )
        reference_planes = reference_shape == shape and len(shape) > 2
    for index in indices:
        plane = np.asarray(data[index])
        validate_hologram(plane, name=_plane_name(index))
        ref = None
        if reference is not None:
            ref = np.asarray(reference[index] if reference_planes else reference)
        result = retrieve(plane, ref, acquisition)
        yield PlaneResult(index, result.phase, result.pixel_size_factor, dict(result.info))


def _retriever(method: str, settings: OffAxisSettings | None):
    """``f(plane, reference, acquisition) -> PhaseResult`` for a method name; models load once."""
    if method in CLASSICAL_METHODS:
        return lambda plane, ref, acq: retrieve_offaxis(
            plane, reference=ref, acquisition=acq, settings=settings
        )
    names = available_methods()
    if method not in names:
        raise InputError(f"Unknown retrieval method {method!r}. Available: {', '.join(names)}.")
    from .models import load_model
    from .retrieval.deep import retrieve_deep

    model = load_model(method)
    background_order = (settings or OffAxisSettings()).background_order

    def run(plane, ref, acq):
        if ref is not None:
            raise InputError(
                f"Model '{method}' works on the hologram alone; a background hologram is used "
                "only by the classical method. Leave the background empty."
            )
        return retrieve_deep(plane, model=model, acquisition=acq, background_order=background_order)

    return run


def settings_record(settings: OffAxisSettings | None) -> dict[str, Any]:
    """The settings of a method as a JSON-ready dict, for the method record in outputs."""
    return dataclasses.asdict(settings or OffAxisSettings())


def _plane_name(index: tuple[int, ...]) -> str:
    return "hologram" if not index else f"hologram plane {index}"


def output_acquisition(acquisition: Acquisition | None, pixel_size_factor: float) -> Acquisition:
    """The acquisition record of a phase image made from a measurement with ``acquisition``."""
    acquisition = acquisition or Acquisition()
    pixel = acquisition.pixel_size_um
    return acquisition.replace(
        modality="phase",
        carrier_cycles_per_px=None,
        pixel_size_um=None if pixel is None else pixel * pixel_size_factor,
    )
