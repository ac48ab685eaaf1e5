"""Running a fine-tuning plan: work files, best weights, memory fallback, the card, saving."""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import ModelError, QPIError
from ...models.card import ModelCard, validate_name
from ...models.registry import (
    get_card,
    save_user_model,
    user_data_dir,
)
from ...nn import count_parameters
from ..data import pairs_from_arrays
from ..loop import FitResult, clear_work_files, fit, work_files
from .data import Arrays, BaseSpec, FinetunePlan, FinetuneSettings, OptionalArrays
from .plan import plan_finetune
from .validation import _cdp_batches, _loss_fn, _validation_fn

# Running ---------------------------------------------------------------------------------------


def default_checkpoint(name: str) -> Path:
    """Where the resumable checkpoint of the fine-tuning run of model ``name`` lives."""
    return user_data_dir() / "finetune" / f"{validate_name(name)}.pt"


def resumable(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    """The description of the stopped run whose checkpoint is at ``checkpoint``, if any."""
    if checkpoint is None:
        return None
    ckpt, description, _ = work_files(Path(checkpoint))
    if not (ckpt.exists() and description.exists()):
        return None
    try:
        return json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _BestWeights:
    """Keeps the weights of the best validation so far, in memory and beside the checkpoint."""

    def __init__(self, model: nn.Module, path: Path | None) -> None:
        self.model, self.path = model, path
        self.step: int | None = None
        self.metrics: dict[str, float] = {}
        self.state: dict[str, Tensor] | None = None
        self._dirty = False

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise QPIError(
                f"cannot read the best weights {self.path} of the run to resume ({error}); "
                "untick resume to start afresh"
            ) from error
        self.step, self.metrics, self.state = saved["step"], saved["metrics"], saved["state"]

    def consider(self, step: int, metrics: Mapping[str, float]) -> None:
        loss = metrics.get("val_loss", math.nan)
        if math.isnan(loss) or (self.state is not None and loss >= self.metrics["val_loss"]):
            return
        self.step, self.metrics = step, dict(metrics)
        self.state = {
            k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
        }
        self._dirty = True

    def save(self) -> None:
        if self.path is None or self.state is None or not self._dirty:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save({"step": self.step, "metrics": self.metrics, "state": self.state}, partial)
        os.replace(partial, self.path)
        self._dirty = False

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        self.consider(step, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.save()


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        phrase in text for phrase in ("out of memory", "can't allocate memory", "not enough memory")
    )


def _notify(callbacks: Sequence[Any], message: str) -> None:
    for callback in callbacks:
        method = getattr(callback, "on_notice", None)
        if method is not None:
            method(message)


def run_finetune(
    plan: FinetunePlan,
    *,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
) -> tuple[nn.Module, ModelCard]:
    """Train a planned run and return the best network and its ``"finetuned"`` card.

    Parameters
    ----------
    plan
        From :func:`plan_finetune`; its model is trained in place.
    callbacks
        :class:`~napari_qpi.training.loop.Callback` objects (or functions called on every step);
        an ``on_notice(message)`` method, if any, hears about batch-size fallbacks.
    checkpoint_path
        Resumable checkpoint; beside it ``<name>.json`` (what run it is) and ``<name>.best``
        (the best weights). Kept after the run: :func:`save_finetuned` removes them once a
        completed run is saved.
    resume
        Continue the run in ``checkpoint_path`` if there is one. It must be the same run (base
        model, settings and data), else :class:`QPIError` says so. ``False`` starts afresh
        (removing any old work files).

    Returns
    -------
    model, card
        The network (eval mode) with the best validation weights (the last ones without
        validation), and its card; ``card.training["status"]`` is ``"finished"``,
        ``"out_of_time"`` or ``"stopped"``.

    Raises
    ------
    QPIError
        Another run's checkpoint, a loss that diverged, or no memory even for one crop.
    """
    callbacks = list(callbacks)
    settings = plan.settings
    checkpoint = Path(checkpoint_path) if checkpoint_path is not None else None
    batch_size = _resumed_batch_size(checkpoint, plan, resume)
    best = _BestWeights(plan.model, None if checkpoint is None else work_files(checkpoint)[2])
    if resume:
        best.load()
    val_fn = _validation_fn(plan)
    base_score = _score_base(plan, val_fn, best, callbacks)
    callbacks = [*callbacks, _WorseThanBase(base_score, callbacks)] if base_score else callbacks
    initial = {k: v.detach().clone() for k, v in plan.model.state_dict().items()}
    while True:
        if checkpoint is not None:
            _write_description(checkpoint, plan, batch_size)
        try:
            result = fit(
                plan.model,
                _loss_fn(plan),
                _batch_source(plan, batch_size),
                steps=plan.total_steps,
                lr=settings.lr,
                weight_decay=settings.weight_decay,
                val_fn=val_fn,
                val_every=plan.val_every,
                callbacks=[best, *callbacks],
                checkpoint_path=checkpoint,
                checkpoint_every=settings.checkpoint_every,
                resume=resume,
                time_budget_s=None if settings.minutes is None else 60.0 * settings.minutes,
                seed=settings.seed,
            )
            break
        except Exception as error:
            if not _out_of_memory(error):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size == 1:
                raise QPIError(
                    f"not enough memory to train on even one crop of {plan.crop} px on "
                    f"{plan.device}: lower the crop size, close other programs, or train on "
                    "another device"
                ) from None
            batch_size //= 2
            _notify(
                callbacks,
                f"not enough memory for the batch: starting again with {batch_size} per batch",
            )
            if checkpoint is not None:
                clear_work_files(checkpoint)
            plan.model.load_state_dict(initial)
            best = _BestWeights(plan.model, best.path)
            if base_score:
                best.consider(0, base_score)
            resume = False
    _validate_last_step(plan, val_fn, result, best, callbacks)
    best.save()
    if best.state is not None:
        plan.model.load_state_dict(best.state)
    if base_score and best.step == 0:
        _notify(
            callbacks,
            f"no step beat the base model on the validation pairs ({_score_text(base_score)}): "
            f"the result keeps the weights of the base model {plan.base.name!r}",
        )
    plan.model.eval()
    card = _card(plan, result, best, batch_size)
    if base_score:
        card.training["base_validation"] = {k: round(v, 5) for k, v in base_score.items()}
        card.training["validation"].insert(0, {"step": 0, **card.training["base_validation"]})
        card.training["improved_on_base"] = best.step != 0
        if best.step == 0:
            card.training["weights"] = "the base model's (no step beat it on validation)"
    return plan.model, card


def _score_text(metrics: Mapping[str, float]) -> str:
    psnr = metrics.get("psnr_db")
    loss = f"loss {metrics.get('val_loss', math.nan):.4g}"
    return f"{psnr:.1f} dB, {loss}" if psnr is not None and math.isfinite(psnr) else loss


def _score_base(
    plan: FinetunePlan,
    val_fn: Callable[[nn.Module], dict[str, float]] | None,
    best: _BestWeights,
    callbacks: Sequence[Any],
) -> dict[str, float] | None:
    """The base model's validation score before any step (``plan.model`` still holds the base
    weights: a resumed checkpoint is loaded later, by ``fit``), told to callbacks with an
    ``on_base_score(metrics)`` method. The base weights are the first candidate for the best
    weights (step 0), so a run that never beats them returns them."""
    if val_fn is None:
        return None
    try:
        metrics = _validate_now(plan.model, val_fn)
    except Exception as error:
        if not _out_of_memory(error):
            raise
        _notify(callbacks, "not enough memory to score the base model on the validation pairs")
        return None
    best.consider(0, metrics)
    for callback in callbacks:
        method = getattr(callback, "on_base_score", None)
        if method is not None:
            method(metrics)
    return metrics


class _WorseThanBase:
    """Says once, in one line, when validation falls below the base model's score."""

    def __init__(self, base: Mapping[str, float], callbacks: Sequence[Any]) -> None:
        self.base, self.callbacks, self.said = dict(base), list(callbacks), False

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.said or step == 0:
            return
        if metrics.get("val_loss", -math.inf) > self.base["val_loss"]:
            self.said = True
            _notify(
                self.callbacks,
                f"validation at step {step} ({_score_text(metrics)}) is worse than the base "
                f"model's ({_score_text(self.base)}): the best weights are kept; a lower "
                "learning rate or more pairs may help",
            )


def _resumed_batch_size(checkpoint: Path | None, plan: FinetunePlan, resume: bool) -> int:
    """The batch size to train with: a resumed run's own (it may have fallen back to a smaller
    one); without resuming, the old work files are removed.

    Raises
    ------
    QPIError
        The checkpoint belongs to another run (base model, settings or data).
    """
    batch_size = plan.settings.batch_size
    if checkpoint is None:
        return batch_size
    previous = resumable(checkpoint)
    if resume and previous is not None:
        if previous.get("fingerprint") != plan.fingerprint:
            raise QPIError(
                f"the checkpoint {checkpoint} belongs to another fine-tuning run (other base "
                "model, settings or data): repeat that run's settings to resume it, or untick "
                "resume to start afresh"
            )
        return int(previous.get("batch_size", batch_size))
    clear_work_files(checkpoint)
    return batch_size


def _validate_last_step(
    plan: FinetunePlan,
    val_fn: Callable[[nn.Module], dict[str, float]] | None,
    result: FitResult,
    best: _BestWeights,
    callbacks: Sequence[Any],
) -> None:
    """Score the last step if the loop did not (a run stopped or out of time between
    validations), so the best weights are chosen among all the steps trained."""
    done = result.validation and result.validation[-1]["step"] == result.step
    if val_fn is None or result.step == 0 or done:
        return
    metrics = _validate_now(plan.model, val_fn)
    result.validation.append({"step": result.step, **metrics})
    best.consider(result.step, metrics)
    for callback in callbacks:
        method = getattr(callback, "on_validation", None)
        if method is not None:
            method(result.step, metrics)


def _validate_now(
    model: nn.Module, val_fn: Callable[[nn.Module], Mapping[str, float]]
) -> dict[str, float]:
    rng = torch.get_rng_state()
    model.eval()
    try:
        with torch.no_grad():
            return dict(val_fn(model))
    finally:
        torch.set_rng_state(rng)


def _batch_source(plan: FinetunePlan, batch_size: int) -> Callable[[int], Iterator[Any]]:
    if plan.modality == "cdp":
        return _cdp_batches(plan, batch_size)
    return pairs_from_arrays(
        [p.measurement for p in plan.train],
        [
            p.target if p.target is not None else np.zeros(p.measurement.shape, np.float32)
            for p in plan.train
        ],
        [p.ignore for p in plan.train],
        size=plan.crop,
        batch_size=batch_size,
        seed=plan.settings.seed,
        augment=plan.settings.augment,
    )


def _write_description(checkpoint: Path, plan: FinetunePlan, batch_size: int) -> None:
    description = work_files(checkpoint)[1]
    description.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "name": plan.settings.name,
        "base_model": plan.base.name,
        "fingerprint": plan.fingerprint,
        "batch_size": batch_size,
        "total_steps": plan.total_steps,
        "settings": plan.settings.to_dict(),
    }
    partial = description.with_name(description.name + ".partial")
    partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(partial, description)


def _card(plan: FinetunePlan, result: FitResult, best: _BestWeights, batch_size: int) -> ModelCard:
    settings, base = plan.settings, plan.base
    loss_name = (
        "measurement-consistency"
        if settings.self_supervised
        else (f"offset-free {settings.loss.upper()} phase")
    )
    training = {
        "recipe": (
            f"fine-tuned from {base.name!r} with napari_qpi.training.finetune: AdamW, cosine "
            f"learning rate with 2% warm-up, {loss_name} loss on "
            + (
                f"random {plan.crop}^2 crops"
                + (" with flips and 90-degree rotations" if settings.augment else "")
                if plan.modality == "hologram"
                else "whole measurements (masks frozen)"
            )
            + " of user data"
        ),
        "command": plan.command or "napari_qpi.training.finetune.finetune",
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "batch_size_used": batch_size,
        "base_model": {"name": base.name, "family": base.family, "sha256": base.sha256},
        "data": plan.summary,
        "steps": result.step,
        "total_steps": result.total,
        "status": result.status,
        "best_step": best.step,
        "weights": "best validation" if best.state is not None else "last step",
        "seconds": round(result.seconds, 1),
        "threads": torch.get_num_threads(),
        "device": str(plan.device),
        "loss_curve": result.loss_curve(points=100, digits=6),
        "validation": [
            {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
            for row in result.validation[-100:]
        ],
    }
    metrics: dict[str, dict[str, Any]] = {}
    if best.state is not None:
        metrics["finetune_validation"] = {
            **{k: round(v, 4) for k, v in best.metrics.items()},
            "step": best.step,
            "n": len(plan.validation),
            "command": (
                f"{training['command']}  # held-out {plan.summary['validation_split']} of the "
                f"user data ({', '.join(plan.summary['validation_sources'][:5])}), scored "
                "against the targets over the pixels not ignored"
            ),
        }
    description = settings.description or (
        f"{base.name} fine-tuned on {plan.summary['pairs']} user "
        f"{'measurement' if plan.modality == 'cdp' else 'hologram'}(s)"
        + (" without targets (measurement consistency)" if settings.self_supervised else "")
        + f"; {result.step} of {result.total} steps ({result.status})."
    )
    return ModelCard(
        name=settings.name,
        family="finetuned",
        modality=base.modality,
        architecture=_architecture(plan),
        normalisation=dict(base.normalisation),
        training=training,
        metrics=metrics,
        base_model=base.name,
        description=description,
        extra={
            **{k: v for k, v in base.extra.items() if k != "masks_file"},
            "parameters": count_parameters(plan.model),
        },
    )


def _architecture(plan: FinetunePlan) -> dict[str, Any]:
    """The base card's architecture; with ``front_end_order`` set, its front end as the model
    ran with it (the new classical background order)."""
    architecture = copy.deepcopy(plan.base.architecture)
    config = architecture.get("config")
    front_end = getattr(getattr(plan.model, "front_end", None), "config", None)
    if "front_end_order" in plan.summary and isinstance(config, dict) and front_end is not None:
        config["front_end"] = front_end.to_dict()
    return architecture


def finetune(
    base: BaseSpec,
    holograms: Arrays,
    targets: OptionalArrays = None,
    ignore: OptionalArrays = None,
    *,
    settings: FinetuneSettings,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    modality: str | None = None,
    names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    command: str = "",
    masks: np.ndarray | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Fine-tune ``base`` on user pairs: :func:`plan_finetune`, then :func:`run_finetune`.

    Parameters
    ----------
    base
        Registered model name, or a ``(module, card)`` pair (copied, not changed).
    holograms
        Measurements: holograms (H, W) / stacks, or CDP patterns (K, sH, sW) / stacks; one array
        or a list (e.g. one per layer).
    targets
        Target phases, one per measurement array (``None`` for self-supervised CDP runs).
    ignore
        Masks of pixels to ignore (nonzero), one for all or one per measurement array.
    settings
        :class:`FinetuneSettings` (the new model's name among them).
    callbacks, checkpoint_path, resume
        See :func:`run_finetune`.
    modality, names, device, command, masks
        See :func:`plan_finetune`.

    Returns
    -------
    model, card
        Not yet registered: see :func:`save_finetuned`.
    """
    plan = plan_finetune(
        base,
        holograms,
        targets,
        ignore,
        settings=settings,
        modality=modality,
        names=names,
        device=device,
        command=command,
        masks=masks,
    )
    return run_finetune(plan, callbacks=callbacks, checkpoint_path=checkpoint_path, resume=resume)


def check_new_name(
    name: str, *, checkpoint_path: str | os.PathLike | None = None, resume: bool = False
) -> bool:
    """Check that fine-tuning may save a model called ``name``; True if it replaces one.

    A free name passes. A user model of that name may only be replaced by resuming its own
    stopped run (its checkpoint at ``checkpoint_path``, with ``resume``); otherwise, and for
    shipped models always, :class:`ModelError` asks for another name. Nothing is overwritten
    silently.
    """
    validate_name(name)
    try:
        card = get_card(name)
    except ModelError as error:
        if "No model named" in str(error):
            return False
        raise
    if card.source == "shipped":
        raise ModelError(f"{name!r} is a model shipped with napari-qpi; choose another name")
    previous = resumable(checkpoint_path) if resume else None
    if previous is not None and previous.get("name") == name:
        return True
    raise ModelError(
        f"a model named {name!r} exists already; choose another name"
        + (
            ", or tick 'resume' to continue its stopped run"
            if resumable(checkpoint_path) is not None
            else " (or delete that model first)"
        )
    )


def save_finetuned(
    model: nn.Module,
    card: ModelCard,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Register a fine-tuned model as a user model; then tidy the run's work files.

    The checkpoint files are removed once a completed run is saved; a stopped run's stay, so it
    can be resumed (the resumed run replaces this model when it is saved).

    Raises
    ------
    ModelError
        The name is taken (without ``overwrite``); the work files are then kept, so nothing is
        lost: save again under another name after resuming the run.
    """
    folder = save_user_model(model, card, overwrite=overwrite)
    if checkpoint_path is not None and card.training.get("status") != "stopped":
        clear_work_files(checkpoint_path)
    return folder
