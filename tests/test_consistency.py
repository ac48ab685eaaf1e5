"""The sideband consistency check: a phase explaining its hologram scores low, wrong ones high."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_qpi.errors import InputError, SidebandError
from napari_qpi.retrieval.consistency import (
    RELATIVE_WARN,
    RESIDUAL_WARN,
    consistency,
    consistency_loss,
    sideband_target,
)
from napari_qpi.training.data import held_out_set


@pytest.fixture(scope="module")
def field() -> tuple[np.ndarray, np.ndarray]:
    data = held_out_set("standard", n=1, size=128)
    return np.asarray(data.holograms[0]), np.asarray(data.phases[0])


def test_true_phase_is_consistent_and_wrong_phases_are_not(field) -> None:
    hologram, truth = field
    target = sideband_target(hologram)
    good = consistency(target, truth, residual_map=True)
    assert good.trusted and good.residual < RESIDUAL_WARN and good.relative < 0.2
    assert good.correlation > 0.99
    assert good.residual_map is not None and good.residual_map.shape == truth.shape
    assert np.median(np.abs(good.residual_map)) < 0.1
    # a hologram cannot tell its sign: the negated phase is just as consistent
    assert consistency(target, -truth).residual == pytest.approx(good.residual, rel=0.05)
    flat = consistency(target, np.zeros_like(truth))
    assert flat.relative == pytest.approx(1.0) and not flat.trusted
    shifted = consistency(target, np.roll(truth, 20, axis=1))
    assert not shifted.trusted and shifted.relative > RELATIVE_WARN
    assert shifted.correlation < good.correlation
    record = good.to_dict()
    assert record["trusted"] is True and set(record["thresholds"]) == {"residual", "relative"}


def test_the_shared_work_scores_as_each_sign_and_the_baseline_alone(field) -> None:
    # consistency() shares the band limit of the two signs (conjugate mirror) and the amplitude;
    # the scores must be those of one full computation per sign and of a flat phase
    from napari_qpi.retrieval import consistency as module

    hologram, truth = field
    target = sideband_target(hologram)
    assert module._mirror_symmetric(target.window)
    phase = (truth + 0.3 * np.sin(np.arange(truth.size).reshape(truth.shape))).astype(np.float32)
    scores, baseline = module._scores(target, phase)
    for sign in (1, -1):
        alone, predicted = module._score(target, phase, sign)
        assert scores[sign][0] == pytest.approx(alone, rel=1e-4)
        assert np.abs(scores[sign][1] - predicted).max() < 1e-4 * np.abs(predicted).max()
    assert baseline == module._score(target, np.zeros_like(phase), 1)[0]
    skewed = module.SidebandTarget(target.field, np.roll(target.window, 1, 1), target.sideband)
    assert not module._mirror_symmetric(skewed.window)
    scores, _ = module._scores(skewed, phase)
    assert scores[-1][0] == pytest.approx(module._score(skewed, phase, -1)[0], rel=1e-4)


def test_a_hologram_without_fringes_or_a_wrong_shape_is_refused(field) -> None:
    hologram, truth = field
    noise = np.random.default_rng(0).normal(100, 10, hologram.shape)
    with pytest.raises(SidebandError, match="No off-axis fringes"):
        consistency(noise, truth)
    with pytest.raises(InputError, match="hologram's shape"):
        consistency(hologram, truth[:64])


def test_consistency_loss_has_finite_gradients_and_prefers_the_truth(field) -> None:
    hologram, truth = field
    targets = [sideband_target(hologram)] * 2
    true = torch.from_numpy(np.stack([truth, truth]))[:, None].clone().requires_grad_(True)
    loss_true = consistency_loss(true, targets)
    loss_true.backward()
    assert torch.isfinite(true.grad).all() and true.grad.abs().sum() > 0
    wrong = torch.from_numpy(np.stack([0.5 * truth, np.roll(truth, 20, axis=1)]))[:, None]
    loss_wrong = consistency_loss(wrong.requires_grad_(True), targets)
    assert float(loss_true) < 0.2 * float(loss_wrong)
    # the numpy check and the torch loss measure the same residual
    assert float(loss_true) == pytest.approx(consistency(targets[0], truth).residual, rel=1e-3)


def test_gradient_steps_on_the_loss_make_a_wrong_phase_more_consistent(field) -> None:
    hologram, truth = field
    target = sideband_target(hologram)
    guess = torch.from_numpy(0.5 * truth)[None, None].clone().requires_grad_(True)
    optimiser = torch.optim.Adam([guess], lr=0.05)
    start = float(consistency_loss(guess, [target]))
    for _ in range(20):
        optimiser.zero_grad()
        loss = consistency_loss(guess, [target])
        loss.backward()
        optimiser.step()
    assert float(loss) < 0.7 * start


CORPUS = Path(__file__).parent / "data" / "real_holograms"


def test_the_cli_reports_the_check_and_warns_in_one_line_each(
    tmp_path, capsys, register_tiny_prnet
) -> None:
    """A real HL60 hologram (2.8 px fringes, 85 nm pixels): through the shipped searched network
    with a card that states the standard training range, 3-6 px fringes and 0.2-0.45 um pixels
    (warned, but its phase explains the hologram; the shipped card's own range, with close-ups,
    holds these cameras), and through an untrained network (its phase does not: warned,
    recorded as not trusted)."""
    from napari_qpi.cli import main
    from napari_qpi.io import read_image
    from napari_qpi.models import delete_user_model, load_model, save_user_model
    from napari_qpi.training.data import split_config

    module, card = load_model("prnet-searched", device="cpu", cached=False)
    narrow = card.replace(
        name="searched-standard-range",
        training={"data": split_config("standard", 128).to_dict()},
        extra={k: v for k, v in card.extra.items() if k != "training_range"},
    )
    save_user_model(module, narrow, overwrite=True)
    source = CORPUS / "hl60_single_raw-oah.h5"
    args = ["reconstruct", str(source), "--workers", "0", "--quiet"]
    try:
        code = main([*args, "--model", narrow.name, "--out", str(tmp_path / "searched")])
    finally:
        delete_user_model(narrow.name)
    assert code == 0
    out, err = capsys.readouterr()
    assert "network vs hologram: median" in out and "all planes explained" in out
    lines = [line for line in err.splitlines() if "warning:" in line]
    assert any("fringes are 2.8 px apart" in line and "3-6 px" in line for line in lines)
    assert any("pixels are 0.0847 um" in line for line in lines)
    assert not any("does not explain" in line for line in lines)
    record = read_image(tmp_path / "searched" / "hl60_single_raw-oah_phase.ome.tif").extra
    retrieval = record["method"]["retrieval"]
    assert retrieval["consistency"]["trusted"] is True
    assert retrieval["training_range"]["fringe_period_px"] == pytest.approx(2.8, abs=0.1)

    untrained = register_tiny_prnet("tiny-untrained-check")
    assert main([*args, "--model", untrained, "--out", str(tmp_path / "net")]) == 0
    out, err = capsys.readouterr()
    assert "network vs hologram: median" in out and "1 plane(s) not explained" in out
    lines = [line for line in err.splitlines() if "warning:" in line]
    assert any("does not explain this hologram" in line and "classical" in line for line in lines)
    record = read_image(tmp_path / "net" / "hl60_single_raw-oah_phase.ome.tif").extra
    retrieval = record["method"]["retrieval"]
    assert retrieval["consistency"]["trusted"] is False
    assert retrieval["consistency"]["relative"] > RELATIVE_WARN
    # the classical method is not a network: no check, no such line
    classical = ["reconstruct", str(source), "--workers", "0", "--quiet", "--out", str(tmp_path)]
    assert main(classical) == 0
    assert "network vs hologram" not in capsys.readouterr().out
