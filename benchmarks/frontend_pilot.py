"""Pilot: the same small network with and without the off-axis front end (issue 18, item 1).

    python benchmarks/frontend_pilot.py                 # the pilot of docs/frontend.md
    python benchmarks/frontend_pilot.py --quick         # a smoke run (seconds)

For each family (a small U-Net and a small PRNet) two networks are trained with
:func:`napari_qpi.training.search.train` from the same seed, on the same synthetic batches, for the
same number of steps: one reading the normalised hologram (``front_end=None``), one with
``front_end=FrontEndConfig()`` (the hologram demodulated inside the model at its detected
sideband; the network sees cos / sin of the wrapped phase and the log amplitude at the native
grid). Scores: PSNR / RMSE on held-out synthetic fields (:func:`napari_qpi.training.data.
held_out_set`, splits ``standard`` and ``transfer``), and on the real HL60 corpus of
``tests/data/real_holograms`` the correlation and slope inside the cell and the background RMS
against the reference phase, evaluated exactly as ``benchmarks/searched_models.py`` does
(:func:`searched_models.real_agreement`: whole planes, :func:`napari_qpi.retrieval.retrieve_deep`
without metadata and without an extra background fit). One torch thread. A pilot, not a
verdict: small networks, a few hundred CPU steps.

The residual arms differ only in how the network reads the classical phase it corrects
(``--classical-input`` of ``napari-qpi train``): ``residual`` the phase itself,
``residual-none`` not at all, ``residual-gradient`` its differences along y and x,
``residual-wrapped`` cos / sin of it, ``residual-both`` differences and cos / sin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_qpi.models.card import ModelCard
from napari_qpi.nn.frontend import CLASSICAL_INPUTS, FrontEndConfig, residual_front_end
from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.training.data import NORMALISATION, held_out_set
from napari_qpi.training.metrics import evaluate, network_predictor
from napari_qpi.training.search import TrainSettings, train

NETWORKS: dict[str, dict[str, Any]] = {
    "unet": {"base_channels": 8, "depth": 3},
    "prnet": {"width": 0.25, "decoder_channels": 16, "coord_channels": True},
}


def real_scores(model: torch.nn.Module, family: str) -> list[dict[str, float]]:
    """Agreement with the reference phase per case of the HL60 corpus, as
    ``benchmarks/searched_models.py`` measures it (the same function)."""
    from searched_models import real_agreement

    card = ModelCard(
        name="pilot",
        family="baseline",
        modality="hologram",
        architecture={"network": family, "config": model.config.to_dict()},
        normalisation=dict(NORMALISATION),
    )
    _, rows = real_agreement(
        lambda hologram, _: (
            retrieve_deep(hologram, model=(model, card), device="cpu", tile=None).phase
        )
    )
    return rows


#: The arms of the pilot: the input each network reads.
ARMS: dict[str, FrontEndConfig | None] = {
    "no": None,
    "yes": FrontEndConfig(),
    "residual": residual_front_end("phase"),
    **{
        f"residual-{name}": residual_front_end(name) for name in CLASSICAL_INPUTS if name != "phase"
    },
}


def run_one(
    family: str, arm: str, args: argparse.Namespace
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train one network and score it; returns its row and the model."""
    network = dict(NETWORKS[family])
    if family == "unet":
        network.update(base_channels=args.unet_base_channels, depth=args.unet_depth)
    if ARMS[arm] is not None:
        network["front_end"] = ARMS[arm].to_dict()
    settings = TrainSettings(
        network=network,
        size=args.size,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        loss="mse",
        seed=args.seed,
        val_every=0,
        val_images=0,
        eval_images=0,
    )
    start = time.perf_counter()
    outcome = train(family, settings)
    seconds = time.perf_counter() - start
    model = outcome.model.eval()
    row: dict[str, Any] = {
        "family": family,
        "front_end": arm,
        "train_s": round(seconds, 1),
        "final_loss": round(float(outcome.record["loss_curve"][-1][1]), 4),
    }
    predict = network_predictor(model)
    for split in args.splits.split(","):
        scores = evaluate(predict, held_out_set(split, n=args.eval_images, size=args.size))
        row[f"{split}_psnr_db"] = round(scores["psnr_db"], 2)
        row[f"{split}_rmse_rad"] = round(scores["rmse_rad"], 3)
    if not args.quick:
        scores = real_scores(model, family)
        correlations = [r["correlation"] for r in scores]
        row["real_correlation_mean"] = round(float(np.mean(correlations)), 3)
        row["real_correlation"] = [round(c, 3) for c in correlations]
        row["real_slope"] = [round(r["slope"], 2) for r in scores]
        row["real_background_rms_rad"] = [round(r["background_rms_rad"], 2) for r in scores]
    return row, model


def table(rows: list[dict[str, Any]], splits: list[str]) -> str:
    """Markdown table of the rows: PSNR per split, HL60 correlation and slope per case."""
    lines = [
        "| network | front end | train s | "
        + " | ".join(f"{split} PSNR dB" for split in splits)
        + " | HL60 correlation in cell (mean; per case) | HL60 slope per case |",
        "|---|---|---|" + "---|" * len(splits) + "---|---|",
    ]
    for r in rows:
        real, slope = "-", "-"
        if "real_correlation_mean" in r:
            cases = ", ".join(f"{c:.2f}" for c in r["real_correlation"])
            real = f"{r['real_correlation_mean']:.3f}; {cases}"
            slope = ", ".join(f"{c:.2f}" for c in r["real_slope"])
        psnr = " | ".join(str(r[f"{split}_psnr_db"]) for split in splits)
        lines.append(
            f"| {r['family']} | {r['front_end']} | {r['train_s']} | {psnr} | {real} | {slope} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=16)
    parser.add_argument("--families", default="unet,prnet")
    parser.add_argument(
        "--unet-base-channels",
        type=int,
        default=NETWORKS["unet"]["base_channels"],
        help="the U-Net's size (the shipped unet: 24 channels, depth 4)",
    )
    parser.add_argument("--unet-depth", type=int, default=NETWORKS["unet"]["depth"])
    parser.add_argument(
        "--arms", default="no,yes,residual", help=f"comma-separated, from {list(ARMS)}"
    )
    parser.add_argument("--splits", default="standard,transfer")
    parser.add_argument("--quick", action="store_true", help="a few steps, no real data")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.size, args.eval_images, args.batch_size = 3, 64, 1, 2
    torch.set_num_threads(1)
    rows = []
    for family in args.families.split(","):
        for arm in args.arms.split(","):
            row, _ = run_one(family, arm, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(table(rows, args.splits.split(",")))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
