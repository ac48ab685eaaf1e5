"""CDP stacks: coded diffraction patterns of one object and the phase masks that made them.

File format (``.npz``, a zip of ``.npy`` arrays, read without unpickling):

``patterns``
    ``(K, H, W)`` float32 intensities ``|F(pad(exp(i masks[k]) * x))|^2``, where ``pad`` zero-pads
    the ``(h, w)`` object to ``(H, W) = (s h, s w)`` (object in the top-left corner, as
    ``numpy.fft.fft2(..., s=(H, W))``) and ``s`` is the oversampling.
``masks``
    ``(K, h, w)`` float32 mask phases in radians, one per pattern (``masks[k]`` made
    ``patterns[k]``). A single-snapshot measurement has ``K = 1``.
``truth`` (optional)
    ``(h, w)`` ground truth: complex64 object field, or float32 phase in radians.
``metadata``
    JSON string: ``{"format": "napari-qpi-cdp", "version": 1, "oversampling": s,
    "fft_shifted": true, "qpi": {...acquisition, modality "cdp"...}}`` plus any extra keys.

``fft_shifted`` tells where zero frequency is stored: ``true`` (what we write) means in the centre
``(H // 2, W // 2)`` as :func:`numpy.fft.fftshift` puts it and a camera records it; ``false`` means
at ``[0, 0]`` (plain ``numpy.fft.fft2`` order). In memory, :class:`CDPStack` patterns are always
centred, matching :func:`napari_qpi.physics.cdp.coded_diffraction_patterns`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import METADATA_KEY, Acquisition
from ..errors import FileFormatError, InputError, QPIError
from ._atomic import atomic_write, check_writable
from .metadata import acquisition_to_json, record_from_json

#: Value of ``"format"`` in the metadata of a CDP stack file.
CDP_FORMAT = "napari-qpi-cdp"
#: Version of the CDP stack file format written by :func:`write_cdp_stack`.
CDP_VERSION = 1

_RESERVED = frozenset({"format", "version", "oversampling", "fft_shifted", METADATA_KEY})


@dataclass
class CDPStack:
    """K coded diffraction patterns of one object and the K phase masks that made them.

    Attributes
    ----------
    patterns
        ``(K, H, W)`` float32 far-field intensities, zero frequency in the centre
        (``fftshift``-ed). A 2-D array is taken as ``K = 1``.
    masks
        ``(K, h, w)`` float32 mask phases in radians; ``masks[k]`` made ``patterns[k]``. Complex
        unit-modulus masks ``exp(i phi)`` are accepted and stored as ``phi``.
    acquisition
        Acquisition record; its modality is set to ``"cdp"``.
    oversampling
        Integer zero-padding factor ``s``: ``(H, W) == (s h, s w)``.
    truth
        Optional ``(h, w)`` ground truth: complex64 field or float32 phase (radians).
    extra
        Other metadata kept from the file (JSON-serialisable when written).

    Raises
    ------
    InputError
        Shapes, counts or dtypes that do not fit together (checked on construction).
    """

    patterns: np.ndarray
    masks: np.ndarray
    acquisition: Acquisition = field(default_factory=Acquisition)
    oversampling: int = 2
    truth: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patterns = _as_patterns(self.patterns)
        self.masks = _as_masks(self.masks)
        self.oversampling = _as_oversampling(self.oversampling)
        if self.truth is not None:
            self.truth = _as_truth(self.truth)
        if self.acquisition.modality != "cdp":
            self.acquisition = self.acquisition.replace(modality="cdp")
        _check_shapes(self)

    @property
    def n_patterns(self) -> int:
        """Number of patterns (and masks) K."""
        return int(self.patterns.shape[0])

    @property
    def object_shape(self) -> tuple[int, int]:
        """Shape ``(h, w)`` of the object (and of each mask), in pixels."""
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])


def _as_patterns(patterns: Any) -> np.ndarray:
    patterns = np.asarray(patterns)
    if patterns.dtype.kind not in "uif":
        raise InputError(
            f"CDP patterns must be real intensities, got {patterns.dtype} data. Store "
            "|F(M x)|^2, not the complex far field."
        )
    if patterns.ndim == 2:
        patterns = patterns[None]
    if patterns.ndim != 3 or patterns.size == 0:
        raise InputError(
            f"CDP patterns must have shape (K, H, W), got {patterns.shape}. Stack one pattern "
            "per mask along the first axis."
        )
    patterns = patterns.astype(np.float32, copy=False)
    if not np.isfinite(patterns).all():
        raise InputError(
            "CDP patterns contain NaN or infinite values; replace them (e.g. numpy.nan_to_num)."
        )
    return patterns


def _as_masks(masks: Any) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype.kind == "c":
        modulus = np.abs(masks)
        if not np.allclose(modulus, 1.0, atol=1e-3):
            raise InputError(
                "Complex CDP masks must be pure phase masks exp(i phi) (modulus 1); pass the "
                "phases phi in radians instead."
            )
        masks = np.angle(masks)
    elif masks.dtype.kind not in "uif":
        raise InputError(f"CDP masks must be phases in radians, got {masks.dtype} data.")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.size == 0:
        raise InputError(f"CDP masks must have shape (K, h, w), got {masks.shape}.")
    masks = masks.astype(np.float32, copy=False)
    if not np.isfinite(masks).all():
        raise InputError("CDP mask phases contain NaN or infinite values.")
    return masks


def _as_oversampling(oversampling: Any) -> int:
    if isinstance(oversampling, bool) or not isinstance(oversampling, (int, float, np.number)):
        raise InputError(f"CDP oversampling must be an integer >= 1, got {oversampling!r}.")
    if float(oversampling) != int(oversampling) or int(oversampling) < 1:
        raise InputError(f"CDP oversampling must be an integer >= 1, got {oversampling!r}.")
    return int(oversampling)


def _as_truth(truth: Any) -> np.ndarray:
    truth = np.asarray(truth)
    if truth.dtype.kind == "c":
        return truth.astype(np.complex64, copy=False)
    if truth.dtype.kind in "uif":
        return truth.astype(np.float32, copy=False)
    raise InputError(f"CDP truth must be a complex field or a phase in radians, got {truth.dtype}.")


def _check_shapes(stack: CDPStack) -> None:
    k, big_h, big_w = stack.patterns.shape
    n_masks, h, w = stack.masks.shape
    s = stack.oversampling
    if n_masks != k:
        raise InputError(
            f"A CDP stack needs one mask per pattern: got {k} pattern(s) and {n_masks} mask(s). "
            "For a single-snapshot measurement store one pattern and one mask."
        )
    if (big_h, big_w) != (s * h, s * w):
        raise InputError(
            f"CDP patterns of shape ({big_h}, {big_w}) do not fit masks of shape ({h}, {w}) at "
            f"oversampling {s}: patterns must be (oversampling * h, oversampling * w) = "
            f"({s * h}, {s * w}). Check the oversampling or the mask size."
        )
    if stack.truth is not None and stack.truth.shape != (h, w):
        raise InputError(
            f"CDP truth has shape {stack.truth.shape} but the masks (and the object) are "
            f"({h}, {w})."
        )


def _npz_members(path: Path) -> set[str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return None


def is_cdp_stack(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a CDP stack file; reads only the zip directory (and small metadata).

    True for an ``.npz`` holding ``patterns`` and ``masks`` arrays, or whose ``metadata`` names
    the ``napari-qpi-cdp`` format. Never raises for unreadable files: they are not CDP stacks.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    members = _npz_members(path)
    if members is None:
        return False
    if {"patterns", "masks"} <= members:
        return True
    if "metadata" not in members:
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            return _parse_header(archive["metadata"], str(path)).get("format") == CDP_FORMAT
    except Exception:
        return False


def _parse_header(raw: np.ndarray, source: str) -> dict[str, Any]:
    if raw.dtype.kind not in "US" or raw.size != 1:
        raise FileFormatError(f"{source}: 'metadata' must be a JSON string, got {raw.dtype} data.")
    text = raw.item()
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        header = json.loads(text)
    except ValueError as err:
        raise FileFormatError(f"{source}: 'metadata' is not valid JSON ({err}).") from None
    if not isinstance(header, dict):
        raise FileFormatError(f"{source}: 'metadata' must be a JSON object.")
    return header


def read_cdp_stack(path: str | os.PathLike[str]) -> CDPStack:
    """Read a CDP stack ``.npz`` (see the module docstring for the format).

    Patterns stored with ``"fft_shifted": false`` are shifted so that zero frequency is in the
    centre. Without metadata, the oversampling is inferred from the pattern and mask shapes.

    Raises
    ------
    FileFormatError
        Missing or unreadable file, missing arrays, a newer format version, or arrays whose shapes
        do not fit together.
    MetadataError
        Acquisition metadata of the wrong type or range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"No such file: {path}")
    if path.suffix.lower() != ".npz":
        raise FileFormatError(f"{path}: a CDP stack is an .npz file, got '{path.suffix}'.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            missing = {"patterns", "masks"} - names
            if missing:
                raise FileFormatError(
                    f"{path} is not a CDP stack: it lacks the array(s) {sorted(missing)}. A CDP "
                    "stack holds 'patterns' (K, H, W) and 'masks' (K, h, w)."
                )
            patterns = archive["patterns"]
            masks = archive["masks"]
            truth = archive["truth"] if "truth" in names else None
            header = _parse_header(archive["metadata"], str(path)) if "metadata" in names else {}
    except QPIError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise FileFormatError(
                f"{path} holds Python objects; napari-qpi never unpickles files."
            ) from None
        raise FileFormatError(f"{path} could not be read as a CDP stack ({err}).") from None
    except Exception as err:
        raise FileFormatError(
            f"{path} could not be read as a CDP stack ({type(err).__name__}: {err}); the file is "
            "probably truncated or corrupt."
        ) from None

    version = header.get("version", CDP_VERSION)
    if not isinstance(version, int) or version > CDP_VERSION:
        raise FileFormatError(
            f"{path} is CDP stack format version {version!r}; this napari-qpi reads up to "
            f"version {CDP_VERSION}. Update napari-qpi."
        )
    acquisition, rest = record_from_json(header, source=str(path))
    extra = {k: v for k, v in rest.items() if k not in _RESERVED}
    oversampling = header.get("oversampling")
    if oversampling is None:
        oversampling = _infer_oversampling(patterns.shape, masks.shape, path)
    if not header.get("fft_shifted", True) and patterns.ndim >= 2:
        patterns = np.fft.fftshift(patterns, axes=(-2, -1))
    try:
        return CDPStack(
            patterns=patterns,
            masks=masks,
            acquisition=acquisition,
            oversampling=oversampling,
            truth=truth,
            extra=extra,
        )
    except InputError as err:
        raise FileFormatError(f"{path}: {err}") from None


def _infer_oversampling(
    patterns_shape: tuple[int, ...], masks_shape: tuple[int, ...], path: Path
) -> int:
    if len(patterns_shape) >= 2 and len(masks_shape) >= 2:
        big_h, big_w = patterns_shape[-2:]
        h, w = masks_shape[-2:]
        if h and w and big_h % h == 0 and big_w % w == 0 and big_h // h == big_w // w:
            return big_h // h
    raise FileFormatError(
        f"{path}: patterns {patterns_shape} and masks {masks_shape} do not fit any integer "
        "oversampling, and the file's metadata does not give one."
    )


def write_cdp_stack(
    path: str | os.PathLike[str],
    stack: CDPStack,
    *,
    overwrite: bool = False,
    compress: bool = False,
) -> Path:
    """Write ``stack`` as a CDP stack ``.npz`` (atomically) and return the path.

    Patterns are stored centred (``"fft_shifted": true``). ``compress`` uses zip deflate (smaller,
    slower to read).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    FileFormatError
        ``path`` does not end with ``.npz``, or its folder does not exist.
    MetadataError
        ``stack.extra`` cannot be stored as JSON.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise FileFormatError(f"A CDP stack is written as .npz; got the name {path.name}.")
    check_writable(path, overwrite)
    extra = {k: v for k, v in stack.extra.items() if k not in _RESERVED}
    header = acquisition_to_json(
        stack.acquisition.replace(modality="cdp"),
        format=CDP_FORMAT,
        version=CDP_VERSION,
        oversampling=stack.oversampling,
        fft_shifted=True,
        **extra,
    )
    arrays: dict[str, np.ndarray] = {
        "patterns": stack.patterns,
        "masks": stack.masks,
        "metadata": np.array(header),
    }
    if stack.truth is not None:
        arrays["truth"] = stack.truth
    save = np.savez_compressed if compress else np.savez
    with atomic_write(path, overwrite) as tmp:
        save(tmp, **arrays)
    return path


def write_mask_tiff(
    path: str | os.PathLike[str], masks: Any, *, overwrite: bool = True, **info: Any
) -> Path:
    """Write phase masks as a float32 (K, H, W) TIFF of radians, atomically.

    The ImageJ-readable description is JSON: ``{"napari_qpi": "cdp-masks", "unit": "rad"}`` and
    any ``info`` (e.g. ``levels``, ``oversampling``, the model's name).
    """
    import tifffile

    path = Path(path)
    masks = np.asarray(masks, np.float32)
    if masks.ndim == 2:
        masks = masks[None]
    description = {"napari_qpi": "cdp-masks", "unit": "rad", **info}
    with atomic_write(path, overwrite) as tmp:
        tifffile.imwrite(tmp, masks, description=json.dumps(description), metadata=None)
    return path


def read_mask_tiff(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Masks (float32 (K, H, W), radians) and the description of a :func:`write_mask_tiff` file."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        masks = tif.asarray().astype(np.float32)
        text = tif.pages[0].description
    try:
        info = json.loads(text)
    except ValueError:
        info = {}
    return (masks[None] if masks.ndim == 2 else masks), info
