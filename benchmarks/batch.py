"""Batch reconstruction throughput on Dask: holograms/s with 1 and 2 local worker processes.

    python benchmarks/batch.py                 # 200 holograms of 512^2, writes docs/benchmarks.md
    python benchmarks/batch.py --quick         # 40 holograms, classical only; prints only
    python benchmarks/batch.py --model NAME    # the network to time (default: a searched one)

The job is ``napari_qpi.batch.reconstruct_batch`` as ``napari-qpi reconstruct`` runs it: TIFF
files in, one phase OME-TIFF out per file, written by the workers. Each configuration gets a local
cluster of N worker processes with one thread each (torch limited to one thread per worker), a
warm-up job (imports, model loading, FFT plans) and then the timed job into an empty folder:
throughput = holograms / wall time of the job, cluster start-up excluded. "In this process" is the
same job with no Dask (``--workers 0``), torch with its default threads. Peak memory is the largest
resident set (``ru_maxrss``) of any worker process over warm-up and job. The load average before
and after is printed and written: other programs running on the machine lower the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

from _docs import DOCS, machine, write_section
from napari_qpi.batch import ClusterOptions, reconstruct_batch, start_local_cluster
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram

ROOT = Path(__file__).resolve().parents[1]
SIDECAR = {"qpi": {"pixel_size_um": 0.2, "wavelength_nm": 532.0, "modality": "hologram"}}


def load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def make_holograms(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` simulated holograms of ``size``^2 (about 6 cells each) as 16-bit TIFFs."""
    system = OffAxisSystem(pixel_size_um=0.2)
    paths = []
    for seed in range(count):
        cells = random_cells((size, size), n_cells=6, seed=seed, pixel_size_um=0.2)
        hologram = simulate_hologram(cells.phase, cells.amplitude, system, seed=seed)
        path = folder / f"holo_{seed:04d}.tif"
        tifffile.imwrite(path, hologram)
        Path(str(path) + ".json").write_text(json.dumps(SIDECAR))
        paths.append(path)
    return paths


def searched_model(name: str | None) -> str | None:
    from napari_qpi.models import list_models

    cards = list_models("hologram")
    if name:
        return name if any(card.name == name for card in cards) else None
    searched = [card.name for card in cards if card.family == "searched"]
    return searched[0] if searched else None


def run_config(
    method: str, workers: int, inputs: list[Path], warmup: list[Path], scratch: Path
) -> dict:
    """Throughput and peak worker memory of one method on ``workers`` processes (0: no Dask)."""
    from distributed import Client

    cluster = client = None
    if workers:
        cluster = start_local_cluster(workers)
        client = Client(cluster, set_as_default=False)
    options = ClusterOptions(workers=0)
    try:
        out = scratch / f"{method}-{workers}"
        reconstruct_batch(warmup, out / "warmup", method=method, client=client, cluster=options)
        start = time.perf_counter()
        report = reconstruct_batch(
            inputs, out / "job", method=method, client=client, cluster=options
        )
        elapsed = time.perf_counter() - start
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} hologram(s) failed: {report.failed[0]}")
    peak = max(report.peak_memory_mb.values()) if report.peak_memory_mb else float("nan")
    sample = tifffile.imread(out / "job" / f"{inputs[-1].stem}_phase.ome.tif")
    shutil.rmtree(out)
    return {
        "throughput": len(inputs) / elapsed,
        "seconds": elapsed,
        "peak_mb": peak,
        "workers_seen": len(report.peak_memory_mb),
        "sample": sample,
    }


def run(count: int, size: int, methods: list[str], repeats: int) -> tuple[str, dict]:
    import dask
    import distributed

    results: dict[tuple[str, int], dict] = {}
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="qpi-batch-bench-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "in").mkdir()
        (tmp_path / "warm").mkdir()
        print(f"simulating {count} holograms of {size}^2 ...", flush=True)
        inputs = make_holograms(tmp_path / "in", count, size)
        warmup = make_holograms(tmp_path / "warm", 4, size)
        for method in methods:
            for workers in (0, 1, 2):
                best = None
                for _ in range(repeats):
                    result = run_config(method, workers, inputs, warmup, tmp_path)
                    if best is None or result["throughput"] > best["throughput"]:
                        best = result
                results[method, workers] = best
                print(
                    f"{method:>24} workers={workers}: {best['throughput']:.2f} holograms/s, "
                    f"peak {best['peak_mb']:.0f} MB, load {load()}",
                    flush=True,
                )
            if not np.array_equal(results[method, 1]["sample"], results[method, 2]["sample"]):
                print(f"note: {method}: 1 and 2 workers gave different phase", flush=True)
    load_after = load()

    lines = [
        "| method | where | holograms/s | vs 1 worker | peak memory per worker (MB) |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        one = results[method, 1]["throughput"]
        for workers in (0, 1, 2):
            r = results[method, workers]
            where = "in this process (no Dask)" if workers == 0 else f"{workers} local worker(s)"
            lines.append(
                f"| {method} | {where} | {r['throughput']:.2f} | {r['throughput'] / one:.2f}x "
                f"| {r['peak_mb']:.0f} |"
            )
    today = datetime.date.today().isoformat()
    section = "\n".join(
        [
            "## Batch throughput on Dask (`benchmarks/batch.py`)",
            "",
            f"Run {today} on {machine()}; load average (1, 5, 15 min) {load_before} before and "
            f"{load_after} after; dask {dask.__version__}, distributed {distributed.__version__}, "
            f"numpy {np.__version__}, Python {platform.python_version()}.",
            "",
            f"{count} simulated holograms of {size}^2 (16-bit TIFF, about 6 cells each), "
            "`reconstruct_batch` as `napari-qpi reconstruct` runs it (read, retrieve, write one "
            "phase OME-TIFF per hologram). Local cluster of N processes with one thread each; "
            "warm-up job first, cluster start-up (about 2 s) not counted; best of "
            f"{repeats} run(s). Peak memory: largest resident set of a worker process "
            "(for 'in this process', of the whole program).",
            "",
            *lines,
        ]
    )
    return section, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 holograms, classical only")
    parser.add_argument("--count", type=int, help="holograms (default 200; 40 with --quick)")
    parser.add_argument("--size", type=int, default=512, help="hologram side in pixels")
    parser.add_argument("--model", help="network to time (default: the first searched model)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/benchmarks.md (default: yes for a full run, no for --quick)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    count = args.count or (40 if args.quick else 200)
    methods = ["classical"]
    if not args.quick:
        model = searched_model(args.model)
        if model is None:
            print(
                f"no {'model ' + args.model if args.model else 'searched model'} registered: "
                "timing the classical method only (train one with `napari-qpi search`)",
                file=sys.stderr,
            )
        else:
            methods.append(model)
    section, results = run(count, args.size, methods, max(1, args.repeats))
    speedup = results["classical", 2]["throughput"] / results["classical", 1]["throughput"]
    print()
    print(section)
    print(f"\nclassical, 2 vs 1 worker: {speedup:.2f}x (target >= 1.6x)")
    if args.write if args.write is not None else not args.quick:
        write_section("batch", section)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
