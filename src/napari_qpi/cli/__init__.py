"""The ``napari-qpi`` command line: batch work without a GUI.

    napari-qpi reconstruct DATA/ --method classical --out results/
    napari-qpi reconstruct DATA/ --out results/ --scheduler tcp://host:8786

``reconstruct`` and ``measure`` run through :mod:`napari_qpi.batch` (one task per plane, on a local
Dask cluster, an existing one, or in this process); see ``docs/batch.md``.

Every sub-command prints a progress bar, a one-line summary and, for files it could not process,
one line per file with the reason. Errors meant for people never show a traceback.

The parser is built from light modules only (:mod:`napari_qpi.defaults` for its defaults): each
command imports what it runs (:mod:`.commands`, :mod:`.refocus`, the training modules) when it
runs, so ``napari-qpi --help`` loads neither numpy, scipy, torch, napari, Qt nor ``distributed``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..defaults import (
    CONNECT_TIMEOUT_S,
    DEFAULT_ALPHA_UM3_PER_PG,
    DEFAULT_BACKGROUND_ORDER,
    DEFAULT_FILTER,
    DEFAULT_RADIUS_FRACTION,
    FILTERS,
    LABELS_SUFFIX,
    PHASE_SUFFIX,
    TABLE_SUFFIX,
)
from ..errors import QPIError
from .acquisition import add_acquisition_arguments
from .refocus_options import add_refocus_arguments
from .tracks import add_track_options

__all__ = [
    "LABELS_SUFFIX",
    "PHASE_SUFFIX",
    "TABLE_SUFFIX",
    "BatchReport",
    "build_parser",
    "collect_inputs",
    "format_table",
    "main",
]

#: Names this package had before its commands moved to :mod:`.commands` (imported on first use):
#: name -> the module of :mod:`napari_qpi` that holds it.
_MOVED = {
    "BatchReport": "batch",
    "collect_inputs": "batch",
    "TABLE_COLUMNS": "cli.commands",
    "format_table": "cli.commands",
    "cmd_reconstruct": "cli.commands",
    "cmd_reconstruct_cdp": "cli.commands",
    "cmd_measure": "cli.commands",
    "cmd_models": "cli.commands",
    "cmd_export_mask": "cli.commands",
}


def __getattr__(name: str) -> Any:
    """``napari_qpi.cli.format_table`` and the other names of :data:`_MOVED`, imported lazily."""
    if name in _MOVED:
        return getattr(importlib.import_module(f"napari_qpi.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command(module_name: str, function: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``function`` of :mod:`napari_qpi.cli.<module_name>`, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, function)(args)

    run.__name__ = run.__qualname__ = function
    return run


def _threshold(text: str) -> str | float:
    """``--threshold``: a method name or a phase level in rad above the background."""
    if text in ("auto", "triangle", "otsu", "li"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither auto, triangle, otsu, li nor a phase level in rad"
        ) from None


def _add_measure_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cell-background",
        choices=("local", "zero"),
        default="local",
        help="phase a cell's dry mass is counted above: 'local' (default) a plane fitted to a "
        "ring around each cell, which removes a residual offset or curved background; 'zero' "
        "0 rad, as DryMass does (for phase whose background is already flat at 0)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA_UM3_PER_PG,
        help="refractive increment in um^3/pg for dry mass (default 0.18)",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=None,
        metavar="UM2",
        help="smallest cell area kept, um^2 (px^2 without a pixel size); default: learnt from "
        "the image (0.1 of a disc of the typical cell radius)",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default="auto",
        metavar="auto|triangle|otsu|li|RAD",
        help="detection level above the background: auto (8 noise sigmas, default), a "
        "scikit-image method, or a phase in rad",
    )
    parser.add_argument(
        "--split",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split touching and overlapping cells (watershed; default: --split)",
    )
    parser.add_argument("--table", action="store_true", help="print the per-cell table(s)")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask cluster: its scheduler address (tcp://host:8786) or "
        "scheduler file (.json); outputs and inputs must be on a file system its workers share",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes (default: one per core, or this process for a small job; "
        "0: this process, no Dask)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for --scheduler and its first worker "
        f"(default {CONNECT_TIMEOUT_S:g})",
    )


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The ``napari-qpi`` parser; of the training commands only ``selected``'s flags (all: None)."""
    parser = argparse.ArgumentParser(
        prog="napari-qpi", description="Quantitative phase imaging: holograms to phase, in batch."
    )
    parser.add_argument("--version", action="version", version=f"napari-qpi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    _add_reconstruct_command(commands)
    _add_measure_command(commands)
    _add_models_command(commands)
    _add_training_commands(commands, selected)
    return parser


def _add_reconstruct_command(commands: argparse._SubParsersAction) -> None:
    """``napari-qpi reconstruct``: holograms (or CDP stacks) to phase, optionally measured."""
    rec = commands.add_parser(
        "reconstruct", help="retrieve phase from holograms (files or folders)"
    )
    rec.add_argument(
        "paths", nargs="+", help="hologram files, CDP stacks (.npz) or folders of holograms"
    )
    rec.add_argument(
        "--method",
        "--model",
        dest="method",
        default="classical",
        help="'classical' or the name of a registered model (see `napari-qpi models`); for CDP "
        "stacks also 'phase object' (the default for one pattern: no absorption assumed), "
        "'wirtinger flow' (the default for several), 'hio' or 'gerchberg-saxton'",
    )
    rec.add_argument(
        "--iterations",
        type=int,
        default=150,
        help="iterations of the classical CDP solvers (default: %(default)s)",
    )
    rec.add_argument("--out", default="results", help="output folder (default: results)")
    rec.add_argument("--reference", help="background hologram without cells (same camera region)")
    rec.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    _add_offaxis_options(rec)
    rec.add_argument(
        "--save-profile",
        metavar="FILE",
        help="after the run, save the acquisition, the sideband carrying +phi (the sign) and the "
        "settings as a microscope profile (JSON) to reuse with --profile",
    )
    rec.add_argument(
        "--resolution",
        default="full",
        choices=("full", "native"),
        help="full: input pixel size; native: sideband resolution (larger pixels)",
    )
    rec.add_argument(
        "--measure",
        action="store_true",
        help="also segment cells and write labels + a per-cell CSV table",
    )
    add_refocus_arguments(rec)
    _add_measure_options(rec)
    _add_cluster_options(rec)
    add_acquisition_arguments(rec)
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_command("commands", "cmd_reconstruct"))


def _add_offaxis_options(rec: argparse.ArgumentParser) -> None:
    """The classical off-axis settings of ``reconstruct``: the sideband carrier (cycles/pixel),
    its filter and radius, the background polynomial, and wrapped output."""
    rec.add_argument(
        "--carrier",
        nargs=2,
        type=float,
        metavar=("FY", "FX"),
        help="sideband position in cycles/pixel (default: from metadata, else found automatically)",
    )
    rec.add_argument(
        "--filter",
        choices=FILTERS,
        help=f"sideband filter (default: the profile's, else {DEFAULT_FILTER})",
    )
    rec.add_argument(
        "--radius-fraction",
        type=float,
        help="filter radius as a fraction of the carrier distance "
        f"(default: the profile's, else {DEFAULT_RADIUS_FRACTION})",
    )
    rec.add_argument(
        "--background-order",
        type=int,
        choices=range(4),
        help="order of the background polynomial, 0-3 "
        f"(default: the profile's, else {DEFAULT_BACKGROUND_ORDER})",
    )
    rec.add_argument(
        "--wrapped",
        action="store_true",
        help="write the wrapped phase (-pi..pi), without unwrapping or background correction",
    )


def _add_measure_command(commands: argparse._SubParsersAction) -> None:
    """``napari-qpi measure``: segment and measure cells on phase images, optionally tracked."""
    mea = commands.add_parser("measure", help="segment and measure cells on phase images")
    mea.add_argument("paths", nargs="+", help="phase images (OME-TIFF from reconstruct) or folders")
    mea.add_argument("--out", default="results", help="output folder (default: results)")
    mea.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    _add_measure_options(mea)
    add_acquisition_arguments(mea)
    add_track_options(mea)
    _add_cluster_options(mea)
    mea.add_argument("--quiet", action="store_true", help="no progress bar")
    mea.set_defaults(func=_command("commands", "cmd_measure"))


def _add_models_command(commands: argparse._SubParsersAction) -> None:
    """``napari-qpi models``: list the registered models; ``models export-mask``."""
    models = commands.add_parser("models", help="list the registered models and their metrics")
    models.set_defaults(func=_command("commands", "cmd_models"))
    model_commands = models.add_subparsers(dest="models_command")
    export_mask = model_commands.add_parser(
        "export-mask", help="write the phase masks of a CDP model as a TIFF (radians)"
    )
    export_mask.add_argument("name", help="a CDP model (see `napari-qpi models`)")
    export_mask.add_argument("path", help="output TIFF, e.g. masks.tif")
    export_mask.add_argument(
        "--overwrite", action="store_true", help="replace the file if it exists"
    )
    export_mask.set_defaults(func=_command("commands", "cmd_export_mask"))


#: Sub-commands that train networks: name -> (module of :mod:`napari_qpi.cli`, help, the
#: module's function that adds the flags, the one that runs the command).
TRAINING_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "search": (
        "training",
        "search a NAS-PRNet connectivity (SparseMask), then retrain it",
        "add_search_arguments",
        "search_main",
    ),
    "train": (
        "training",
        "train a network (U-Net baseline, supernet, ...)",
        "add_train_arguments",
        "train_main",
    ),
    "distill": (
        "distill",
        "train a CDP teacher (K masks), then a 1-mask student by distillation",
        "add_distill_arguments",
        "distill_main",
    ),
    "finetune": (
        "finetune",
        "adapt a model to your microscope from holograms and target phase images",
        "add_finetune_arguments",
        "finetune_main",
    ),
}


def _add_training_commands(commands: argparse._SubParsersAction, selected: str | None) -> None:
    """Sub-commands that train networks.

    Their flags take their defaults from the training modules, which import torch; so only the
    ``selected`` command's flags are added (all of them when ``selected`` is None): every other
    command, and ``napari-qpi --help``, starts without torch.
    """
    for name, (module_name, help_text, add_arguments, run) in TRAINING_COMMANDS.items():
        parser = commands.add_parser(name, help=help_text, description=help_text)
        if selected is None or selected == name:
            module = importlib.import_module(f"{__name__}.{module_name}")
            getattr(module, add_arguments)(parser)
            parser.set_defaults(func=getattr(module, run))


def _selected_command(argv: Sequence[str] | None) -> str:
    """The sub-command named on the command line ('' if none): the first word not a flag."""
    words = sys.argv[1:] if argv is None else argv
    return next((word for word in words if not word.startswith("-")), "")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one clean line: no source path, no code line."""
    print(f"napari-qpi: warning: {message}", file=file or sys.stderr)


def _once() -> Callable[[logging.LogRecord], bool]:
    """A logging filter that lets each distinct message through once (a library that logs the
    same note for every plane read says it once)."""
    seen: set[str] = set()

    def first_time(record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.getMessage()}"
        if key in seen:
            return False
        seen.add(key)
        return True

    return first_time


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-qpi`` command."""
    parser = build_parser(_selected_command(argv))
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    logging.basicConfig(format="napari-qpi: %(name)s: %(message)s", level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_once())
    try:
        return args.func(args)
    except QPIError as error:
        print(f"napari-qpi: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-qpi: interrupted; outputs written so far are complete.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
