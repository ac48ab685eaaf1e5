"""A 10 ms heartbeat on the GUI thread: how long the event loop could not run (shared by tests).

:class:`Heartbeat` ticks every 10 ms on the GUI thread; the longest gap between two ticks is the
longest time the event loop could not run. Each tick also reads the GUI thread's own CPU time,
so a gap the GUI thread spent working is told apart from one where other processes had the CPU
(the test machine is shared). With ``QPI_GAP_PROFILE=1`` in the environment, the GUI thread's
Python stack is also sampled every 2 ms and :meth:`Heartbeat.max_gaps_ms` prints the stacks seen
during the longest CPU gap (what to move off the GUI thread; a diagnosis aid, not for figures).
"""

from __future__ import annotations

import collections
import gc
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: The issue's bound on any GUI-thread gap (ms of the GUI thread's CPU time between two ticks).
GAP_MS = 200


class _StackSampler:
    """Samples the GUI (main) thread's Python stack every ``interval_s`` of wall time.

    A SIGALRM handler records the interrupted frame: it runs in the main thread itself (Python
    runs signal handlers there), so no frame, and no Qt object a frame holds, is ever touched or
    freed by another thread. Work in one long C++ call is seen when it returns to Python.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._previous: Any = None
        self.collections: list[tuple[float, float, int]] = []  # (start, stop, generation)
        self._collecting: float | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Python's garbage collections (no Python frame shows them in the stacks)."""
        if phase == "start":
            self._collecting = time.perf_counter()
        elif self._collecting is not None:
            self.collections.append((self._collecting, time.perf_counter(), info["generation"]))
            self._collecting = None

    def _sample(self, _signum: int, frame: Any) -> None:
        stack = []
        while frame is not None and len(stack) < 60:
            code = frame.f_code
            stack.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
            frame = frame.f_back
        self.samples.append((time.perf_counter(), tuple(reversed(stack))))

    def start(self) -> None:
        self._previous = signal.signal(signal.SIGALRM, self._sample)
        signal.setitimer(signal.ITIMER_REAL, self.interval_s, self.interval_s)
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def report(self, start: float, stop: float, top: int = 40) -> str:
        """The frames most often on the stack between ``start`` and ``stop`` (perf_counter s),
        with how many samples (2 ms each) had them."""
        stacks = [s for t, s in self.samples if start <= t <= stop]
        lines = [f"  {len(stacks)} stack samples in the longest CPU gap; frames in most:"]
        inclusive = collections.Counter(frame for stack in stacks for frame in set(stack))
        lines += [f"    {count:4d}  {frame}" for frame, count in inclusive.most_common(top)]
        lines += [
            f"  garbage collection of generation {generation}: {1e3 * (end - begin):.0f} ms"
            for begin, end, generation in self.collections
            if begin <= stop and end >= start
        ]
        return "\n".join(lines)


class Heartbeat:
    """A 10 ms timer on the GUI thread (see the module); ``probe()``, if given, is sampled at
    every tick (``seen``): a tick that sees work half done proves the loop ran during it."""

    def __init__(self, probe: Callable[[], Any] | None = None) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[tuple[float, float]] = []
        self.seen: list[Any] = []
        self._probe = probe
        self.sampler: _StackSampler | None = None
        if os.environ.get("QPI_GAP_PROFILE"):
            self.sampler = _StackSampler()
            self.sampler.start()
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        # a first tick now: work done before the timer's first timeout (the action itself, or
        # signals already queued, handled in the next turn) is a gap like any other
        self._tick()

    def _tick(self) -> None:
        self.ticks.append((time.perf_counter(), time.thread_time()))
        if self._probe is not None:
            self.seen.append(self._probe())

    def stop(self) -> list[Any]:
        """Stop ticking; what ``probe`` saw."""
        self.timer.stop()
        if self.sampler is not None:
            self.sampler.stop()
        return self.seen

    def max_gaps_ms(self) -> tuple[float, float]:
        """Stop; the longest gap between ticks (wall clock) and the most CPU time the GUI thread
        spent between two ticks, in ms."""
        self.stop()
        assert len(self.ticks) > 3, "the timer never ran"
        ticks = np.array(self.ticks)
        wall, cpu = np.diff(ticks, axis=0).T
        if self.sampler is not None:
            worst = int(cpu.argmax())
            top = int(os.environ.get("QPI_GAP_TOP", "40"))
            print(self.sampler.report(ticks[worst, 0], ticks[worst + 1, 0], top=top))
        return 1e3 * float(wall.max()), 1e3 * float(cpu.max())


def warm_ups_done(qtbot: Any, *done: Any) -> None:
    """Wait for the warm-up events ``done`` and then for the full garbage collection each warm-up
    asks of the GUI thread at its end (``gc_pin``: queued to the GUI thread just after its event is
    set; 0.4-0.9 s wall clock on the shared machine). A click before that collection ran had it
    in one of its turns: the first fill's longest turn was 352-474 ms of CPU time in 5 of 12 runs,
    one collection of generation 2 (895 ms wall) in the profiled one."""
    from napari_qpi._napari.gc_pin import gui_thread_collector

    assert all(event.wait(60) for event in done)
    collector = gui_thread_collector()
    qtbot.waitUntil(lambda: collector.pins == 0, timeout=60_000)


def load() -> str:
    """The 1-minute load average, to print with any gap (the test machine is shared)."""
    return f"load average {os.getloadavg()[0]:.1f}"
