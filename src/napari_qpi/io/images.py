"""Read holograms and phase images: TIFF / OME-TIFF / ImageJ TIFF, PNG, BMP, JPEG, NPY, NPZ, HDF5.

:func:`read_image` returns an :class:`ImageData`: a single-channel image ``(H, W)`` or a stack
``(N, H, W)`` (numpy, or a dask array with one plane per chunk for large files), its axes, the
acquisition record found in the file and its sidecar, a background hologram stored in the same file
(an NPZ's ``bg_data``, a qpformat HDF5 ``reference``), and anything else worth keeping in ``extra``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import FileFormatError, InputError, QPIError
from .metadata import apply_sidecar, read_tiff_metadata, record_from_json

#: Files with more uncompressed data than this (bytes) are opened lazily by default.
DEFAULT_LAZY_THRESHOLD = 512 * 2**20

#: Rec. 709 luma weights (R, G, B) used to turn a colour image into one intensity channel.
LUMINANCE_WEIGHTS = (0.2125, 0.7154, 0.0721)

#: Names of the array read from an NPZ file, in order of preference (else the first array).
NPZ_IMAGE_KEYS = ("hologram", "image", "data")

#: Names of the background (reference) hologram in an NPZ file (qpimage / qpretrieve: ``bg_data``).
NPZ_BACKGROUND_KEYS = ("bg_data", "background", "reference")

_FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
    ".bmp": "bmp",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".npy": "npy",
    ".npz": "npz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}

#: File name endings :func:`read_image` accepts, lower case, longest first.
SUPPORTED_EXTENSIONS = (".ome.tiff", ".ome.tif", *_FORMATS)

_SIGNATURES = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "npz"),
    (b"PK\x05\x06", "npz"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
)

_SUFFIX_OF = {
    "tiff": ".tif",
    "png": ".png",
    "jpeg": ".jpg",
    "bmp": ".bmp",
    "npy": ".npy",
    "npz": ".npz",
    "hdf5": ".h5",
}

_STACK_AXES = "TZC"


@dataclass
class ImageData:
    """An image read from a file.

    Attributes
    ----------
    data
        ``(H, W)`` or ``(N, H, W)`` real array, numpy or dask (one plane per chunk).
    acquisition
        Acquisition record from the file's metadata and sidecar (fields not found are ``None``).
    axes
        ``"YX"``, or a stack axis followed by ``"YX"``: ``"TYX"`` (time or an unnamed stack),
        ``"ZYX"`` or ``"CYX"``.
    path
        The file read.
    background
        The background (reference) hologram stored in the same file, ``(H, W)``, or ``None``:
        an NPZ's ``bg_data`` (the qpimage / qpretrieve convention), a qpformat HDF5 ``reference``.
    extra
        Everything else: ``"format"``, ``"lazy"``, ``"metadata_sources"``, colour conversion,
        keys of our JSON record other than ``"qpi"`` (e.g. ``"method"`` and ``"units"`` of a phase
        image written by :func:`napari_qpi.io.write_phase`).
    """

    data: Any
    acquisition: Acquisition
    axes: str
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    background: np.ndarray | None = None

    @property
    def lazy(self) -> bool:
        """Whether :attr:`data` is a dask array (planes are read on demand)."""
        return not isinstance(self.data, np.ndarray)


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    return None


def _describe_content(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        return "the file is empty"
    text = head.decode("utf-8", "replace")
    if "\ufffd" not in text[:-3] and "".join(text.split()).isprintable():
        return f"it looks like a text file (it starts with {text[:24]!r})"
    return f"its first bytes {head[:8]!r} match no supported image format"


def _check_path(path: Path) -> str:
    if not path.exists():
        raise FileFormatError(f"No such file: {path}")
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder; choose an image file inside it.")
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise FileFormatError(
            f"{path.name}: napari-qpi cannot read '{path.suffix or 'no extension'}' files. "
            f"Supported: {', '.join(_FORMATS)} (OME-TIFF as .ome.tif). Convert the image to TIFF."
        )
    actual = _sniff(path)
    if actual != kind:
        if actual is None:
            raise FileFormatError(
                f"{path} is not a valid {kind.upper()} file: {_describe_content(path)}. "
                "Check that you picked the right file; export it again if it is damaged."
            )
        content = "zip archive (.npz?)" if actual == "npz" else f"{actual.upper()} file"
        raise FileFormatError(
            f"{path} has the extension {path.suffix} but holds a {content}: rename it to end "
            f"with {_SUFFIX_OF[actual]}."
        )
    return kind


def _corrupt(path: Path, kind: str, err: BaseException) -> FileFormatError:
    return FileFormatError(
        f"{path} could not be read as {kind.upper()} ({type(err).__name__}: {err}). The file is "
        "probably truncated or corrupt (an interrupted copy, download or acquisition): copy or "
        "export it again."
    )


def _plane_chunks(shape: tuple[int, ...], plane_ndim: int) -> tuple[int, ...]:
    lead = len(shape) - plane_ndim
    return (1,) * lead + tuple(shape[lead:])


def _check_tiff_complete(path: Path, series: Any) -> None:
    size = path.stat().st_size
    if series.dataoffset is not None:
        if series.dataoffset + series.nbytes > size:
            raise FileFormatError(
                f"{path} is truncated: its image data need {series.dataoffset + series.nbytes} "
                f"bytes but the file has {size}. Copy or export it again."
            )
        return
    for index, page in enumerate(series.pages):
        if page is None:
            raise FileFormatError(f"{path} is truncated or corrupt: page {index} is missing.")
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise FileFormatError(
                f"{path} is truncated: page {index} points past the end of the file. Copy or "
                "export it again."
            )


def _read_tiff_page(path: str, index: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.series[0].pages[index].asarray()


def _lazy_tiff(path: Path, series: Any, plane_ndim: int) -> Any:
    import dask
    import dask.array as da
    import tifffile

    shape = tuple(series.shape)
    if series.dataoffset is not None:
        memmap = tifffile.memmap(path, series=0, mode="r")
        return da.from_array(
            memmap.reshape(shape),
            chunks=_plane_chunks(shape, plane_ndim),
            name=f"tiff-{path}-{path.stat().st_mtime_ns}",
        )
    keyframe = series.keyframe
    pages = len(series.pages)
    if pages * int(np.prod(keyframe.shape)) != int(np.prod(shape)):
        return None
    read = dask.delayed(_read_tiff_page, pure=True)
    planes = [
        da.from_delayed(read(str(path), i), shape=keyframe.shape, dtype=series.dtype)
        for i in range(pages)
    ]
    return da.stack(planes).reshape(shape)


class _DamageLog(logging.Handler):
    """Collects tifffile's warnings that mean a damaged file (it logs them and reads on)."""

    _SIGNS = ("invalid page offset", "truncat", "corrupt", "failed to reshape", "failed to read")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(sign in message.lower() for sign in self._SIGNS):
            self.messages.append(message)

    @contextlib.contextmanager
    def watching(self) -> Iterator[_DamageLog]:
        log = logging.getLogger("tifffile")
        log.addHandler(self)
        try:
            yield self
        finally:
            log.removeHandler(self)


def _read_tiff(path: Path, threshold: int) -> tuple[Any, str, Acquisition, dict[str, Any]]:
    with _DamageLog().watching() as damage:
        result = _read_tiff_unwatched(path, threshold)
    if damage.messages:
        raise FileFormatError(
            f"{path} is truncated or corrupt ({damage.messages[0]}); only part of it could be "
            "read. Copy or export it again."
        )
    return result


def _read_tiff_unwatched(
    path: Path, threshold: int
) -> tuple[Any, str, Acquisition, dict[str, Any]]:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as err:
        raise _corrupt(path, "tiff", err) from None
    with tif:
        try:
            if not tif.series:
                raise FileFormatError(f"{path} is a TIFF file without any image in it.")
            series = tif.series[0]
            acquisition, extra = read_tiff_metadata(tif, source=str(path))
            extra["format"] = (
                "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff"
            )
            if len(tif.series) > 1:
                extra["tiff_series"] = len(tif.series)
            axes = series.axes
            photometric = series.keyframe.photometric
            rgb = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
            extra["rgb"] = bool(rgb and axes.endswith("S"))
            _check_tiff_complete(path, series)
            data = None
            if series.nbytes > threshold:
                data = _lazy_tiff(path, series, 3 if axes.endswith("S") else 2)
            if data is None:
                data = series.asarray()
        except QPIError:
            raise
        except Exception as err:
            raise _corrupt(path, "tiff", err) from None
    return data, axes, acquisition, extra


def _read_raster(path: Path, kind: str) -> tuple[Any, str, dict[str, Any]]:
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(path))
    except Exception as err:
        raise _corrupt(path, kind, err) from None
    extra: dict[str, Any] = {"format": kind}
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        extra["rgb"] = True
        return data, "YXS", extra
    return data, _default_axes(data.ndim), extra


def _default_axes(ndim: int) -> str:
    return {0: "", 1: "X", 2: "YX", 3: "TYX"}.get(ndim, "Q" * (ndim - 2) + "YX")


def _read_npy(path: Path, threshold: int) -> tuple[Any, str, dict[str, Any]]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise FileFormatError(
                f"{path} holds Python objects, not numbers; napari-qpi never unpickles files. "
                "Save a numeric array (numpy.save with a float or integer dtype)."
            ) from None
        raise _corrupt(path, "npy", err) from None
    except Exception as err:
        raise _corrupt(path, "npy", err) from None
    extra: dict[str, Any] = {"format": "npy"}
    axes = _default_axes(array.ndim)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and min(array.shape[:2]) > 4:
        axes = "YXS"
        extra["rgb"] = True
    if array.nbytes > threshold and array.ndim >= 2:
        import dask.array as da

        data = da.from_array(
            array,
            chunks=_plane_chunks(array.shape, 3 if axes == "YXS" else 2),
            name=f"npy-{path}-{path.stat().st_mtime_ns}",
        )
        return data, axes, extra
    return np.array(array), axes, extra


def _read_npz(path: Path) -> tuple[Any, str, Acquisition, dict[str, Any]]:
    from .cdp import is_cdp_stack

    if is_cdp_stack(path):
        raise FileFormatError(
            f"{path} is a CDP stack (diffraction patterns and masks), not a single image: open "
            "it as a CDP stack (napari_qpi.io.read_cdp_stack)."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            arrays = [n for n in names if n != "metadata"]
            if not arrays:
                raise FileFormatError(f"{path} contains no arrays.")
            backgrounds = [k for k in NPZ_BACKGROUND_KEYS if k in arrays]
            images = [k for k in arrays if k not in backgrounds] or arrays
            key = next((k for k in NPZ_IMAGE_KEYS if k in images), images[0])
            data = archive[key]
            background = archive[backgrounds[0]] if backgrounds else None
            record = archive["metadata"] if "metadata" in names else None
    except QPIError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise FileFormatError(
                f"{path} holds Python objects, not numbers; napari-qpi never unpickles files."
            ) from None
        raise _corrupt(path, "npz", err) from None
    except Exception as err:
        raise _corrupt(path, "npz", err) from None
    extra: dict[str, Any] = {"format": "npz", "npz_key": key, "metadata_sources": []}
    acquisition = Acquisition()
    if record is not None and record.dtype.kind == "U" and record.ndim == 0:
        acquisition, record_extra = record_from_json(str(record), source=str(path))
        extra.update(record_extra)
        extra["metadata_sources"].append("npz:metadata")
    others = [n for n in arrays if n != key and n != (backgrounds[0] if backgrounds else None)]
    if others:
        extra["npz_other_arrays"] = others
    if background is not None:
        extra["background_hologram"] = _check_background(background, data, path, backgrounds[0])
    return data, _default_axes(data.ndim), acquisition, extra


def _check_background(background: Any, data: Any, path: Path, name: str) -> np.ndarray:
    """The background hologram stored beside ``data``: one plane of the same height and width."""
    background = np.asarray(background)
    if background.ndim == 3 and background.shape[0] == 1:
        background = background[0]
    if background.ndim != 2 or background.shape != tuple(data.shape[-2:]):
        raise FileFormatError(
            f"{path.name}: its background hologram '{name}' has shape {background.shape} but the "
            f"hologram is {tuple(data.shape[-2:])} per plane. Store a background of the same "
            "size, or remove it and give one with --reference."
        )
    if background.dtype.kind not in "uif":
        raise FileFormatError(f"{path.name}: its background hologram '{name}' is not numeric.")
    return background


def _to_grey(data: Any, axes: str, extra: dict[str, Any]) -> tuple[Any, str]:
    channels = data.shape[-1]
    eager = isinstance(data, np.ndarray)
    if channels == 2:
        extra["colour_conversion"] = "grey + alpha: kept the grey channel"
        return data[..., 0], axes[:-1]
    if (
        eager
        and np.array_equal(data[..., 0], data[..., 1])
        and np.array_equal(data[..., 0], data[..., 2])
    ):
        extra["colour_conversion"] = "RGB with identical channels: kept one channel"
        return np.ascontiguousarray(data[..., 0]), axes[:-1]
    wr, wg, wb = LUMINANCE_WEIGHTS
    grey = (
        data[..., 0].astype(np.float32) * np.float32(wr)
        + data[..., 1].astype(np.float32) * np.float32(wg)
        + data[..., 2].astype(np.float32) * np.float32(wb)
    )
    extra["colour_conversion"] = (
        f"RGB to grey by Rec. 709 luminance {LUMINANCE_WEIGHTS} (a hologram camera is monochrome)"
    )
    return grey, axes[:-1]


def _normalise(data: Any, axes: str, path: Path, extra: dict[str, Any]) -> tuple[Any, str]:
    """Single-channel real ``(H, W)`` or ``(N, H, W)`` with axes, or a clear error."""
    if data.size == 0:
        raise InputError(f"{path} holds an empty image (shape {tuple(data.shape)}).")
    kind = data.dtype.kind
    if kind == "c":
        raise InputError(
            f"{path} holds complex numbers; a hologram or phase image is real. Save the intensity "
            "(numpy.abs(field)**2) or the phase (numpy.angle(field)) instead."
        )
    if kind not in "uif":
        raise InputError(
            f"{path} holds {data.dtype} data; napari-qpi needs integer or floating-point pixels."
        )
    if len(axes) != data.ndim:
        axes = _default_axes(data.ndim)
    rgb = extra.pop("rgb", False)
    if "S" in axes:
        order = [i for i, a in enumerate(axes) if a != "S"] + [axes.index("S")]
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
        if rgb:
            data, axes = _to_grey(data, axes, extra)
        else:
            order = [*range(data.ndim - 3), data.ndim - 1, data.ndim - 3, data.ndim - 2]
            data = data.transpose(order)
            axes = axes[:-3] + "C" + axes[-3:-1]
    squeeze = tuple(i for i, n in enumerate(data.shape[:-2]) if n == 1)
    if squeeze and data.ndim > 2:
        data = data.squeeze(axis=squeeze)
        axes = "".join(a for i, a in enumerate(axes) if i not in squeeze)
    if data.ndim < 2:
        raise InputError(
            f"{path} holds a {data.ndim}-D array of shape {tuple(data.shape)}, not an image. "
            "Reshape it to (height, width) before saving."
        )
    if data.ndim > 3:
        raise InputError(
            f"{path} has {data.ndim} dimensions (axes {axes}, shape {tuple(data.shape)}); a "
            "hologram stack must have one channel, i.e. at most 3 dimensions (stack, Y, X). "
            "Split the channels (or positions) into separate files (Fiji: Image > Hyperstacks > "
            "Reduce Dimensionality; numpy: data[:, c]) and open them one at a time."
        )
    if min(data.shape[-2:]) < 2:
        raise InputError(
            f"{path} holds an image of shape {tuple(data.shape)}: a single row or column is not "
            "an image."
        )
    if data.ndim == 3:
        lead = axes[0] if axes[0] in _STACK_AXES else "T"
        axes = lead + "YX"
    else:
        axes = "YX"
    return data, axes


def read_image(
    path: str | os.PathLike[str], *, lazy_threshold_bytes: int = DEFAULT_LAZY_THRESHOLD
) -> ImageData:
    """Read a hologram or phase image with its acquisition metadata.

    Parameters
    ----------
    path
        A ``.tif``/``.tiff`` (plain, ImageJ or OME-TIFF; first series), ``.png``, ``.bmp``,
        ``.jpg``/``.jpeg``, ``.npy``, ``.npz`` (array ``hologram``, else ``image``, else ``data``,
        else the first one; ``bg_data`` is the background hologram) or ``.h5``/``.hdf5`` file
        (qpformat raw off-axis holograms, qpimage phase: :mod:`napari_qpi.io.hdf5`). A JSON sidecar
        next to it is read as well.
    lazy_threshold_bytes
        TIFF and NPY files whose uncompressed data exceed this many bytes come back as a dask
        array with one plane per chunk, read on demand (memory-mapped where the data are stored
        contiguously). PNG, BMP, JPEG and NPZ are always read whole.

    Returns
    -------
    ImageData
        Single-channel real data ``(H, W)`` or ``(N, H, W)``: colour images are converted to grey
        by luminance, size-1 axes are dropped. The dtype is kept (float32 for converted colour).

    Raises
    ------
    FileFormatError
        Missing file, unknown extension, content that does not match the extension, a truncated
        or corrupt file, or a CDP stack (use :func:`napari_qpi.io.read_cdp_stack`).
    InputError
        Data that are not a single-channel image: empty, 1-D, 4-D or more, complex, non-numeric.
    MetadataError
        Acquisition metadata of the wrong type or range, in the file or its sidecar.
    """
    path = Path(path)
    kind = _check_path(path)
    if kind == "tiff":
        data, axes, acquisition, extra = _read_tiff(path, lazy_threshold_bytes)
    elif kind == "npy":
        data, axes, extra = _read_npy(path, lazy_threshold_bytes)
        acquisition = Acquisition()
    elif kind == "npz":
        data, axes, acquisition, extra = _read_npz(path)
    elif kind == "hdf5":
        from .hdf5 import read_hdf5

        data, axes, acquisition, extra = read_hdf5(path)
        if "background_hologram" in extra:
            name = "reference"
            extra["background_hologram"] = _check_background(
                extra["background_hologram"], data, path, name
            )
    else:
        data, axes, extra = _read_raster(path, kind)
        acquisition = Acquisition()
    extra.setdefault("metadata_sources", [])
    acquisition = apply_sidecar(path, acquisition, extra)
    data, axes = _normalise(data, axes, path, extra)
    extra["lazy"] = not isinstance(data, np.ndarray)
    background = extra.pop("background_hologram", None)
    if background is not None:
        extra["background_from"] = "file"
    return ImageData(
        data=data, acquisition=acquisition, axes=axes, path=path, extra=extra, background=background
    )


def validate_hologram(
    array: Any, *, name: str = "hologram", saturation_fraction: float = 0.5
) -> None:
    """Check that ``array`` (``(H, W)`` or ``(..., H, W)``, numpy or dask) can be a hologram.

    Stacks are checked plane by plane (a dask stack is computed one plane at a time), and errors
    name the plane. ``saturation_fraction`` is the largest fraction of pixels allowed to sit at
    the image maximum.

    Raises
    ------
    InputError
        Complex or non-numeric data, fewer than 2 dimensions, an empty image, NaN or infinite
        pixels, an all-zero or constant plane, or a saturated plane (more than
        ``saturation_fraction`` of its pixels at its maximum, e.g. 255 for 8-bit).
    """
    dtype = np.dtype(array.dtype)
    if dtype.kind == "c":
        raise InputError(
            f"The {name} is complex; a hologram is a real intensity image. Pass the recorded "
            "intensity, not a field."
        )
    if dtype.kind not in "uif":
        raise InputError(f"The {name} has {dtype} data; a hologram needs numeric pixels.")
    if array.ndim < 2:
        raise InputError(f"The {name} must be 2-D (height, width), got shape {array.shape}.")
    if array.size == 0:
        raise InputError(f"The {name} is empty (shape {array.shape}).")
    for index in np.ndindex(*array.shape[:-2]):
        plane = np.asarray(array[index])
        where = f" (plane {index[0] if len(index) == 1 else index})" if index else ""
        _validate_plane(plane, f"{name}{where}", saturation_fraction)


def _validate_plane(plane: np.ndarray, label: str, saturation_fraction: float) -> None:
    if plane.dtype.kind == "f":
        finite = np.isfinite(plane)
        if not finite.all():
            n_nan = int(np.isnan(plane).sum())
            n_inf = int(plane.size - finite.sum()) - n_nan
            raise InputError(
                f"The {label} has {n_nan} NaN and {n_inf} infinite pixel(s). A hologram is a "
                "finite intensity: replace them (e.g. numpy.nan_to_num) or crop them away."
            )
    low, high = plane.min(), plane.max()
    if low == high:
        if high == 0:
            raise InputError(
                f"The {label} is all zero: no light reached the camera (laser off, shutter "
                "closed, or an empty frame). Check the acquisition or pick another frame."
            )
        raise InputError(
            f"The {label} is constant (every pixel is {high}): it has no fringes. Check that "
            "this is a hologram and not a blank or dark frame."
        )
    fraction = np.count_nonzero(plane == high) / plane.size
    if fraction > saturation_fraction:
        if plane.dtype.kind in "ui" and high == np.iinfo(plane.dtype).max:
            level = f"the camera's maximum value {high} ({plane.dtype})"
        else:
            level = f"the same maximum value {high} (clipped)"
        raise InputError(
            f"The {label} is saturated: {fraction:.0%} of its pixels are at {level}, so the "
            "fringes are clipped and the phase would be wrong. Lower the exposure time or laser "
            "power (or add a neutral-density filter) and acquire again."
        )
