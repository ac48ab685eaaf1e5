"""Microscope profiles: what a lab knows about one instrument, saved once and reused.

A profile is a small JSON file::

    {"napari_qpi_profile": 1, "name": "DHM room 2.14",
     "wavelength_nm": 532.0, "pixel_size_um": 0.0847, "medium_index": 1.333,
     "carrier_cycles_per_px": [-0.2536, 0.2501], "filter": "smooth_disk",
     "radius_fraction": 0.7, "background_order": 2}

``carrier_cycles_per_px`` is the sideband that carries ``+phi`` (cells positive) on this camera: it
fixes the sign of every hologram of the instrument, whatever the cells of one field look like. The
sideband is still searched in each hologram (carriers drift a little); the profile's carrier only
decides which of the two mirror sidebands is ``+phi`` (see ``OffAxisSettings.sign_carrier``).

Save one from a run (``napari-qpi reconstruct ... --save-profile lab.json``, or the widget), and
reuse it (``--profile lab.json``, "Load profile"). Command-line values override the profile, which
overrides the files' own metadata.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .acquisition import Acquisition, is_real_number
from .errors import MetadataError
from .io._atomic import atomic_write, check_writable

#: Marker key (and format version) of a profile file.
PROFILE_KEY = "napari_qpi_profile"
PROFILE_VERSION = 1

_FILTERS = ("disk", "smooth_disk", "gaussian")


@dataclass(frozen=True)
class MicroscopeProfile:
    """One instrument's acquisition and off-axis settings. Every field is optional.

    Attributes
    ----------
    name
        Free text naming the instrument.
    wavelength_nm, pixel_size_um, medium_index, numerical_aperture
        As in :class:`~napari_qpi.acquisition.Acquisition` (sample-plane pixel size, vacuum
        wavelength).
    carrier_cycles_per_px
        ``(fy, fx)`` of the sideband carrying ``+phi`` on this camera, cycles per pixel.
    filter, radius_fraction, background_order
        As in :class:`~napari_qpi.retrieval.OffAxisSettings`.
    """

    name: str | None = None
    wavelength_nm: float | None = None
    pixel_size_um: float | None = None
    medium_index: float | None = None
    numerical_aperture: float | None = None
    carrier_cycles_per_px: tuple[float, float] | None = None
    filter: str | None = None
    radius_fraction: float | None = None
    background_order: int | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not isinstance(self.name, str):
            raise MetadataError(f"profile 'name' must be text, got {self.name!r}.")
        checked = self.acquisition()  # the shared checks of wavelength, pixel size, index, NA
        for name in ("wavelength_nm", "pixel_size_um", "medium_index", "numerical_aperture"):
            object.__setattr__(self, name, getattr(checked, name))  # plain floats
        if self.filter is not None and self.filter not in _FILTERS:
            raise MetadataError(
                f"profile 'filter' must be one of {', '.join(_FILTERS)}, got {self.filter!r}."
            )
        fraction = self.radius_fraction
        if fraction is not None and not (is_real_number(fraction) and 0 < fraction < 1):
            raise MetadataError(
                f"profile 'radius_fraction' must be a number between 0 and 1, got {fraction!r}."
            )
        order = self.background_order
        if order is not None and (
            isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 5
        ):
            raise MetadataError(
                f"profile 'background_order' must be an integer 0-5, got {order!r}."
            )
        object.__setattr__(self, "carrier_cycles_per_px", checked.carrier_cycles_per_px)
        if fraction is not None:
            object.__setattr__(self, "radius_fraction", float(fraction))

    def acquisition(self) -> Acquisition:
        """The acquisition fields of the profile (the carrier as the ``+phi`` sideband)."""
        return Acquisition(
            wavelength_nm=self.wavelength_nm,
            pixel_size_um=self.pixel_size_um,
            medium_index=self.medium_index,
            numerical_aperture=self.numerical_aperture,
            carrier_cycles_per_px=self.carrier_cycles_per_px,
        )

    def settings_changes(self) -> dict[str, Any]:
        """The :class:`~napari_qpi.retrieval.OffAxisSettings` fields the profile sets."""
        changes: dict[str, Any] = {}
        if self.filter is not None:
            changes["filter"] = self.filter
        if self.radius_fraction is not None:
            changes["radius_fraction"] = float(self.radius_fraction)
        if self.background_order is not None:
            changes["background_order"] = int(self.background_order)
        if self.carrier_cycles_per_px is not None:
            changes["sign_carrier"] = self.carrier_cycles_per_px
        return changes

    def merged(self, other: MicroscopeProfile) -> MicroscopeProfile:
        """Fields set in ``other`` override this profile's."""
        return replace(self, **{k: v for k, v in asdict(other).items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the profile file, without unset fields."""
        out: dict[str, Any] = {PROFILE_KEY: PROFILE_VERSION}
        for key, value in asdict(self).items():
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


def profile_from_dict(data: Any, source: str = "profile") -> MicroscopeProfile:
    """A profile from its JSON object; unknown keys are refused (a typo would be lost silently).

    Raises
    ------
    MetadataError
        Not an object, unknown keys, or values of the wrong type or range (the message names
        ``source`` and the field).
    """
    if not isinstance(data, dict):
        raise MetadataError(f"{source}: a profile is a JSON object, got {type(data).__name__}.")
    known = {f.name for f in fields(MicroscopeProfile)}
    unknown = sorted(set(data) - known - {PROFILE_KEY})
    if unknown:
        raise MetadataError(
            f"{source}: unknown profile field(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known))}."
        )
    values = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("carrier_cycles_per_px"), list):
        values["carrier_cycles_per_px"] = tuple(values["carrier_cycles_per_px"])
    try:
        return MicroscopeProfile(**values)
    except MetadataError as error:
        raise MetadataError(f"{source}: {error}") from None


def load_profile(path: str | os.PathLike[str]) -> MicroscopeProfile:
    """Read a profile file.

    Raises
    ------
    MetadataError
        Missing, unreadable, not JSON, or not a valid profile: one line naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise MetadataError(f"Cannot read the profile {path}: {error.strerror or error}.") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise MetadataError(
            f"The profile {path} is not valid JSON ({error}); fix it or save it again."
        ) from None
    return profile_from_dict(data, source=f"profile {path.name}")


def save_profile(
    profile: MicroscopeProfile, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``profile`` as JSON, atomically; never over an existing file unless ``overwrite``."""
    path = check_writable(path, overwrite=overwrite)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(profile.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path


def profile_from_run(
    acquisition: Acquisition | None,
    info: dict[str, Any],
    settings: Any = None,
    *,
    name: str | None = None,
) -> MicroscopeProfile:
    """The profile of a retrieval: its acquisition, the ``+phi`` carrier and sign it found
    (``info`` of :func:`~napari_qpi.retrieval.retrieve_offaxis`), and its settings."""
    acq = acquisition or Acquisition()
    carrier = info.get("carrier_cycles_per_px")
    return MicroscopeProfile(
        name=name,
        wavelength_nm=acq.wavelength_nm,
        pixel_size_um=acq.pixel_size_um,
        medium_index=acq.medium_index,
        numerical_aperture=acq.numerical_aperture,
        carrier_cycles_per_px=None if carrier is None else (float(carrier[0]), float(carrier[1])),
        filter=getattr(settings, "filter", None),
        radius_fraction=getattr(settings, "radius_fraction", None),
        background_order=getattr(settings, "background_order", None),
    )


def sample_pixel_size_um(
    pixel_size_um: float | None, camera_pixel_um: float | None, magnification: float | None
) -> float | None:
    """The sample-plane pixel size from either itself or camera pixel / magnification (um).

    Raises
    ------
    MetadataError
        Both ways given, a camera pixel without magnification (or the reverse), or a value that
        is not a positive finite number.
    """
    for label, value in (
        ("pixel size", pixel_size_um),
        ("camera pixel", camera_pixel_um),
        ("magnification", magnification),
    ):
        if value is not None and not (is_real_number(value) and math.isfinite(value) and value > 0):
            raise MetadataError(f"The {label} must be a positive number, got {value!r}.")
    if camera_pixel_um is None and magnification is None:
        return pixel_size_um
    if pixel_size_um is not None:
        raise MetadataError(
            "Give either the sample-plane pixel size (--pixel-size) or the camera pixel and the "
            "magnification (--camera-pixel, --magnification), not both."
        )
    if camera_pixel_um is None or magnification is None:
        missing = "--magnification" if magnification is None else "--camera-pixel"
        raise MetadataError(
            f"A camera pixel size needs the magnification to give the pixel size in the sample "
            f"(and the reverse): add {missing}."
        )
    return float(camera_pixel_um) / float(magnification)


__all__ = [
    "PROFILE_KEY",
    "MicroscopeProfile",
    "load_profile",
    "profile_from_dict",
    "profile_from_run",
    "sample_pixel_size_um",
    "save_profile",
]
