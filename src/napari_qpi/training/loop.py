"""The one training loop of napari-qpi: search, retraining, distillation and fine-tuning.

:func:`fit` runs a fixed number of optimiser steps over a stream of batches with a cosine (or
constant) learning rate, reports every step to *callbacks*, validates now and then, writes a
checkpoint it can resume from, and stops early when a callback asks or a time budget runs out.

Callbacks are plain objects with any subset of the methods of :class:`Callback` (a GUI widget, a
tqdm bar, a test recorder); a bare function is called as ``on_step``. Every method is optional.

Determinism: :func:`fit` seeds torch's global generator (gate noise and any dropout draw from it)
and restores its state on resume. With a data source that is a function of the step (see
:data:`BatchSource`), a run resumed from a checkpoint gives the same weights as an uninterrupted
one (on the same machine and thread count). ``torch.set_num_threads`` is left to the caller.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from ..errors import InputError, QPIError

Batch = Any
#: ``loss_fn(model, batch)``: a scalar loss, or a mapping with the total under ``"loss"`` and
#: other scalar parts (e.g. ``"phase"``, ``"sparsity"``) that are recorded in the history.
LossFn = Callable[[nn.Module, Batch], "Tensor | Mapping[str, Tensor]"]
#: Batches: an iterable (on resume, the batches already used are skipped by iterating over them),
#: or a function ``source(first_step)`` returning the batches from that step on (cheap resume).
BatchSource = Iterable[Batch] | Callable[[int], Iterable[Batch]]
Schedule = Literal["cosine", "constant"]

CHECKPOINT_VERSION = 1


class Callback(Protocol):
    """Events of :func:`fit`; implement any subset. Steps count completed optimiser steps."""

    def on_start(self, step: int, total: int) -> None:
        """Training starts (``step`` > 0 when resumed)."""

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        """Optimiser step ``step`` of ``total`` is done; ``loss`` is its training loss."""

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        """``val_fn`` returned ``metrics`` after step ``step``."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint of step ``step`` was written to ``path``."""

    def should_stop(self) -> bool:
        """True to stop after the current step (cancel); checked before every step."""

    def on_end(self, result: FitResult) -> None:
        """Training ended (finished, stopped or out of time)."""


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes
    ----------
    step
        Optimiser steps completed (counting those before a resume).
    total
        Steps asked for.
    status
        ``"finished"``, ``"stopped"`` (a callback asked) or ``"out_of_time"``.
    seconds
        Wall time of training, including time before a resume, excluding validation.
    history
        One row per step: ``{"step", "loss", "lr"}`` plus the loss parts, if any.
    validation
        One row per validation: ``{"step", **metrics}``.
    """

    step: int
    total: int
    status: str = "finished"
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)

    @property
    def last_loss(self) -> float:
        """Training loss of the last step (``nan`` before the first)."""
        return self.history[-1]["loss"] if self.history else math.nan

    def mean_loss(self, last: int = 50) -> float:
        """Mean training loss of the last ``last`` steps."""
        rows = self.history[-last:]
        return sum(row["loss"] for row in rows) / len(rows) if rows else math.nan

    def loss_curve(
        self, key: str = "loss", points: int = 50, digits: int | None = None
    ) -> list[list[float]]:
        """(step, mean of ``history[key]``) over about ``points`` equal windows of the run, the
        curve a model card records (rounded to ``digits`` if given)."""
        history = self.history
        window = max(1, math.ceil(len(history) / points))
        curve = []
        for i in range(0, len(history), window):
            rows = history[i : i + window]
            mean = sum(row[key] for row in rows) / len(rows)
            curve.append([rows[-1]["step"], mean if digits is None else round(mean, digits)])
        return curve


def learning_rate_factor(
    progress: float, schedule: Schedule = "cosine", warmup: float = 0.0, floor: float = 0.0
) -> float:
    """Multiplier of the base learning rate for the step that brings the run to ``progress``.

    ``progress`` in (0, 1] is the fraction of the run done after the step: a linear warm-up over
    the first ``warmup`` fraction, then a cosine decay from 1 to ``floor`` at the last step (or
    a constant 1).
    """
    if progress < warmup:
        return progress / warmup
    if schedule == "constant":
        return 1.0
    span = (progress - warmup) / max(1.0 - warmup, 1e-12)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(span, 0.0), 1.0)))


def _dispatch(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, event, None)
        if method is not None:
            method(*args)
        elif event == "on_step" and callable(callback):
            callback(*args)


def _stop_requested(callbacks: Sequence[Any]) -> bool:
    return any(getattr(c, "should_stop", None) is not None and c.should_stop() for c in callbacks)


def _batches_from(source: BatchSource, first_step: int) -> Iterator[Batch]:
    if callable(source):
        return iter(source(first_step))
    iterator = iter(source)
    for _ in range(first_step):
        next(iterator)
    return iterator


def _split_loss(output: Tensor | Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    if isinstance(output, Mapping):
        parts = {k: float(v.detach()) for k, v in output.items() if k != "loss"}
        return output["loss"], parts
    return output, {}


def work_files(checkpoint: str | os.PathLike) -> tuple[Path, Path, Path]:
    """A run's work files: its checkpoint, the description of the run (``<name>.json``: what run it
    is, so another run's checkpoint is never resumed) and its best weights so far
    (``<name>.best``)."""
    checkpoint = Path(checkpoint)
    return (
        checkpoint,
        checkpoint.with_name(checkpoint.name + ".json"),
        checkpoint.with_name(checkpoint.name + ".best"),
    )


def clear_work_files(*checkpoints: str | os.PathLike, prune: bool = False) -> None:
    """Remove the work files (:func:`work_files`) of finished runs; with ``prune``, then their
    folder if that leaves it empty."""
    for checkpoint in checkpoints:
        for path in work_files(checkpoint):
            path.unlink(missing_ok=True)
        folder = Path(checkpoint).parent
        if prune and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    result: FitResult,
) -> Path:
    """Write model, optimiser, step, RNG state and history to ``path`` (atomically).

    A checkpoint is a work file for resuming, written with :func:`torch.save` and read back with
    ``weights_only=True``; weights that ship are saved as safetensors elsewhere.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": result.step,
        "total": result.total,
        "seconds": result.seconds,
        "history": result.history,
        "validation": result.validation,
        "torch_rng": torch.get_rng_state(),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The state dictionary written by :func:`save_checkpoint` (no arbitrary unpickling)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise QPIError(
            f"cannot read the training checkpoint {path}: {error}; delete it to start afresh"
        ) from error
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise QPIError(f"{path} is not a napari-qpi training checkpoint; delete it or pick another")
    return state


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_batches: BatchSource,
    *,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    schedule: Schedule = "cosine",
    warmup: float = 0.02,
    min_lr_factor: float = 0.01,
    grad_clip: float | None = 1.0,
    val_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    val_every: int = 0,
    callbacks: Iterable[Any] = (),
    after_step: Callable[[nn.Module], None] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    time_budget_s: float | None = None,
    seed: int = 0,
) -> FitResult:
    """Train ``model`` for ``steps`` optimiser steps.

    Parameters
    ----------
    model
        Trained in place in ``train()`` mode (``eval()`` inside ``val_fn``); left in ``eval()``
        mode at the end.
    loss_fn
        ``loss_fn(model, batch)`` -> scalar tensor, or a mapping with ``"loss"`` (see
        :data:`LossFn`).
    train_batches
        Batch stream (see :data:`BatchSource`); must yield at least ``steps`` batches.
    steps
        Total optimiser steps, including any done before a resume.
    optimizer
        Defaults to :func:`default_optimizer` with ``lr`` and ``weight_decay``. The learning rate
        of every parameter group is its initial value times :func:`learning_rate_factor`, except
        in a group with ``"schedule": "constant"``, which keeps its initial rate throughout.
    schedule, warmup, min_lr_factor
        Cosine decay to ``min_lr_factor`` times the base rate (or constant) after a linear
        warm-up over the ``warmup`` fraction of the run.
    grad_clip
        Clip the global gradient norm to this value (``None``: no clipping).
    val_fn, val_every
        ``val_fn(model)`` -> metrics, run in eval mode under ``torch.no_grad`` every
        ``val_every`` steps and after the last step (``val_every=0``: only after the last). The
        global RNG state is restored after it, so validation does not change training.
    callbacks
        See :class:`Callback`.
    after_step
        ``after_step(model)`` after every optimiser step, e.g. clamping SparseMask gates.
    checkpoint_path, checkpoint_every, resume
        Write a checkpoint every ``checkpoint_every`` steps and when training ends; with
        ``resume`` an existing checkpoint at that path is loaded and training continues from its
        step.
    time_budget_s
        Wall-time budget in seconds. Progress for the learning-rate schedule is then the larger
        of the step and time fractions, so the rate anneals fully even when time runs out first
        (such runs are not bit-reproducible).
    seed
        Seeds torch's global generator at the start of a fresh run.

    Returns
    -------
    FitResult
    """
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    callbacks = list(callbacks)
    if optimizer is None:
        optimizer = default_optimizer(model, lr=lr, weight_decay=weight_decay)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])

    result = FitResult(step=0, total=steps)
    checkpoint = Path(checkpoint_path) if checkpoint_path is not None else None
    if checkpoint is not None and resume and checkpoint.exists():
        _resume(checkpoint, model, optimizer, result)
    else:
        torch.manual_seed(seed)

    model.train()
    _dispatch(callbacks, "on_start", result.step, steps)
    if result.step >= steps:
        result.status = "finished"
        _dispatch(callbacks, "on_end", result)
        return result
    batches = _batches_from(train_batches, result.step)
    start = time.perf_counter() - result.seconds
    result.status = "finished"
    while result.step < steps:
        if _stop_requested(callbacks):
            result.status = "stopped"
            break
        elapsed = time.perf_counter() - start
        if time_budget_s is not None and elapsed >= time_budget_s:
            result.status = "out_of_time"
            break
        progress = (result.step + 1) / steps
        if time_budget_s is not None:
            progress = max(progress, elapsed / time_budget_s)
        _set_learning_rate(
            optimizer, learning_rate_factor(progress, schedule, warmup, min_lr_factor)
        )
        batch = _next_batch(batches, result.step, steps)
        loss_value, parts = _step(model, loss_fn, batch, optimizer, grad_clip, result.step + 1)
        if after_step is not None:
            after_step(model)

        result.step += 1
        result.seconds = time.perf_counter() - start
        lr_now = optimizer.param_groups[0]["lr"]
        result.history.append({"step": result.step, "loss": loss_value, "lr": lr_now, **parts})
        _dispatch(callbacks, "on_step", result.step, steps, loss_value, lr_now)

        if val_fn is not None and val_every > 0 and result.step % val_every == 0:
            _validate(model, val_fn, result, callbacks)
            start = time.perf_counter() - result.seconds
        if checkpoint is not None and checkpoint_every > 0 and result.step % checkpoint_every == 0:
            _checkpoint(checkpoint, model, optimizer, result, callbacks)

    if val_fn is not None and result.status != "stopped" and not _validated_last(result):
        _validate(model, val_fn, result, callbacks)
    if checkpoint is not None:
        _checkpoint(checkpoint, model, optimizer, result, callbacks)
    model.eval()
    _dispatch(callbacks, "on_end", result)
    return result


def _set_learning_rate(optimizer: Any, factor: float) -> None:
    """Every group's rate: its initial rate times ``factor`` (groups marked ``"schedule":
    "constant"`` keep their initial rate)."""
    for group in optimizer.param_groups:
        constant = group.get("schedule") == "constant"
        group["lr"] = group["initial_lr"] * (1.0 if constant else factor)


def _next_batch(batches: Iterator[Any], done: int, steps: int) -> Any:
    try:
        return next(batches)
    except StopIteration:
        raise InputError(f"the training data ran out after {done} of {steps} steps") from None


def _validated_last(result: FitResult) -> bool:
    """Whether the last step trained has been validated."""
    return bool(result.validation) and result.validation[-1]["step"] == result.step


def _resume(checkpoint: Path, model: nn.Module, optimizer: Any, result: FitResult) -> None:
    """Load model, optimiser, RNG state and progress of a run from its checkpoint."""
    state = load_checkpoint(checkpoint)
    if int(state["total"]) != result.total:
        raise QPIError(
            f"the checkpoint {checkpoint} belongs to a run of {state['total']} steps, not "
            f"{result.total}: repeat that run's settings to resume it, or start afresh without "
            "resuming"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    result.step, result.seconds = int(state["step"]), float(state["seconds"])
    result.history, result.validation = list(state["history"]), list(state["validation"])


def _step(
    model: nn.Module,
    loss_fn: Callable[..., Any],
    batch: Any,
    optimizer: Any,
    grad_clip: float | None,
    step: int,
) -> tuple[float, dict[str, float]]:
    """One optimiser step; the loss and its named parts.

    Raises
    ------
    QPIError
        The loss is not finite (diverged).
    """
    optimizer.zero_grad(set_to_none=True)
    loss, parts = _split_loss(loss_fn(model, batch))
    loss_value = loss.detach().item()
    if not math.isfinite(loss_value):
        raise QPIError(
            f"the training loss became {loss_value} at step {step}; lower the "
            "learning rate or check the data"
        )
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss_value, parts


def _validate(
    model: nn.Module,
    val_fn: Callable[[nn.Module], Mapping[str, float]],
    result: FitResult,
    callbacks: Sequence[Any],
) -> None:
    rng = torch.get_rng_state()
    model.eval()
    try:
        with torch.no_grad():
            metrics = dict(val_fn(model))
    finally:
        model.train()
        torch.set_rng_state(rng)
    result.validation.append({"step": result.step, **metrics})
    _dispatch(callbacks, "on_validation", result.step, metrics)


def _checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    result: FitResult,
    callbacks: Sequence[Any],
) -> None:
    save_checkpoint(path, model, optimizer, result)
    _dispatch(callbacks, "on_checkpoint", result.step, path)


#: ``(selects(name, parameter), options)``: parameters a group of their own, e.g. mask phases at
#: their own learning rate (see :func:`default_optimizer`).
OwnGroup = tuple[Callable[[str, nn.Parameter], bool], Mapping[str, Any]]


def default_optimizer(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    own_groups: Sequence[OwnGroup] = (),
) -> torch.optim.AdamW:
    """AdamW, the optimiser of every training here (search, distillation, fine-tuning).

    Weight decay on trainable parameters of more than one dimension (convolution and linear
    weights), none on biases and norms. A parameter that one of ``own_groups`` selects goes to
    that group instead, without weight decay and with the group's ``options`` (e.g. ``{"lr":
    0.01, "schedule": "constant"}`` for SparseMask gates; weight decay would pull gates or mask
    phases towards 0, which means nothing). Groups: decay, no decay, then the own groups that
    hold a parameter, in order.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    own: list[list[nn.Parameter]] = [[] for _ in own_groups]
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        chosen = next(
            (i for i, (selects, _) in enumerate(own_groups) if selects(name, parameter)), None
        )
        if chosen is not None:
            own[chosen].append(parameter)
        else:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    for params, (_, options) in zip(own, own_groups, strict=True):
        if params:
            groups.append({"params": params, "weight_decay": 0.0, **options})
    return torch.optim.AdamW(groups, lr=lr)


class ProgressBar:
    """A tqdm progress bar as a :func:`fit` callback (loss and learning rate in the postfix)."""

    def __init__(self, description: str = "training", *, disable: bool = False) -> None:
        self.description = description
        self.disable = disable
        self._bar: Any = None

    def on_start(self, step: int, total: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total, initial=step, desc=self.description, unit="step", disable=self.disable
        )

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self._bar.update(step - self._bar.n)
        if step % 10 == 0 or step == total:
            self._bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2g}", refresh=False)

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        self._bar.write(f"step {step}: {shown}")

    def on_end(self, result: FitResult) -> None:
        self._bar.close()


class StopFlag:
    """A cancel button: ``flag.set()`` from any thread makes :func:`fit` stop after the step."""

    def __init__(self) -> None:
        self._stop = False

    def set(self) -> None:
        self._stop = True

    def should_stop(self) -> bool:
        return self._stop
