"""*Train* / *Stop* of the Fine-tune widget: progress with an ETA, the last validation, and Stop
that still saves the best weights; and the warm-up of the first training run's imports.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from napari.utils.notifications import show_warning

from ..training.finetune import FinetuneEvent
from ..training.loop import StopFlag
from .task import TaskControls, warm_up_once

#: Set once the one-off imports of the first training run are done (see :func:`warm_up`).
WARMED_UP = threading.Event()


def warm_up() -> threading.Event:
    """Import what the first optimiser step needs, once per process, in a background thread.

    Creating the first torch optimiser imports ``torch._dynamo`` (seconds, and some of it holds
    the GIL for a few hundred ms at a time). Doing it while the user fills in the widget keeps
    the first *Train* click from stalling the event loop.
    """

    def work() -> None:
        import torch._dynamo  # noqa: F401

    return warm_up_once("qpi-warm-up", WARMED_UP, work)


class FinetuneControls(TaskControls):
    """Train / Stop, progress with ETA and status; Stop ends training and still saves."""

    def __init__(self, make_job: Any, on_result: Any, on_event: Any) -> None:
        super().__init__(make_job, on_result, run_text="Train")
        self.cancel_button.text = "Stop"
        self.stop_flag: StopFlag | None = None
        self._on_event = on_event
        self._total = 1
        self._first_step = 0
        self._last_validation = ""
        self.result_message = ""
        self.budget_s: float | None = None
        self.expected_total = 1

    def cancel(self) -> None:
        """Stop after the current step; the best weights so far are saved as the model."""
        if self.stop_flag is not None and self.running:
            self.stop_flag.set()
            self.cancel_button.enabled = False
            self.status.value = "stopping after this step; saving the best weights so far..."

    def _on_progress(self, event: FinetuneEvent) -> None:
        if event.kind == "start":
            self._total, self._first_step = max(event.total, 1), event.step
            self.expected_total = self._total
            self.progress.max, self.progress.value = self._total, event.step
            self._last_validation = ""
        elif event.kind == "step":
            left = self._seconds_left(event)
            if left is not None:
                rate = (event.step - self._first_step) / event.elapsed_s
                self.expected_total = min(self._total, event.step + math.ceil(left * rate))
                self.progress.max = max(self.expected_total, 1)
            self.progress.value = min(event.step, self.progress.max)
            if not (self.stop_flag is not None and self.stop_flag.should_stop()):
                self.status.value = self._status(event, left)
        elif event.kind == "validation":
            loss = event.metrics.get("val_loss", math.nan)
            psnr = event.metrics.get("psnr_db")
            self._last_validation = f" · val {loss:.4g}" + (
                f" ({psnr:.1f} dB)" if psnr is not None and math.isfinite(psnr) else ""
            )
        elif event.kind == "notice":
            show_warning(event.message)
        elif event.kind == "saving":
            self.status.value = event.message + "..."
        self._on_event(event)

    def _seconds_left(self, event: FinetuneEvent) -> float | None:
        """Estimated training time left: by the step rate, capped by the time limit."""
        done = event.step - self._first_step
        if done <= 0 or event.elapsed_s <= 0:
            return None
        left = (self._total - event.step) * event.elapsed_s / done
        if self.budget_s is not None:
            left = min(left, max(self.budget_s - event.elapsed_s, 0.0))
        return left

    def _status(self, event: FinetuneEvent, left: float | None) -> str:
        eta = "" if left is None else f" · {_duration(left)} left"
        done = f"step {event.step} / {self.expected_total}"
        return f"{done} · loss {event.loss:.4g}{self._last_validation}{eta}"

    def _on_returned(self, result: Any) -> None:
        self.result_message = ""
        super()._on_returned(result)
        if self.status.value == "done" and self.result_message:
            self.status.value = self.result_message

    def _on_aborted(self) -> None:
        self.status.value = "stopped"


def _duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
