"""The ``napari-qpi`` command line: batch work without a GUI.

    napari-qpi reconstruct DATA/ --method classical --out results/
    napari-qpi reconstruct DATA/ --out results/ --scheduler tcp://host:8786

``reconstruct`` and ``measure`` run through :mod:`napari_qpi.batch` (one task per plane, on a local
Dask cluster, an existing one, or in this process); see ``docs/batch.md``.

Every sub-command prints a progress bar, a one-line summary and, for files it could not process,
one line per file with the reason. Errors meant for people never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..batch import (
    CONNECT_TIMEOUT_S,
    LABELS_SUFFIX,
    PHASE_SUFFIX,
    TABLE_SUFFIX,
    BatchReport,
    ClusterOptions,
    DiskFullError,
    MeasureOptions,
    collect_inputs,
    measure_batch,
    reconstruct_batch,
)
from ..errors import QPIError
from ..io.tables import read_table_csv
from ..morphology import DEFAULT_ALPHA_UM3_PER_PG, MorphologyTable
from ..reconstruct import available_methods
from ..retrieval import OffAxisSettings
from .acquisition import (
    acquisition_override,
    add_acquisition_arguments,
    profile_from_args,
    settings_changes,
)
from .refocus import (
    add_refocus_arguments,
    check_refocus_request,
    cmd_reconstruct_refocus,
    refocus_requested,
)
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


def _settings_from_args(args: argparse.Namespace) -> OffAxisSettings:
    """Retrieval settings: the command line, then the profile, then the defaults."""
    return OffAxisSettings(
        carrier=tuple(args.carrier) if args.carrier else None,
        resolution=args.resolution,
        unwrap=not getattr(args, "wrapped", False),
        **settings_changes(args),
    )


def _measure_options(args: argparse.Namespace) -> MeasureOptions:
    return MeasureOptions(
        alpha_um3_per_pg=args.alpha,
        min_area_um2=args.min_area,
        threshold=args.threshold,
        split=args.split,
        local_background=args.cell_background == "local",
    )


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


def _cluster_options(args: argparse.Namespace) -> ClusterOptions:
    return ClusterOptions(
        scheduler=args.scheduler, workers=args.workers, timeout_s=args.connect_timeout
    )


#: Columns ``--table`` prints (every column is in the CSV).
TABLE_COLUMNS = (
    "frame",
    "label",
    "area_um2",
    "equivalent_diameter_um",
    "eccentricity",
    "mean_phase_rad",
    "max_phase_rad",
    "optical_volume_um3",
    "dry_mass_pg",
)


def format_table(table: MorphologyTable, *, title: str) -> str:
    """A per-cell table as aligned text, one row per cell."""
    names = [n for n in TABLE_COLUMNS if n in table.columns] or table.names
    rows = [[_format_value(table[n][i]) for n in names] for i in range(len(table))]
    widths = [max([len(n), *(len(r[j]) for r in rows)]) for j, n in enumerate(names)]
    lines = [f"{title}: {len(table)} cell(s)"]
    lines += [
        "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in [names, *rows]
    ]
    return "\n".join(lines)


def _format_value(value: object) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.3g}" if abs(float(value)) < 1e4 else f"{float(value):.0f}"


def cmd_reconstruct(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.paths)
    if not inputs:
        print("napari-qpi: no input files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    from ..io import is_cdp_stack

    stacks = [path for path in inputs if is_cdp_stack(path)]
    if refocus_requested(args):
        check_refocus_request(args, stacks)
    if stacks:
        status = cmd_reconstruct_cdp(args, stacks)
        inputs = [path for path in inputs if path not in stacks]
        if not inputs or status == 2:
            return status
    methods = available_methods()
    if args.method not in methods:
        print(
            f"napari-qpi: unknown method {args.method!r}; available: {', '.join(methods)}",
            file=sys.stderr,
        )
        return 2
    if refocus_requested(args):
        return cmd_reconstruct_refocus(
            args, inputs, _settings_from_args(args), lambda s, p: _reconstruct(args, p, s)
        )
    return _reconstruct(args, inputs, _settings_from_args(args))


def _reconstruct(
    args: argparse.Namespace, inputs: Sequence[Path], settings: OffAxisSettings
) -> int:
    return _run_batch(
        "reconstruct",
        args,
        lambda progress: reconstruct_batch(
            inputs,
            args.out,
            method=args.method,
            settings=settings,
            reference=args.reference,
            acquisition=acquisition_override(args),
            measure=_measure_options(args) if args.measure else None,
            overwrite=args.overwrite,
            cluster=_cluster_options(args),
            progress=progress,
        ),
    )


def cmd_reconstruct_cdp(args: argparse.Namespace, stacks: Sequence[Path]) -> int:
    """Coded diffraction pattern stacks (``.npz``): phase from the patterns and their masks."""
    from ..io import OutputExistsError
    from ..reconstruct import available_cdp_methods, reconstruct_cdp_file

    method = "classical" if args.method == "classical" else args.method
    if method != "classical" and method not in available_cdp_methods():
        print(
            f"napari-qpi: unknown CDP method {args.method!r}; available: classical, "
            f"{', '.join(available_cdp_methods())}",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = skipped = 0
    for path in stacks:
        start = time.perf_counter()
        try:
            written, record = reconstruct_cdp_file(
                path, out, method=method, iterations=args.iterations, overwrite=args.overwrite
            )
        except OutputExistsError:
            skipped += 1
            continue
        except QPIError as error:
            failed += 1
            print(f"  failed: {path}: {error}", file=sys.stderr)
            continue
        print(
            f"napari-qpi: {path.name}: {record['n_patterns']} pattern(s), {record['name']}, "
            f"{time.perf_counter() - start:.2f} s -> {written}"
        )
    if skipped:
        print(f"napari-qpi: {skipped} CDP stack(s) skipped (output exists; --overwrite to redo)")
    return 1 if failed else 0


def cmd_measure(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.paths, phase=True)
    if not inputs:
        print("napari-qpi: no phase images found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    reports: list[BatchReport] = []

    def run(progress: Callable[[int, int], None]) -> BatchReport:
        reports.append(
            measure_batch(
                inputs,
                args.out,
                measure=_measure_options(args),
                acquisition=acquisition_override(args),
                overwrite=args.overwrite,
                cluster=_cluster_options(args),
                progress=progress,
            )
        )
        return reports[-1]

    status = _run_batch("measure", args, run)
    if args.track and reports:
        from .tracks import track_tables

        status = max(status, track_tables(reports[-1], args))
    return status


def _run_batch(
    desc: str, args: argparse.Namespace, run: Callable[[Callable[[int, int], None]], BatchReport]
) -> int:
    """Run a batch job with a progress bar; print the summary, the tables and the failures."""
    from tqdm.auto import tqdm

    logging.getLogger("distributed").setLevel(logging.ERROR)
    start = time.perf_counter()
    with tqdm(desc=desc, unit="plane", disable=args.quiet or None) as bar:

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)

        try:
            report = run(progress)
        except DiskFullError as error:
            if error.report is None:
                raise
            bar.close()
            _print_report(error.report, args, time.perf_counter() - start)
            print(f"napari-qpi: {error}", file=sys.stderr)
            return 2
    _print_report(report, args, time.perf_counter() - start)
    return 1 if report.failed else 0


def _print_report(report: BatchReport, args: argparse.Namespace, elapsed: float) -> None:
    if getattr(args, "table", False):
        for path in report.tables:
            print(format_table(read_table_csv(path), title=path.name[: -len(TABLE_SUFFIX)]))
    print(_summary(report, Path(args.out), elapsed))
    for note in report.notes:  # why a column is empty (no wavelength, no pixel size)
        print(f"napari-qpi: {note}")
    if report.sign.get("carrier_cycles_per_px"):
        fy, fx = report.sign["carrier_cycles_per_px"]
        print(
            f"  sign: cells positive with the sideband at ({fy:+.4f}, {fx:+.4f}) cycles/px, "
            f"{report.sign['from']} ({report.sign['planes_voting']} plane(s))"
        )
    for path, frame, message in report.warnings:
        where = f"{path.name}" + (f" plane {frame}" if frame else "")
        print(f"  warning: {where}: {message}", file=sys.stderr)
    for path, reason in report.failed:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    if getattr(args, "save_profile", None):
        _save_profile(report, args)


def _save_profile(report: BatchReport, args: argparse.Namespace) -> None:
    """``--save-profile``: this run's acquisition, carrier and settings as a microscope profile."""
    from ..profile import MicroscopeProfile, save_profile

    settings = _settings_from_args(args)
    carrier = report.sign.get("carrier_cycles_per_px") or settings.sign_carrier
    if carrier is None and settings.carrier is not None:
        carrier = settings.carrier
    profile = profile_from_args(args).merged(
        MicroscopeProfile(
            carrier_cycles_per_px=None if carrier is None else tuple(carrier),
            filter=settings.filter,
            radius_fraction=settings.radius_fraction,
            background_order=settings.background_order,
        )
    )
    path = save_profile(profile, args.save_profile, overwrite=args.overwrite)
    print(f"napari-qpi: microscope profile written to {path}")


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


def _consistency_summary(records: Sequence[dict]) -> str:
    """How well a network's phases explain their holograms (napari_qpi.retrieval.consistency)."""
    unexplained = float(np.median([r["relative"] for r in records]))
    flagged = sum(not r["trusted"] for r in records)
    verdict = f"{flagged} plane(s) not explained" if flagged else "all planes explained"
    return (
        f"network vs hologram: median {100 * unexplained:.0f}% of the cells' fringes "
        f"unexplained, {verdict}"
    )


def _summary(report: BatchReport, out_dir: Path, elapsed: float) -> str:
    planes = f", {report.planes} plane(s)" if report.planes else ""
    where = f" {report.executor}" if report.executor else ""
    parts = [f"napari-qpi: {len(report.written)} file(s){planes} in {elapsed:.2f} s{where}"]
    if report.planes:
        parts.append(f"phase {report.phase_min:.2f} to {report.phase_max:.2f} rad")
    if report.cells or report.dry_mass_pg:
        mass = (
            f", median dry mass {np.median(report.dry_mass_pg):.1f} pg"
            if report.dry_mass_pg
            else ""
        )
        parts.append(f"{report.cells} cell(s){mass}")
    if report.consistency:
        parts.append(_consistency_summary(report.consistency))
    if report.resumed:
        parts.append(f"{report.resumed} plane(s) done by an earlier run kept")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (output exists; --overwrite to redo)")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    parts.append(f"outputs in {out_dir}/")
    return "; ".join(parts)


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
        "stacks also 'wirtinger flow', 'hio' or 'gerchberg-saxton'",
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
    rec.set_defaults(func=cmd_reconstruct)


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
        choices=("disk", "smooth_disk", "gaussian"),
        help=f"sideband filter (default: the profile's, else {OffAxisSettings.filter})",
    )
    rec.add_argument(
        "--radius-fraction",
        type=float,
        help="filter radius as a fraction of the carrier distance "
        f"(default: the profile's, else {OffAxisSettings.radius_fraction})",
    )
    rec.add_argument(
        "--background-order",
        type=int,
        choices=range(4),
        help="order of the background polynomial, 0-3 "
        f"(default: the profile's, else {OffAxisSettings.background_order})",
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
    mea.set_defaults(func=cmd_measure)


def _add_models_command(commands: argparse._SubParsersAction) -> None:
    """``napari-qpi models``: list the registered models; ``models export-mask``."""
    models = commands.add_parser("models", help="list the registered models and their metrics")
    models.set_defaults(func=cmd_models)
    model_commands = models.add_subparsers(dest="models_command")
    export_mask = model_commands.add_parser(
        "export-mask", help="write the phase masks of a CDP model as a TIFF (radians)"
    )
    export_mask.add_argument("name", help="a CDP model (see `napari-qpi models`)")
    export_mask.add_argument("path", help="output TIFF, e.g. masks.tif")
    export_mask.add_argument(
        "--overwrite", action="store_true", help="replace the file if it exists"
    )
    export_mask.set_defaults(func=cmd_export_mask)


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import list_models

    print(f"{'name':<24} {'family':<10} {'modality':<9} {'source':<8} held-out (standard)")
    for card in list_models():
        standard = (
            card.metrics.get("standard")
            or card.metrics.get("test")
            or next(iter(card.metrics.values()), {})
        )
        figures = ", ".join(
            f"{key} {standard[key]:.3g}"
            for key in ("psnr_db", "ssim", "rmse_rad")
            if isinstance(standard.get(key), (int, float))
        )
        source = getattr(card, "source", "") or ""
        print(f"{card.name:<24} {card.family:<10} {card.modality:<9} {source:<8} {figures}")
    print("classical: the Fourier off-axis method (always available)")
    return 0


def cmd_export_mask(args: argparse.Namespace) -> int:
    from ..training.cdp_models import export_model_masks

    path, masks = export_model_masks(args.name, args.path, overwrite=args.overwrite)
    print(
        f"napari-qpi: {masks.shape[0]} mask(s) of {masks.shape[1]} x {masks.shape[2]} px "
        f"(phases in radians) written to {path}"
    )
    return 0


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
