"""The acquisition record that travels with every image.

One :class:`Acquisition` describes how a measurement was taken. It is stored in file metadata, in
``layer.metadata["qpi"]`` in napari, and copied into every output, so a phase image always knows its
wavelength and pixel size and a dry mass can always be computed with the right units.
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import MetadataError

#: Key of the acquisition record in ``layer.metadata`` and in file metadata.
METADATA_KEY = "qpi"


def is_real_number(value: Any) -> bool:
    """True for a real number of any kind (Python or NumPy: ``np.float32(0.25)`` too); False for
    booleans (``True`` is an ``int`` to Python, never a wavelength) and everything else.

    NumPy is not imported for this (``import napari_qpi`` stays light): a NumPy bool can only
    exist once NumPy is loaded, so it is looked up in :data:`sys.modules`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    numpy = sys.modules.get("numpy")
    return numpy is None or not isinstance(value, numpy.bool_)


@dataclass(frozen=True)
class Acquisition:
    """How an image was acquired. Every field is optional; units are in the names.

    Attributes
    ----------
    wavelength_nm
        Vacuum wavelength of the illumination, in nanometres.
    pixel_size_um
        Pixel pitch in the sample plane (camera pixel divided by magnification), in micrometres.
    magnification
        Total lateral magnification from sample to camera (informational).
    medium_index
        Refractive index of the medium around the cells (e.g. 1.335 for culture medium).
    carrier_cycles_per_px
        Off-axis carrier frequency ``(fy, fx)`` in cycles per pixel of the sideband that carries
        the object phase with a positive sign (cells positive). ``None`` lets the method find it.
    numerical_aperture
        Detection NA of the objective, used to size the sideband filter when given.
    modality
        ``"hologram"``, ``"cdp"`` or ``"phase"``.
    """

    wavelength_nm: float | None = None
    pixel_size_um: float | None = None
    magnification: float | None = None
    medium_index: float | None = None
    carrier_cycles_per_px: tuple[float, float] | None = None
    numerical_aperture: float | None = None
    modality: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "wavelength_nm",
            "pixel_size_um",
            "magnification",
            "medium_index",
            "numerical_aperture",
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if not is_real_number(value):
                raise MetadataError(
                    f"Acquisition metadata '{name}' must be a number, got {value!r} "
                    f"({type(value).__name__}). Fix the value in the file's metadata or sidecar."
                )
            if not math.isfinite(value) or value <= 0:
                raise MetadataError(
                    f"Acquisition metadata '{name}' must be a positive finite number, "
                    f"got {value!r}."
                )
            object.__setattr__(self, name, float(value))
        carrier = self.carrier_cycles_per_px
        if carrier is not None:
            try:
                fy, fx = (float(c) for c in carrier)
            except (TypeError, ValueError):
                raise MetadataError(
                    "Acquisition metadata 'carrier_cycles_per_px' must be two numbers (fy, fx) in "
                    f"cycles per pixel, got {carrier!r}."
                ) from None
            if not (math.isfinite(fy) and math.isfinite(fx)) or max(abs(fy), abs(fx)) > 0.5:
                raise MetadataError(
                    f"Carrier {carrier!r} lies outside the spectrum: each component must be within "
                    "[-0.5, 0.5] cycles per pixel (the Nyquist limit)."
                )
            object.__setattr__(self, "carrier_cycles_per_px", (fy, fx))
        if self.modality is not None and self.modality not in ("hologram", "cdp", "phase"):
            raise MetadataError(
                f"Unknown modality {self.modality!r}: expected 'hologram', 'cdp' or 'phase'."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict, without the fields that are ``None``."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if "carrier_cycles_per_px" in out:
            out["carrier_cycles_per_px"] = list(out["carrier_cycles_per_px"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Acquisition:
        """Build from a dict, ignoring unknown keys (files may carry more than we use)."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise MetadataError(
                f"Acquisition metadata must be a mapping, got {type(data).__name__}."
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> Acquisition:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def merged(self, other: Acquisition) -> Acquisition:
        """Fields of ``other`` that are set override this record's."""
        return replace(self, **{k: v for k, v in asdict(other).items() if v is not None})
