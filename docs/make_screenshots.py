"""Screenshots of the real napari window for the docs (``make docs-screenshots``).

Runs under Xvfb (``xvfb-run -a -s "-screen 0 1600x1200x24" python docs/make_screenshots.py``):
opens the bundled sample, runs the Phase retrieval and Cell morphology widgets the way a user
would, and saves the whole window to ``docs/images/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_qpi._napari.morphology_widget import CellMorphologyWidget
from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi._napari.sample_data import hologram_sample

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
    viewer.window._qt_window.resize(1500, 1000)
    for data, kwargs, layer_type in hologram_sample():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    retrieval = PhaseRetrievalWidget(viewer)
    viewer.window.add_dock_widget(retrieval, name="Phase retrieval", area="right")
    retrieval.hologram.value = viewer.layers["hologram"]
    retrieval.reference.value = viewer.layers["background hologram"]
    settle(1.0)
    viewer.reset_view()
    settle()
    viewer.screenshot(str(OUT / "hologram.png"), canvas_only=False, flash=False)

    run_to_end(retrieval.controls)
    viewer.layers["hologram"].visible = False
    settle()
    viewer.screenshot(str(OUT / "phase.png"), canvas_only=False, flash=False)

    morphology = CellMorphologyWidget(viewer)
    viewer.window.add_dock_widget(morphology, name="Cell morphology", area="right")
    morphology.phase.value = viewer.layers["hologram phase"]
    run_to_end(morphology.controls)
    viewer.layers["hologram phase cells"].contour = 2
    viewer.reset_view()
    settle(1.0)
    viewer.screenshot(str(OUT / "morphology.png"), canvas_only=False, flash=False)
    viewer.close()


if __name__ == "__main__":
    main()
