"""What ``napari-qpi reconstruct``, ``measure`` and ``models`` do once their flags are parsed.

:mod:`napari_qpi.cli` builds the parser from light modules only and imports this module when one
of these commands runs, so ``napari-qpi --help`` loads neither numpy, scipy nor the batch engine.
``reconstruct`` and ``measure`` run through :mod:`napari_qpi.batch` (one task per plane, on a
local Dask cluster, an existing one, or in this process); see ``docs/batch.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..batch import (
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
from ..morphology import MorphologyTable
from ..reconstruct import available_methods
from ..retrieval import OffAxisSettings
from .acquisition import acquisition_override, profile_from_args, settings_changes
from .refocus import check_refocus_request, cmd_reconstruct_refocus, refocus_requested

__all__ = [
    "TABLE_COLUMNS",
    "cmd_export_mask",
    "cmd_measure",
    "cmd_models",
    "cmd_reconstruct",
    "cmd_reconstruct_cdp",
    "format_table",
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
