"""NAS-PRNet: SparseMask search of the PRNet decoder, retraining, baselines and model folders.

The pipeline of ``napari-qpi search``:

1. :func:`search` trains the gated PRNet supernet (every decoder connection multiplied by a noisy
   gate in [0, 2]) on synthetic holograms with ``phase loss + 0.01 * sparsity loss``, clamping the
   gates after every step, then prunes connections with keep probability below 0.001;
2. :func:`retrain` trains an ungated PRNet with that connectivity from scratch;
3. :func:`save_model_folder` writes ``model.safetensors`` (fp16) and ``card.json``.

:func:`train` trains any network (``napari-qpi train``: U-Net or the full supernet as baselines at
the same budget, or a given connectivity). Every run returns the model and a *record*: settings,
seed, steps, timings, connectivity, gate table and held-out metrics.

Whole fields, not crops (DESIGN pitfall): networks are retrained and scored on 256^2 fields, the
size of the held-out sets, and PRNet gets coordinate channels so it can tell where it is in the
field and remove a global aberration. Scores remove the background offset (phase is defined up
to a constant), see :mod:`.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..models.card import ModelCard, validate_name
from ..models.weights import save_model_folder as write_folder
from ..nn import build_network, clamp_gates_, count_parameters, gate_table, prune, sparsity_loss
from ..nn.sparsemask import PRUNE_THRESHOLD, gate_parameters
from .data import NORMALISATION, held_out_set, split_config, synthetic_batches
from .loop import FitResult, Schedule, default_optimizer, fit
from .losses import Reduction, phase_loss
from .metrics import evaluate, network_predictor
from .warm_start import warm_start, warm_start_encoder

#: Held-out splits scored at the end of every run.
SPLITS: tuple[str, ...] = ("standard", "hard", "transfer")
#: Size (px) of the held-out fields.
HELD_OUT_SIZE = 256
#: Fraction of ``napari-qpi search --minutes`` given to the search (the rest to retraining).
SEARCH_SHARE = 0.45
#: Seed offset of the validation images, kept apart from training and held-out seeds.
VALIDATION_SEED = 7_000_000


@dataclass
class TrainSettings:
    """How a network is trained; every field is a ``napari-qpi train`` flag.

    Attributes
    ----------
    family
        Network family of :func:`napari_qpi.nn.build_network`: ``"prnet"`` or ``"unet"``.
    network
        Config of the network (``PRNetConfig`` / ``UNetConfig`` fields).
    size
        Side of the square training fields, pixels (a multiple of the network's stride).
    batch_size
        Fields per step.
    steps
        Optimiser steps (the cosine schedule spans them).
    lr, weight_decay
        AdamW base learning rate and weight decay (convolution weights only).
    loss
        ``"mse"`` (default), ``"l1"`` or ``"log_mse"`` phase loss, offset-free; sign-free when
        the network is ``cells_positive``. With cells covering a small part of each field, L1
        keeps a network at the zero-phase answer within a CPU budget
        (``benchmarks/loss_ablation.py``). ``"log_mse"`` (the mean over fields of the log of each
        field's squared error: the held-out mean PSNR's own gradient) keeps a few large-phase
        fields (close-ups) from setting every step's direction (:func:`.losses.phase_loss`).
    seed
        Seeds weights, data and gate noise.
    minutes
        Optional wall-time budget; the learning rate anneals over the budget and training stops
        when it is spent.
    val_every, val_images
        Validate on ``val_images`` fixed synthetic fields of the training distribution
        (``data``) every ``val_every`` steps.
    eval_images
        Fields per held-out split scored at the end (0: skip).
    data
        Training distribution: ``"standard"``, or the ``"transfer"`` split's second microscope
        (the paper's test of a searched connectivity retrained on another system).
    init
        Name of a registered model (or a model folder) of the same architecture to start from
        (a warm start that continues its training), or ``None`` to start from random weights.
    close_up
        Fraction of close-up batches (``DataConfig.close_up``) instead of the one of ``data``
        (0.3 for ``"large-cells"``), or ``None``.
    init_encoder
        Name of a registered PRNet whose *encoder* a PRNet starts from (same width and input
        channels; the decoder and head start from random weights): a searched connectivity
        retrained on an encoder that has already learnt the features, as the paper retrains on
        an encoder pretrained on ImageNet.
    """

    family: str = "prnet"
    network: dict[str, Any] = field(
        default_factory=lambda: {"width": 0.5, "coord_channels": True, "cells_positive": False}
    )
    size: int = 256
    batch_size: int = 8
    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: Reduction = "mse"
    seed: int = 0
    minutes: float | None = None
    val_every: int = 250
    val_images: int = 4
    eval_images: int = 16
    data: str = "standard"
    init: str | None = None
    init_encoder: str | None = None
    close_up: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)


@dataclass
class SearchSettings(TrainSettings):
    """Settings of the SparseMask search (adds to :class:`TrainSettings`).

    Attributes
    ----------
    sparsity_weight
        Weight of the sparsity loss (0.01 in SparseMask).
    gate_lr
        Learning rate of the gates (no weight decay), higher than the weights' so the gates
        settle within a short CPU search.
    threshold
        Connections with keep probability below this are pruned.
    max_inputs
        Keep at most this many inputs per decoder stage, the strongest
        (:func:`~napari_qpi.nn.sparsemask.prune`); ``None`` keeps every input above the
        threshold.
    gate_warmup_steps
        Steps during which the gates stay at their initial value (keep probability 1/2) and
        only the network weights train. Under Adam a gate moves by about ``gate_lr`` per step
        whatever its gradient, so without a warm-up the gates settle in a few hundred steps,
        before the decoder has learned what a shallow connection could give it.
    gate_schedule
        ``"cosine"``: the gates' learning rate anneals with the weights'; ``"constant"``: it stays
        at ``gate_lr``, so gates released late by a warm-up keep the rate to move. (Measured: many
        then settle between 0 and 1 where phase and sparsity losses balance; ``max_inputs`` is
        what makes such a table sparse, docs/searched_models.md.)
    """

    size: int = 128
    steps: int = 2000
    sparsity_weight: float = 0.01
    gate_lr: float = 1e-2
    threshold: float = PRUNE_THRESHOLD
    max_inputs: int | None = None
    gate_warmup_steps: int = 0
    gate_schedule: Schedule = "cosine"


class GateWarmup:
    """Training callback that holds the SparseMask gates of ``model`` fixed for ``steps`` steps.

    The gates are excluded from the gradient (``requires_grad=False``: the optimiser skips
    them) until step ``steps``; a resumed run picks up the right state from its start step.
    """

    def __init__(self, model: nn.Module, steps: int) -> None:
        self.parameters = list(gate_parameters(model))
        self.steps = steps

    def _set(self, step: int) -> None:
        for parameter in self.parameters:
            parameter.requires_grad_(step >= self.steps)

    def on_start(self, step: int, total: int) -> None:
        self._set(step)

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self._set(step)

    def on_end(self, result: Any) -> None:
        self._set(self.steps)


@dataclass
class TrainOutcome:
    """A trained network and the record of how it was made and how it scores."""

    model: nn.Module
    record: dict[str, Any]


def _phase_loss_fn(
    kind: Reduction, sparsity_weight: float = 0.0, sign_free: bool = False
) -> Callable[[nn.Module, Sequence[torch.Tensor]], Any]:
    """``loss_fn(model, (x, y[, ignore]))``: phase loss, plus the weighted sparsity loss if any.

    ``sign_free`` for networks that choose their own sign convention (``cells_positive``).
    """

    def loss_fn(model: nn.Module, batch: Sequence[torch.Tensor]) -> Any:
        x, y, *rest = batch
        ignore = rest[0] if rest else None
        phase = phase_loss(model(x), y, ignore, kind=kind, sign_free=sign_free)
        if not sparsity_weight:
            return phase
        sparsity = sparsity_loss(model)
        return {"loss": phase + sparsity_weight * sparsity, "phase": phase, "sparsity": sparsity}

    return loss_fn


def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    """:func:`~.loop.default_optimizer` with the SparseMask gates at ``gate_lr``."""
    gate_ids = {id(p) for p in gate_parameters(model)}
    gates = {
        "lr": getattr(settings, "gate_lr", settings.lr),
        "schedule": getattr(settings, "gate_schedule", "cosine"),
    }
    return default_optimizer(
        model,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        own_groups=[(lambda name, parameter: id(parameter) in gate_ids, gates)],
    )


def _validation_fn(settings: TrainSettings) -> Callable[[nn.Module], dict[str, float]] | None:
    """Scores on ``settings.val_images`` fixed fields of the training distribution (``data``).

    The fields come from the same split as the training data (a run on the second microscope is
    validated on the second microscope), with a seed kept apart from training and held-out seeds.
    """
    if settings.val_images <= 0:
        return None
    val_set = held_out_set(
        settings.data, n=settings.val_images, size=settings.size, seed=VALIDATION_SEED
    )

    def val_fn(model: nn.Module) -> dict[str, float]:
        scores = evaluate(network_predictor(model), val_set)
        return {"psnr_db": scores["psnr_db"], "rmse_rad": scores["rmse_rad"]}

    return val_fn


def held_out_metrics(
    model: nn.Module, n: int, splits: Iterable[str] = SPLITS, size: int = HELD_OUT_SIZE
) -> dict[str, dict[str, float]]:
    """Scores of a network on the first ``n`` fields of each held-out split (:mod:`.metrics`)."""
    model.eval()
    predict = network_predictor(model)
    return {split: evaluate(predict, held_out_set(split, n=n, size=size)) for split in splits}


def _run(
    model: nn.Module,
    settings: TrainSettings,
    *,
    sparsity_weight: float = 0.0,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
) -> tuple[FitResult, dict[str, Any]]:
    """Train ``model`` with ``settings`` on synthetic data; return the fit result and record."""
    data = replace(split_config(settings.data, settings.size), batch_size=settings.batch_size)
    if settings.close_up is not None:
        data = replace(data, close_up=settings.close_up)
    result = fit(
        model,
        _phase_loss_fn(
            settings.loss, sparsity_weight, bool(settings.network.get("cells_positive"))
        ),
        synthetic_batches(data, seed=settings.seed),
        steps=settings.steps,
        optimizer=_optimizer(model, settings),
        val_fn=_validation_fn(settings),
        val_every=settings.val_every,
        callbacks=callbacks,
        after_step=clamp_gates_ if sparsity_weight else None,
        checkpoint_path=checkpoint_path,
        resume=resume,
        time_budget_s=None if settings.minutes is None else 60.0 * settings.minutes,
        seed=settings.seed,
    )
    images = result.step * settings.batch_size
    start = time.perf_counter()
    metrics = held_out_metrics(model, settings.eval_images) if settings.eval_images > 0 else {}
    record = {
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "data": data.to_dict(),
        "normalisation": dict(NORMALISATION),
        "steps": result.step,
        "status": result.status,
        "parameters": count_parameters(model),
        "timings": {
            "train_s": round(result.seconds, 2),
            "images_per_s": round(images / result.seconds, 2) if result.seconds else None,
            "evaluate_s": round(time.perf_counter() - start, 2),
            "threads": torch.get_num_threads(),
        },
        "loss_curve": result.loss_curve(),
        "phase_loss_curve": result.loss_curve("phase") if sparsity_weight else None,
        "validation": result.validation,
        "validation_split": settings.data if settings.val_images > 0 else None,
        "metrics": metrics,
    }
    return result, record


def search(
    settings: SearchSettings | None = None,
    *,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
) -> TrainOutcome:
    """Search a decoder connectivity with SparseMask.

    Trains the gated supernet (``PRNetConfig(gated=True)`` with ``settings.network``) with
    ``phase loss + settings.sparsity_weight * sparsity loss`` and prunes it.

    Returns
    -------
    TrainOutcome
        The trained gated supernet and its record, which holds ``"connectivity"`` (the pruned
        ``{stage: [inputs]}``) and ``"gate_table"`` (keep probability of every connection).
    """
    settings = settings or SearchSettings()
    if settings.family != "prnet":
        raise InputError(f"the search runs on PRNet only, got family {settings.family!r}")
    torch.manual_seed(settings.seed)
    config = {**settings.network, "gated": True, "connectivity": None}
    model = build_network("prnet", config)
    if settings.gate_warmup_steps > 0:
        callbacks = [GateWarmup(model, settings.gate_warmup_steps), *callbacks]
    _, record = _run(
        model,
        settings,
        sparsity_weight=settings.sparsity_weight,
        callbacks=callbacks,
        checkpoint_path=checkpoint_path,
        resume=resume,
    )
    table = gate_table(model)
    connectivity = prune(table, settings.threshold, settings.max_inputs)
    record |= {
        "kind": "search",
        "network": {"family": "prnet", "config": model.config.to_dict()},
        "connectivity": connectivity,
        "connections_kept": sum(len(v) for v in connectivity.values()),
        "connections_total": sum(len(v) for v in table.values()),
        "gate_table": {s: {k: round(p, 5) for k, p in row.items()} for s, row in table.items()},
    }
    return TrainOutcome(model, record)


def train(
    family: str = "prnet",
    settings: TrainSettings | None = None,
    *,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
) -> TrainOutcome:
    """Train a network of ``family`` with ``settings.network`` from scratch (no gates).

    ``"prnet"`` without a connectivity is the full (ungated) supernet; ``"unet"`` the U-Net
    baseline. Give both the same ``steps`` / ``minutes`` for a comparison at equal budget.
    """
    settings = replace(settings or TrainSettings(), family=family)
    torch.manual_seed(settings.seed)
    config = dict(settings.network)
    if family == "prnet":
        config["gated"] = False
    model = build_network(family, config)
    if settings.init and settings.init_encoder:
        raise InputError("give --init (the whole network) or --init-encoder, not both")
    start = warm_start(model, family, settings.init) if settings.init else None
    if settings.init_encoder:
        start = warm_start_encoder(model, family, settings.init_encoder)
    _, record = _run(
        model, settings, callbacks=callbacks, checkpoint_path=checkpoint_path, resume=resume
    )
    record |= {
        "kind": "train",
        "network": {"family": family, "config": model.config.to_dict()},
        "init": start,
    }
    if family == "prnet":
        record["connectivity"] = model.connectivity
    return TrainOutcome(model, record)


def retrain(
    connectivity: Mapping[str, Sequence[str]],
    settings: TrainSettings | None = None,
    **kwargs: Any,
) -> TrainOutcome:
    """Train the searched PRNet, ungated with ``connectivity``, from scratch (see :func:`train`)."""
    settings = settings or TrainSettings()
    network = {**settings.network, "connectivity": {k: list(v) for k, v in connectivity.items()}}
    return train("prnet", replace(settings, network=network), **kwargs)


def model_card(
    name: str,
    family: str,
    outcome: TrainOutcome,
    *,
    command: str,
    description: str = "",
    search_record: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The card of a trained network (weights entry filled in by :func:`save_model_folder`).

    Parameters
    ----------
    name
        Model name (also the folder name).
    family
        ``"searched"``, ``"baseline"`` or ``"supernet"``.
    outcome
        From :func:`train`, :func:`retrain` or :func:`search`.
    command
        The exact command line that trained (and scored) the model.
    search_record
        The record of the search that gave a searched model's connectivity.
    """
    record = outcome.record
    network = record["network"]
    recipe = {
        key: record[key]
        for key in ("settings", "seed", "steps", "status", "timings", "data", "loss_curve")
    }
    if record.get("init"):
        recipe["init"] = record["init"]
    recipe["command"] = command
    recipe["recipe"] = (
        "AdamW, cosine learning rate with 2% warm-up, offset-free phase loss on synthetic "
        "off-axis holograms (napari_qpi.training.data)"
    )
    if search_record is not None:
        recipe["search"] = {
            key: search_record[key]
            for key in (
                "settings",
                "steps",
                "status",
                "timings",
                "phase_loss_curve",
                "gate_table",
                "connectivity",
                "command",
            )
            if key in search_record
        }
    metrics = {
        split: {
            **scores,
            "command": f"{command}  # held-out evaluation at the end of training: "
            f"napari_qpi.training.metrics.evaluate on held_out_set({split!r}, n={scores['n']}, "
            f"size={HELD_OUT_SIZE})",
        }
        for split, scores in record["metrics"].items()
    }
    return ModelCard(
        name=validate_name(name),
        family=family,
        modality="hologram",
        architecture={"network": network["family"], "config": network["config"]},
        normalisation=dict(NORMALISATION),
        training=recipe,
        metrics=metrics,
        description=description,
        extra={"parameters": record["parameters"], **_training_range(recipe)},
    )


def _training_range(recipe: dict[str, Any]) -> dict[str, Any]:
    """``{"training_range": ...}`` from the run's data settings (what the card states the model
    saw, :mod:`napari_qpi.retrieval.model_range`), or nothing without them."""
    from ..retrieval.model_range import range_of_data

    found = range_of_data(
        recipe.get("data"),
        "training.data of this card (napari_qpi.training.data.DataConfig of the run that made "
        "the weights)",
    )
    return {} if found is None else {"training_range": found.to_dict()}


def save_model_folder(
    folder: str | Path, model: nn.Module, card: ModelCard, *, overwrite: bool = False
) -> Path:
    """Write ``model.safetensors`` (fp16) and ``card.json`` into ``folder``, atomically.

    The card's ``weights`` entry gets the file name, dtype and sha256 of the file written
    (:func:`napari_qpi.models.weights.save_model_folder`).

    Raises
    ------
    ModelError
        The folder already holds a model (without ``overwrite``), or a weight is not finite in
        float16.
    """
    return write_folder(folder, model, card, overwrite=overwrite)[0]


__all__ = [
    "SPLITS",
    "SearchSettings",
    "TrainOutcome",
    "TrainSettings",
    "held_out_metrics",
    "model_card",
    "retrain",
    "save_model_folder",
    "search",
    "train",
]
