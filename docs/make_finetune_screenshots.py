"""Screenshots of the Fine-tune widget for ``docs/finetune.md``, taken from the real window.

Runs under Xvfb (``OMP_NUM_THREADS=1`` trains with one torch thread, e.g. on a shared machine)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python docs/make_finetune_screenshots.py

Simulates eight holograms of the second microscope of ``benchmarks/finetune.py``, fills the
targets with the classical method, marks a region to ignore, fine-tunes the shipped searched model
for five minutes (screenshot half-way, as the loss curve grows), then runs the new model in *Phase
retrieval* and shows its phase beside the target (grid view).
The model it trains (``--name``) is deleted again at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_qpi._napari.finetune_widget import FinetuneWidget, warm_up
from napari_qpi._napari.layers import image_layer
from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi.models import delete_user_model, list_models
from napari_qpi.training.finetune import clear_work_files, default_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "images"


def settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def benchmark_module():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("finetune_bench", ROOT / "benchmarks/finetune.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shoot(viewer: napari.Viewer, name: str, status=None) -> None:
    """Screenshot of the whole window; says so if the ``status`` line shown is cut off."""
    settle(0.5)
    viewer.screenshot(str(OUT / name), canvas_only=False, flash=False)
    print(f"wrote docs/images/{name}")
    if status is not None:
        label = status.native
        needed = label.heightForWidth(label.width())
        if label.height() < needed:
            print(f"  status line cut: {label.height()} px of the {needed} px its text needs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="prnet-searched")
    parser.add_argument("--name", default="prnet-scope2")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true", help="keep the trained model")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    if args.name in [card.name for card in list_models()]:
        delete_user_model(args.name)
    clear_work_files(default_checkpoint(args.name))

    bench = benchmark_module()
    fields = bench.microscope_set(8, 256, bench.TRAIN_SEED)
    viewer = napari.Viewer(show=True, title="napari-qpi")
    viewer.window._qt_window.resize(1550, 1150)
    data, kwargs, _ = image_layer(
        fields.holograms, name="scope2 holograms", acquisition=fields.acquisitions[0], axes="TYX"
    )
    holograms = viewer.add_image(data, **kwargs)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune", area="right")
    widget.inputs.value = [holograms]
    widget.fill_order.value = 4
    filled: list[bool] = []
    widget.filled.connect(lambda: filled.append(True))
    widget.fill_targets()  # in a worker; the targets are shown in turns of the event loop
    while not filled:
        settle(0.2)
    assert "scope2 holograms target" in viewer.layers, widget.controls.status.value
    ignore = np.zeros(fields.phases.shape, np.int32)
    ignore[2, 150:230, 20:110] = 1
    labels = viewer.add_labels(
        ignore, name="ignore", scale=holograms.scale, units=holograms.units, opacity=0.5
    )
    widget.ignore.value = labels
    widget.base.value = args.base
    widget.epochs.value = 500
    widget.lr.value = 4e-3
    widget.minutes.value = args.minutes
    widget.model_name.value = args.name
    viewer.dims.set_current_step(0, 2)
    viewer.layers["scope2 holograms target"].visible = False
    viewer.reset_view()
    warm_up().wait(120)
    shoot(viewer, "finetune_setup.png", widget.controls.status)

    worker = widget.controls.start()
    assert worker is not None, widget.controls.status.value
    deadline = time.monotonic() + 0.5 * 60 * args.minutes
    while widget.controls.running and (
        time.monotonic() < deadline or len(widget.plot.validation) < 3
    ):
        settle(0.2)
    viewer.layers["scope2 holograms target"].visible = True
    viewer.layers["ignore"].visible = False
    shoot(viewer, "finetune_training.png", widget.controls.status)
    while widget.controls.running:
        settle(0.2)
    print(widget.controls.status.value)

    retrieval = PhaseRetrievalWidget(viewer)
    viewer.window.add_dock_widget(retrieval, name="Phase retrieval", area="right", tabify=True)
    retrieval.hologram.value = holograms
    retrieval.method.value = args.name
    worker = retrieval.controls.start()
    while retrieval.controls.running:
        settle(0.2)
    shown = (f"scope2 holograms phase ({args.name})", "scope2 holograms target")  # named by method
    for layer in viewer.layers:
        layer.visible = layer.name in shown
    viewer.layers[shown[0]].contrast_limits = viewer.layers[shown[1]].contrast_limits
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    shoot(viewer, "finetune_result.png", retrieval.controls.status)
    viewer.close()
    if not args.keep:
        delete_user_model(args.name)


if __name__ == "__main__":
    main()
