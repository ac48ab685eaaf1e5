"""Conversions between our data records and napari layer-data tuples.

napari never sees a file format: readers hand over arrays with physical ``scale``, ``units`` and the
acquisition record in ``metadata["qpi"]``; writers take them back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..acquisition import METADATA_KEY, Acquisition

#: Key in ``layer.metadata`` for the description of the method that made a phase layer.
METHOD_KEY = "qpi_method"

#: Key in a CDP patterns layer's metadata with the masks (radians) and the oversampling factor.
CDP_KEY = "qpi_cdp"

#: Key in ``labels_layer.metadata`` with the units and parameters of its per-cell features table.
MORPHOLOGY_KEY = "qpi_morphology"

LayerDataTuple = tuple[Any, dict[str, Any], str]


def spatial_kwargs(ndim: int, acquisition: Acquisition, axes: str | None = None) -> dict[str, Any]:
    """``scale``, ``units`` and ``axis_labels`` for an image whose last two axes are Y, X."""
    pixel = acquisition.pixel_size_um
    kwargs: dict[str, Any] = {}
    if axes and len(axes) == ndim:
        kwargs["axis_labels"] = tuple(axes.lower())
    if pixel is not None:
        kwargs["scale"] = (1.0,) * (ndim - 2) + (pixel, pixel)
        kwargs["units"] = ("pixel",) * (ndim - 2) + ("um", "um")
    return kwargs


def acquisition_of(layer_metadata: dict[str, Any] | None) -> Acquisition:
    """The acquisition record stored in a layer's metadata (empty if there is none)."""
    return Acquisition.from_dict((layer_metadata or {}).get(METADATA_KEY))


def image_layer(
    data: Any,
    *,
    name: str,
    acquisition: Acquisition,
    axes: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> LayerDataTuple:
    """An image layer-data tuple with physical scale and the acquisition in its metadata."""
    metadata = {METADATA_KEY: acquisition.to_dict(), **(extra_metadata or {})}
    layer_kwargs = {"name": name, "metadata": metadata}
    layer_kwargs.update(
        spatial_kwargs(np.ndim(data) if not hasattr(data, "ndim") else data.ndim, acquisition, axes)
    )
    layer_kwargs.update(kwargs)
    return (data, layer_kwargs, "image")


def phase_contrast_limits(phase: np.ndarray) -> tuple[float, float]:
    """Display range of a phase image: robust percentiles, never an empty range."""
    finite = np.asarray(phase)[np.isfinite(phase)]
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(finite, [0.5, 99.9])
    if high <= low:
        high = low + 1.0
    return (float(low), float(high))


def jump_labels(phase: np.ndarray) -> np.ndarray:
    """Labels (1) on the pixels next to a 2 pi jump of an unwrapped phase, plane by plane.

    Where unwrapping may have failed (:func:`napari_qpi.retrieval.jump_mask`); an empty layer means
    no neighbouring pixels differ by more than pi. NaN planes (cancelled) stay empty.
    """
    from ..retrieval import jump_mask

    phase = np.asarray(phase)
    planes = phase.reshape(-1, *phase.shape[-2:])
    labels = np.zeros(planes.shape, dtype=np.uint8)
    for index, plane in enumerate(planes):
        if np.isfinite(plane).any():
            labels[index] = jump_mask(np.nan_to_num(plane))
    return labels.reshape(phase.shape)
