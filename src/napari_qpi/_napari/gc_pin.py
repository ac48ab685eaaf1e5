"""Python's garbage collector runs on the GUI thread while our background threads work.

CPython's cyclic garbage collector runs in whichever thread crosses its allocation threshold
(napari issue #1029). Our workers and warm-up imports allocate a lot, so a collection often ran
in one of them, and if the garbage held Qt objects (a dock the user closed: magicgui widgets
live in reference cycles, and each has a parentless event-filter QObject), PySide deferred their
C++ deletion to the GUI thread as a Python "pending call", run at an arbitrary point of the next
Python code there, even inside Qt's own layout or paint code. That crashed napari: a test that
closes two docks while the warm-up threads import torch and numba segfaulted in 4 of 4 runs
(``Shiboken::BindingManager::runDeletionInMainThread`` under ``QLayout::activate`` or a GL
paint), and in 0 of 4 when the garbage was collected on the GUI thread first.

While at least one of our threads runs, automatic collection is therefore off and a timer on the
GUI thread collects the young generations instead, at a safe point of the event loop: the
pattern of pyqtgraph's ``GarbageCollector``. The oldest generation is left for the automatic
collector once our threads are done (a full collection on the GUI thread would stall it for
longer than a user should feel). The collector's state is restored as it was found.
"""

from __future__ import annotations

import gc
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

__all__ = ["GuiThreadCollector", "gui_thread_collector", "pin_while_running"]

#: How often the GUI thread collects while automatic collection is off (ms).
INTERVAL_MS = 100


class GuiThreadCollector(QObject):
    """Counts our running threads; while there are any, garbage is collected on the GUI thread.

    :meth:`pin` and :meth:`unpin` are called on the GUI thread; a thread that is not a Qt worker
    ends its pin by emitting :attr:`unpin_later` (queued to the GUI thread).
    """

    unpin_later = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.pins = 0
        self._was_enabled = True
        self._timer = QTimer(self)
        self._timer.setInterval(INTERVAL_MS)
        self._timer.timeout.connect(self.collect_young)
        self.unpin_later.connect(self.unpin)

    def pin(self) -> None:
        """One more thread of ours runs (GUI thread only)."""
        if self.pins == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._timer.start()
        self.pins += 1

    def unpin(self) -> None:
        """One thread of ours is done; the last one gives collection back (GUI thread only)."""
        if self.pins == 0:
            return
        self.pins -= 1
        if self.pins == 0:
            self._timer.stop()
            self.collect_young()
            if self._was_enabled:
                gc.enable()

    def collect_young(self) -> None:
        """Collect the generations whose thresholds are crossed, as the automatic collector
        would, except the oldest."""
        young, middle, _ = gc.get_count()
        threshold_young, threshold_middle, _ = gc.get_threshold()
        if young > threshold_young:
            gc.collect(1 if middle > threshold_middle else 0)


_COLLECTOR: list[GuiThreadCollector] = []


def gui_thread_collector() -> GuiThreadCollector:
    """The process's collector (made on first use, which must be on the GUI thread)."""
    if not _COLLECTOR:
        _COLLECTOR.append(GuiThreadCollector())
    return _COLLECTOR[0]


def pin_while_running(worker: Any) -> Any:
    """Keep collection on the GUI thread from now until napari ``worker`` has finished."""
    collector = gui_thread_collector()
    collector.pin()
    worker.finished.connect(collector.unpin)
    return worker
