"""Acquisition on the command line: ``--wavelength``, ``--pixel-size``, ``--profile`` and friends.

Shared by ``reconstruct`` and ``measure``. Precedence, highest first: a value on the command line,
the microscope profile (``--profile``), the file's own metadata (tags, HDF5 attributes, sidecar).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import MetadataError

if TYPE_CHECKING:  # the parser needs neither: profiles are read when a command runs
    from ..acquisition import Acquisition
    from ..profile import MicroscopeProfile


def add_acquisition_arguments(parser: argparse.ArgumentParser) -> None:
    """The acquisition flags (one group in ``--help``)."""
    group = parser.add_argument_group(
        "acquisition (override the files' metadata; a profile holds them for one microscope)"
    )
    group.add_argument(
        "--profile", metavar="FILE", help="microscope profile (JSON) saved with --save-profile"
    )
    group.add_argument(
        "--wavelength", type=float, metavar="NM", help="vacuum wavelength of the light, nm"
    )
    group.add_argument(
        "--pixel-size", type=float, metavar="UM", help="pixel size in the sample plane, um"
    )
    group.add_argument(
        "--camera-pixel",
        type=float,
        metavar="UM",
        help="camera pixel pitch, um (with --magnification, instead of --pixel-size)",
    )
    group.add_argument(
        "--magnification", type=float, metavar="M", help="total magnification, sample to camera"
    )
    group.add_argument(
        "--medium-index", type=float, metavar="N", help="refractive index of the medium"
    )


def profile_from_args(args: argparse.Namespace) -> MicroscopeProfile:
    """The profile file (if any) with the command line's acquisition values on top.

    Raises
    ------
    MetadataError
        An unreadable or invalid profile, a pixel size of 0 or below, a camera pixel without
        magnification: one line saying what to fix.
    """
    from ..profile import MicroscopeProfile, load_profile, sample_pixel_size_um

    profile = load_profile(args.profile) if getattr(args, "profile", None) else MicroscopeProfile()
    pixel = sample_pixel_size_um(
        getattr(args, "pixel_size", None),
        getattr(args, "camera_pixel", None),
        getattr(args, "magnification", None),
    )
    for label, value in (
        ("--wavelength", getattr(args, "wavelength", None)),
        ("--medium-index", getattr(args, "medium_index", None)),
    ):
        if value is not None and not value > 0:
            raise MetadataError(f"{label} must be a positive number, got {value!r}.")
    command_line = MicroscopeProfile(
        wavelength_nm=getattr(args, "wavelength", None),
        pixel_size_um=pixel,
        medium_index=getattr(args, "medium_index", None),
    )
    return profile.merged(command_line)


def acquisition_override(args: argparse.Namespace) -> Acquisition | None:
    """The fields the user gave (profile and command line), to merge over each file's metadata;
    ``None`` when none. The profile's carrier is not among them: it only fixes the sign."""
    acquisition = replace(profile_from_args(args).acquisition(), carrier_cycles_per_px=None)
    magnification = getattr(args, "magnification", None)
    if magnification is not None:
        acquisition = acquisition.replace(magnification=magnification)
    return acquisition if acquisition.to_dict() else None


def settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    """``OffAxisSettings`` fields from the profile, less those given on the command line."""
    changes = profile_from_args(args).settings_changes()
    for name in ("filter", "radius_fraction", "background_order"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    return changes


__all__ = [
    "acquisition_override",
    "add_acquisition_arguments",
    "profile_from_args",
    "settings_changes",
]
