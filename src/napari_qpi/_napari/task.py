"""Run / Cancel buttons, a progress bar and a status line for background work.

Every long job in the plugin (retrieval, morphology, fine-tuning) runs in a napari ``thread_worker``
that yields progress. :class:`TaskControls` starts such a worker, moves the progress bar as it
yields, lets the user cancel it, and turns any error into a notification with a readable message
instead of a traceback.
"""

from __future__ import annotations

import itertools
import re
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import GeneratorWorker, thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QSizePolicy

from ..errors import QPIError
from .gc_pin import gui_thread_collector, pin_while_running

Job = Generator[tuple[int, int], None, Any]

#: Messages longer than this also go to a napari notification (the dock line wraps them).
LONG_MESSAGE = 60

#: Delay between the steps of showing a result (ms). Not 0: Qt 6 posts a zero-delay single shot
#: as an event, handled in the same pass as the other posted events, so no timer (and no
#: repaint) could run between two steps; a real timer lets the event loop turn in between.
_TURN_MS = 1

#: Set when :func:`warm_up_display` has done the one-off work of showing a first result.
DISPLAY_READY = threading.Event()
_WARM_UP_LOCK = threading.Lock()
#: Numbers in a warning's text: a warning that differs from one already shown in a run only in
#: its numbers (the same warning on another plane of a stack) is counted, not shown again.
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def warm_up_once(name: str, done: threading.Event, work: Callable[[], None]) -> threading.Event:
    """Run ``work`` once per process in a background thread named ``name``; ``done`` is set when
    it ends (also if it raises: a warm-up only saves time, the real work reports its own errors).

    Python's collector is kept out of that thread while it runs (:mod:`.gc_pin`), and a full
    collection follows on the GUI thread. Not a daemon: exiting waits for it, instead of
    stopping it in the middle of an import.
    """
    with _WARM_UP_LOCK:
        if done.is_set() or any(t.name == name for t in threading.enumerate()):
            return done
        collector = gui_thread_collector()

        def run() -> None:
            try:
                work()
            except Exception:
                pass
            finally:
                done.set()
                collector.unpin_later.emit(True)  # and a full collection

        collector.pin()
        threading.Thread(target=run, name=name, daemon=False).start()
    return done


def warm_up_display() -> threading.Event:
    """Do, once per process and in a background thread, what the first result would stall on.

    Measured on the sample (shared 2-core machine): adding the first labels layer cost the GUI
    thread 1.6 s compiling napari's numba label-colour kernels and 1.4 s importing pandas (for
    ``layer.features``), and the first retrieval and measurement stalled the event loop for
    ~400 ms while their lazily imported modules loaded (PySide's import hook reads each module's
    source under the GIL). Building a tiny labels layer with a features table and retrieving and
    measuring a tiny simulated hologram here, while the user is still choosing settings, takes
    all of that off the first *Run* and *Measure*.
    """

    def work() -> None:
        import numpy as np
        import pandas as pd
        from napari.layers import Labels

        Labels(np.zeros((4, 4), np.int32), features=pd.DataFrame({"index": [1]}))
        _fill_vispy_dash_patterns()
        _exercise_the_pipeline()

    return warm_up_once("qpi-display-warm-up", DISPLAY_READY, work)


def wrapping_label(label: Label) -> Label:
    """Make a magicgui label wrap its text and never ask the dock for width.

    A QLabel normally asks for the width of its whole text, so one long message (a path, an
    error) widened the dock until the canvas had 0 px left. With word wrap, an *ignored*
    horizontal size hint and no minimum width, the label takes the width the dock has and grows
    down instead (:class:`_FitsItsText`); the full text is also its tooltip.
    """
    native = label.native
    native.setWordWrap(True)
    native.setMinimumWidth(1)
    policy = native.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    native.setSizePolicy(policy)
    native.installEventFilter(_FitsItsText(native))
    return label


class _FitsItsText(QObject):
    """Keeps a word-wrapped label's minimum height at what its text needs at its width.

    A status line's text changes in place, and the dock's layouts (a scroll area, magicgui's
    labelled rows) did not always ask it again for its height at its width: a four-line message
    was shown in three, cut (the fine-tune screenshot: 44 px of the 66 px its text needed). A new
    text repaints the label and a new width resizes it; either sets the height it needs.
    """

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.Paint, QEvent.Type.Resize):
            needed = watched.heightForWidth(watched.width())
            if needed > 0 and watched.minimumHeight() != needed:
                watched.setMinimumHeight(needed)
        return False


@dataclass
class _Failure:
    """An exception raised by a job, carried out of the worker thread as its result."""

    error: Exception


def _fill_vispy_dash_patterns() -> None:
    """Compute vispy's line dash patterns once, off the GUI thread.

    napari's polygon-drawing overlay of a labels layer makes three vispy 'agg' lines, and the
    first one computes 13 dash patterns in a Python loop (``vispy.visuals.line.dash_atlas``,
    cached for the process by ``functools.lru_cache``): 70-130 ms of the first labels layer's
    creation on the GUI thread, measured on the sample. The patterns are plain numpy arrays, so
    building one atlas here fills that cache; no OpenGL is touched.
    """
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()


def _exercise_the_pipeline() -> None:
    """Retrieve and measure a tiny simulated hologram (loads every module the real run uses)."""
    from ..morphology import iter_measure_frames
    from ..physics import OffAxisSystem, random_cells, simulate_hologram
    from ..reconstruct import iter_reconstruct

    system = OffAxisSystem()
    phantom = random_cells((96, 96), n_cells=1, seed=0)
    hologram = simulate_hologram(phantom.phase, None, system, seed=0)
    [plane] = iter_reconstruct(hologram, acquisition=system.acquisition())
    for _ in iter_measure_frames(plane.phase, None, pixel_size_um=0.2, wavelength_nm=532.0):
        pass


def show_in_turns(steps: Iterator[Any], then: Callable[[], Any] | None = None) -> None:
    """Run ``steps`` one per event-loop turn (as :class:`TaskControls` shows a result), then call
    ``then``; an error in a step ends the steps and is reported as a notification."""

    def step() -> None:
        try:
            next(steps)
        except StopIteration:
            if then is not None:
                then()
            return
        except Exception as error:  # never let it reach the event loop
            show_error(f"Unexpected error ({type(error).__name__}): {error}")
            if then is not None:
                then()
            return
        QTimer.singleShot(_TURN_MS, step)

    QTimer.singleShot(_TURN_MS, step)


class TaskControls(Container):
    """The controls of one background task.

    ``make_job`` is called on Run, in the GUI thread: it checks the input (raising a
    :class:`QPIError` with a message for the user if something is wrong) and returns a generator
    that does the work, yielding ``(done, total)`` and returning the result. The generator runs in
    a worker thread; ``on_result`` receives its result back in the GUI thread.

    Showing a result can cost the GUI thread more than a user should feel (napari building a
    layer's visual, a table, a plot): ``on_result`` may then return an iterator, and each of its
    steps runs in a turn of the event loop of its own, so the loop repaints and answers the user
    between them. ``on_cancel`` is called, in the GUI thread, when a job was cancelled: it keeps
    what the job finished and returns what it kept (shown as "cancelled; <kept>"), or ``None``;
    it may instead return a generator of such steps that returns that text. ``finished`` is
    emitted when the run is over: the result shown, an error reported or the job cancelled (and
    what it kept shown).
    """

    finished = Signal()

    def __init__(
        self,
        make_job: Callable[[], Job],
        on_result: Callable[[Any], Iterator[Any] | None],
        *,
        run_text: str = "Run",
        on_cancel: Callable[[], str | Generator[None, None, str | None] | None] | None = None,
    ) -> None:
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = wrapping_label(Label(value=""))
        super().__init__(
            widgets=[
                Container(
                    widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False
                ),
                self.progress,
                self.status,
            ],
            labels=False,
        )
        self._make_job = make_job
        self._on_result = on_result
        self._on_cancel = on_cancel
        self.worker: GeneratorWorker | None = None
        self._showing: Iterator[Any] | None = None  # the steps left of showing a result
        self._when_shown: Callable[[], None] = self._say_done  # then: what the status says
        self._latest_progress: tuple[int, int] | None = None  # the latest progress, not shown yet
        self._warned: dict[str, list[str]] = {}  # this run's warnings by kind (numbers masked)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        warm_up_display()

    @property
    def running(self) -> bool:
        """A job is running, or its result is still being shown."""
        return self.worker is not None or self._showing is not None

    def start(self) -> GeneratorWorker | None:
        """Build the worker and start it on the next turn of the event loop."""
        if self.running:
            return None
        try:
            job = self._make_job()
        except QPIError as error:
            self._report(error)
            return None
        worker = pin_while_running(_run_in_thread(job))
        self._warned = {}
        worker.warned.connect(self._on_warning)
        _disconnect_napari_relay(worker)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.visible = True
        self.progress.value = 0
        self.status.value = "running..."
        QTimer.singleShot(0, worker.start)
        return worker

    def cancel(self) -> None:
        """Ask the worker to stop at its next yield."""
        if self.worker is not None:
            self.status.value = "cancelling..."
            self.worker.quit()

    def _on_progress(self, progress: tuple[int, int]) -> None:
        """Show the latest progress once per event-loop turn at most.

        ``QProgressBar.setValue`` repaints at once, and with napari's OpenGL canvas in the window
        each repaint composes the whole window; progress signals that queued up while the GUI
        thread was busy would be shown one after the other in one turn (gaps up to 670 ms wall clock
        during Autofocus, measured under Xvfb on the shared machine). Only the latest is shown.
        """
        if self._latest_progress is None:
            QTimer.singleShot(_TURN_MS, self._show_progress)
        self._latest_progress = progress

    def _show_progress(self) -> None:
        progress, self._latest_progress = self._latest_progress, None
        if progress is None or self.worker is None:  # the run ended meanwhile
            return
        done, total = progress
        self.progress.max = max(int(total), 1)
        self.progress.value = int(done)
        self.status.value = f"{done} / {total}"

    def _on_returned(self, result: Any) -> None:
        self._latest_progress = None  # a progress still to show would overwrite "done"
        if isinstance(result, _Failure):
            self._report(result.error)
            return
        try:
            shown = self._on_result(result)
        except Exception as error:  # the GUI reports it; it must never reach the event loop
            self._report(error)
            return
        if isinstance(shown, Iterator):
            self._show_in_turns(shown, self._say_done)
            return
        self._say_done()

    def _show_in_turns(self, steps: Iterator[Any], then: Callable[[], None]) -> None:
        """Run ``steps`` one per event-loop turn (see ``on_result``), then call ``then``."""
        # one more turn after the last step: saying "done", hiding the progress bar (the dock is
        # laid out again) and the next run's start do not add to the last step's turn
        self._showing = itertools.chain(steps, [None])
        self._when_shown = then
        QTimer.singleShot(_TURN_MS, self._show_next)

    def _show_next(self) -> None:
        """One more step of showing a result, then back to the event loop (see ``on_result``)."""
        if self._showing is None:
            return
        try:
            next(self._showing)
        except StopIteration:
            self._showing = None
            self._when_shown()
        except Exception as error:
            self._showing = None
            self._report(error)
        else:
            QTimer.singleShot(_TURN_MS, self._show_next)
            return
        if self.worker is None:
            self._end_run()

    def _say_done(self) -> None:
        if not self._warned:
            self.status.value = "done"
            return
        last = list(self._warned.values())[-1]
        more = f" (and {len(last) - 1} more like it)" if len(last) > 1 else ""
        self.status.value = f"done; {last[0]}{more}"
        every = dict.fromkeys(text for texts in self._warned.values() for text in texts)
        self.status.native.setToolTip("\n".join(every))

    def _on_warning(self, show_warning_args: tuple) -> None:
        """A warning raised by the job: one clean notification (no path, no code line) per kind
        of warning and run; the same warning again, or with other numbers (another plane of a
        stack), is counted for the status line, not shown again."""
        message = " ".join(str(show_warning_args[0]).split())
        texts = self._warned.setdefault(_NUMBERS.sub("#", message), [])
        texts.append(message)
        if len(texts) == 1:
            show_warning(message)

    def _on_aborted(self) -> None:
        """Cancelled: keep what the job finished (``on_cancel`` says what), or say nothing was;
        a partial result given as steps is shown in turns of the event loop, as a result is."""
        self._latest_progress = None
        kept = None
        if self._on_cancel is not None:
            try:
                kept = self._on_cancel()
            except Exception as error:  # never let a partial result reach the event loop
                self._report(error)
                return
        if isinstance(kept, Generator):
            self.status.value = "cancelled; showing what was done..."
            said: list[str | None] = []

            def steps() -> Iterator[None]:
                said.append((yield from kept))

            self._show_in_turns(steps(), lambda: self._say_cancelled(said[0] if said else None))
            return
        self._say_cancelled(kept)

    def _say_cancelled(self, kept: str | None) -> None:
        self.status.value = f"cancelled; {kept}" if kept else "cancelled"
        show_info(f"Cancelled; {kept}." if kept else "Cancelled; nothing was added.")

    def _report(self, error: BaseException) -> None:
        if isinstance(error, QPIError):
            self._set_status(str(error))
            show_warning(str(error))
        else:
            self._set_status(f"failed: {error}")
            show_error(f"Unexpected error ({type(error).__name__}): {error}")

    def _set_status(self, message: str) -> None:
        self.status.value = message
        self.status.native.setToolTip(message)  # the whole text, however the line wraps

    def say(self, message: str) -> None:
        """Show ``message`` on the status line (wrapped); a long one also as a notification."""
        self._set_status(message)
        if len(message) > LONG_MESSAGE:
            show_info(message)

    def _on_finished(self) -> None:
        self.worker = None
        if self._showing is None:
            self._end_run()
        else:
            self.cancel_button.enabled = False  # the work is done; only showing it is left

    def _end_run(self) -> None:
        """The run is over (result shown, error reported or cancelled): ready for the next."""
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.progress.visible = False
        self.finished.emit()


def _disconnect_napari_relay(worker: GeneratorWorker) -> None:
    """Undo napari's own relay of the worker's warnings, where it is connected (PyQt).

    It would show each warning a second time, with the source path and line; under PySide6 it is
    never connected, and PySide says so with a RuntimeWarning that is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            worker.warned.disconnect(worker._relay_warning)
        except (AttributeError, RuntimeError, TypeError):
            pass


@thread_worker(progress=False)
def _run_in_thread(job: Job) -> Job:
    """Run ``job`` in a worker thread; an exception becomes a :class:`_Failure` result.

    Catching here, rather than letting the worker emit ``errored``, keeps napari from showing the
    user a traceback for what is a message about their input.
    """
    try:
        return (yield from job)
    except Exception as error:
        return _Failure(error)
