"""napari reader: off-axis holograms (with their phase), our phase images, labels and CDP stacks.

The reader claims a file only when it really is one of ours: a CDP stack in our format, an image
whose metadata says it is a hologram or a napari-qpi phase image, labels written by our writer
(opened with their cell table), or an image with a clear off-axis sideband in its (downsampled)
spectrum. Everything else is left to other readers (``None``).

Dropping a hologram gives two layers: the hologram and its phase, retrieved with the method of the
reader settings (classical by default; ``gui_settings.json`` section ``reader``, ``"reconstruct":
false`` turns it off) and the acquisition from the file's metadata. The phase is lazy: only the
first plane is retrieved on opening, every other plane when napari shows it, so a long stack opens
at once.

Files larger than :func:`lazy_threshold_bytes` (512 MiB, or ``NAPARI_QPI_LAZY_THRESHOLD_MB``) open
as dask arrays with one plane per chunk: napari reads only the planes shown. Their contrast limits
come from the first plane, so napari does not scan the stack for its range either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import QPIError
from ..io import DEFAULT_LAZY_THRESHOLD, is_cdp_stack, read_cdp_stack, read_image
from ..io.images import SUPPORTED_EXTENSIONS, ImageData
from ..retrieval import looks_like_hologram
from .gui_settings import reader_settings
from .layers import (
    CDP_KEY,
    METHOD_KEY,
    MORPHOLOGY_KEY,
    LayerDataTuple,
    image_layer,
    phase_contrast_limits,
    spatial_kwargs,
)

ReaderFunction = Callable[[str | list[str]], list[LayerDataTuple]]

#: Environment variable: files above this many MiB open lazily (default 512).
LAZY_THRESHOLD_ENV = "NAPARI_QPI_LAZY_THRESHOLD_MB"


def lazy_threshold_bytes() -> int:
    """Size above which a file opens as a lazy dask stack: ``NAPARI_QPI_LAZY_THRESHOLD_MB``."""
    value = os.environ.get(LAZY_THRESHOLD_ENV, "").strip()
    try:
        return max(0, int(float(value) * 2**20)) if value else DEFAULT_LAZY_THRESHOLD
    except ValueError:
        return DEFAULT_LAZY_THRESHOLD


def _first_plane(data) -> np.ndarray:
    return np.asarray(data[(0,) * (data.ndim - 2)])


def _kind_of(image: ImageData, first: np.ndarray) -> str | None:
    if image.extra.get("content") == "labels" and first.dtype.kind in "iu":
        return "labels"
    modality = image.acquisition.modality
    if modality in ("hologram", "phase"):
        return modality
    if modality is None and looks_like_hologram(first):
        return "hologram"
    return None


def _plane_range(plane: np.ndarray) -> tuple[float, float]:
    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


def _display_name(path: Path) -> str:
    name = path.name
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return a reader function if ``path`` is a hologram, a phase image or a CDP stack."""
    if isinstance(path, list):
        return None if len(path) != 1 else get_reader(path[0])
    file = Path(path)
    if not file.is_file():
        return None
    if file.suffix.lower() == ".npz" and is_cdp_stack(file):
        return read_cdp_layers
    if not file.name.lower().endswith(SUPPORTED_EXTENSIONS):
        return None
    try:
        image = read_image(file, lazy_threshold_bytes=lazy_threshold_bytes())
        first = _first_plane(image.data)
        kind = _kind_of(image, first)
    except QPIError:
        return None
    if kind is None:
        return None

    def read(_path: str | list[str]) -> list[LayerDataTuple]:
        if kind == "labels":
            return [_labels_layer(image, file)]
        layers = [_image_layer(image, kind, file, first)]
        if kind == "hologram":
            layers += _phase_of(image, file)
        return layers

    return read


def _phase_of(image: ImageData, path: Path) -> list[LayerDataTuple]:
    """The phase layer of a dropped hologram (lazy for stacks), or nothing if turned off/failed."""
    options = reader_settings()
    if not options.get("reconstruct", True):
        return []
    from napari.utils.notifications import show_warning

    from ..lazy import lazy_reconstruct
    from ..reconstruct import settings_record
    from ..retrieval import OffAxisSettings

    method = str(options.get("method") or "classical")
    settings = OffAxisSettings()
    try:
        reference = image.background if method == "classical" else None  # an npz's bg_data
        lazy = lazy_reconstruct(
            image.data,
            method=method,
            reference=reference,
            acquisition=image.acquisition,
            settings=settings,
        )
    except QPIError as error:
        show_warning(f"Opened {path.name} without its phase: {error}")
        return []
    record = {
        "name": method,
        "settings": settings_record(settings),
        "source": str(path),
        "planes": "retrieved when shown" if image.data.ndim > 2 else "all",
    }
    data, kwargs, layer_type = image_layer(
        lazy.data,
        name=f"{_display_name(path)} phase ({method})",
        acquisition=lazy.acquisition,
        axes=image.axes,
        extra_metadata={METHOD_KEY: record, "source_path": str(path)},
        colormap="viridis",
        contrast_limits=phase_contrast_limits(lazy.first.phase),
    )
    factor = lazy.pixel_size_factor
    if "scale" not in kwargs and factor != 1.0:  # no pixel size known: keep the geometry
        kwargs["scale"] = (1.0,) * (np.ndim(data) - 2) + (factor, factor)
    return [(data, kwargs, layer_type)]


def _labels_layer(image: ImageData, path: Path) -> LayerDataTuple:
    """Labels written by our writer, with the cell table saved beside them as ``features``."""
    from ..io.tables import read_table_csv
    from .writer import _csv_path

    acquisition = image.acquisition
    kwargs: dict[str, object] = {"name": _display_name(path)}
    metadata: dict[str, object] = {"source_path": str(path)}
    csv = _csv_path(path)
    if csv.is_file():
        table = read_table_csv(csv)
        kwargs["features"] = table.to_dataframe()
        metadata[MORPHOLOGY_KEY] = {"units": table.units, "metadata": table.metadata}
        wavelength = table.metadata.get("wavelength_nm")
        if acquisition.wavelength_nm is None and wavelength:
            acquisition = acquisition.replace(wavelength_nm=float(wavelength))
    metadata["qpi"] = acquisition.to_dict()
    kwargs["metadata"] = metadata
    kwargs.update(spatial_kwargs(image.data.ndim, acquisition, image.axes))
    return (np.asarray(image.data), kwargs, "labels")


def _image_layer(image: ImageData, kind: str, path: Path, plane: np.ndarray) -> LayerDataTuple:
    acquisition = image.acquisition.replace(modality=kind)
    extra = {"source_path": str(path), "qpi_extra": image.extra}
    if kind == "phase":
        if isinstance(image.extra.get("method"), dict):
            extra[METHOD_KEY] = image.extra["method"]
        return image_layer(
            image.data,
            name=_display_name(path),
            acquisition=acquisition,
            axes=image.axes,
            extra_metadata=extra,
            colormap="viridis",
            contrast_limits=phase_contrast_limits(plane),
        )
    return image_layer(
        image.data,
        name=_display_name(path),
        acquisition=acquisition,
        axes=image.axes,
        extra_metadata=extra,
        colormap="gray",
        **({"contrast_limits": _plane_range(plane)} if image.lazy else {}),
    )


def read_cdp_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """Layers of a CDP stack: the diffraction patterns, and the phase masks that made them."""
    file = Path(path[0] if isinstance(path, list) else path)
    stack = read_cdp_stack(file)
    name = _display_name(file)
    acquisition = stack.acquisition.replace(modality="cdp")
    cdp_record = {"oversampling": stack.oversampling, "masks": stack.masks}
    patterns = image_layer(
        stack.patterns,
        name=name,
        acquisition=acquisition,
        axes="KYX",
        extra_metadata={CDP_KEY: cdp_record, "source_path": str(file)},
        colormap="magma",
        gamma=0.5,
    )
    # The patterns live in the detector (Fourier) plane; they are drawn on the sample-plane grid
    # of the zero-padded field (one detector pixel per sample pixel) only so that every layer
    # shares the viewer's units (napari warns "Inconsistent units across layers" otherwise).
    patterns[1]["metadata"]["qpi_display"] = "detector pixels drawn at the sample pixel pitch"
    masks = image_layer(
        stack.masks,
        name=f"{name} masks",
        acquisition=acquisition.replace(modality="phase"),
        axes="KYX",
        extra_metadata={"source_path": str(file), "qpi_role": "masks"},
        colormap="twilight",
        contrast_limits=(-np.pi, np.pi),
        visible=False,
    )
    return [patterns, masks]
