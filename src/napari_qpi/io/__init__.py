"""File formats: holograms and phase images, acquisition metadata, CDP stacks, phase output.

Plain numpy / tifffile / imageio / dask; nothing here imports napari or Qt. See
``docs/file_formats.md`` for what is read and written.
"""

from ._atomic import OutputExistsError, atomic_write
from .cdp import (
    CDP_FORMAT,
    CDP_VERSION,
    CDPStack,
    is_cdp_stack,
    read_cdp_stack,
    read_mask_tiff,
    write_cdp_stack,
    write_mask_tiff,
)
from .images import (
    DEFAULT_LAZY_THRESHOLD,
    SUPPORTED_EXTENSIONS,
    ImageData,
    read_image,
    validate_hologram,
)
from .metadata import (
    acquisition_from_json,
    acquisition_to_json,
    read_sidecar,
    record_from_json,
    sidecar_paths,
    write_sidecar,
)
from .ome_tiff import write_image, write_phase

__all__ = [
    "CDP_FORMAT",
    "CDP_VERSION",
    "DEFAULT_LAZY_THRESHOLD",
    "SUPPORTED_EXTENSIONS",
    "CDPStack",
    "ImageData",
    "OutputExistsError",
    "acquisition_from_json",
    "acquisition_to_json",
    "atomic_write",
    "is_cdp_stack",
    "read_cdp_stack",
    "read_image",
    "read_mask_tiff",
    "read_sidecar",
    "record_from_json",
    "sidecar_paths",
    "validate_hologram",
    "write_cdp_stack",
    "write_image",
    "write_mask_tiff",
    "write_phase",
    "write_sidecar",
]
