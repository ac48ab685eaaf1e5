"""Fine-tuning: headless on arrays, the CLI, and the Fine-tune widget in a real viewer."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from _heartbeat import Heartbeat
from napari_qpi._napari.finetune_widget import FinetuneWidget, warm_up
from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi._napari.task import warm_up_display
from napari_qpi.cli.finetune import add_finetune_arguments, finetune_main
from napari_qpi.errors import InputError, ModelError, QPIError
from napari_qpi.io import write_image
from napari_qpi.models import (
    ModelCard,
    delete_user_model,
    export_model,
    get_card,
    import_model,
    list_models,
    load_model,
    save_user_model,
)
from napari_qpi.nn import PRNet
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.training.data import normalise_hologram
from napari_qpi.training.finetune import (
    FinetuneSettings,
    check_new_name,
    finetune,
    plan_finetune,
    resumable,
    save_finetuned,
)
from napari_qpi.training.loop import StopFlag

BASE = "tiny-ft-base"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


#: Every model this file's tests create is named with this prefix (and only those are deleted).
MADE_HERE = "tiny-ft-"


@pytest.fixture
def base_model(register_tiny_prnet):
    yield register_tiny_prnet(BASE)
    for card in list_models():
        if card.source == "user" and card.name.startswith(MADE_HERE) and card.name != BASE:
            delete_user_model(card.name)


def _data(n: int = 3, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    system = OffAxisSystem(carrier_period_px=5.0, carrier_angle_deg=20.0)
    phases = [random_cells((size, size), n_cells=2, seed=seed + i).phase for i in range(n)]
    holograms = [simulate_hologram(p, None, system, seed=seed + i) for i, p in enumerate(phases)]
    return np.stack(holograms), np.stack(phases).astype(np.float32)


def _settings(name: str, **changes) -> FinetuneSettings:
    values = {"name": name, "epochs": 3, "batch_size": 2, "crop": 64, "val_fraction": 0.34}
    return FinetuneSettings(**{**values, **changes})


class _Recorder:
    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[tuple[int, float]] = []
        self.starts: list[int] = []
        self.notices: list[str] = []
        self.flag = StopFlag()
        self.stop_at = stop_at

    def on_start(self, step: int, total: int) -> None:
        self.starts.append(step)

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self.steps.append((step, loss))
        if self.stop_at is not None and step >= self.stop_at:
            self.flag.set()

    def on_notice(self, message: str) -> None:
        self.notices.append(message)

    def should_stop(self) -> bool:
        return self.flag.should_stop()


# Headless --------------------------------------------------------------------------------------


def test_finetune_saves_a_user_model_that_exports_and_imports(base_model, tmp_path):
    holograms, phases = _data()
    ignore = np.zeros(phases.shape, bool)
    ignore[:, :8] = True
    checkpoint = tmp_path / "run.pt"
    model, card = finetune(
        base_model,
        holograms,
        phases,
        ignore,
        settings=_settings("tiny-ft-a"),
        checkpoint_path=checkpoint,
        names=["stack"],
    )
    assert card.family == "finetuned" and card.base_model == base_model
    assert card.modality == "hologram" and card.training["status"] == "finished"
    data = card.training["data"]
    assert (data["pairs"], data["train"], data["validation"]) == (3, 2, 1)
    assert data["validation_split"] == "images" and data["ignored_fraction"] == pytest.approx(0.125)
    assert card.training["settings"]["lr"] == pytest.approx(1e-3)
    scores = card.metrics["finetune_validation"]
    assert scores["n"] == 1 and scores["step"] == card.training["best_step"]
    rows = {row["step"]: row for row in card.training["validation"]}
    best = rows[card.training["best_step"]]  # the weights kept are the lowest validation loss
    assert best["val_loss"] == min(row["val_loss"] for row in rows.values())
    assert scores["psnr_db"] == pytest.approx(best["psnr_db"], abs=1e-4) and scores["psnr_db"] > 0

    save_finetuned(model, card, checkpoint_path=checkpoint)
    assert not checkpoint.exists() and resumable(checkpoint) is None
    assert "tiny-ft-a" in [c.name for c in list_models("hologram")]
    loaded, _ = load_model("tiny-ft-a", cached=False)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = loaded(x)
    archive = export_model("tiny-ft-a", tmp_path / "tiny-ft-a.zip")
    delete_user_model("tiny-ft-a")
    imported = import_model(archive)
    assert imported.base_model == base_model and imported.family == "finetuned"
    with torch.no_grad():
        assert torch.equal(load_model("tiny-ft-a", cached=False)[0](x), expected)


def test_a_stopped_run_saves_and_resumes_from_its_step(base_model, tmp_path):
    holograms, phases = _data()
    checkpoint = tmp_path / "run.pt"
    settings = _settings("tiny-ft-resume", epochs=8, checkpoint_every=2)
    uninterrupted = _Recorder()
    finetune(base_model, holograms, phases, settings=settings, callbacks=[uninterrupted])

    first = _Recorder(stop_at=3)
    model, card = finetune(
        base_model,
        holograms,
        phases,
        settings=settings,
        callbacks=[first],
        checkpoint_path=checkpoint,
    )
    assert card.training["status"] == "stopped" and card.training["steps"] == 3
    # the best of the steps trained and the base model itself (step 0): never worse than the base
    rows = card.training["validation"]
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    best_row = min(rows, key=lambda row: row["val_loss"])
    assert card.metrics["finetune_validation"]["step"] == best_row["step"]
    save_finetuned(model, card, checkpoint_path=checkpoint)
    assert resumable(checkpoint)["name"] == "tiny-ft-resume"
    with pytest.raises(ModelError, match=r"exists already.*resume"):
        check_new_name("tiny-ft-resume", checkpoint_path=checkpoint, resume=False)
    assert check_new_name("tiny-ft-resume", checkpoint_path=checkpoint, resume=True)

    second = _Recorder()
    model, card = finetune(
        base_model,
        holograms,
        phases,
        settings=settings,
        callbacks=[second],
        checkpoint_path=checkpoint,
    )
    assert second.starts == [3] and second.steps[0][0] == 4
    assert card.training["status"] == "finished" and card.training["steps"] == 8
    resumed = dict(first.steps + second.steps)
    assert resumed == pytest.approx(dict(uninterrupted.steps), rel=1e-4)
    save_finetuned(model, card, checkpoint_path=checkpoint, overwrite=True)
    assert get_card("tiny-ft-resume").training["status"] == "finished"
    assert not checkpoint.exists()


def test_resuming_another_runs_checkpoint_is_refused(base_model, tmp_path):
    holograms, phases = _data()
    checkpoint = tmp_path / "run.pt"
    finetune(
        base_model,
        holograms,
        phases,
        settings=_settings("tiny-ft-b"),
        callbacks=[_Recorder(stop_at=1)],
        checkpoint_path=checkpoint,
    )
    with pytest.raises(QPIError, match="another fine-tuning run"):
        finetune(
            base_model,
            holograms,
            phases,
            settings=_settings("tiny-ft-b", lr=5e-4),
            checkpoint_path=checkpoint,
        )
    assert checkpoint.exists()


def test_bad_input_gives_clear_messages(base_model):
    holograms, phases = _data(2)
    settings = _settings("tiny-ft-c")
    with pytest.raises(InputError, match=r"target 'phase' has shape \(2, 64, 48\).*\(2, 64, 64\)"):
        plan_finetune(
            base_model,
            [holograms],
            [phases[..., :48]],
            settings=settings,
            names=["holo"],
            target_names=["phase"],
        )
    with pytest.raises(InputError, match="one target layer per input"):
        plan_finetune(base_model, [holograms, holograms], [phases], settings=settings)
    with pytest.raises(InputError, match="covers every pixel"):
        plan_finetune(base_model, holograms, phases, np.ones((64, 64), int), settings=settings)
    with pytest.raises(InputError, match="ignore mask has shape"):
        plan_finetune(base_model, holograms, phases, np.ones((32, 32), int), settings=settings)
    with pytest.raises(ModelError, match=r"reconstructs off-axis holograms.*choose a cdp model"):
        plan_finetune(base_model, holograms, phases, settings=settings, modality="cdp")
    with pytest.raises(InputError, match="target phase layers"):
        plan_finetune(base_model, holograms, None, settings=settings)
    with pytest.raises(InputError, match="too small"):
        plan_finetune(base_model, holograms[:, :20, :20], phases[:, :20, :20], settings=settings)
    with pytest.raises(ModelError, match="Invalid model name"):
        FinetuneSettings(name="no spaces please")
    with pytest.raises(ModelError, match="exists already"):
        check_new_name(base_model)


def test_a_taken_name_is_refused_and_the_run_is_kept(base_model, tmp_path):
    holograms, phases = _data()
    checkpoint = tmp_path / "run.pt"
    model, card = finetune(
        base_model, holograms, phases, settings=_settings(base_model), checkpoint_path=checkpoint
    )
    with pytest.raises(ModelError, match="already exists"):
        save_finetuned(model, card, checkpoint_path=checkpoint)
    assert checkpoint.exists() and get_card(base_model).family == "searched"


def test_out_of_memory_halves_the_batch_then_says_so(base_model, monkeypatch):
    holograms, phases = _data()
    forward = PRNet.forward

    def limited(self, x):
        if x.shape[0] > 1 and self.training:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(PRNet, "forward", limited)
    recorder = _Recorder()
    _, card = finetune(
        base_model,
        holograms,
        phases,
        settings=_settings("tiny-ft-d", batch_size=4),
        callbacks=[recorder],
    )
    assert card.training["batch_size_used"] == 1 and card.training["status"] == "finished"
    assert any("starting again with 1 per batch" in n for n in recorder.notices)

    def never(self, x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9")

    monkeypatch.setattr(PRNet, "forward", never)
    with pytest.raises(QPIError, match="not enough memory to train on even one crop of 64 px"):
        finetune(base_model, holograms, phases, settings=_settings("tiny-ft-d"))


def test_self_supervised_hologram_finetuning_needs_no_targets_and_explains_the_sideband(
    base_model, register_tiny_prnet
):
    """Test-time adaptation: no target phases, the loss is what the phase leaves unexplained in
    each hologram's sideband; validation (the same loss) falls, the phase explains the hologram
    better and the card says how it learnt. A U-Net base (the tiny PRNet's coarse head cannot
    draw fringe-scale phase at all)."""
    from napari_qpi.retrieval.consistency import consistency

    base = register_tiny_prnet("tiny-unet-selfsup", "unet", {"base_channels": 8, "depth": 3})
    holograms, _ = _data(n=4, size=128)  # 64 px holograms are too small to show their sideband
    settings = _settings("tiny-ft-selfsup", self_supervised=True, epochs=30, lr=1e-3, crop=128)
    plan = plan_finetune(base, holograms, None, settings=settings)
    assert all(pair.target is None for pair in plan.train)
    model, new_card = finetune(base, holograms, None, settings=settings)
    assert new_card.training["data"]["self_supervised"]
    assert "measurement-consistency" in new_card.training["recipe"]
    losses = [row["val_loss"] for row in new_card.training["validation"]]
    assert min(losses[1:]) < 0.8 * losses[0], losses

    def relative(net) -> float:
        with torch.no_grad():
            x = torch.from_numpy(normalise_hologram(holograms[-1]))[None, None]
            phase = net.eval()(x)[0, 0].numpy()
        return consistency(holograms[-1], phase).relative

    assert relative(model) < 0.8 * relative(load_model(base, cached=False)[0])


def test_self_supervised_cdp_finetuning_fits_the_measurements_with_frozen_masks(base_model):
    from napari_qpi.nn.cdpnet import CDPNet, CDPNetConfig

    torch.manual_seed(0)
    config = CDPNetConfig(n_masks=2, shape=(32, 32), base_channels=4, depth=2)
    net = CDPNet(config)
    card = ModelCard(
        name="tiny-cdp",
        family="distilled",
        modality="cdp",
        architecture={"network": "cdpnet", "config": config.to_dict(), "input_channels": 2},
        normalisation={"method": "none"},
    )
    save_user_model(net, card)
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 1.5, (6, 32, 32)).astype(np.float32)
    with torch.no_grad():
        patterns = net.measure(torch.polar(torch.ones(6, 32, 32), torch.from_numpy(phase)))
    masks = load_model("tiny-cdp", cached=False)[0].masks.export()
    settings = FinetuneSettings(
        name="tiny-cdp-ft",
        epochs=6,
        batch_size=2,
        self_supervised=True,
        val_fraction=0.34,
        lr=1e-3,
    )
    model, new_card = finetune(
        "tiny-cdp", patterns.numpy(), None, settings=settings, modality="cdp", masks=masks
    )
    assert np.array_equal(model.masks.export(), masks)
    assert new_card.training["data"]["self_supervised"] and new_card.modality == "cdp"
    losses = [row["val_loss"] for row in new_card.training["validation"]]
    assert min(losses[1:]) < losses[0]
    save_finetuned(model, new_card)
    loaded, _ = load_model("tiny-cdp-ft", cached=False)
    assert np.array_equal(loaded.masks.export(), masks)

    with pytest.raises(ModelError, match="other masks than model 'tiny-cdp'"):
        plan_finetune("tiny-cdp", patterns.numpy(), None, settings=settings, masks=masks + 1)
    with pytest.raises(ModelError, match="reads 2 coded diffraction pattern"):
        plan_finetune("tiny-cdp", patterns.numpy()[:, :1], None, settings=settings)
    with pytest.raises(ModelError, match="reconstructs coded diffraction patterns"):
        plan_finetune("tiny-cdp", patterns.numpy(), None, settings=settings, modality="hologram")


# Command line ----------------------------------------------------------------------------------


def test_cli_finetunes_on_files_with_classical_targets(base_model, tmp_path, capsys):
    holograms, _ = _data(2)
    acquisition = OffAxisSystem(carrier_period_px=5.0, carrier_angle_deg=20.0).acquisition()
    files = [
        write_image(tmp_path / f"h{i}.ome.tif", hologram, acquisition=acquisition)
        for i, hologram in enumerate(holograms)
    ]
    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    argv = ["--base", base_model, "--inputs", *map(str, files), "--targets", "classical"]
    argv += ["--out", "tiny-ft-cli", "--epochs", "2", "--crop", "64", "--batch-size", "2"]
    argv += ["--work", str(tmp_path / "cli.pt"), "--export", str(tmp_path / "m.zip"), "--quiet"]
    assert finetune_main(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "finished after 2 of 2 steps" in out and (tmp_path / "m.zip").exists()
    card = get_card("tiny-ft-cli")
    assert card.training["command"].startswith("napari-qpi finetune --base tiny-ft-base")
    with pytest.raises(ModelError, match="exists already"):
        finetune_main(parser.parse_args(argv))


def test_cli_ctrl_c_stops_saves_and_the_same_command_resumes(
    base_model, tmp_path, capsys, monkeypatch
):
    import napari_qpi.cli.finetune as module

    holograms, phases = _data(2)
    np.save(tmp_path / "h.npy", holograms)
    np.save(tmp_path / "p.npy", phases)

    class CtrlCAtStep2:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    argv = ["--base", base_model, "--inputs", str(tmp_path / "h.npy"), "--targets"]
    argv += [str(tmp_path / "p.npy"), "--out", "tiny-ft-ctrl-c", "--epochs", "6", "--crop", "64"]
    argv += ["--val-fraction", "0.5", "--work", str(tmp_path / "c.pt"), "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(module, "ProgressBar", CtrlCAtStep2)
        assert finetune_main(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "stopping after this step" in out and "stopped after 2 of 6 steps" in out
    assert get_card("tiny-ft-ctrl-c").training["status"] == "stopped"
    assert finetune_main(parser.parse_args(argv)) == 0
    assert "finished after 6 of 6 steps" in capsys.readouterr().out
    assert not (tmp_path / "c.pt").exists()


# The widget in a real viewer -------------------------------------------------------------------


def _viewer_with_data(make_napari_viewer, n: int = 2):
    viewer = make_napari_viewer()
    holograms, phases = _data(n)
    system = OffAxisSystem(carrier_period_px=5.0, carrier_angle_deg=20.0)
    for i, hologram in enumerate(holograms):
        viewer.add_image(
            hologram, name=f"holo{i}", metadata={"qpi": system.acquisition().to_dict()}
        )
    return viewer, phases


def _widgets(viewer):
    retrieval = PhaseRetrievalWidget(viewer)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(retrieval, name="Phase retrieval")
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.base.value = BASE
    widget.crop.value, widget.batch_size.value = 64, 2
    return widget, retrieval


def test_widget_trains_live_and_the_model_appears_in_phase_retrieval(
    make_napari_viewer, qtbot, base_model, tmp_path
):
    viewer, _ = _viewer_with_data(make_napari_viewer, 3)
    widget, retrieval = _widgets(viewer)
    widget.inputs.value = [viewer.layers[f"holo{i}"] for i in range(3)]
    assert warm_up_display().wait(60) and warm_up().wait(60)  # as while a user fills the form
    retrieved_on: set[str] = set()
    from napari_qpi._napari import finetune_targets as module  # where the targets are filled

    real_reconstruct = module.iter_reconstruct

    def recorded(*args, **kwargs):
        retrieved_on.add(threading.current_thread().name)
        yield from real_reconstruct(*args, **kwargs)

    module.iter_reconstruct = recorded
    try:
        with qtbot.waitSignal(widget.filled, timeout=30_000):  # the targets shown, selected
            assert widget.fill_targets() is not None  # the classical targets made in a worker
    finally:
        module.iter_reconstruct = real_reconstruct
    assert retrieved_on and threading.main_thread().name not in retrieved_on
    targets = list(widget.targets.value)
    assert [t.name for t in targets] == ["holo0 target", "holo1 target", "holo2 target"]
    assert list(widget.targets.value) == targets and "holo0 → holo0 target" in widget.pairs.value
    labels = viewer.add_labels(np.zeros((64, 64), np.int32), name="ignore")
    labels.data[:4] = 1
    widget.ignore.value = labels
    widget.epochs.value = 20
    widget.model_name.value = "tiny-ft-gui"
    assert "tiny-ft-gui" not in retrieval.method.choices

    assert warm_up().wait(60)
    heartbeat = Heartbeat(lambda: len(widget.plot.train))  # a tick mid-run: the GUI ran
    worker = widget.controls.start()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    seen = heartbeat.stop()
    assert any(0 < steps < 20 for steps in seen), "the GUI froze while training"
    assert len(widget.plot.train) == 20 and widget.plot.validation
    assert widget.controls.status.value.startswith("saved model 'tiny-ft-gui' (finished")
    assert "tiny-ft-gui" in retrieval.method.choices
    assert get_card("tiny-ft-gui").training["data"]["ignored_fraction"] == pytest.approx(1 / 16)
    widget.export_model(str(tmp_path / "gui.zip"))
    delete_user_model("tiny-ft-gui")
    assert widget.import_model(str(tmp_path / "gui.zip")) == "tiny-ft-gui"
    assert "tiny-ft-gui" in retrieval.method.choices

    retrieval.hologram.value = viewer.layers["holo0"]
    retrieval.method.value = "tiny-ft-gui"
    with qtbot.waitSignal(retrieval.controls.finished, timeout=30_000):  # the result shown
        assert retrieval.controls.start() is not None
    phase = viewer.layers["holo0 phase (tiny-ft-gui)"]
    assert phase.data.shape == (64, 64) and phase.metadata["qpi_method"]["name"] == "tiny-ft-gui"


def test_widget_stop_saves_the_stopped_run_and_train_resumes_it(
    make_napari_viewer, qtbot, base_model
):
    viewer, phases = _viewer_with_data(make_napari_viewer)
    widget, _ = _widgets(viewer)
    for i in range(2):
        viewer.add_image(phases[i], name=f"phase{i}")
    widget.inputs.value = [viewer.layers["holo0"], viewer.layers["holo1"]]
    widget.targets.value = [viewer.layers["phase0"], viewer.layers["phase1"]]
    total = 5000  # one step an epoch: a run that cannot end before Stop is pressed
    widget.epochs.value = total
    widget.val_fraction.value = 0.5
    widget.model_name.value = "tiny-ft-stop"
    worker = widget.controls.start()
    qtbot.waitUntil(lambda: widget.controls.progress.value >= 3, timeout=60_000)
    clicked_at = widget.controls.progress.value
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        widget.controls.cancel_button.changed.emit(True)
    card = get_card("tiny-ft-stop")
    assert card.training["status"] == "stopped" and card.training["total_steps"] == total
    step = card.training["steps"]
    assert clicked_at <= step < total and "resume" in widget.controls.status.value
    assert widget.plot.train[-1][0] == step  # the saved run is the one the plot showed

    worker = widget.controls.start()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.controls.progress.max == total, timeout=10_000)
    qtbot.waitUntil(
        lambda: bool(widget.plot.train) and widget.plot.train[-1][0] > step, timeout=60_000
    )
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        widget.controls.cancel_button.changed.emit(True)
    resumed = [row[0] for row in widget.plot.train]  # the plot survives the resume
    assert resumed[0] == 1 and resumed == list(range(1, resumed[-1] + 1)) and resumed[-1] > step
    card = get_card("tiny-ft-stop")
    assert card.training["status"] == "stopped" and card.training["steps"] == resumed[-1]


def test_widget_offers_cdp_models_and_trains_self_supervised(make_napari_viewer, qtbot, base_model):
    from napari_qpi.nn.cdpnet import CDPNet, CDPNetConfig

    torch.manual_seed(0)
    config = CDPNetConfig(n_masks=2, shape=(32, 32), base_channels=4, depth=2)
    net = CDPNet(config)
    card = ModelCard(
        name="tiny-cdp-gui",
        family="distilled",
        modality="cdp",
        architecture={"network": "cdpnet", "config": config.to_dict(), "input_channels": 2},
        normalisation={"method": "none"},
    )
    save_user_model(net, card)
    net = load_model("tiny-cdp-gui", cached=False)[0]
    phase = np.random.default_rng(1).uniform(0, 1.5, (4, 32, 32)).astype(np.float32)
    with torch.no_grad():
        patterns = net.measure(torch.polar(torch.ones(4, 32, 32), torch.from_numpy(phase)))
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        patterns.numpy(),
        name="cdp",
        metadata={
            "qpi": {"modality": "cdp"},
            "qpi_cdp": {"oversampling": 2, "masks": net.masks.export()},
        },
    )
    widget = FinetuneWidget(viewer)
    widget.inputs.value = [layer]
    assert "tiny-cdp-gui" in widget.base.choices
    assert all(get_card(name).modality == "cdp" for name in widget.base.choices)
    widget.base.value = "tiny-cdp-gui"
    assert not widget.self_supervised.native.isHidden()
    widget.self_supervised.value = True
    widget.epochs.value, widget.batch_size.value, widget.val_fraction.value = 4, 2, 0.25
    widget.model_name.value = "tiny-cdp-gui-ft"
    worker = widget.controls.start()
    assert worker is not None, widget.controls.status.value
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    saved = get_card("tiny-cdp-gui-ft")
    assert saved.modality == "cdp" and saved.training["data"]["self_supervised"]


def _refused(widget, qtbot) -> bool:
    """Click Train on bad input: refused at once, or by the worker's first check."""
    worker = widget.controls.start()
    if worker is not None:
        with qtbot.waitSignal(worker.finished, timeout=30_000):
            pass
    return widget.last_outcome is None


def test_widget_refuses_bad_input_with_messages_and_keeps_everything(
    make_napari_viewer, qtbot, base_model
):
    viewer, phases = _viewer_with_data(make_napari_viewer)
    widget, _ = _widgets(viewer)
    viewer.add_image(phases[0][:, :48], name="narrow")
    widget.inputs.value = [viewer.layers["holo0"]]
    widget.targets.value = [viewer.layers["narrow"]]
    widget.model_name.value = "tiny-ft-bad"
    layers_before = [layer.name for layer in viewer.layers]

    assert _refused(widget, qtbot)
    assert "has shape (64, 48)" in widget.controls.status.value

    viewer.add_image(phases[0], name="phase0")
    widget.targets.value = [viewer.layers["phase0"]]
    everything = viewer.add_labels(np.ones((64, 64), np.int32), name="all")
    widget.ignore.value = everything
    assert _refused(widget, qtbot)
    assert "covers every pixel" in widget.controls.status.value

    widget.ignore.value = None
    widget.model_name.value = BASE
    assert widget.controls.start() is None
    assert "exists already" in widget.controls.status.value
    assert get_card(BASE).family == "searched"
    assert [layer.name for layer in viewer.layers] == [*layers_before, "phase0", "all"]


# Benchmark script ------------------------------------------------------------------------------


def test_benchmark_script_quick_run(base_model, capsys, monkeypatch):
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    spec = importlib.util.spec_from_file_location("benchmark_finetune", folder / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.main(["--base", base_model, "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"| {base_model} fine-tuned 0.05 min | true phase |" in out and "quick smoke run" in out
    assert f"`{base_model}`: after 0.05 minutes on true-phase annotations" in out
