"""Searched networks (NAS-PRNet) against the U-Net baseline and the classical method.

    python benchmarks/searched_models.py                 # n=16, 256^2 to 1024^2; prints only
    python benchmarks/searched_models.py --write         # ... and updates docs/benchmarks.md
    python benchmarks/searched_models.py --quick         # smoke run: n=2, 256^2, 1 repeat
    python benchmarks/searched_models.py --transfer-model FOLDER   # + row (b) of the transfer table

Methods: every registered hologram model (``napari_qpi.models.list_models("hologram")``, or the
names / model folders given with ``--models``), run with ``retrieve_deep`` on the whole field (no
tiling, no background fit); and the classical method (``retrieve_offaxis``, default settings)
twice: finding the sideband in the hologram as the networks must, and with the carrier taken from
the acquisition metadata that a user's file may carry.

1. Accuracy on the first ``n`` fields (256^2) of each seeded held-out split of
   ``napari_qpi.training.data.held_out_set`` (standard, hard, transfer), scored per image by
   ``napari_qpi.training.metrics.image_metrics`` (the median of prediction - truth over the true
   background removed; PSNR with data range = truth max - min of that image, SSIM with the same
   range, RMSE in radians over the field and inside cells) and averaged over the images. A method
   that raises on a field (e.g. no sideband found) is scored as returning zero phase there, and
   the failures are counted.
2. Parameters, and CPU latency of the networks' forward pass on a (1, 1, s, s) input at
   s = 256, 512, 1024 (``torch.inference_mode``, ``--threads`` threads, median of repeats;
   each round runs every method in turn, twice, timing the second run), including an
   untrained U-Net with 64 base channels (the paper's baseline size), and of the whole
   classical pipeline on a synthetic hologram of the same size.
3. Transfer: the searched model on the transfer split as is, and, if given, the model folder of
   ``--transfer-model``: any hologram model trained for the transfer system, e.g. the searched
   connectivity retrained there with
   ``napari-qpi train --family prnet --connectivity <card.json> --data transfer``. None is shipped:
   ``prnet-searched-transfer`` (that retraining, without a front end) was dropped because the
   front-end ``prnet-searched`` scores level with it there (32.38 vs 32.41 dB) and it failed every
   real HL60 hologram; its folder can be scored again from the git history
   (docs/searched_models.md).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _docs import DOCS, machine, write_section
from napari_qpi.acquisition import Acquisition
from napari_qpi.errors import ModelError, QPIError
from napari_qpi.models import CARD_FILE, ModelCard, list_models, load_model
from napari_qpi.models.weights import load_model_folder
from napari_qpi.nn import build_network, count_parameters
from napari_qpi.nn.inference import for_inference
from napari_qpi.retrieval import retrieve_offaxis
from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.retrieval.model_range import range_of_data
from napari_qpi.retrieval.offaxis import OffAxisSettings
from napari_qpi.training.data import (
    HeldOutSet,
    held_out_set,
    normalise_hologram,
    split_config,
    synthetic_field,
)
from napari_qpi.training.metrics import image_metrics, summarise

ROOT = Path(__file__).resolve().parents[1]
SPLITS: tuple[str, ...] = ("standard", "hard", "transfer")
FIELD_SIZE = 256
LATENCY_SEED = 424_242
CLASSICAL = "classical"
CLASSICAL_CARRIER = "classical, carrier known"
CLASSICAL_ORDER3 = "classical, background order 3"
#: The background order of :data:`CLASSICAL_ORDER3`: the simulator draws coma (a third-order
#: aberration) that the default order 2 leaves in the phase.
ORDER3 = 3
ZERO = "zero phase (ignores the data)"
UNET64 = "U-Net(64), untrained"

Predict = Callable[[np.ndarray, Acquisition], np.ndarray]
Scores = dict[str, float]


@dataclass
class Network:
    """A network under test and where it came from (``card`` is None for an untrained one).

    ``module`` is made faster for inference on creation, as
    :func:`~napari_qpi.models.load_model` makes the models it serves
    (:func:`~napari_qpi.nn.inference.for_inference`: batch norms folded into the convolutions,
    the same output); ``parameters`` counts the network as trained, before the folding.
    """

    name: str
    module: nn.Module
    card: ModelCard | None
    origin: str
    parameters: int = field(init=False)

    def __post_init__(self) -> None:
        self.parameters = count_parameters(self.module)
        self.module = for_inference(self.module)

    @property
    def family(self) -> str:
        """The card's family (``"searched"``, ``"baseline"``, ...)."""
        return self.card.family if self.card is not None else "baseline"

    def predict(self, hologram: np.ndarray, acquisition: Acquisition) -> np.ndarray:
        """Phase (rad) of one raw hologram, whole field, as a user gets it; no metadata used."""
        if self.card is None:
            raise ModelError(f"{self.name} has no model card and is timed only")
        return retrieve_deep(
            hologram, model=(self.module, self.card), device="cpu", tile=None
        ).phase


@dataclass
class Results:
    """Everything one run measured; :func:`render` turns it into markdown."""

    networks: list[Network]
    transfer_model: Network | None
    accuracy: dict[str, dict[str, Scores]]
    transfer_accuracy: Scores | None
    latency_ms: dict[str, dict[int, float]]
    sizes: tuple[int, ...]
    repeats: dict[int, int]
    n: int
    threads: int
    seconds: float
    load_average: float
    thread_check: float
    real: dict[str, list[dict[str, float]]]
    real_cases: list[str]


def resolve_networks(specs: Sequence[str] | None, exclude: Sequence[str] = ()) -> list[Network]:
    """Registered hologram models by name, or model folders by path.

    By default every registered hologram model whose name is not in ``exclude``.
    """
    if not specs:
        specs = [card.name for card in list_models("hologram") if card.name not in exclude]
    networks = []
    for spec in specs:
        if (Path(spec) / CARD_FILE).is_file() or spec.endswith(CARD_FILE):
            module, card = load_model_folder(spec)
            networks.append(Network(card.name, module, card, f"folder {spec}"))
        else:
            module, card = load_model(spec, device="cpu", cached=False)
            networks.append(Network(card.name, module, card, f"{card.source} model"))
    return networks


def classical(
    hologram: np.ndarray,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> np.ndarray:
    """The classical off-axis method, default ``settings`` unless given; the carrier from
    ``acquisition`` if any."""
    return retrieve_offaxis(hologram, acquisition=acquisition, settings=settings).phase


def classical_methods() -> dict[str, Predict]:
    """The classical method finding the sideband itself, with the carrier known, and finding
    the sideband with a third-order background (what the front ends of the shipped networks
    fit)."""
    order3 = OffAxisSettings(background_order=ORDER3)
    return {
        CLASSICAL: lambda hologram, _: classical(hologram),
        CLASSICAL_CARRIER: classical,
        CLASSICAL_ORDER3: lambda hologram, _: classical(hologram, settings=order3),
    }


def score(predict: Predict, held_out: HeldOutSet) -> Scores:
    """Mean scores of ``predict`` over a held-out set and the number of fields it failed on."""
    rows, failed = [], 0
    for hologram, truth, labels, acquisition in zip(
        held_out.holograms, held_out.phases, held_out.labels, held_out.acquisitions, strict=True
    ):
        try:
            phase = predict(hologram, acquisition)
        except QPIError:
            phase, failed = np.zeros_like(truth), failed + 1
        rows.append(image_metrics(phase, truth, labels))
    return summarise(rows) | {"failed": failed}


def first_of(networks: Sequence[Network], family: str, network: str) -> Network | None:
    """The first network of a card family built by a given ``napari_qpi.nn`` family."""
    return next(
        (
            net
            for net in networks
            if net.card is not None and net.family == family and net.card.network == network
        ),
        None,
    )


#: Done-means of issue 18 on the real HL60 corpus: correlation in the cell, contrast, background.
REAL_MIN_CORRELATION = 0.95
REAL_SLOPE = (0.8, 1.2)
REAL_MAX_BACKGROUND_RMS = 0.2


def real_agreement(predict: Predict) -> tuple[list[str], list[dict[str, float]]]:
    """Agreement with the peers' reference phase on every case of the real HL60 corpus
    (``benchmarks/real_holograms.py``: correlation and slope inside the cell, background RMS
    outside it after removing its median); the hologram only, as a user without metadata has it.
    A method that raises scores correlation 0 on that case."""
    import real_holograms as corpus

    cases, _ = corpus.load_corpus()
    references = corpus.load_references()
    rows = []
    for case in cases:
        hologram, _ = corpus.raw_planes(case)
        reference = references[case.reference]
        try:
            phase = predict(np.asarray(hologram, dtype=np.float32), Acquisition())
            rows.append(corpus.agreement(phase, reference))
        except QPIError:
            rows.append({"correlation": 0.0, "slope": 0.0, "background_rms_rad": math.inf})
    return [case.name for case in cases], rows


def real_verdict(rows: Sequence[dict[str, float]]) -> bool:
    """Every case within the thresholds above."""
    return all(
        row["correlation"] >= REAL_MIN_CORRELATION
        and REAL_SLOPE[0] <= row["slope"] <= REAL_SLOPE[1]
        and row["background_rms_rad"] <= REAL_MAX_BACKGROUND_RMS
        for row in rows
    )


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls, each right after an untimed
    one (:func:`interleaved_median_ms` with one call)."""
    return interleaved_median_ms({"fn": fn}, repeats)["fn"]


def interleaved_median_ms(
    calls: Mapping[str, Callable[[], object]], repeats: int
) -> dict[str, float]:
    """Median wall time (ms) of each call over ``repeats`` rounds.

    Each round runs every call in turn, twice, and times the second run: a change in the
    machine's load during the minutes a benchmark takes slows every method alike, so their
    ratios hold (timed one method after another, the U-Net(64) took 510 ms at 256^2 in one run
    and 757 in the next), and no method is timed cold just after another one freed gigabytes
    (the U-Net(64) at 1024^2: the searched network took 316 ms warm, 417-453 timed right after
    it).
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def forward_call(module: nn.Module, size: int) -> Callable[[], torch.Tensor]:
    """One forward pass on the normalised standard-split hologram of ``size``^2 that
    :func:`classical_call` runs (a network with an off-axis front end demodulates it, finds
    its sideband and, if residual, runs the classical unwrapping inside the forward: end to end)."""
    field = synthetic_field(split_config("standard", size), (LATENCY_SEED, size))
    x = torch.from_numpy(normalise_hologram(field.hologram))[None, None]
    channels = int(getattr(getattr(module, "config", None), "in_channels", 1))
    x = x.expand(1, channels, size, size).contiguous()
    module.eval()

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return forward


def thread_check(threads: int) -> float:
    """Time of a 3x3 convolution on ``threads`` threads over its time on one thread.

    About 1 / ``threads`` on an idle machine; far above 1 when other processes hold the cores
    (threads then wait on each other), which inflates every latency measured meanwhile.
    """
    conv = nn.Conv2d(32, 32, 3, padding=1).eval()
    x = torch.randn(1, 32, 128, 128, generator=torch.Generator().manual_seed(0))

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return conv(x)

    torch.set_num_threads(1)
    one = median_ms(forward, 9)
    torch.set_num_threads(threads)
    return median_ms(forward, 9) / one


def classical_call(predict: Predict, size: int) -> Callable[[], object]:
    """A classical method on the standard-split hologram of ``size``^2 (array in, phase out)."""
    field = synthetic_field(split_config("standard", size), (LATENCY_SEED, size))
    acquisition = field.system.acquisition()
    return lambda: predict(field.hologram, acquisition)


def run(
    n: int,
    sizes: Sequence[int],
    repeats: dict[int, int],
    *,
    models: Sequence[str] | None = None,
    transfer_model: str | None = None,
    threads: int = 2,
    log: Callable[[str], None] = print,
) -> Results:
    """Measure accuracy, latency and transfer (see the module docstring)."""
    start = time.perf_counter()
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    torch.set_num_threads(threads)
    retrained = None
    if transfer_model:
        module, card = load_model_folder(transfer_model)
        retrained = Network(card.name, module, card, f"folder {transfer_model}")
    networks = resolve_networks(models, exclude=[retrained.name] if retrained else [])
    held_out = {split: held_out_set(split, n=n, size=FIELD_SIZE) for split in SPLITS}
    methods = (
        {ZERO: lambda hologram, _: np.zeros(hologram.shape, np.float32)}
        | classical_methods()
        | {net.name: net.predict for net in networks}
    )
    accuracy: dict[str, dict[str, Scores]] = {}
    for name, predict in methods.items():
        accuracy[name] = {split: score(predict, held_out[split]) for split in SPLITS}
        psnrs = ", ".join(f"{s} {accuracy[name][s]['psnr_db']:.2f} dB" for s in SPLITS)
        log(f"accuracy {name}: {psnrs}")
    real: dict[str, list[dict[str, float]]] = {}
    real_cases: list[str] = []
    for name, predict in methods.items():
        if name not in (ZERO, CLASSICAL_CARRIER):  # the corpus carries no carrier metadata
            real_cases, real[name] = real_agreement(predict)
            log(f"real {name}: " + ", ".join(f"{r['correlation']:.3f}" for r in real[name]))
    transfer_accuracy = None
    if retrained is not None:
        transfer_accuracy = score(retrained.predict, held_out["transfer"])
        log(f"accuracy {retrained.name}: transfer {transfer_accuracy['psnr_db']:.2f} dB")
    unet64 = Network(UNET64, build_network("unet", {"base_channels": 64}), None, "-")
    contention = [thread_check(threads) if threads > 1 else math.nan]
    latency: dict[str, dict[int, float]] = {}
    for size in sizes:  # every method timed in turn, round after round (ratios hold)
        calls = {name: classical_call(p, size) for name, p in classical_methods().items()}
        calls |= {net.name: forward_call(net.module, size) for net in [*networks, unet64]}
        for name, ms in interleaved_median_ms(calls, repeats[size]).items():
            latency.setdefault(name, {})[size] = ms
        log(f"latency {size}^2: " + ", ".join(f"{n} {latency[n][size]:.0f} ms" for n in calls))
    if threads > 1:
        contention.append(thread_check(threads))
        log(f"thread check: {contention[0]:.2f} before, {contention[1]:.2f} after the timings")
    return Results(
        networks=[*networks, unet64],
        transfer_model=retrained,
        accuracy=accuracy,
        transfer_accuracy=transfer_accuracy,
        latency_ms=latency,
        sizes=tuple(sizes),
        repeats=dict(repeats),
        n=n,
        threads=threads,
        seconds=time.perf_counter() - start,
        load_average=load_average,
        thread_check=max(contention),
        real=real,
        real_cases=real_cases,
    )


def plural(count: int, noun: str) -> str:
    """``"1 stage"``, ``"2 stages"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def architecture(net: Network) -> str:
    """Short description of a network's architecture."""
    config = net.card.config if net.card is not None else {}
    if net.card is None or net.card.network == "unet":
        base, depth = config.get("base_channels", 64), config.get("depth", 4)
        return f"U-Net, {base} base channels, depth {depth}"
    connectivity = getattr(net.module, "connectivity", {})
    connections = sum(len(inputs) for inputs in connectivity.values())
    coords = ", coordinate channels" if config.get("coord_channels") else ""
    return (
        f"PRNet, MobileNet-v2 x{config.get('width', 1.0):g}, "
        f"{plural(len(connectivity), 'decoder stage')}, {plural(connections, 'connection')}{coords}"
    )


def training(card: ModelCard | None) -> str:
    """Training budget and data from a card's training record."""
    if card is None:
        return "untrained (latency only)"
    record = card.training
    parts = []
    if "steps" in record:
        parts.append(f"{record['steps']} steps")
    train_s = (record.get("timings") or {}).get("train_s")
    if train_s:
        parts.append(f"{train_s / 60:.0f} min")
    span = range_of_data(record.get("data"), "the card")  # close-up batches included
    if span is not None:
        low, high = span.fringe_period_px
        parts.append(f"carrier {low:g}-{high:g} px")
    return ", ".join(parts) or "-"


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def scores_cells(scores: Scores) -> str:
    """PSNR, SSIM, RMSE, RMSE in cells and failures as markdown cells."""
    return (
        f"{_number(scores['psnr_db'], 2)} | {_number(scores['ssim'], 3)} "
        f"| {_number(scores['rmse_rad'], 3)} | {_number(scores['rmse_cells_rad'], 3)} "
        f"| {scores['failed']:.0f} of {scores['n']:.0f}"
    )


SCORE_HEADER = "PSNR (dB) | SSIM | RMSE (rad) | RMSE in cells (rad) | failed"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def shared_cpu_note(results: Results) -> str:
    """What :func:`thread_check` says about the latencies (nothing for one thread)."""
    if not math.isfinite(results.thread_check):
        return ""
    note = (
        f" Check of a shared CPU: a 3x3 convolution took {results.thread_check:.2f} times as "
        f"long on {results.threads} threads as on one (worst of before and after the timings; "
        f"about {1 / results.threads:.1f} on an idle machine)"
    )
    if results.thread_check < 1:
        return note + "."
    return (
        note + ": **other processes held the cores during this run; the latencies are inflated "
        "and not representative**."
    )


def render_real(results: Results) -> list[str]:
    """The real-corpus table: per method and case, correlation / slope / background RMS."""
    lo, hi = REAL_SLOPE
    lines = [
        "",
        "### Real holograms (HL60 corpus)",
        "",
        f"The {len(results.real_cases)} cases of `tests/data/real_holograms` (real HL60 "
        "holograms from the qpretrieve, qpimage and qpformat sdists; "
        "`benchmarks/real_holograms.py`), hologram only (no background hologram, no metadata), "
        "networks on the whole field. Per case: Pearson correlation inside the cell with the "
        "peers' reference phase / contrast (slope of ours against it) / background RMS (rad) "
        f"outside the cell after removing its median. *meets*: every case at correlation >= "
        f"{REAL_MIN_CORRELATION}, slope {lo}-{hi} and background RMS <= "
        f"{REAL_MAX_BACKGROUND_RMS} rad.",
        "",
        "| method | " + " | ".join(results.real_cases) + " | meets |",
        "|---|" + "---|" * (len(results.real_cases) + 1),
    ]
    for name, rows in results.real.items():
        cells = (
            f"{r['correlation']:.3f} / {r['slope']:.2f} / {r['background_rms_rad']:.2f}"
            for r in rows
        )
        verdict = "yes" if real_verdict(rows) else "no"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    return lines


def render_transfer(results: Results, searched: Network | None) -> list[str]:
    """The transfer table: the searched model as is, and the model of ``--transfer-model``."""
    retrained = results.transfer_model is not None and results.transfer_accuracy is not None
    lines = [
        "",
        "### Transfer to a second system",
        "",
        f"Transfer split, first {results.n} fields, scored as above. (a) the searched model as is"
        + (
            "; (b) a model trained on the transfer system (e.g. `napari-qpi train --family prnet "
            "--connectivity <searched card.json> --data transfer`), read from the model folder "
            "given with `--transfer-model`."
            if retrained
            else " (no model trained on the transfer system was given: `--transfer-model`)."
        ),
        "",
        f"| method | training | {SCORE_HEADER} |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | - | {scores_cells(results.accuracy[name]['transfer'])} |"
            for name in (ZERO, *classical_methods())
        ),
    ]
    if searched is not None:
        lines.append(
            f"| (a) {searched.name}, as is | {training(searched.card)} "
            f"| {scores_cells(results.accuracy[searched.name]['transfer'])} |"
        )
    else:
        lines.append("| (a) searched model, as is | not run: no searched model | | | | | |")
    if retrained:
        lines.append(
            f"| (b) {results.transfer_model.name}, retrained on the transfer system "
            f"| {training(results.transfer_model.card)} "
            f"| {scores_cells(results.transfer_accuracy)} |"
        )
    return lines


def render(results: Results, command: str, quick: bool) -> str:
    """The markdown section of docs/benchmarks.md."""
    trained = [net for net in results.networks if net.card is not None]
    params = {net.name: f"{net.parameters / 1e6:.2f} M" for net in results.networks}
    families = {net.name: net.family for net in results.networks}
    for name in classical_methods():
        params[name], families[name] = "-", "classical"
    params[ZERO], families[ZERO] = "-", "reference"
    searched = first_of(trained, "searched", "prnet")
    unet = first_of(trained, "baseline", "unet")
    today = datetime.date.today().isoformat()
    lines = [
        "## Searched networks (`benchmarks/searched_models.py`)",
        "",
        f"Run {today}{' (quick)' if quick else ''} on {machine()}; torch {torch.__version__} "
        f"({results.threads} threads), numpy {np.__version__}, Python "
        f"{platform.python_version()}; 1-min load average {results.load_average:.1f} at the "
        f"start, {results.seconds:.0f} s in all. Command: `{command}`",
        "",
        "| method | family | architecture | parameters | training | from |",
        "|---|---|---|---|---|---|",
        f"| {CLASSICAL} | classical | `retrieve_offaxis`, default settings, sideband found in the "
        "hologram | - | - | - |",
        f"| {CLASSICAL_CARRIER} | classical | the same, carrier from the acquisition metadata "
        "| - | - | - |",
        f"| {CLASSICAL_ORDER3} | classical | the same as {CLASSICAL} with a polynomial "
        f"background of order {ORDER3} (coma too; the default is 2) | - | - | - |",
        *(
            f"| {net.name} | {net.family} | {architecture(net)} | {params[net.name]} "
            f"| {training(net.card)} | {net.origin} |"
            for net in results.networks
        ),
        "",
        "### Accuracy",
        "",
        f"First {results.n} fields ({FIELD_SIZE}^2) of each seeded held-out split "
        "(`napari_qpi.training.data.held_out_set`; *standard*: the training distribution; "
        "*hard*: strong aberrations, low SNR and fringe contrast, steep cells; *transfer*: a "
        "second system, carrier period 6-8 px within 20 deg of the x axis, smaller pixels). "
        "Networks: `retrieve_deep` on the whole field, hologram only, no background fit. "
        "Scores per image after removing the median of prediction - truth over the true "
        "background (`napari_qpi.training.metrics.image_metrics`, the same for every method), "
        "then averaged over the fields. **PSNR data range = truth max - min of each image**; "
        "SSIM (scikit-image) with the same range; RMSE in radians over the whole field and "
        "inside cells. *failed*: fields where the method raised an error (scored as zero phase). "
        f"*{ZERO}*: returns 0 everywhere; cells cover a small part of each field, so it scores "
        "about 20 dB PSNR and a high SSIM on a flat background: the floor every method must "
        "clear.",
    ]
    for split in SPLITS:
        lines += [
            "",
            f"*{split.capitalize()} split*",
            "",
            f"| method | family | parameters | {SCORE_HEADER} |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {families[name]} | {params[name]} | {scores_cells(scores[split])} |"
                for name, scores in results.accuracy.items()
            ),
        ]
    lines += render_real(results)
    repeats = ", ".join(f"{results.repeats[s]} at {s}^2" for s in results.sizes)
    lines += [
        "",
        "### Latency",
        "",
        f"CPU, {results.threads} threads, median over repeats ({repeats}); each round runs "
        "every method in turn, twice, and times the second run, so a change of the machine's "
        "load slows all alike and none is timed cold. "
        "Networks: forward pass of the normalised s x s synthetic hologram under "
        "`torch.inference_mode` (normalisation not included; a front end's sideband search, "
        "demodulation and classical unwrapping are inside the forward); classical: the whole "
        "pipeline on the same hologram, array in, phase out." + shared_cpu_note(results),
        "",
        "| method | parameters | " + " | ".join(f"{s}^2 (ms)" for s in results.sizes) + " |",
        "|---|---|" + "---|" * len(results.sizes),
        *(
            f"| {name} | {params[name]} | "
            + " | ".join(_ms(times[s]) for s in results.sizes)
            + " |"
            for name, times in results.latency_ms.items()
        ),
        "",
        "| latency ratio | " + " | ".join(f"{s}^2" for s in results.sizes) + " |",
        "|---|" + "---|" * len(results.sizes),
    ]
    for baseline in [UNET64] + ([unet.name] if unet is not None else []):
        if searched is None:
            lines.append(f"| {baseline} / searched | not run: no searched model |")
            continue
        ratios = (
            results.latency_ms[baseline][s] / results.latency_ms[searched.name][s]
            for s in results.sizes
        )
        lines.append(
            f"| {baseline} / {searched.name} | " + " | ".join(f"{r:.1f}x" for r in ratios) + " |"
        )
    lines += render_transfer(results, searched)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="fields per held-out split (default 16, quick 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n=2, 256^2, 1 repeat")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--models", nargs="+", help="model names or folders (default: every hologram model)"
    )
    parser.add_argument(
        "--transfer-model",
        help="model folder of a network trained on the transfer system, scored on the transfer "
        "split beside the searched model (row (b) of the transfer table); none is shipped",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    n = args.n or (2 if args.quick else 16)
    sizes = (256,) if args.quick else (256, 512, 1024)
    repeats = {256: 1} if args.quick else {256: 9, 512: 5, 1024: 3}
    threads_before = torch.get_num_threads()
    try:
        results = run(
            n,
            sizes,
            repeats,
            models=args.models,
            transfer_model=args.transfer_model,
            threads=args.threads,
        )
    finally:
        torch.set_num_threads(threads_before)
    command = shlex.join(["python", "benchmarks/searched_models.py", *argv])
    section = render(results, command, args.quick)
    print()
    print(section)
    if args.write:
        write_section("searched_models", section)
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
