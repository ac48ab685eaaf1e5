"""Fine-tuning may set the classical background order of a residual model's front end
(``FinetuneSettings.front_end_order``, ``napari-qpi finetune --front-end-order``)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_qpi.cli.finetune import add_finetune_arguments, finetune_main
from napari_qpi.errors import InputError
from napari_qpi.io import write_image
from napari_qpi.models import delete_user_model, get_card, list_models, load_model
from napari_qpi.nn.frontend import RESIDUAL_FRONT_END
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.training.finetune import (
    FinetuneSettings,
    finetune,
    front_end_order_for,
    plan_finetune,
    save_finetuned,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MADE_HERE = "tiny-order-"
#: conftest's tiny PRNet.
TINY_PRNET = {"width": 0.25, "decoder_channels": 8, "connectivity": {"D0": ["E0", "E2", "G"]}}
#: A microscope with spherical aberration: an order-2 background fit leaves it in the phase.
SYSTEM = OffAxisSystem(
    carrier_period_px=5.0, carrier_angle_deg=20.0, aberrations_rad={"spherical": 2.5}
)


#: A residual front end whose classical phase has a third-order background, as the shipped ones.
ORDER3_CONFIG = {
    **TINY_PRNET,
    "front_end": {**RESIDUAL_FRONT_END.to_dict(), "background_order": 3},
}


@pytest.fixture
def residual_base(register_tiny_prnet):
    """A tiny untrained residual PRNet (the classical phase, order 2, plus a zero correction)."""
    config = {**TINY_PRNET, "front_end": RESIDUAL_FRONT_END.to_dict()}
    yield register_tiny_prnet(f"{MADE_HERE}base", "prnet", config)
    for card in list_models():
        if card.source == "user" and card.name.startswith(MADE_HERE) and "base" not in card.name:
            delete_user_model(card.name)


def _data(n: int = 3, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    phases = [random_cells((size, size), n_cells=2, seed=i).phase for i in range(n)]
    holograms = [simulate_hologram(p, None, SYSTEM, seed=i) for i, p in enumerate(phases)]
    return np.stack(holograms).astype(np.float32), np.stack(phases).astype(np.float32)


def _settings(name: str, **changes) -> FinetuneSettings:
    values = {"name": name, "epochs": 2, "batch_size": 2, "crop": 96, "val_fraction": 0.34}
    return FinetuneSettings(**{**values, **changes})


class _BaseScore:
    def __init__(self) -> None:
        self.metrics: list[dict] = []

    def on_base_score(self, metrics) -> None:
        self.metrics.append(dict(metrics))


def test_the_order_is_set_before_scoring_trained_and_recorded_in_the_new_model(residual_base):
    holograms, phases = _data()
    scores = {}
    for order in (None, 4):
        heard = _BaseScore()
        name = f"{MADE_HERE}{order}"
        model, card = finetune(
            residual_base,
            holograms,
            phases,
            settings=_settings(name, front_end_order=order),
            callbacks=[heard],
        )
        [scores[order]] = heard.metrics
        assert card.training["steps"] == card.training["total_steps"] > 0
        front_end = card.architecture["config"]["front_end"]
        if order is None:  # the base's card, unchanged
            assert front_end == get_card(residual_base).architecture["config"]["front_end"]
            assert "front_end_order" not in card.training["data"]
            continue
        assert front_end["background_order"] == 4 == model.front_end.config.background_order
        assert card.training["data"]["front_end_order"] == {"base": 2, "used": 4}
        save_finetuned(model, card)
        loaded, loaded_card = load_model(name, cached=False)
        assert loaded.front_end.config.background_order == 4
        assert loaded_card.architecture["config"]["front_end"]["background_order"] == 4
        hologram = torch.from_numpy(holograms[:1, None])
        hologram = (hologram - hologram.mean()) / hologram.std()
        with torch.no_grad():  # the saved (fp16) weights give the trained model's phase
            torch.testing.assert_close(
                loaded(hologram), model.half().float()(hologram), atol=1e-3, rtol=0
            )
    # the base itself, scored with order 4, already removes the spherical aberration
    assert scores[4]["psnr_db"] > scores[None]["psnr_db"] + 3.0, scores
    base, _ = load_model(residual_base, cached=False)
    assert base.front_end.config.background_order == 2  # the registered base is untouched


def test_an_order_for_a_model_without_the_classical_phase_is_refused(register_tiny_prnet):
    plain = register_tiny_prnet(f"{MADE_HERE}plain-base")
    holograms, phases = _data(2, 64)
    with pytest.raises(InputError, match="does not compute the classical phase"):
        plan_finetune(plain, holograms, phases, settings=_settings("x", front_end_order=4))
    assert front_end_order_for(get_card(plain), 4) is None
    for bad in (6, -1, 2.0, True):
        with pytest.raises(InputError, match="background order"):
            _settings("x", front_end_order=bad)


def _cli_classical_targets(base: str, folder) -> tuple[argparse.ArgumentParser, list[str]]:
    """The finetune parser and the start of a command fine-tuning ``base`` on two holograms
    of :data:`SYSTEM` written to ``folder`` with classical targets."""
    holograms, _ = _data(2)
    acquisition = SYSTEM.acquisition()
    files = [
        write_image(folder / f"h{i}.ome.tif", hologram, acquisition=acquisition)
        for i, hologram in enumerate(holograms)
    ]
    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    return parser, ["--base", base, "--inputs", *map(str, files), "--targets", "classical"]


def test_cli_classical_targets_keep_the_base_models_order(register_tiny_prnet, tmp_path, capsys):
    """Without ``--classical-order`` the classical targets take the order of the base model's
    front end (the shipped hologram networks: 3), so fine-tuning does not move it; the new
    card's command records the order used."""
    base = register_tiny_prnet(f"{MADE_HERE}order3-base", "prnet", ORDER3_CONFIG)
    parser, argv = _cli_classical_targets(base, tmp_path)
    argv += ["--epochs", "1", "--crop", "96", "--batch-size", "2", "--work", str(tmp_path / "w.pt")]
    assert finetune_main(parser.parse_args([*argv, "--quiet", "--out", f"{MADE_HERE}kept"])) == 0
    assert "removes a background of order" not in capsys.readouterr().out
    made = get_card(f"{MADE_HERE}kept")
    assert made.architecture["config"]["front_end"]["background_order"] == 3
    assert "--classical-order 3" in made.training["command"]


def test_cli_front_end_follows_the_classical_order_of_the_targets(residual_base, tmp_path, capsys):
    card = get_card(residual_base)
    assert front_end_order_for(card, 4) == 4 and front_end_order_for(card, 2) is None
    parser, argv = _cli_classical_targets(residual_base, tmp_path)
    argv += ["--classical-order", "4", "--epochs", "1", "--crop", "96", "--batch-size", "2"]
    argv += ["--work", str(tmp_path / "cli.pt"), "--quiet", "--out"]
    assert finetune_main(parser.parse_args([*argv, f"{MADE_HERE}cli"])) == 0
    assert "removes a background of order 4 from its classical phase (base model: 2)" in (
        capsys.readouterr().out
    )
    made = get_card(f"{MADE_HERE}cli")
    assert made.architecture["config"]["front_end"]["background_order"] == 4
    assert "--classical-order 4" in made.training["command"]
    explicit = [*argv[:-1], "--front-end-order", "3", "--work", str(tmp_path / "b.pt"), "--out"]
    assert finetune_main(parser.parse_args([*explicit, f"{MADE_HERE}cli3"])) == 0
    made = get_card(f"{MADE_HERE}cli3")
    assert made.architecture["config"]["front_end"]["background_order"] == 3
    assert "--front-end-order 3" in made.training["command"]


def test_widget_gives_the_targets_order_to_a_residual_model_when_ticked(
    make_napari_viewer, residual_base, register_tiny_prnet
):
    from napari_qpi._napari.finetune_widget import FinetuneWidget

    plain = register_tiny_prnet(f"{MADE_HERE}plain-base")
    viewer = make_napari_viewer()
    holograms, _ = _data(1, 64)
    viewer.add_image(holograms[0], name="holo", metadata={"qpi": SYSTEM.acquisition().to_dict()})
    widget = FinetuneWidget(viewer)
    widget.inputs.value = [viewer.layers["holo"]]
    widget.base.value, widget.model_name.value = residual_base, f"{MADE_HERE}gui"
    assert widget.fill_model.value is True and widget.settings().front_end_order is None  # 2
    assert widget.fill_order.value == 2
    order3 = register_tiny_prnet(f"{MADE_HERE}order3-base", "prnet", ORDER3_CONFIG)
    widget.reset_choices()
    widget.base.value = order3  # the targets' order follows the base model's front end
    assert widget.fill_order.value == 3 and widget.settings().front_end_order is None
    widget.base.value = residual_base
    assert widget.fill_order.value == 2
    widget.fill_order.value = 4
    assert widget.settings().front_end_order == 4
    widget.fill_model.value = False
    assert widget.settings().front_end_order is None
    widget.fill_model.value, widget.base.value = True, plain  # no classical phase in it
    assert widget.settings().front_end_order is None


def test_benchmark_quick_run_sets_the_order_of_a_residual_base(residual_base, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(
            "benchmark_finetune_order", folder / "finetune.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        assert module.main(["--base", residual_base, "--quick", "--threads", "1"]) == 0
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("benchmark_finetune_order", None)
    out = capsys.readouterr().out
    assert f"| {residual_base} (before), front-end background order 4, no training |" in out
    assert "the front end's classical background order set to 4" in out
    assert "The untrained base with the front end's order set scores" in out


def test_widget_base_that_vanished_keeps_the_order(make_napari_viewer, residual_base, monkeypatch):
    """A base model that cannot be read any more (removed since the list was made) leaves the
    targets' order as it was instead of raising in the GUI's signal handler."""
    from napari_qpi._napari import finetune_widget
    from napari_qpi.errors import ModelError

    widget = finetune_widget.FinetuneWidget(make_napari_viewer())
    widget.base.value = residual_base
    widget.fill_order.value = 4

    def vanished(name: str):
        raise ModelError(f"no model named {name!r}")

    monkeypatch.setattr(finetune_widget, "get_card", vanished)
    widget._base_changed()
    assert widget.fill_order.value == 4
