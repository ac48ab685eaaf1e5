"""Fine-tuning never leaves the user worse off: the base's score first, best weights, a warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_qpi.models import load_model
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.training.finetune import FinetuneSettings, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 3, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    system = OffAxisSystem(carrier_period_px=5.0, carrier_angle_deg=20.0)
    phases = [random_cells((size, size), n_cells=2, seed=i).phase for i in range(n)]
    holograms = [simulate_hologram(p, None, system, seed=i) for i, p in enumerate(phases)]
    return np.stack(holograms), np.stack(phases).astype(np.float32)


class _Heard:
    def __init__(self) -> None:
        self.notices: list[str] = []
        self.base: list[dict] = []
        self.validations: list[tuple[int, dict]] = []

    def on_notice(self, message: str) -> None:
        self.notices.append(message)

    def on_base_score(self, metrics) -> None:
        assert not self.validations  # before any step is validated
        self.base.append(dict(metrics))

    def on_validation(self, step: int, metrics) -> None:
        self.validations.append((step, dict(metrics)))


def _run(base: str, lr: float, heard: _Heard, epochs: int = 3):
    """Fine-tune ``base`` on two simulated pairs, validated on a third."""
    holograms, phases = _data()
    settings = FinetuneSettings(
        name="tiny-guard-out", epochs=epochs, batch_size=2, crop=64, val_fraction=0.34, lr=lr
    )
    return finetune(base, holograms, phases, settings=settings, callbacks=[heard])


def test_the_base_score_comes_first_and_a_run_that_only_hurts_keeps_the_base(
    register_tiny_prnet,
) -> None:
    base = register_tiny_prnet("tiny-guard-base")
    heard = _Heard()
    model, card = _run(base, lr=5.0, heard=heard)  # a learning rate that wrecks the network
    [start] = heard.base  # the base model's score, before any step
    assert "val_loss" in start and "psnr_db" in start
    worse = [n for n in heard.notices if "worse than the base model's" in n]
    assert len(worse) == 1 and "\n" not in worse[0]  # said once, in one line
    assert card.training["base_validation"]["val_loss"] == pytest.approx(start["val_loss"], 1e-4)
    assert card.training["validation"][0]["step"] == 0
    # measured: every step of this run validates worse than the base (0.947 -> 0.95-1.05)
    assert card.training["improved_on_base"] is False and card.training["best_step"] == 0
    assert all(row["val_loss"] > start["val_loss"] for row in card.training["validation"][1:])
    assert any("no step beat the base model" in n for n in heard.notices)
    assert "base model" in card.training["weights"]
    original, _ = load_model(base, cached=False)  # the base's weights come back, untouched
    for name, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[name].cpu(), value)
