"""napari reader: off-axis holograms, our phase images and CDP stacks.

The reader claims a file only when it really is one of ours: a CDP stack in our format, an image
whose metadata says it is a hologram or a napari-qpi phase image, or an image with a clear off-axis
sideband in its (downsampled) spectrum. Everything else is left to other readers (``None``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import QPIError
from ..io import is_cdp_stack, read_cdp_stack, read_image
from ..io.images import SUPPORTED_EXTENSIONS, ImageData
from ..retrieval import looks_like_hologram
from .layers import LayerDataTuple, image_layer, phase_contrast_limits

ReaderFunction = Callable[[str | list[str]], list[LayerDataTuple]]


def _first_plane(data) -> np.ndarray:
    return np.asarray(data[(0,) * (data.ndim - 2)])


def _kind_of(image: ImageData) -> str | None:
    modality = image.acquisition.modality
    if modality in ("hologram", "phase"):
        return modality
    if modality is None and looks_like_hologram(_first_plane(image.data)):
        return "hologram"
    return None


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
        image = read_image(file)
        kind = _kind_of(image)
    except QPIError:
        return None
    if kind is None:
        return None

    def read(_path: str | list[str]) -> list[LayerDataTuple]:
        return [_image_layer(image, kind, file)]

    return read


def _image_layer(image: ImageData, kind: str, path: Path) -> LayerDataTuple:
    acquisition = image.acquisition.replace(modality=kind)
    extra = {"source_path": str(path), "qpi_extra": image.extra}
    if kind == "phase":
        plane = _first_plane(image.data)
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
        extra_metadata={"qpi_cdp": cdp_record, "source_path": str(file)},
        colormap="magma",
        gamma=0.5,
    )
    for key in ("scale", "units"):  # patterns live in the detector (Fourier) plane, not the sample
        patterns[1].pop(key, None)
    masks = image_layer(
        stack.masks,
        name=f"{name} masks",
        acquisition=acquisition.replace(modality="phase"),
        axes="KYX",
        extra_metadata={"source_path": str(file)},
        colormap="twilight",
        contrast_limits=(-np.pi, np.pi),
        visible=False,
    )
    return [patterns, masks]
