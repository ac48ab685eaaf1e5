"""Which phase loss lets a hologram network learn at all? L1 or MSE, signed or sign-free.

    python benchmarks/loss_ablation.py                  # 4 runs of 5 min, 2 at a time; prints
    python benchmarks/loss_ablation.py --write          # ... and updates docs/benchmarks.md
    python benchmarks/loss_ablation.py --quick          # smoke run: seconds
    python benchmarks/loss_ablation.py --losses mse     # only the MSE pair (e.g. a longer budget)

A hologram cannot tell the sign of its phase (carrier f with phase phi and carrier -f with phase
-phi record the same intensity, :mod:`napari_qpi.nn.sign`), and the training data covers every
carrier direction. Against signed targets the best a network can do where it cannot tell is to
hedge; under L1 every prediction between -phi and +phi then costs the same, so nothing pulls it
away from zero. This script trains the same network (PRNet, MobileNet-v2 x0.5, a U-Net-like
connectivity fixed here, so the search plays no part) from the same seed for the same wall time
with each of the four losses and scores it on the first 16 fields of each held-out split
(:func:`napari_qpi.training.search.held_out_metrics`; sign-free networks flip their output so that
cells are positive), next to the zero-phase reference (a method that ignores the hologram).
Runs use one thread each, ``--jobs`` at a time.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from _docs import machine, write_section
from napari_qpi.training.data import held_out_set
from napari_qpi.training.metrics import evaluate
from napari_qpi.training.search import SPLITS, TrainSettings, train

#: A plain coarse-to-fine ladder over the encoder taps (not searched): E0 (1/2) to E8 (1/32).
CONNECTIVITY = {
    "D0": ["E0", "D2"],
    "D2": ["E2", "D3"],
    "D3": ["E3", "D5"],
    "D5": ["E5", "D8"],
    "D8": ["E8", "G"],
}
#: (label, loss kind, sign-free).
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("L1, signed targets", "l1", False),
    ("L1, sign-free", "l1", True),
    ("MSE, signed targets", "mse", False),
    ("MSE, sign-free", "mse", True),
)


def run_variant(args: tuple[str, str, bool, float, int, int, int]) -> dict[str, Any]:
    """Train one variant and score it; runs in its own process on one thread."""
    label, loss, sign_free, minutes, size, batch_size, eval_images = args
    torch.set_num_threads(1)
    settings = TrainSettings(
        network={
            "width": 0.5,
            "coord_channels": True,
            "cells_positive": sign_free,
            "connectivity": CONNECTIVITY,
        },
        size=size,
        batch_size=batch_size,
        steps=1_000_000,
        loss=loss,  # type: ignore[arg-type]
        minutes=minutes,
        val_images=0,
        eval_images=eval_images,
    )
    outcome = train("prnet", settings)
    record = outcome.record
    return {
        "label": label,
        "steps": record["steps"],
        "seconds": record["timings"]["train_s"],
        "metrics": record["metrics"],
    }


def zero_reference(eval_images: int) -> dict[str, dict[str, float]]:
    """Scores of a method that returns zero phase everywhere."""
    return {
        split: evaluate(
            lambda h: np.zeros(h.shape, np.float32), held_out_set(split, n=eval_images, size=256)
        )
        for split in SPLITS
    }


def render(
    results: list[dict[str, Any]],
    zero: dict[str, dict[str, float]],
    *,
    command: str,
    minutes: float,
    size: int,
    batch_size: int,
    quick: bool,
) -> str:
    """The markdown section of docs/benchmarks.md."""
    today = datetime.date.today().isoformat()
    n = next(iter(zero.values()))["n"]
    header = " | ".join(f"{split} PSNR (dB)" for split in SPLITS)
    ladder = ", ".join(f"{stage} <- {' + '.join(inputs)}" for stage, inputs in CONNECTIVITY.items())
    lines = [
        "## Which loss lets a hologram network learn (`benchmarks/loss_ablation.py`)",
        "",
        f"Run {today}{' (**quick smoke run, not a result**)' if quick else ''} on {machine()}, "
        f"torch {torch.__version__}, one thread per run; command: `{command}`.",
        "",
        "The same PRNet (MobileNet-v2 x0.5, coordinate channels, the fixed ladder connectivity "
        f"{ladder}) trained from "
        f"seed 0 for {minutes:g} min of wall time on {size}^2 synthetic fields, batch "
        f"{batch_size}, AdamW lr 2e-3 with the cosine schedule over the budget; scored on the "
        f"first {n} fields (256^2) of each held-out split, median background offset removed, "
        "PSNR data range = truth max - min per field. *Signed targets*: the true phase, cells "
        "positive, whatever the carrier direction; *sign-free*: each field counts with the "
        "better sign of the prediction, and the network flips its output so that cells are "
        "positive (`napari_qpi.nn.sign`).",
        "",
        f"| loss | steps | {header} |",
        "|---|---|" + "---|" * len(SPLITS),
        "| zero phase (ignores the data) | - | "
        + " | ".join(f"{zero[s]['psnr_db']:.2f}" for s in SPLITS)
        + " |",
    ]
    for row in results:
        lines.append(
            f"| {row['label']} | {row['steps']} | "
            + " | ".join(f"{row['metrics'][s]['psnr_db']:.2f}" for s in SPLITS)
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--size", type=int, default=128, help="training field side, px")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-images", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--losses", nargs="+", choices=("l1", "mse"), default=["l1", "mse"], help="losses to run"
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.size, args.batch_size, args.eval_images = 0.05, 64, 2, 2
    jobs = [
        (label, loss, sign_free, args.minutes, args.size, args.batch_size, args.eval_images)
        for label, loss, sign_free in VARIANTS
        if loss in args.losses
    ]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_variant, jobs)
    else:
        results = [run_variant(job) for job in jobs]
    zero = zero_reference(args.eval_images)
    section = render(
        results,
        zero,
        command=shlex.join(["python", "benchmarks/loss_ablation.py", *argv]),
        minutes=args.minutes,
        size=args.size,
        batch_size=args.batch_size,
        quick=args.quick,
    )
    print(section)
    if args.write and not args.quick:
        write_section("loss_ablation", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
