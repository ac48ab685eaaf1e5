"""Write OME-TIFF: phase images (float32 radians) and measurements, with our metadata record.

The record (``{"qpi": acquisition, "method": ..., "units": "rad", "napari_qpi_version": ...}``) is
stored in an OME ``MapAnnotation`` under the key ``napari_qpi``; the pixel size is also written as
OME ``PhysicalSizeX``/``PhysicalSizeY`` in µm and as TIFF resolution tags (pixels per centimetre)
for readers that ignore OME-XML. :func:`napari_qpi.io.read_image` gives back the same array, an
equal acquisition and the method in ``extra["method"]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import FileFormatError, InputError
from ._atomic import atomic_write, check_writable
from .metadata import OME_ANNOTATION_KEY, acquisition_to_json

#: Suffix of phase images written by napari-qpi.
PHASE_SUFFIXES = (".ome.tif", ".ome.tiff")

_DEFAULT_AXES = {2: "YX", 3: "TYX"}


def _version() -> str:
    from .. import __version__

    return __version__


def _check_axes(axes: str | None, ndim: int) -> str:
    if ndim not in _DEFAULT_AXES:
        raise InputError(
            f"An image to write must be 2-D (Y, X) or a 3-D stack (N, Y, X), got {ndim} dimensions."
        )
    if axes is None:
        return _DEFAULT_AXES[ndim]
    axes = axes.upper()
    if len(axes) != ndim or not axes.endswith("YX") or (ndim == 3 and axes[0] not in "TZC"):
        raise InputError(
            f"Axes {axes!r} do not fit a {ndim}-D phase image: use 'YX', or 'TYX', 'ZYX' or "
            "'CYX' for a stack."
        )
    return axes


def _planes(data: Any, dtype: np.dtype | type) -> Iterator[np.ndarray]:
    for index in np.ndindex(*data.shape[:-2]):
        yield np.ascontiguousarray(np.asarray(data[index]), dtype=dtype)


def write_phase(
    path: str | os.PathLike[str],
    phase: Any,
    *,
    acquisition: Acquisition,
    method: Mapping[str, Any],
    overwrite: bool = False,
    axes: str | None = None,
) -> Path:
    """Write a phase image in radians as an OME-TIFF (float32), atomically; return the path.

    Parameters
    ----------
    path
        Output file; ``.ome.tif`` is the recommended extension (any ``.tif``/``.tiff`` works).
    phase
        ``(H, W)`` or ``(N, H, W)`` real phase in radians, numpy or dask (written plane by plane).
    acquisition
        Acquisition record; stored with modality ``"phase"``. ``pixel_size_um`` becomes the OME
        physical pixel size.
    method
        How the phase was obtained (name, settings, model, source file); JSON-serialisable.
    overwrite
        Replace an existing file. Without it an existing ``path`` is never touched.
    axes
        ``"YX"``, or ``"TYX"`` (default for stacks), ``"ZYX"``, ``"CYX"``.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    InputError
        Complex or non-numeric phase, wrong number of dimensions or axes, an empty array.
    FileFormatError
        The extension is not a TIFF one, or the folder does not exist.
    MetadataError
        ``method`` cannot be stored as JSON.
    """
    if not isinstance(method, Mapping):
        raise InputError(f"'method' must be a dict describing the method, got {method!r}.")
    return _write_ome_tiff(
        path,
        phase,
        acquisition=acquisition.replace(modality="phase"),
        dtype=np.float32,
        record={"method": dict(method), "units": "rad"},
        overwrite=overwrite,
        axes=axes,
    )


def write_image(
    path: str | os.PathLike[str],
    image: Any,
    *,
    acquisition: Acquisition,
    overwrite: bool = False,
    axes: str | None = None,
    **record: Any,
) -> Path:
    """Write a measurement (e.g. a hologram in camera counts) as OME-TIFF, keeping its dtype.

    The acquisition (with its modality, e.g. ``"hologram"``) and any extra ``record`` entries are
    stored like :func:`write_phase` stores them, so :func:`napari_qpi.io.read_image` and the
    napari reader recognise the file without looking at its content.
    """
    if not all(hasattr(image, a) for a in ("shape", "ndim", "dtype")):
        image = np.asarray(image)
    return _write_ome_tiff(
        path,
        image,
        acquisition=acquisition,
        dtype=np.dtype(image.dtype),
        record=record,
        overwrite=overwrite,
        axes=axes,
    )


def _write_ome_tiff(
    path: str | os.PathLike[str],
    image: Any,
    *,
    acquisition: Acquisition,
    dtype: np.dtype | type,
    record: Mapping[str, Any],
    overwrite: bool,
    axes: str | None,
) -> Path:
    import tifffile

    path = Path(path)
    if not path.name.lower().endswith((".tif", ".tiff")):
        raise FileFormatError(
            f"Images are written as OME-TIFF; give a name ending in .ome.tif, not {path.name}."
        )
    check_writable(path, overwrite)
    if not all(hasattr(image, a) for a in ("shape", "ndim", "dtype")):
        image = np.asarray(image)
    kind = np.dtype(image.dtype).kind
    if kind not in "uif":
        raise InputError(
            f"Expected real numbers (e.g. phase in radians), got {image.dtype} data"
            + (" (take numpy.angle of the field)." if kind == "c" else ".")
        )
    axes = _check_axes(axes, image.ndim)
    if 0 in image.shape:
        raise InputError(f"The image is empty (shape {tuple(image.shape)}).")

    record_json = acquisition_to_json(
        acquisition,
        **json.loads(json.dumps(dict(record), default=_jsonable)),
        napari_qpi_version=_version(),
    )
    ome: dict[str, Any] = {
        "axes": axes,
        "Name": path.name.split(".")[0] or "phase",
        "MapAnnotation": {OME_ANNOTATION_KEY: record_json},
    }
    options: dict[str, Any] = {}
    pixel_size = acquisition.pixel_size_um
    if pixel_size is not None:
        ome.update(PhysicalSizeX=pixel_size, PhysicalSizeY=pixel_size)
        ome.update(PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
        options.update(resolution=(1e4 / pixel_size, 1e4 / pixel_size), resolutionunit="CENTIMETER")

    shape = tuple(int(n) for n in image.shape)
    data: Any
    if isinstance(image, np.ndarray) or image.ndim == 2:
        data = np.ascontiguousarray(np.asarray(image), dtype=dtype)
    else:
        data = _planes(image, dtype)
    with atomic_write(path, overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            shape=shape,
            dtype=dtype,
            ome=True,
            photometric="minisblack",
            metadata=ome,
            software=f"napari-qpi {_version()}",
            **options,
        )
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise InputError(
        f"The method record holds a {type(value).__name__}, which cannot be stored as JSON; use "
        "numbers, strings, lists and dicts."
    )
