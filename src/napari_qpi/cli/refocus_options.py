"""The flags of ``napari-qpi reconstruct --refocus auto|Z_UM`` / ``--zstack``, and their checks.

Plain argparse, no numpy or scipy: the parser is built from this module; the refocusing itself is
:mod:`napari_qpi.cli.refocus`, imported when a refocus is asked for. Distances are in um, positive
downstream (along the light).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from ..defaults import DEFAULT_FOCUS_METRIC, FOCUS_METRICS
from ..errors import InputError

ZSTACK_PHASE_SUFFIX = "_zstack_phase.ome.tif"
ZSTACK_AMPLITUDE_SUFFIX = "_zstack_amplitude.ome.tif"


def add_refocus_arguments(parser: argparse.ArgumentParser) -> None:
    """The refocus options of ``reconstruct``."""
    group = parser.add_argument_group("refocus (classical method, off-axis holograms)")
    group.add_argument(
        "--refocus",
        metavar="auto|Z_UM",
        help="propagate the field before unwrapping: 'auto' finds the plane of focus, a number "
        "is a distance in um (positive: the focus moves downstream, along the light)",
    )
    group.add_argument(
        "--refocus-range",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="z range (um) searched by --refocus auto (default: +- the field width)",
    )
    group.add_argument(
        "--refocus-hold",
        action="store_true",
        help="with --refocus auto on a stack: one z for all its planes (default: one per plane)",
    )
    group.add_argument(
        "--focus-metric",
        default=DEFAULT_FOCUS_METRIC,
        choices=sorted(FOCUS_METRICS),
        help="focus metric of --refocus auto (default: %(default)s)",
    )
    group.add_argument(
        "--zstack",
        nargs=3,
        type=float,
        metavar=("START", "STOP", "STEP"),
        help="also write phase and amplitude refocused to START..STOP um in STEP um "
        f"(<stem>{ZSTACK_PHASE_SUFFIX}, <stem>{ZSTACK_AMPLITUDE_SUFFIX})",
    )


def refocus_requested(args: argparse.Namespace) -> bool:
    """Whether any refocus option was given."""
    given = ("refocus", "zstack", "refocus_range")
    return any(getattr(args, name, None) is not None for name in given) or bool(
        getattr(args, "refocus_hold", False)
    )


def check_refocus_request(args: argparse.Namespace, cdp_stacks: Sequence[Path]) -> None:
    """Refuse what cannot be refocused, before any work is done (one-line messages)."""
    if args.refocus_range is not None and (args.refocus or "").lower() != "auto":
        raise InputError("--refocus-range is the range searched by --refocus auto; add it.")
    if args.refocus_hold and (args.refocus or "").lower() != "auto":
        raise InputError("--refocus-hold holds the z --refocus auto finds for a stack; add it.")
    if cdp_stacks:
        raise InputError(
            f"{cdp_stacks[0].name} is a coded diffraction pattern stack: refocusing needs the "
            "complex field of an off-axis hologram, which a CDP reconstruction does not give. "
            "Leave out --refocus/--zstack for CDP stacks."
        )
    if args.method != "classical":
        raise InputError(
            f"Refocusing needs the complex field of the classical method; the network "
            f"'{args.method}' gives only a phase image. Use --method classical with "
            "--refocus/--zstack."
        )
    if args.refocus is not None and args.refocus.lower() != "auto":
        try:
            value = float(args.refocus)
        except ValueError:
            raise InputError(
                f"--refocus takes 'auto' or a distance in um, got {args.refocus!r}."
            ) from None
        if not math.isfinite(value):
            raise InputError(f"--refocus needs a finite distance in um, got {args.refocus!r}.")


__all__ = [
    "ZSTACK_AMPLITUDE_SUFFIX",
    "ZSTACK_PHASE_SUFFIX",
    "add_refocus_arguments",
    "check_refocus_request",
    "refocus_requested",
]
