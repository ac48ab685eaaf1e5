"""Shipped hologram networks reproduce their cards; training validates on its own distribution."""

from __future__ import annotations

import ast
import re

import pytest

from napari_qpi.models import ModelCard, get_card, load_model, registry
from napari_qpi.training.data import held_out_set
from napari_qpi.training.metrics import evaluate, network_predictor

#: How far (dB) a shipped model's PSNR may be from its card. The card's scores were taken on the
#: float32 network at the end of training; the shipped weights are float16, which moves the mean
#: PSNR by at most 0.002 dB on these models (measured), so 0.02 dB leaves room for BLAS and
#: thread-count rounding while catching any change of weights, data, normalisation or metric.
PSNR_TOLERANCE_DB = 0.02


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _shipped_hologram_cards() -> list[ModelCard]:
    """Cards of the shipped hologram models, read from the package folder."""
    cards = []
    for folder in sorted(registry.shipped_models_dir().iterdir(), key=lambda f: f.name):
        card_file = folder.joinpath("card.json")
        if card_file.is_file():
            card = ModelCard.from_json(card_file.read_text())
            if card.modality == "hologram":
                cards.append(card)
    return cards


def _held_out_arguments(command: str) -> dict[str, object]:
    """Keyword arguments of ``held_out_set(...)`` as the card's metric command states them."""
    found = re.search(r"metrics\.evaluate on held_out_set\(([^)]*)\)", command)
    assert found, f"the card does not say how its score was taken: {command!r}"
    call = ast.parse(f"f({found.group(1)})", mode="eval").body
    names = ("split", "n", "size", "seed")
    arguments = dict(zip(names, (ast.literal_eval(a) for a in call.args), strict=False))
    arguments |= {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return arguments


CARDS = _shipped_hologram_cards()
#: (model, split) for every held-out score on the card of every shipped hologram model.
SHIPPED = [(card.name, split) for card in CARDS for split in card.metrics]


def test_every_shipped_hologram_model_has_held_out_scores():
    from napari_qpi.training.search import SPLITS

    assert CARDS, "no shipped hologram model found"
    for card in CARDS:
        assert set(SPLITS) <= set(get_card(card.name).metrics), card.name


@pytest.mark.slow
@pytest.mark.parametrize(("name", "split"), SHIPPED, ids=[f"{m}-{s}" for m, s in SHIPPED])
def test_shipped_model_reproduces_its_card(name: str, split: str):
    """Load the shipped (float16) weights and repeat the card's held-out evaluation exactly.

    The card's ``psnr_db`` is a mean over its ``n`` fields, whose individual PSNRs span more than
    10 dB, so no smaller slice can check it: the test scores the same ``n`` fields the card names
    (``held_out_set(split, n, size)``, offset-only alignment, the card's normalisation), as
    :func:`napari_qpi.training.search.held_out_metrics` did at the end of training.
    """
    model, card = load_model(name, device="cpu", cached=False)
    assert card.source == "shipped" and card.modality == "hologram"
    scores = card.metrics[split]
    arguments = _held_out_arguments(scores["command"])
    assert arguments.pop("split") == split and arguments["n"] == scores["n"]
    held_out = held_out_set(split, **arguments)
    measured = evaluate(network_predictor(model, card.normalisation), held_out)
    assert measured["n"] == scores["n"]
    assert measured["psnr_db"] == pytest.approx(scores["psnr_db"], abs=PSNR_TOLERANCE_DB)
    assert measured["ssim"] == pytest.approx(scores["ssim"], abs=1e-3)


TINY_NETWORK = {"width": 0.25, "decoder_channels": 8, "coord_channels": True}


def test_transfer_training_validates_on_the_second_microscope():
    """``napari-qpi train --data transfer`` validates on transfer fields, not standard ones."""
    from napari_qpi.training.search import VALIDATION_SEED, TrainSettings, train

    settings = TrainSettings(
        network=TINY_NETWORK,
        size=64,
        batch_size=2,
        steps=2,
        val_every=2,
        val_images=2,
        eval_images=0,
        data="transfer",
    )
    trained = train("prnet", settings)
    record = trained.record
    assert record["validation_split"] == "transfer"
    assert tuple(record["data"]["carrier_period_px"]) == (6.0, 8.0)
    assert [row["step"] for row in record["validation"]] == [2]
    predict = network_predictor(trained.model)
    transfer = evaluate(predict, held_out_set("transfer", n=2, size=64, seed=VALIDATION_SEED))
    standard = evaluate(predict, held_out_set("standard", n=2, size=64, seed=VALIDATION_SEED))
    assert abs(transfer["psnr_db"] - standard["psnr_db"]) > 1e-3
    assert record["validation"][-1]["psnr_db"] == pytest.approx(transfer["psnr_db"], abs=1e-6)
    assert record["validation"][-1]["rmse_rad"] == pytest.approx(transfer["rmse_rad"], abs=1e-6)
