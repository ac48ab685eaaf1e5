"""Fine-tuning in a background thread for a GUI: events on a queue (:func:`iter_finetune`)."""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...errors import QPIError
from ...models.card import ModelCard
from ...models.registry import (
    get_card,
)
from ..loop import StopFlag, load_checkpoint
from .data import FinetunePlan
from .run import check_new_name, resumable, run_finetune, save_finetuned


@dataclass
class FinetuneEvent:
    """Progress of a run in the background, for a GUI (see :func:`iter_finetune`).

    ``kind`` is ``"start"``, ``"step"``, ``"validation"``, ``"notice"`` (e.g. a smaller batch after
    running out of memory) or ``"saving"``; ``elapsed_s`` counts training time in this session.
    ``"history"`` replays a resumed run's earlier steps (``loss``) and validations (``metrics``)
    before it continues, so a loss plot survives the resume.
    """

    kind: Literal["start", "step", "validation", "notice", "saving", "history"]
    step: int = 0
    total: int = 0
    loss: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    elapsed_s: float = 0.0


@dataclass
class FinetuneOutcome:
    """A saved fine-tuned model: its card (as registered), folder and how the run ended."""

    card: ModelCard
    folder: Path
    status: str
    steps: int
    total: int


# Background runs (GUI) -------------------------------------------------------------------------


class _Forward:
    """Fit callback that puts :class:`FinetuneEvent` objects on a queue."""

    def __init__(self, events: queue.Queue, stop: StopFlag) -> None:
        self.events, self.stop = events, stop
        self.started = time.perf_counter()

    def on_start(self, step: int, total: int) -> None:
        self.started = time.perf_counter()
        self.events.put(FinetuneEvent("start", step, total))

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self.events.put(
            FinetuneEvent("step", step, total, loss, elapsed_s=time.perf_counter() - self.started)
        )

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        self.events.put(FinetuneEvent("validation", step, metrics=dict(metrics)))

    def on_notice(self, message: str) -> None:
        self.events.put(FinetuneEvent("notice", message=message))

    def on_base_score(self, metrics: Mapping[str, float]) -> None:
        """The base model's validation score, shown as the validation of step 0."""
        self.events.put(FinetuneEvent("validation", 0, metrics=dict(metrics)))

    def should_stop(self) -> bool:
        return self.stop.should_stop()


def _history(
    plan: FinetunePlan, checkpoint_path: str | os.PathLike | None, resume: bool
) -> list[FinetuneEvent]:
    """The earlier steps and validations of the run ``plan`` resumes, as ``"history"`` events."""
    previous = resumable(checkpoint_path) if resume and checkpoint_path is not None else None
    path = None if checkpoint_path is None else Path(checkpoint_path)
    if previous is None or previous.get("fingerprint") != plan.fingerprint or not path.exists():
        return []
    try:
        state = load_checkpoint(path)
    except QPIError:
        return []  # the run itself will say what is wrong with the checkpoint
    events = [
        FinetuneEvent("history", int(row["step"]), loss=float(row["loss"]))
        for row in state.get("history", [])
    ]
    events += [
        FinetuneEvent(
            "history",
            int(row["step"]),
            metrics={k: float(v) for k, v in row.items() if k != "step"},
        )
        for row in state.get("validation", [])
    ]
    return events


def iter_finetune(
    plan: FinetunePlan,
    *,
    stop: StopFlag,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    overwrite: bool = False,
    poll_s: float = 0.05,
) -> Generator[FinetuneEvent, None, FinetuneOutcome]:
    """Train and save in a background thread, yielding its events; returns the outcome.

    For a GUI worker: the generator itself only waits on a queue. ``stop.set()`` ends training
    after the current step, and the best weights so far are still saved (status ``"stopped"``).
    Closing the generator early also stops the thread.
    """
    events: queue.Queue[FinetuneEvent] = queue.Queue()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            for event in _history(plan, checkpoint_path, resume):
                events.put(event)
            model, card = run_finetune(
                plan,
                callbacks=[_Forward(events, stop)],
                checkpoint_path=checkpoint_path,
                resume=resume,
            )
            events.put(FinetuneEvent("saving", message=f"saving model {card.name!r}"))
            replace = overwrite or check_new_name(
                card.name, checkpoint_path=checkpoint_path, resume=resume
            )
            folder = save_finetuned(model, card, checkpoint_path=checkpoint_path, overwrite=replace)
            box["outcome"] = FinetuneOutcome(
                get_card(card.name),
                folder,
                card.training["status"],
                card.training["steps"],
                card.training["total_steps"],
            )
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=work, name=f"finetune-{plan.settings.name}", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not events.empty():
            try:
                yield events.get(timeout=poll_s)
            except queue.Empty:
                continue
    finally:
        if thread.is_alive():
            stop.set()
            thread.join(timeout=30)
    if "error" in box:
        raise box["error"]
    return box["outcome"]
