"""GUI-thread CPU time of adding a phase layer to napari: in one turn, or in turns of their own.

Opens a shown viewer with the hologram sample and the *Phase retrieval* dock (as a user has it),
then adds image layers the size of the sample's phase, 2-D and 3-D (5 planes: the first z-stack
of a 2-D viewer), each plainly (``viewer.add_layer``: one turn) and with
:func:`napari_qpi._napari.layer_insert.add_layer_steps` (the model, the dims sliders, napari's
visual, its controls widget and the selection in turns of their own), twice each, alternately.
A 10 ms timer on the GUI thread records the thread's CPU time between its ticks; the table gives
the longest such gap (ms) and every gap over 8 ms, for each insert. Run under a display::

    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/napari_insert.py
"""

from __future__ import annotations

import os
import time

import numpy as np


def _pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def _gaps(app, insert) -> list[float]:
    """CPU ms of the GUI thread between the ticks of a 10 ms timer while ``insert()`` runs
    (given a callback to call when done) and 300 ms after."""
    from qtpy.QtCore import QTimer

    ticks = [time.thread_time()]
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.thread_time()))
    timer.start()
    done: list[bool] = []
    insert(lambda: done.append(True))
    while not done:
        app.processEvents()
        time.sleep(0.001)
    _pump(app, 0.3)
    timer.stop()
    ticks.append(time.thread_time())
    return [1e3 * d for d in np.diff(ticks)]


def _viewer():
    import napari

    from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
    from napari_qpi._napari.task import warm_up_display

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.open_sample("napari-qpi", "hologram")
    viewer.window.add_dock_widget(PhaseRetrievalWidget(viewer), name="Phase retrieval")
    assert warm_up_display().wait(60)
    return viewer


def main() -> None:
    """Print the table (see the module)."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_qpi._napari.layer_insert import add_layer_steps
    from napari_qpi._napari.task import show_in_turns

    viewer = _viewer()
    app = QApplication.instance()
    _pump(app, 2.0)  # the warm-up's garbage collection on the GUI thread
    source = viewer.layers["hologram"]
    print(f"load average {os.getloadavg()[0]:.1f}; GUI-thread CPU ms between 10 ms ticks")
    for ndim in (2, 3):
        for way in ("one turn", "in turns") * 2:  # alternately: the first pays one-off costs
            shape = (5,) * (ndim - 2) + source.data.shape[-2:]
            phase = np.random.default_rng(ndim).normal(size=shape).astype(np.float32)
            layer = napari.layers.Image(
                phase,
                name=f"{ndim}-D {way}",
                colormap="viridis",
                contrast_limits=(-3.0, 3.0),
                scale=(2.0,) * (ndim - 2) + tuple(source.scale[-2:]),
                units=("um",) * (ndim - 2) + tuple(str(u) for u in source.units[-2:]),
            )
            if way == "one turn":

                def insert(then, layer=layer) -> None:
                    viewer.add_layer(layer)
                    then()
            else:

                def insert(then, layer=layer) -> None:
                    show_in_turns(add_layer_steps(viewer, layer), then)

            gaps = _gaps(app, insert)
            over = ", ".join(f"{g:.0f}" for g in gaps if g > 8)
            print(f"  {ndim}-D, {way}: longest {max(gaps):.0f}; turns over 8 ms: {over}")
            viewer.layers.remove(layer)  # back to a 2-D viewer for the next
            _pump(app, 1.0)
    viewer.close()


if __name__ == "__main__":
    main()
