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
Bases whose front end computes the classical phase (the residual ``prnet-searched`` and ``unet``)
are fine-tuned with its background order set to ``--front-end-order`` (default 4, the order this
microscope's spherical aberration needs, what ``napari-qpi finetune --classical-order 4 --targets
classical`` does; ``base`` keeps the shipped order, 3), and are also scored untrained with it.
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
import copy
import datetime
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from napari_qpi.training.finetune import (
    FinetuneSettings,
    plan_finetune,
    run_finetune,
    set_front_end_order,
    uses_classical_phase,
)
from napari_qpi.training.metrics import image_metrics, network_predictor, summarise

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED, TEST_SEED = 5_550_001, 5_550_002

Predict = Callable[[np.ndarray, Acquisition], np.ndarray]
#: Mean scores over the fields, ``psnr_sd`` (their standard deviation) and ``psnr_fields`` (the
#: PSNR of each field, dB, an array: for paired comparisons).
Scores = dict[str, Any]

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
    psnr = np.array([row["psnr_db"] for row in rows])
    return summarise(rows) | {"failed": failed, "psnr_sd": float(psnr.std()), "psnr_fields": psnr}


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
    front_end_order: int | None = None,
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
        order = front_end_order if uses_classical_phase(module) else None
        if order is not None:
            rows += reordered_rows(base, module, card, order, test)
            infos[base]["psnr_reordered_db"] = rows[-2].scores["psnr_db"]
        for kind in target_kinds:
            rows += finetune_rows(
                base, module, card, kind, minutes, train, test,
                lr=lr, batch_size=batch_size, loss=loss, size=size, front_end_order=order,
            )  # fmt: skip
    return rows, infos


def reordered_rows(
    base: str, module: nn.Module, card: ModelCard, order: int, test: HeldOutSet
) -> list[Row]:
    """The base model, untrained, with its front end's classical background order set to
    ``order`` (what fine-tuning with ``front_end_order`` starts from); as is and with a fit."""
    model = copy.deepcopy(module)
    set_front_end_order(model, card, order)
    name = f"{base} (before), front-end background order {order}, no training"
    rows = [
        Row(name, "-", 0.0, score(network(model, card), test), base),
        Row(
            f"{name}, {BACKGROUND_ORDER}th-order background fit",
            "-",
            0.0,
            score(network(model, card, BACKGROUND_ORDER), test),
            base,
        ),
    ]
    print(f"{base} with front-end order {order}: {rows[0].scores['psnr_db']:.2f} dB", flush=True)
    return rows


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
    front_end_order: int | None = None,
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
            front_end_order=front_end_order,
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
    front_end_order: int | None = None,
) -> str:
    """Markdown section for ``docs/benchmarks.md``."""
    today = datetime.date.today().isoformat()
    bases = ", ".join(
        f"`{b}` ({info['parameters'] / 1e6:.2f} M parameters)" for b, info in infos.items()
    )
    order = (
        "the base models' own classical background order in their front end"
        if front_end_order is None
        else f"the front end's classical background order set to {front_end_order} "
        "(`FinetuneSettings.front_end_order`, `napari-qpi finetune --front-end-order`; the rows "
        f"'front-end background order {front_end_order}, no training' are the untrained base "
        "with it, what each run starts from and is validated against at step 0)"
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
        f"rotations, cosine schedule over the run, {order}; each budget is a separate run from "
        "the base model. Budget: wall time of the training steps (the Fine-tune widget's time "
        "limit; validation not counted); CPU-s is the process's CPU time in those steps (all "
        f"threads). Load average of the machine: {load[0]:.1f} at the start, {load[1]:.1f} at "
        f"the end (other jobs share these {os.cpu_count()} cores when it is above about "
        f"{threads}). Scores: median background offset removed, PSNR data range = truth max - "
        "min per image, mean and standard deviation (sd) over the fields; networks on the whole "
        "field, as they are and with the tuned classical method's "
        f"{BACKGROUND_ORDER}th-order background fit on their output (rows so marked).",
        "",
        "| method | targets | budget (min) | training (min) | CPU-s | steps | fields seen "
        "| PSNR (dB) | sd (dB) | vs before (dB) | SSIM | RMSE (rad) | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(row, infos) for row in rows]
    lines.append("")
    for base in infos:
        sentence = summary_sentence(base, rows, infos)
        if sentence:
            lines += [sentence, ""]
    return "\n".join(lines).rstrip()


def table_row(row: Row, infos: dict[str, dict[str, float]]) -> str:
    """One line of the markdown table."""
    s = row.scores
    before = None if row.base is None else infos[row.base]["psnr_before_db"]
    delta = "-" if before is None else f"{s['psnr_db'] - before:+.2f}"
    return (
        f"| {row.method} | {row.targets} | "
        f"{'-' if not row.minutes else f'{row.minutes:g}'} | "
        f"{'-' if row.seconds is None else f'{row.seconds / 60:.2f}'} | "
        f"{'-' if row.cpu_seconds is None else f'{row.cpu_seconds:.0f}'} | "
        f"{'-' if row.steps is None else row.steps} | "
        f"{'-' if row.images is None else row.images} | {s['psnr_db']:.2f} | "
        f"{s['psnr_sd']:.2f} | {delta} | {s['ssim']:.3f} | {s['rmse_rad']:.3f} | "
        f"{int(s['failed'])} |"
    )


def summary_sentence(base: str, rows: list[Row], infos: dict[str, dict[str, float]]) -> str:
    """The goals for one base after its longest true-phase run: the gain over the base model
    as shipped (+6 dB), the margin to the better classical variant (>= 0, mean and per field),
    and what the training added to the untrained base with the front end's order set."""
    tuned = [
        r
        for r in rows
        if r.base == base
        and r.targets == "true phase"
        and "background" not in r.method
        and r.steps is not None
    ]
    if not tuned:
        return ""
    last = max(tuned, key=lambda r: r.minutes or 0)
    classical = max((r for r in rows if r.method.startswith("classical")), key=psnr_of)
    gain = last.scores["psnr_db"] - infos[base]["psnr_before_db"]
    margin = last.scores["psnr_db"] - classical.scores["psnr_db"]
    paired = last.scores["psnr_fields"] - classical.scores["psnr_fields"]
    sentence = (
        f"`{base}`: after {last.minutes:g} minutes on true-phase annotations it gains "
        f"{gain:+.1f} dB over the base model (goal: +6 dB: "
        f"{'met' if gain >= 6 else 'not met'}) and is {margin:+.2f} dB from the better "
        f"classical variant (goal: >= 0: {'met' if margin >= 0 else 'not met'}); field by "
        f"field {np.median(paired):+.2f} dB median ({paired.min():+.1f} to {paired.max():+.1f}), "
        f"at or above it on {int((paired >= 0).sum())} of {paired.size} fields."
    )
    reordered = infos[base].get("psnr_reordered_db")
    if reordered is not None:
        sentence += (
            f" The untrained base with the front end's order set scores {reordered:.1f} dB: "
            f"the training itself adds {last.scores['psnr_db'] - reordered:+.2f} dB"
            + (
                f" (best validation at step {last.best_step})."
                if last.best_step is not None
                else "."
            )
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
            f"({fitted[0].scores['psnr_db'] - classical.scores['psnr_db']:+.1f} dB from that "
            "variant)."
        )
    return sentence


def psnr_of(row: Row) -> float:
    """The row's mean PSNR, dB."""
    return float(row.scores["psnr_db"])


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
    parser.add_argument(
        "--front-end-order",
        default=str(BACKGROUND_ORDER),
        choices=("base", *map(str, range(6))),
        help="background order of the classical phase in the front end of the bases that "
        "compute one, while fine-tuning (FinetuneSettings.front_end_order; default "
        f"{BACKGROUND_ORDER}, the tuned classical method's; 'base': the base model's own)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run, seconds")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    minutes = args.minutes or ([0.05] if args.quick else [1.0, 2.0, 5.0])
    n_train = args.train or (4 if args.quick else 16)
    n_test = args.test or (2 if args.quick else 16)
    size = 128 if args.quick and args.size == 256 else args.size
    front_end_order = None if args.front_end_order == "base" else int(args.front_end_order)
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
            front_end_order=front_end_order,
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
        front_end_order=front_end_order,
    )
    print()
    print(section)
    if args.write:
        write_section("finetune", section)
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
