"""The ``napari-qpi`` command line: batch work without a GUI.

    napari-qpi reconstruct DATA/ --method classical --out results/

Every sub-command prints a progress bar, a one-line summary and, for files it could not process,
one line per file with the reason. Errors meant for people never show a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .acquisition import Acquisition
from .errors import QPIError
from .io import read_image, write_phase
from .io.images import SUPPORTED_EXTENSIONS
from .io.tables import write_labels_tiff, write_table_csv
from .morphology import (
    DEFAULT_ALPHA_UM3_PER_PG,
    MorphologyTable,
    SegmentationSettings,
    measure_stack,
)
from .reconstruct import (
    available_methods,
    iter_reconstruct,
    output_acquisition,
    settings_record,
)
from .retrieval import OffAxisSettings

PHASE_SUFFIX = "_phase.ome.tif"
LABELS_SUFFIX = "_cells.ome.tif"
TABLE_SUFFIX = "_cells.csv"


def _stem(path: Path) -> str:
    name = path.name
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files named on the command line, and the supported images inside named folders (sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.name.lower().endswith(SUPPORTED_EXTENSIONS)
                    and not p.name.endswith((PHASE_SUFFIX, LABELS_SUFFIX))
                )
            )
        else:
            found.append(path)
    return found


@dataclass
class BatchReport:
    """What a batch run did, for the summary line and the exit code."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    planes: int = 0
    cells: int = 0
    dry_mass_pg: list[float] = field(default_factory=list)
    phase_min: float = np.inf
    phase_max: float = -np.inf


def _settings_from_args(args: argparse.Namespace) -> OffAxisSettings:
    return OffAxisSettings(
        carrier=tuple(args.carrier) if args.carrier else None,
        filter=args.filter,
        radius_fraction=args.radius_fraction,
        background_order=args.background_order,
        resolution=args.resolution,
    )


def reconstruct_file(
    path: Path,
    out_dir: Path,
    *,
    method: str,
    settings: OffAxisSettings,
    reference: np.ndarray | None,
    overwrite: bool,
    report: BatchReport,
    measure: Callable[[np.ndarray, Acquisition, str], None] | None = None,
) -> Path | None:
    """Reconstruct every plane of one file and write one phase OME-TIFF; ``None`` if skipped."""
    target = out_dir / f"{_stem(path)}{PHASE_SUFFIX}"
    if target.exists() and not overwrite:
        report.skipped.append(target)
        return None
    image = read_image(path)
    planes = []
    factor = 1.0
    sidebands = []
    for result in iter_reconstruct(
        image.data,
        method=method,
        reference=reference,
        acquisition=image.acquisition,
        settings=settings,
    ):
        planes.append(result.phase)
        factor = result.pixel_size_factor
        sidebands.append(result.info.get("sideband_cycles_per_px"))
    phase = (
        planes[0]
        if len(planes) == 1
        else np.stack(planes).reshape(*image.data.shape[:-2], *planes[0].shape)
    )
    method_record = {
        "name": method,
        "settings": settings_record(settings),
        "source": path.name,
        "reference": reference is not None,
    }
    write_phase(
        target,
        phase,
        acquisition=output_acquisition(image.acquisition, factor),
        method=method_record,
        overwrite=overwrite,
    )
    report.written.append(target)
    report.planes += len(planes)
    if measure is not None:
        measure(phase, output_acquisition(image.acquisition, factor), _stem(path))
    report.phase_min = min(report.phase_min, float(np.nanmin(phase)))
    report.phase_max = max(report.phase_max, float(np.nanmax(phase)))
    return target


def measure_file(
    phase: np.ndarray,
    acquisition: Acquisition,
    stem: str,
    out_dir: Path,
    *,
    args: argparse.Namespace,
    report: BatchReport,
) -> None:
    """Segment and measure cells on a phase image; write labels OME-TIFF and the CSV table."""
    table, labels = measure_stack(
        phase,
        pixel_size_um=acquisition.pixel_size_um,
        wavelength_nm=acquisition.wavelength_nm,
        alpha_um3_per_pg=args.alpha,
        settings=SegmentationSettings(min_area_um2=args.min_area),
    )
    write_labels_tiff(
        out_dir / f"{stem}{LABELS_SUFFIX}",
        labels,
        pixel_size_um=acquisition.pixel_size_um,
        overwrite=args.overwrite,
    )
    write_table_csv(out_dir / f"{stem}{TABLE_SUFFIX}", table, overwrite=args.overwrite)
    if args.table:
        print(format_table(table, title=stem))
    report.cells += len(table)
    if "dry_mass_pg" in table.columns:
        report.dry_mass_pg.extend(float(m) for m in table["dry_mass_pg"])


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
    from tqdm.auto import tqdm

    inputs = collect_inputs(args.paths)
    if not inputs:
        print("napari-qpi: no input files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    methods = available_methods()
    if args.method not in methods:
        print(
            f"napari-qpi: unknown method {args.method!r}; available: {', '.join(methods)}",
            file=sys.stderr,
        )
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings_from_args(args)
    reference = None
    if args.reference:
        reference = np.asarray(read_image(args.reference).data)
    report = BatchReport()
    start = time.perf_counter()
    for path in tqdm(inputs, desc="reconstruct", unit="file", disable=args.quiet or None):
        try:
            reconstruct_file(
                path,
                out_dir,
                method=args.method,
                settings=settings,
                reference=reference,
                overwrite=args.overwrite,
                report=report,
                measure=(
                    (lambda p, a, stem: measure_file(p, a, stem, out_dir, args=args, report=report))
                    if args.measure
                    else None
                ),
            )
        except QPIError as error:
            report.failed.append((path, str(error)))
    elapsed = time.perf_counter() - start
    print(_summary(report, out_dir, elapsed))
    for path, reason in report.failed:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_measure(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    inputs = collect_inputs(args.paths)
    if not inputs:
        print("napari-qpi: no phase images found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    start = time.perf_counter()
    for path in tqdm(inputs, desc="measure", unit="file", disable=args.quiet or None):
        stem = _stem(path).removesuffix("_phase")
        if (out_dir / f"{stem}{TABLE_SUFFIX}").exists() and not args.overwrite:
            report.skipped.append(out_dir / f"{stem}{TABLE_SUFFIX}")
            continue
        try:
            image = read_image(path)
            measure_file(
                np.asarray(image.data, dtype=np.float32),
                image.acquisition,
                stem,
                out_dir,
                args=args,
                report=report,
            )
            report.written.append(out_dir / f"{stem}{TABLE_SUFFIX}")
        except QPIError as error:
            report.failed.append((path, str(error)))
    print(_summary(report, out_dir, time.perf_counter() - start))
    for path, reason in report.failed:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def _add_measure_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA_UM3_PER_PG,
        help="refractive increment in um^3/pg for dry mass (default 0.18)",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=SegmentationSettings.min_area_um2,
        help="smallest cell area kept, um^2",
    )
    parser.add_argument("--table", action="store_true", help="print the per-cell table(s)")


def _summary(report: BatchReport, out_dir: Path, elapsed: float) -> str:
    planes = f", {report.planes} plane(s)" if report.planes else ""
    parts = [f"napari-qpi: {len(report.written)} file(s){planes} in {elapsed:.2f} s"]
    if report.planes:
        parts.append(f"phase {report.phase_min:.2f} to {report.phase_max:.2f} rad")
    if report.cells or report.dry_mass_pg:
        mass = (
            f", median dry mass {np.median(report.dry_mass_pg):.1f} pg"
            if report.dry_mass_pg
            else ""
        )
        parts.append(f"{report.cells} cell(s){mass}")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (output exists; --overwrite to redo)")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    parts.append(f"outputs in {out_dir}/")
    return "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-qpi", description="Quantitative phase imaging: holograms to phase, in batch."
    )
    parser.add_argument("--version", action="version", version=f"napari-qpi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    rec = commands.add_parser(
        "reconstruct", help="retrieve phase from holograms (files or folders)"
    )
    rec.add_argument("paths", nargs="+", help="hologram files or folders of them")
    rec.add_argument(
        "--method",
        "--model",
        dest="method",
        default="classical",
        help="'classical' or the name of a registered model (see `napari-qpi models`)",
    )
    rec.add_argument("--out", default="results", help="output folder (default: results)")
    rec.add_argument("--reference", help="background hologram without cells (same camera region)")
    rec.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    rec.add_argument(
        "--carrier",
        nargs=2,
        type=float,
        metavar=("FY", "FX"),
        help="sideband position in cycles/pixel (default: from metadata, else found automatically)",
    )
    rec.add_argument(
        "--filter", default=OffAxisSettings.filter, choices=("disk", "smooth_disk", "gaussian")
    )
    rec.add_argument(
        "--radius-fraction",
        type=float,
        default=OffAxisSettings.radius_fraction,
        help="filter radius as a fraction of the carrier distance",
    )
    rec.add_argument(
        "--background-order",
        type=int,
        default=OffAxisSettings.background_order,
        choices=range(4),
        help="order of the background polynomial (0-3)",
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
    _add_measure_options(rec)
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_reconstruct)

    mea = commands.add_parser("measure", help="segment and measure cells on phase images")
    mea.add_argument("paths", nargs="+", help="phase images (OME-TIFF from reconstruct) or folders")
    mea.add_argument("--out", default="results", help="output folder (default: results)")
    mea.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    _add_measure_options(mea)
    mea.add_argument("--quiet", action="store_true", help="no progress bar")
    mea.set_defaults(func=cmd_measure)

    models = commands.add_parser("models", help="list the registered models and their metrics")
    models.set_defaults(func=cmd_models)

    _add_training_commands(commands)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    print(f"{'name':<24} {'family':<10} {'modality':<9} {'source':<8} held-out (standard)")
    for card in list_models():
        standard = card.metrics.get("standard") or card.metrics.get("test") or {}
        figures = ", ".join(
            f"{key} {standard[key]:.3g}"
            for key in ("psnr_db", "ssim", "rmse_rad")
            if isinstance(standard.get(key), (int, float))
        )
        source = getattr(card, "source", "") or ""
        print(f"{card.name:<24} {card.family:<10} {card.modality:<9} {source:<8} {figures}")
    print("classical: the Fourier off-axis method (always available)")
    return 0


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """Sub-commands that train networks; torch is imported only when one of them runs."""
    from .training.search import (
        add_search_arguments,
        add_train_arguments,
        search_main,
        train_main,
    )

    search = commands.add_parser(
        "search", help="search a NAS-PRNet connectivity (SparseMask), then retrain it"
    )
    add_search_arguments(search)
    search.set_defaults(func=search_main)
    train = commands.add_parser("train", help="train a network (U-Net baseline, supernet, ...)")
    add_train_arguments(train)
    train.set_defaults(func=train_main)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-qpi`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
