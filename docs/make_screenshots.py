"""Screenshots of the real napari window for the docs (``make docs-screenshots``).

Runs under Xvfb (``xvfb-run -a -s "-screen 0 1600x1200x24" python docs/make_screenshots.py``):
opens the bundled sample (File > Open Sample), runs the Phase retrieval and Cell morphology
widgets the way a user would (their pickers choose the layers), drops the sample hologram file on a
second window (hologram + its phase), and saves the whole windows to ``docs/images/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_qpi._napari.morphology_widget import CellMorphologyWidget
from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi._napari.sample_data import HOLOGRAM_FILE, SAMPLE_PACKAGE

OUT = Path(__file__).parent / "images"


def settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def run_to_end(controls) -> None:
    worker = controls.start()
    while worker is not None and controls.running:
        settle(0.1)
    settle()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-qpi")
    viewer.window._qt_window.resize(1500, 1120)  # the morphology dock shows table and plot
    viewer.open_sample("napari-qpi", "hologram")
    retrieval = PhaseRetrievalWidget(viewer)
    dock = viewer.window.add_dock_widget(retrieval, name="Phase retrieval", area="right")
    settle(1.0)
    viewer.reset_view()
    settle()
    viewer.screenshot(str(OUT / "hologram.png"), canvas_only=False, flash=False)

    run_to_end(retrieval.controls)
    viewer.layers["hologram"].visible = False
    settle()
    viewer.screenshot(str(OUT / "phase.png"), canvas_only=False, flash=False)

    viewer.window.remove_dock_widget(dock)  # one dock at a time keeps the window its size
    morphology = CellMorphologyWidget(viewer)
    viewer.window.add_dock_widget(morphology, name="Cell morphology", area="right")
    run_to_end(morphology.controls)
    viewer.layers["hologram phase (classical) cells"].contour = 2
    viewer.reset_view()
    settle(1.0)
    viewer.screenshot(str(OUT / "morphology.png"), canvas_only=False, flash=False)
    viewer.close()

    from importlib.resources import as_file, files

    dropped = napari.Viewer(show=True, title="napari-qpi")
    dropped.window._qt_window.resize(1500, 1000)
    with as_file(files(SAMPLE_PACKAGE) / HOLOGRAM_FILE) as path:
        dropped.open(str(path), plugin="napari-qpi")  # what a drop does once napari-qpi is chosen
    dropped.layers[0].visible = False
    settle(1.0)
    dropped.reset_view()
    settle()
    dropped.screenshot(str(OUT / "dropped.png"), canvas_only=False, flash=False)
    dropped.close()


if __name__ == "__main__":
    main()
