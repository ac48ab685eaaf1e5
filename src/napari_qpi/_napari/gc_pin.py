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
GUI thread lets it run there instead, at a safe point of the event loop (the pattern of
pyqtgraph's ``GarbageCollector``), as often and on the same generations as Python would. The
collector's state is restored as it was found.
"""

from __future__ import annotations

import gc
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

__all__ = ["GuiThreadCollector", "gui_thread_collector", "pin_while_running"]

#: How often the GUI thread collects while automatic collection is off (ms).
INTERVAL_MS = 20


class GuiThreadCollector(QObject):
    """Counts our running threads; while there are any, garbage is collected on the GUI thread.

    :meth:`pin` and :meth:`unpin` are called on the GUI thread; a thread that is not a Qt worker
    ends its pin by emitting :attr:`unpin_later` (queued to the GUI thread).
    """

    #: Emitted by a thread at its end: ``unpin(full)`` on the GUI thread.
    unpin_later = Signal(bool)

    def __init__(self) -> None:
        super().__init__()
        self.pins = 0
        self._was_enabled = True
        self._timer = QTimer(self)
        self._timer.setInterval(INTERVAL_MS)
        self._timer.timeout.connect(self.collect)
        self.unpin_later.connect(self.unpin)

    def pin(self) -> None:
        """One more thread of ours runs (GUI thread only)."""
        if self.pins == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._timer.start()
        self.pins += 1

    def unpin(self, full: bool = False) -> None:
        """One thread of ours is done; the last one gives collection back (GUI thread only).

        ``full``: collect every generation now. A warm-up thread asks for it: its imports leave
        so many new long-lived objects that Python's next full collection (0.3-0.5 s on the
        sample, 2 shared cores) would otherwise fall in the user's first *Run* or *Measure*;
        here it falls while the user is still choosing settings.
        """
        if self.pins == 0:
            return
        if full:
            gc.collect()
        self.pins -= 1
        if self.pins == 0:
            self._timer.stop()
            if self._was_enabled:
                gc.enable()

    def collect(self) -> None:
        """Let Python's own collector run here, on the GUI thread, if its threshold is crossed.

        An automatic collection starts when a tracked object is allocated past the threshold:
        enabling the collector for one allocation keeps Python's own choice of generations (the
        oldest only when long-lived objects grew by a quarter), so no full collection is put off
        until our threads are done. No other Python thread runs meanwhile (this one holds the GIL).
        """
        if gc.get_count()[0] > gc.get_threshold()[0]:
            gc.enable()
            try:
                _Allocation()  # the automatic collection, if one is due
            finally:
                gc.disable()


class _Allocation:
    """An object whose allocation can start an automatic collection (lists and dicts come from
    free lists, which do not)."""


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
    worker.finished.connect(lambda: collector.unpin())
    return worker
