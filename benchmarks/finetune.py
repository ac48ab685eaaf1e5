"""Fine-tuning the shipped hologram models to a second microscope, on 2 CPU cores.

    python benchmarks/finetune.py                       # bases prnet-searched, unet; prints only
    python benchmarks/finetune.py --write               # ... and updates docs/benchmarks.md
    python benchmarks/finetune.py --base NAME [NAME]    # other registered hologram models
    python benchmarks/finetune.py --quick               # smoke run: 4 + 2 fields, seconds

The second microscope (:func:`second_microscope`) differs from the training distribution of
``napari_qpi.training.data`` in its carrier (period 7.5 px, outside the 3-6 px trained on, at
100 degrees), its optics (a fixed set of aberrations including spherical aberration, which the
training data never had, plus a field-to-field tilt and focus jitter), its laser (633 nm instead
of 532 nm), pixels (0.16 um) and camera (lower fringe contrast, more read noise).

A lab annotates 16 holograms of it (``--train``, target = the true phase; with ``--targets
classical`` also a run on the classical method's phase, what a lab without ground truth has) and
fine-tunes with :func:`napari_qpi.training.finetune.finetune`: 20% of them held out to pick the
best weights, whole 256^2 fields with flips and 90-degree rotations, a budget of 1, 2 and 5
minutes of wall time on ``--threads`` threads (separate runs, each from the base model, the
learning rate annealed over the budget; validation not counted), as the widget's time limit does.
Run it on an otherwise idle machine: the note records the load average. Scores are on 16 other
fields of the same microscope (``--test``) with
:func:`napari_qpi.training.metrics.image_metrics` (median of prediction - truth over the true
background removed; PSNR with data range = truth max - min per image), networks on the whole field
with no background fit, the classical method (``retrieve_offaxis``) with default settings finding
the sideband itself, and tuned: carrier from the metadata and a 4th-order background fit (which
removes the spherical aberration).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _docs import DOCS, machine, write_section
from napari_qpi.acquisition import Acquisition
from napari_qpi.errors import QPIError
from napari_qpi.models import ModelCard, load_model
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.retrieval import OffAxisSettings, retrieve_offaxis
from napari_qpi.retrieval.background import background_mask, fit_background
from napari_qpi.training.data import HeldOutSet
from napari_qpi.training.finetune import FinetuneSettings, plan_finetune, run_finetune
from napari_qpi.training.metrics import image_metrics, network_predictor, summarise

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED, TEST_SEED = 5_550_001, 5_550_002

Predict = Callable[[np.ndarray, Acquisition], np.ndarray]
Scores = dict[str, float]

#: The fixed part of the second microscope's wavefront error, radians (Zernike terms).
ABERRATIONS_RAD = {
    "tilt_x": 3.0,
    "tilt_y": -2.0,
    "defocus": 5.0,
    "astig_0": -2.5,
    "astig_45": 1.5,
    "coma_x": 1.2,
    "coma_y": -0.8,
    "spherical": 2.0,
}


def second_microscope(rng: np.random.Generator) -> OffAxisSystem:
    """The second microscope as it records one field (tilt and focus jitter from field to field)."""
    aberrations = dict(ABERRATIONS_RAD)
    aberrations["tilt_x"] += float(rng.uniform(-1.0, 1.0))
    aberrations["tilt_y"] += float(rng.uniform(-1.0, 1.0))
    aberrations["defocus"] += float(rng.uniform(-0.5, 0.5))
    return OffAxisSystem(
        wavelength_nm=633.0,
        pixel_size_um=0.16,
        carrier_period_px=7.5,
        carrier_angle_deg=100.0,
        fringe_visibility=float(rng.uniform(0.5, 0.7)),
        aberrations_rad=aberrations,
        illumination_drift=float(rng.uniform(0.0, 0.15)),
        drift_angle_deg=float(rng.uniform(0.0, 360.0)),
        full_well_electrons=8000.0,
        read_noise_electrons=8.0,
    )


def microscope_set(n: int, size: int, seed: int) -> HeldOutSet:
    """``n`` fields of ``size``^2 px recorded with :func:`second_microscope`."""
    holograms, phases, labels, acquisitions = [], [], [], []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        system = second_microscope(rng)
        phantom = random_cells(
            (size, size),
            pixel_size_um=system.pixel_size_um,
            wavelength_nm=system.wavelength_nm,
            n_cells=(2, 7),
            peak_phase_rad=(1.0, 6.0),
            margin_px=-8.0,
            seed=rng,
        )
        holograms.append(simulate_hologram(phantom.phase, phantom.amplitude, system, seed=rng))
        phases.append(phantom.phase.astype(np.float32))
        labels.append(phantom.labels)
        acquisitions.append(system.acquisition())
    return HeldOutSet(
        "second-microscope",
        seed,
        np.stack(holograms),
        np.stack(phases),
        np.stack(labels),
        tuple(acquisitions),
    )


def score(predict: Predict, fields: HeldOutSet) -> Scores:
    """Mean scores over the fields; a field the method fails on scores as zero phase."""
    rows, failed = [], 0
    for hologram, truth, labels, acquisition in zip(
        fields.holograms, fields.phases, fields.labels, fields.acquisitions, strict=True
    ):
        try:
            phase = predict(hologram, acquisition)
        except QPIError:
            phase, failed = np.zeros_like(truth), failed + 1
        rows.append(image_metrics(phase, truth, labels))
    return summarise(rows) | {"failed": failed}


def classical_auto(hologram: np.ndarray, _: Acquisition) -> np.ndarray:
    """Default settings, sideband found in the hologram."""
    return retrieve_offaxis(hologram).phase


def classical_tuned(hologram: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    """Carrier from the metadata, 4th-order background fit."""
    settings = OffAxisSettings(background_order=4)
    return retrieve_offaxis(hologram, acquisition=acquisition, settings=settings).phase


#: Background polynomial order of the tuned classical method, also offered after a network.
BACKGROUND_ORDER = 4


def network(module: nn.Module, card: ModelCard, background_order: int | None = None) -> Predict:
    """A network on the whole field; optionally a polynomial background fit on its output.

    The fit is the one the classical method and the *Phase retrieval* widget use (automatic
    background mask), so "network + background" and "classical, 4th-order background" get the
    same post-processing.
    """
    predict = network_predictor(module, card.normalisation)
    if background_order is None:
        return lambda hologram, _: predict(hologram)

    def predict_and_flatten(hologram: np.ndarray, _: Acquisition) -> np.ndarray:
        phase = predict(hologram)
        mask = background_mask(phase, order=background_order)
        return phase - fit_background(phase, order=background_order, mask=mask)

    return predict_and_flatten


class CpuMeter:
    """Fit callback: CPU time of this process (all threads) spent in training steps.

    Validation is not counted. Far more CPU time than wall time x threads means other jobs made
    the threads spin-wait for each other.
    """

    def __init__(self) -> None:
        self.used_s = 0.0
        self._last = time.process_time()

    def on_start(self, step: int, total: int) -> None:
        self._last = time.process_time()

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        now = time.process_time()
        self.used_s += now - self._last
        self._last = now

    def on_validation(self, step: int, metrics: object) -> None:
        self._last = time.process_time()


@dataclass
class Row:
    """One line of the results table."""

    method: str
    targets: str
    minutes: float | None
    scores: Scores
    base: str | None = None
    steps: int | None = None
    images: int | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    best_step: int | None = None


def run(
    bases: Sequence[str],
    minutes: Sequence[float],
    target_kinds: Sequence[str],
    *,
    n_train: int,
    n_test: int,
    size: int,
    lr: float,
    batch_size: int,
    loss: str = "l1",
    threads: int,
) -> tuple[list[Row], dict[str, dict[str, float]]]:
    """Fine-tune each base and score; returns the table rows and, per base, its size and score."""
    torch.set_num_threads(threads)
    train = microscope_set(n_train, size, TRAIN_SEED)
    test = microscope_set(n_test, size, TEST_SEED)
    rows = []
    for name, method in (
        ("zero phase (ignores the data)", lambda hologram, _: np.zeros(hologram.shape)),
        ("classical, default settings", classical_auto),
        ("classical, carrier known, 4th-order background", classical_tuned),
    ):
        rows.append(Row(name, "-", None, score(method, test)))
        print(f"{name}: {rows[-1].scores['psnr_db']:.2f} dB", flush=True)
    infos = {}
    for base in bases:
        module, card = load_model(base, device="cpu", cached=False)
        rows.append(
            Row(f"{base} (before fine-tuning)", "-", 0.0, score(network(module, card), test), base)
        )
        infos[base] = {
            "parameters": sum(p.numel() for p in module.parameters()),
            "psnr_before_db": rows[-1].scores["psnr_db"],
        }
        print(f"{base} before: {infos[base]['psnr_before_db']:.2f} dB", flush=True)
        flattened = score(network(module, card, BACKGROUND_ORDER), test)
        rows.append(
            Row(
                f"{base} (before), {BACKGROUND_ORDER}th-order background fit",
                "-",
                0.0,
                flattened,
                base,
            )
        )
        for kind in target_kinds:
            rows += finetune_rows(
                base, module, card, kind, minutes, train, test,
                lr=lr, batch_size=batch_size, loss=loss, size=size,
            )  # fmt: skip
    return rows, infos


def finetune_rows(
    base: str,
    module: nn.Module,
    card: ModelCard,
    kind: str,
    minutes: Sequence[float],
    train: HeldOutSet,
    test: HeldOutSet,
    *,
    lr: float,
    batch_size: int,
    loss: str,
    size: int,
) -> list[Row]:
    """Rows of one base and kind of annotation: each budget, as is and with a background fit."""
    targets = (
        train.phases
        if kind == "truth"
        else np.stack(
            [
                classical_tuned(h, a)
                for h, a in zip(train.holograms, train.acquisitions, strict=True)
            ]
        )
    )
    label = "true phase" if kind == "truth" else "classical (tuned) phase"
    rows = []
    for budget in minutes:
        settings = FinetuneSettings(
            name=f"bench-finetune-{kind}",
            epochs=100_000,
            minutes=budget,
            lr=lr,
            batch_size=batch_size,
            crop=size,
            val_fraction=0.2,
            loss=loss,
        )
        plan = plan_finetune(
            (module, card), train.holograms, targets, settings=settings, device="cpu"
        )
        meter = CpuMeter()
        start = time.perf_counter()
        tuned, tuned_card = run_finetune(plan, callbacks=[meter])
        wall = time.perf_counter() - start
        record = tuned_card.training
        rows.append(
            Row(
                f"{base} fine-tuned {budget:g} min",
                label,
                budget,
                score(network(tuned, tuned_card), test),
                base,
                steps=record["steps"],
                images=record["steps"] * record["batch_size_used"],
                seconds=record["seconds"],
                cpu_seconds=meter.used_s,
                best_step=record["best_step"],
            )
        )
        last = rows[-1]
        rows.append(
            Row(
                f"{last.method}, {BACKGROUND_ORDER}th-order background fit",
                label,
                budget,
                score(network(tuned, tuned_card, BACKGROUND_ORDER), test),
                base,
            )
        )
        print(
            f"{base} {kind} {budget:g} min: {last.scores['psnr_db']:.2f} dB "
            f"({rows[-1].scores['psnr_db']:.2f} dB with the background fit) after "
            f"{record['steps']} steps ({meter.used_s:.0f} CPU-s in steps, {wall:.0f} s wall "
            "with validation)",
            flush=True,
        )
    return rows


def render(
    rows: list[Row],
    infos: dict[str, dict[str, float]],
    command: str,
    *,
    n_train: int,
    n_test: int,
    size: int,
    threads: int,
    lr: float,
    batch_size: int,
    loss: str,
    quick: bool,
    load: tuple[float, float],
) -> str:
    """Markdown section for ``docs/benchmarks.md``."""
    today = datetime.date.today().isoformat()
    classical_best = max(r.scores["psnr_db"] for r in rows if r.method.startswith("classical"))
    bases = ", ".join(
        f"`{b}` ({info['parameters'] / 1e6:.2f} M parameters)" for b, info in infos.items()
    )
    lines = [
        "## Fine-tuning to a second microscope (`benchmarks/finetune.py`)",
        "",
        f"Run {today} on {machine()}, torch {torch.__version__}, {threads} threads"
        + (" (**quick smoke run, not a result**)" if quick else "")
        + f"; command: `{command}`.",
        "",
        f"Second microscope: carrier period 7.5 px at 100 deg (training: 3-6 px), 633 nm, 0.16 um "
        f"pixels, fringe visibility 0.5-0.7, 8 e- read noise, fixed aberrations "
        f"({', '.join(f'{k} {v:g}' for k, v in ABERRATIONS_RAD.items())} rad, spherical "
        "never seen in training) with a tilt (+-1 rad) and focus (+-0.5 rad) jitter per field. "
        f"{n_train} annotated {size}^2 holograms to fine-tune on (20% held out to pick the best "
        f"weights), {n_test} other fields to score. Bases: {bases}. Fine-tuning: AdamW, lr "
        f"{lr:g}, {loss.upper()} loss, batch {batch_size} whole fields with flips / 90-degree "
        "rotations, cosine schedule over the run; each budget is a separate run from the base "
        "model. Budget: wall time of the training steps (the Fine-tune widget's time limit; "
        "validation not counted); CPU-s is the process's CPU time in those steps (all threads). "
        f"Load average of the machine: {load[0]:.1f} at the start, {load[1]:.1f} at the end "
        f"(other jobs share these {os.cpu_count()} cores when it is above about {threads}). "
        "Scores: median background offset removed, PSNR data range = truth max - min per "
        "image; networks on the whole field, as they are and with the tuned classical method's "
        f"{BACKGROUND_ORDER}th-order background fit on their output (rows so marked).",
        "",
        "| method | targets | budget (min) | training (min) | CPU-s | steps | fields seen "
        "| PSNR (dB) | vs before (dB) | SSIM | RMSE (rad) | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row.scores
        before = None if row.base is None else infos[row.base]["psnr_before_db"]
        delta = "-" if before is None else f"{s['psnr_db'] - before:+.2f}"
        lines.append(
            f"| {row.method} | {row.targets} | "
            f"{'-' if not row.minutes else f'{row.minutes:g}'} | "
            f"{'-' if row.seconds is None else f'{row.seconds / 60:.2f}'} | "
            f"{'-' if row.cpu_seconds is None else f'{row.cpu_seconds:.0f}'} | "
            f"{'-' if row.steps is None else row.steps} | "
            f"{'-' if row.images is None else row.images} | {s['psnr_db']:.2f} | "
            f"{delta} | {s['ssim']:.3f} | {s['rmse_rad']:.3f} | {int(s['failed'])} |"
        )
    lines.append("")
    for base in infos:
        tuned = [
            r
            for r in rows
            if r.base == base and r.targets == "true phase" and "background" not in r.method
        ]
        if not tuned:
            continue
        last = max(tuned, key=lambda r: r.minutes or 0)
        gain = last.scores["psnr_db"] - infos[base]["psnr_before_db"]
        margin = last.scores["psnr_db"] - classical_best
        sentence = (
            f"`{base}`: after {last.minutes:g} minutes on true-phase annotations it gains "
            f"{gain:+.1f} dB over the base model (goal: +6 dB: "
            f"{'met' if gain >= 6 else 'not met'}) and is {margin:+.1f} dB from the better "
            f"classical variant (goal: >= 0: {'met' if margin >= 0 else 'not met'})."
        )
        fitted = [
            r
            for r in rows
            if r.method == f"{last.method}, {BACKGROUND_ORDER}th-order background fit"
            and r.targets == last.targets
        ]
        if fitted:
            sentence += (
                f" With the {BACKGROUND_ORDER}th-order background fit on its output it reaches "
                f"{fitted[0].scores['psnr_db']:.1f} dB "
                f"({fitted[0].scores['psnr_db'] - classical_best:+.1f} dB from that variant)."
            )
        lines += [sentence, ""]
    return "\n".join(lines).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        nargs="+",
        default=["prnet-searched", "unet"],
        help="registered hologram models to fine-tune (default: the searched model and the "
        "U-Net baseline)",
    )
    parser.add_argument("--minutes", type=float, nargs="+", help="budgets (default 1 2 5)")
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=("truth", "classical"),
        default=["truth"],
        help="annotations: the true phase, and/or the tuned classical method's phase",
    )
    parser.add_argument("--train", type=int, help="annotated fields (default 16)")
    parser.add_argument("--test", type=int, help="scored fields (default 16)")
    parser.add_argument("--size", type=int, default=256, help="field side, px")
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--loss", choices=("l1", "mse"), default="l1", help="fine-tuning loss (offset-free)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run, seconds")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    minutes = args.minutes or ([0.05] if args.quick else [1.0, 2.0, 5.0])
    n_train = args.train or (4 if args.quick else 16)
    n_test = args.test or (2 if args.quick else 16)
    size = 128 if args.quick and args.size == 256 else args.size
    threads_before = torch.get_num_threads()
    load_start = os.getloadavg()[0]
    try:
        rows, infos = run(
            args.base,
            minutes,
            args.targets,
            n_train=n_train,
            n_test=n_test,
            size=size,
            lr=args.lr,
            batch_size=args.batch_size,
            loss=args.loss,
            threads=args.threads,
        )
    finally:
        torch.set_num_threads(threads_before)
    load = (load_start, os.getloadavg()[0])
    command = shlex.join(["python", "benchmarks/finetune.py", *argv])
    section = render(
        rows,
        infos,
        command,
        n_train=n_train,
        n_test=n_test,
        size=size,
        threads=args.threads,
        lr=args.lr,
        batch_size=args.batch_size,
        loss=args.loss,
        quick=args.quick,
        load=load,
    )
    print()
    print(section)
    if args.write:
        write_section("finetune", section)
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
