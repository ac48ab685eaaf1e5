"""A hologram network knows its training range, refuses non-holograms and checks its phase."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from napari_qpi.acquisition import Acquisition
from napari_qpi.errors import ConsistencyWarning, OutOfRangeWarning, SidebandError
from napari_qpi.models import ModelCard, get_card
from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.retrieval.model_range import check_hologram, training_range
from napari_qpi.training.data import DataConfig, split_config, synthetic_field


class Flat(nn.Module):
    """A 'network' that returns a flat phase: it explains no cell."""

    stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1])


def flat_model(**extra: object) -> tuple[nn.Module, ModelCard]:
    card = ModelCard(
        name="flat",
        family="baseline",
        modality="hologram",
        architecture={"network": "flat", "config": {}},
        training={"data": DataConfig(size=64).to_dict()},
        extra=dict(extra),
    )
    return Flat(), card


def transfer_card() -> ModelCard:
    """The card of a network trained on the transfer split's second system only (6-8 px fringes
    within 20 deg of the x axis), as ``napari-qpi train --data transfer`` records it."""
    _, card = flat_model()
    return card.replace(
        name="flat-transfer", training={"data": split_config("transfer", 128).to_dict()}
    )


def hologram(period: float = 4.0, angle: float = 30.0, size: int = 128, seed: int = 3):
    config = replace(
        DataConfig(size=size),
        carrier_period_px=(period, period),
        carrier_angle_deg=(angle, angle),
        fringe_visibility=(0.9, 0.9),
        full_well_electrons=(20000.0, 20000.0),
        aberration_rad=0.5,
    )
    return synthetic_field(config, seed)


@pytest.mark.parametrize(
    ("name", "periods", "pixels", "field"),
    [
        ("prnet-searched", (2.5, 6.0), (0.05, 0.45), 256),
        # standard fields plus close-ups (--data large-cells): 2.5-3 px fringes, 0.05-0.125 um
        ("unet", (2.5, 6.0), (0.05, 0.45), 256),
    ],
)
def test_shipped_cards_state_the_range_they_were_trained_on(name, periods, pixels, field) -> None:
    found = training_range(get_card(name))
    assert found is not None and found.source == "the model card"
    assert found.fringe_period_px == periods and found.pixel_size_um == pixels
    assert found.peak_phase_rad == (0.5, 7.0) and found.fringe_angle_deg == (0.0, 360.0)
    assert found.field_px == field


def test_a_model_trained_on_a_second_system_states_that_systems_range() -> None:
    transfer = training_range(transfer_card())
    assert transfer.fringe_period_px == (6.0, 8.0) and transfer.fringe_angle_deg == (-20.0, 20.0)
    assert transfer.pixel_size_um == (0.15, 0.3) and transfer.field_px == 128


def test_a_card_without_the_key_is_read_from_its_training_data_or_its_base() -> None:
    _, card = flat_model()
    derived = training_range(card)
    assert derived.fringe_period_px == (3.0, 6.0) and derived.field_px == 64
    assert derived.source == "the card's training data settings"
    bare = card.replace(training={})
    assert training_range(bare) is None
    tuned = bare.replace(family="finetuned", base_model="prnet-searched")
    assert training_range(tuned).source == "its base model 'prnet-searched'"
    assert training_range(tuned).fringe_period_px == (2.5, 6.0)  # standard fields + close-ups


def test_data_outside_the_range_warns_in_one_line_and_inside_does_not() -> None:
    _, card = flat_model()  # trained on the standard data: 3-6 px fringes, 0.2-0.45 um pixels
    inside = hologram(period=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _sideband, record = check_hologram(card, inside.hologram, inside.system.acquisition())
    assert record["fringe_period_px"] == pytest.approx(4.0, rel=0.05) and not record["warnings"]
    coarse = hologram(period=8.0, size=256)
    expected = r"fringes are (7\.9|8\.0) px apart.*trained on 3-6 px"
    with pytest.warns(OutOfRangeWarning, match=expected):
        check_hologram(card, coarse.hologram)
    small_pixels = Acquisition(pixel_size_um=0.085)
    with pytest.warns(OutOfRangeWarning, match=r"pixels are 0\.085 um.*0\.2-0\.45 um") as seen:
        check_hologram(card, inside.hologram, small_pixels)
    assert all("\n" not in str(w.message) for w in seen)
    steep = hologram(period=7.0, angle=90.0, size=256)
    with pytest.warns(OutOfRangeWarning, match=r"carrier points at .*-20 to 20 deg"):
        check_hologram(transfer_card(), steep.hologram)


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).normal(100, 10, (128, 128)),  # camera noise
        np.full((128, 128), 7.0),  # a flat image
        hologram().phase,  # a phase image of cells
    ],
)
def test_noise_and_non_holograms_are_refused_as_by_the_classical_method(image) -> None:
    with pytest.raises(SidebandError, match=r"needs an off-axis hologram\. No off-axis fringes"):
        retrieve_deep(image, model=flat_model(), check=True)


def test_retrieve_deep_scores_its_phase_and_warns_when_it_explains_nothing() -> None:
    field = hologram(period=4.0)
    with pytest.warns(ConsistencyWarning, match=r"does not explain this hologram.*classical"):
        result = retrieve_deep(field.hologram, model=flat_model(), check=True)
    assert result.info["consistency"]["trusted"] is False
    assert result.info["consistency"]["relative"] == pytest.approx(1.0, abs=0.01)
    assert result.info["training_range"]["fringe_period_px"] == pytest.approx(4.0, rel=0.05)
    # unchecked, nothing is said or recorded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = retrieve_deep(field.hologram, model=flat_model())
    assert "consistency" not in plain.info


def test_a_network_that_explains_the_hologram_passes() -> None:
    field = hologram(period=4.0, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConsistencyWarning)
        warnings.simplefilter("error", OutOfRangeWarning)
        result = retrieve_deep(field.hologram, model="unet", check=True)
    record = result.info["consistency"]
    assert record["trusted"] and record["relative"] < 0.3 and record["correlation"] > 0.9
    assert result.info["training_range"]["peak_phase_rad"] > 0.5


def test_stacks_are_checked_plane_by_plane() -> None:
    planes = np.stack([hologram(seed=s).hologram for s in (1, 2)])
    with pytest.warns(ConsistencyWarning, match=r"in 2 of 2 planes"):
        result = retrieve_deep(planes, model=flat_model(), check=True)
    assert len(result.info["consistency"]) == 2
