"""Training side of NAS-PRNet: loop, data, losses, metrics, search (tiny, fast settings)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from napari_qpi.errors import QPIError
from napari_qpi.training.loop import StopFlag, fit
from napari_qpi.training.losses import LOG_MSE_FLOOR_RAD2, phase_loss
from napari_qpi.training.metrics import evaluate, image_metrics, psnr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _source(first_step: int):
    step = first_step
    while True:
        g = torch.Generator().manual_seed(step)
        x = torch.randn(4, 1, 16, 16, generator=g)
        yield x, 2.0 * x + 0.3
        step += 1


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)
    )


def _loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return phase_loss(model(x), y)


class Recorder:
    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[int] = []
        self.validations: list[int] = []
        self.stop_at = stop_at

    def on_step(self, step, total, loss, lr):
        self.steps.append(step)

    def on_validation(self, step, metrics):
        self.validations.append(step)

    def should_stop(self) -> bool:
        return self.stop_at is not None and len(self.steps) >= self.stop_at


def test_fit_reduces_loss_and_reports():
    recorder = Recorder()
    result = fit(
        _tiny_net(),
        _loss,
        _source,
        steps=60,
        lr=1e-2,
        seed=0,
        callbacks=[recorder],
        val_fn=lambda m: {"one": 1.0},
        val_every=20,
    )
    assert result.status == "finished" and result.step == 60
    assert result.mean_loss(10) < 0.5 * result.history[0]["loss"]
    assert recorder.steps == list(range(1, 61))
    assert recorder.validations == [20, 40, 60]
    assert result.history[-1]["lr"] < result.history[5]["lr"]


def test_a_constant_parameter_group_keeps_its_rate_while_the_others_anneal():
    model = _tiny_net()
    first, *rest = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": rest}, {"params": [first], "lr": 5e-3, "schedule": "constant"}], lr=1e-2
    )
    rates = []
    fit(
        model,
        _loss,
        _source,
        steps=20,
        optimizer=optimizer,
        callbacks=[lambda *_: rates.append([g["lr"] for g in optimizer.param_groups])],
    )
    annealed, constant = zip(*rates, strict=True)
    assert annealed[-1] < 0.1 * max(annealed)
    assert set(constant) == {5e-3}


def test_should_stop_cancels_within_one_step():
    flag = StopFlag()
    steps = []

    def on_step(step, total, loss, lr):
        steps.append(step)
        if step == 3:
            flag.set()

    result = fit(_tiny_net(), _loss, _source, steps=50, callbacks=[flag, on_step])
    assert result.status == "stopped" and result.step == 3 and steps == [1, 2, 3]
    assert fit(_tiny_net(), _loss, _source, steps=5, callbacks=[Recorder(stop_at=0)]).step == 0
    out_of_time = fit(_tiny_net(), _loss, _source, steps=5, time_budget_s=0.0)
    assert out_of_time.status == "out_of_time" and out_of_time.step == 0


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    reference = _tiny_net()
    full = fit(reference, _loss, _source, steps=12, lr=1e-2, seed=3)

    path = tmp_path / "work" / "ckpt.pt"
    first = fit(
        _tiny_net(),
        _loss,
        _source,
        steps=12,
        lr=1e-2,
        seed=3,
        callbacks=[Recorder(stop_at=5)],
        checkpoint_path=path,
        checkpoint_every=4,
    )
    assert first.status == "stopped" and first.step == 5 and path.exists()

    resumed_model = _tiny_net()
    resumed = fit(resumed_model, _loss, _source, steps=12, lr=1e-2, seed=3, checkpoint_path=path)
    assert resumed.step == 12 and len(resumed.history) == 12
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history])
    for a, b in zip(
        reference.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
    with pytest.raises(QPIError, match="12 steps"):
        fit(_tiny_net(), _loss, _source, steps=20, checkpoint_path=path)


def test_phase_loss_ignores_offset_and_masked_pixels():
    target = torch.randn(2, 1, 8, 8)
    assert phase_loss(target + 5.0, target).item() == pytest.approx(0.0, abs=1e-6)
    prediction = target.clone()
    prediction[..., :2, :] += 10.0
    mask = torch.zeros_like(target, dtype=torch.bool)
    mask[..., :2, :] = True
    assert phase_loss(prediction, target, mask, kind="mse").item() == pytest.approx(0.0, abs=1e-6)
    assert phase_loss(prediction, target).item() > 1.0


def test_log_mse_loss_is_the_mean_log_of_each_fields_error_and_weighs_fields_by_relative_error():
    target = torch.zeros(2, 1, 8, 8)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    prediction = (target + noise * torch.tensor([0.1, 3.0]).view(2, 1, 1, 1)).requires_grad_()
    per_field = [phase_loss(prediction[i : i + 1], target[i : i + 1], kind="mse") for i in (0, 1)]
    expected = sum(torch.log(m + LOG_MSE_FLOOR_RAD2) for m in per_field) / 2
    loss = phase_loss(prediction, target, kind="log_mse")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # Under mse the field with 30x the error takes ~900x the gradient; under log_mse each field's
    # gradient is its own relative error, so both pull about equally (a field's pull on the
    # loss, |grad| * |error|, is 2 / n_fields whatever its scale).
    for kind, low, high in (("mse", 500.0, 2000.0), ("log_mse", 0.9, 1.1)):
        (grad,) = torch.autograd.grad(phase_loss(prediction, target, kind=kind), prediction)
        diff = prediction.detach() - prediction.detach().mean(dim=(2, 3), keepdim=True)
        pull = (grad * diff).flatten(1).sum(1)
        assert low < (pull[1] / pull[0]).item() < high
    assert phase_loss(target + 5.0, target, kind="log_mse").item() == pytest.approx(
        math.log(LOG_MSE_FLOOR_RAD2), rel=1e-5
    )


def test_sign_free_loss_takes_the_better_sign_per_image():
    target = torch.rand(3, 1, 8, 8)
    prediction = torch.cat([target[:1], -target[1:2], -target[2:] + 0.5])
    assert phase_loss(prediction, target).item() > 0.1
    assert phase_loss(prediction, target, sign_free=True).item() == pytest.approx(0.0, abs=1e-6)
    wrong = torch.rand(3, 1, 8, 8)
    per_sign = [
        phase_loss(s * wrong[i : i + 1], target[i : i + 1]) for i in range(3) for s in (1, -1)
    ]
    expected = sum(min(per_sign[2 * i], per_sign[2 * i + 1]) for i in range(3)) / 3
    assert phase_loss(wrong, target, sign_free=True).item() == pytest.approx(expected.item())


def test_the_hologram_cannot_tell_the_phase_sign():
    """Carrier f with phase phi and carrier -f with phase -phi make the same hologram: why the
    networks are trained sign-free and flip their output so that cells are positive."""
    from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram

    system = OffAxisSystem(carrier_angle_deg=30.0, aberrations_rad={"tilt_x": 2.0, "defocus": 1.0})
    mirrored = system.replace(
        carrier_angle_deg=210.0, aberrations_rad={"tilt_x": -2.0, "defocus": -1.0}
    )
    cells = random_cells((64, 64), pixel_size_um=0.3, wavelength_nm=532.0, n_cells=(2, 2), seed=1)
    a = simulate_hologram(cells.phase, cells.amplitude, system, noise=False)
    b = simulate_hologram(-cells.phase, cells.amplitude, mirrored, noise=False)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)


def test_psnr_identical_and_known_noise():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.0, 4.0, (64, 64))
    data_range = truth.max() - truth.min()
    assert psnr(truth, truth) == math.inf
    noise = rng.choice([-0.1, 0.1], size=truth.shape)
    assert psnr(truth + noise, truth) == pytest.approx(10 * math.log10(data_range**2 / 0.01))
    scores = image_metrics(truth + 3.0, truth)
    assert scores["psnr_db"] > 200 and scores["ssim"] == pytest.approx(1.0)
    assert scores["rmse_rad"] == pytest.approx(0.0, abs=1e-9)


def test_evaluate_accepts_any_predictor():
    class Set:
        phases = np.zeros((3, 32, 32), np.float32)
        holograms = np.zeros((3, 32, 32), np.uint16)
        labels = np.zeros((3, 32, 32), np.int32)

    Set.phases[:, 8:16, 8:16] = 2.0
    Set.labels[:, 8:16, 8:16] = 1

    class Result:
        phase = Set.phases[0] + 1.0

    scores = evaluate(lambda h: Result(), Set)
    assert scores["n"] == 3 and scores["psnr_db"] == math.inf and scores["rmse_cells_rad"] == 0


def test_synthetic_data_is_seeded_shaped_and_normalised():
    from napari_qpi.training.data import DataConfig, synthetic_batch, synthetic_batches

    config = DataConfig(size=64, batch_size=3)
    x, y = synthetic_batch(config, seed=5, step=2)
    assert x.shape == y.shape == (3, 1, 64, 64) and x.dtype == y.dtype == torch.float32
    again, _ = synthetic_batch(config, seed=5, step=2)
    assert torch.equal(x, again)
    assert not torch.equal(x, synthetic_batch(config, seed=6, step=2)[0])
    assert x.mean(dim=(-2, -1)).abs().max() < 1e-4
    assert torch.allclose(x.std(dim=(-2, -1)), torch.ones(3, 1), atol=1e-3)
    stream = synthetic_batches(config, seed=5)
    torch.testing.assert_close(next(iter(stream(2)))[0], x)


def test_synthetic_target_is_zero_in_the_background_and_wraps():
    from napari_qpi.training.data import DataConfig, synthetic_field

    field = synthetic_field(DataConfig(size=128, peak_phase_rad=(8.0, 9.0)), seed=11)
    assert field.hologram.dtype == np.uint16 and field.phase.dtype == np.float32
    background = field.labels == 0
    assert background.any() and np.all(field.phase[background] == 0)
    assert field.phase.max() > 2 * np.pi


def test_large_cells_mixes_close_up_batches_of_large_cells_at_the_native_grid():
    from napari_qpi.retrieval import fourier
    from napari_qpi.training.data import (
        LARGE_CELLS_CLOSE_UP,
        DataConfig,
        close_up_config,
        is_close_up,
        split_config,
        synthetic_batch,
    )

    config = split_config("large-cells", size=128)
    assert config.close_up == LARGE_CELLS_CLOSE_UP > 0
    close = [is_close_up(config, 0, step) for step in range(400)]
    assert abs(np.mean(close) - LARGE_CELLS_CLOSE_UP) < 0.08
    assert not any(is_close_up(split_config("standard", 128), 0, s) for s in range(50))
    # the close-up batches of the training stream are drawn from close_up_config, the others
    # are the standard batches of the same (seed, step)
    config = replace(config, batch_size=2)
    step = close.index(True)
    close_up = close_up_config(config)
    assert close_up.close_up == 0.0 and close_up.carrier_period_px == (2.5, 3.0)
    for got, expected in zip(
        synthetic_batch(config, 0, step), synthetic_batch(close_up, 0, step), strict=True
    ):
        torch.testing.assert_close(got, expected)
    plain = replace(config, close_up=0.0)
    other = close.index(False)
    torch.testing.assert_close(
        synthetic_batch(config, 0, other)[0], synthetic_batch(plain, 0, other)[0]
    )
    # close-up fields: fine fringes (crop factor 1 at 128^2) and cells far larger in pixels
    # than the standard data's (a round cell of 10-14 um at 0.2-0.45 um pixels: 22-70 px)
    from napari_qpi.training.data import synthetic_field

    spans, factors = [], []
    for i in range(6):
        field = synthetic_field(close_up, (0, step, i))
        assert 1 <= field.labels.max() <= 2
        sideband = fourier.find_sideband(field.hologram.astype(np.float32))
        factors.append(fourier.crop_factor(field.hologram.shape, sideband))
        rows, cols = np.nonzero(field.labels)
        spans.append(max(np.ptp(rows), np.ptp(cols)) + 1)
    assert factors == [1] * 6
    assert max(spans) > 90
    # the card's training range covers both kinds of field
    from napari_qpi.retrieval.model_range import range_of_data

    stated = range_of_data(config.to_dict(), "test")
    assert stated.fringe_period_px == (2.5, 6.0) and stated.pixel_size_um == (0.1, 0.45)
    assert range_of_data(plain.to_dict(), "test").pixel_size_um == (0.2, 0.45)
    with pytest.raises(ValueError, match="close_up"):
        DataConfig(close_up=1.5)


def test_held_out_splits_are_fixed_and_differ():
    from napari_qpi.training.data import held_out_set

    standard = held_out_set("standard", n=2, size=64)
    assert standard.holograms.shape == (2, 64, 64) and not standard.holograms.flags.writeable
    assert np.array_equal(held_out_set("standard", n=1, size=64).phases[0], standard.phases[0])
    transfer = held_out_set("transfer", n=2, size=64)
    period = [1 / math.hypot(*a.carrier_cycles_per_px) for a in transfer.acquisitions]
    assert all(6.0 <= p <= 8.0 for p in period)
    assert held_out_set("hard", n=2, size=64).phases.max() > 5.0
    with pytest.raises(ValueError, match="split"):
        held_out_set("easy", n=1)


def test_pairs_from_arrays_crops_and_masks():
    from napari_qpi.training.data import pairs_from_arrays

    rng = np.random.default_rng(0)
    holograms = rng.integers(0, 4000, (2, 80, 96)).astype(np.uint16)
    targets = rng.normal(size=(2, 80, 96)).astype(np.float32)
    ignore = np.zeros((2, 80, 96), bool)
    ignore[:, :10] = True
    source = pairs_from_arrays(holograms, targets, ignore, size=64, batch_size=3, seed=1)
    x, y, mask = next(iter(source(0)))
    assert x.shape == y.shape == mask.shape == (3, 1, 64, 64) and mask.dtype == torch.bool
    torch.testing.assert_close(next(iter(source(0)))[1], y)
    with pytest.raises(ValueError, match="shape"):
        pairs_from_arrays(holograms, targets[:, :40])


TINY_NETWORK = {"width": 0.25, "decoder_channels": 8, "coord_channels": True}


def test_search_prune_and_retrain_run():
    from napari_qpi.nn import PRNet, normalise_connectivity
    from napari_qpi.training.search import SearchSettings, TrainSettings, retrain, search

    settings = SearchSettings(
        network=TINY_NETWORK,
        size=64,
        batch_size=2,
        steps=30,
        val_every=15,
        val_images=1,
        eval_images=0,
    )
    found = search(settings)
    record = found.record
    probabilities = [p for row in record["gate_table"].values() for p in row.values()]
    assert len(probabilities) == 90 and max(abs(p - 0.5) for p in probabilities) > 0.01
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert normalise_connectivity(record["connectivity"]) == record["connectivity"]
    assert record["steps"] == 30 and [v["step"] for v in record["validation"]] == [15, 30]
    assert record["loss_curve"] and record["connections_total"] == 90

    trained = retrain(
        record["connectivity"],
        TrainSettings(
            network=TINY_NETWORK, size=64, batch_size=2, steps=5, val_images=0, eval_images=1
        ),
    )
    assert isinstance(trained.model, PRNet) and not trained.model.config.gated
    assert trained.model.connectivity == record["connectivity"]
    assert set(trained.record["metrics"]) == {"standard", "hard", "transfer"}
    assert trained.record["timings"]["images_per_s"] > 0


def _tiny_search(**changes):
    """A search of a few steps on the tiny network, without validation or held-out scoring."""
    from napari_qpi.training.search import SearchSettings, search

    settings = dict(network=TINY_NETWORK, size=64, batch_size=2, val_images=0, eval_images=0)
    return search(SearchSettings(**{**settings, **changes}))


def _gate_weights(model: nn.Module) -> torch.Tensor:
    from napari_qpi.nn.sparsemask import gate_parameters

    return torch.cat([p.detach().flatten() for p in gate_parameters(model)])


def test_gate_warmup_holds_the_gates_then_releases_them():
    from napari_qpi.nn.sparsemask import gate_parameters

    held = _tiny_search(steps=6, gate_warmup_steps=6)
    weights = _gate_weights(held.model)
    assert torch.equal(weights, torch.ones_like(weights))  # the gates never moved
    assert all(p.requires_grad for p in gate_parameters(held.model))  # ... and are released
    assert held.record["loss_curve"][-1][1] != held.record["loss_curve"][0][1]

    released = _gate_weights(_tiny_search(steps=8, gate_warmup_steps=4).model)
    assert bool(((released - 1).abs() > 1e-3).all())


def test_a_constant_gate_schedule_lets_gates_released_late_move_further():
    def gate_travel(schedule: str) -> float:
        outcome = _tiny_search(steps=12, gate_warmup_steps=6, gate_schedule=schedule)
        return float((_gate_weights(outcome.model) - 1).abs().mean())

    # after step 6 of 12 the cosine factor is below 1/2 and falling; constant keeps gate_lr
    assert gate_travel("constant") > 1.5 * gate_travel("cosine")


def test_model_folder_has_fp16_weights_and_matching_card(tmp_path):
    from napari_qpi.models.card import ModelCard
    from napari_qpi.nn import build_network
    from napari_qpi.training.search import TrainSettings, model_card, save_model_folder, train

    trained = train(
        "prnet",
        TrainSettings(
            network=TINY_NETWORK, size=64, batch_size=2, steps=2, val_images=0, eval_images=1
        ),
    )
    card = model_card("tiny-prnet", "supernet", trained, command="napari-qpi train --steps 2")
    folder = save_model_folder(tmp_path / "tiny-prnet", trained.model, card)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    saved = json.loads((folder / "card.json").read_text())
    assert saved["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert saved["family"] == "supernet" and saved["modality"] == "hologram"
    assert saved["architecture"]["network"] == "prnet"
    assert "connectivity" in saved["architecture"]["config"]
    assert saved["training"]["seed"] == 0 and saved["training"]["command"].startswith("napari-qpi")
    assert "command" in saved["metrics"]["standard"]
    card = ModelCard.load(folder)
    rebuilt = build_network(card.network, card.config)
    rebuilt.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    )


def test_search_and_train_commands(tmp_path):
    import argparse

    from napari_qpi.cli.training import (
        add_search_arguments,
        add_train_arguments,
        search_main,
        train_main,
    )

    tiny = [
        "--width",
        "0.25",
        "--decoder-channels",
        "8",
        "--batch-size",
        "2",
        "--eval-images",
        "1",
        "--val-every",
        "0",
        "--quiet",
    ]
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    out = tmp_path / "searched"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--search-size",
            "64",
            "--search-steps",
            "4",
            "--size",
            "64",
            "--steps",
            "2",
            "--max-inputs",
            "2",
            "--gate-schedule",
            "constant",
            *tiny,
        ]
    )
    assert search_main(args) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["family"] == "searched" and "--search-steps 4 " in card["training"]["command"]
    assert "--max-inputs 2" in card["training"]["command"]
    assert "--gate-schedule constant" in card["training"]["command"]
    assert card["training"]["search"]["settings"]["gate_schedule"] == "constant"
    assert all(
        len(inputs) <= 2 for inputs in card["architecture"]["config"]["connectivity"].values()
    )
    assert "--decoder-channels 8 " in card["training"]["command"]
    assert not (tmp_path / "searched.work").exists()

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path / "unet"),
            "--family",
            "unet",
            "--base-channels",
            "4",
            "--size",
            "64",
            "--steps",
            "2",
            *tiny,
        ]
    )
    assert train_main(args) == 0
    card = json.loads((tmp_path / "unet" / "card.json").read_text())
    assert card["family"] == "baseline" and card["architecture"]["network"] == "unet"

    searched = json.loads((out / "card.json").read_text())
    retrain = ["--out", str(tmp_path / "retrained"), "--connectivity", str(out / "card.json")]
    args = parser.parse_args([*retrain, "--size", "64", "--steps", "2", *tiny])
    assert train_main(args) == 0
    card = json.loads((tmp_path / "retrained" / "card.json").read_text())
    assert card["family"] == "searched"
    assert (
        card["architecture"]["config"]["connectivity"]
        == searched["training"]["search"]["connectivity"]
    )
    assert card["training"]["search"]["gate_table"] == searched["training"]["search"]["gate_table"]
    assert card["training"]["search"]["command"] == searched["training"]["command"]


def test_a_time_budget_alone_is_not_capped_by_the_default_steps():
    from napari_qpi.cli.training import UNLIMITED_STEPS, _steps

    assert _steps(None, None, 1000) == 1000
    assert _steps(None, 30.0, 1000) == UNLIMITED_STEPS
    assert _steps(200, 30.0, 1000) == 200


def test_train_init_continues_a_registered_model(tmp_path):
    import argparse
    import shutil

    from napari_qpi.cli.training import add_train_arguments, train_main
    from napari_qpi.errors import ModelError
    from napari_qpi.models.registry import clear_cache, load_model, user_models_dir
    from napari_qpi.nn import build_network
    from napari_qpi.training.warm_start import warm_start

    def run(out, *extra):
        parser = argparse.ArgumentParser()
        add_train_arguments(parser)
        tiny = ["--family", "unet", "--size", "64", "--steps", "2", "--batch-size", "2"]
        tiny += ["--eval-images", "1", "--val-every", "0", "--quiet"]
        return train_main(parser.parse_args(["--out", str(out), *tiny, *extra]))

    assert run(tmp_path / "tiny-unet-start", "--base-channels", "4") == 0
    shutil.copytree(tmp_path / "tiny-unet-start", user_models_dir() / "tiny-unet-start")
    clear_cache()
    start, start_card = load_model("tiny-unet-start", device="cpu", cached=False)

    fresh = build_network("unet", {"base_channels": 4, "cells_positive": False})
    provenance = warm_start(fresh, "unet", "tiny-unet-start")
    assert provenance["sha256"] == start_card.sha256 and provenance["steps"] == 2
    for key, value in start.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    assert run(tmp_path / "continued", "--base-channels", "4", "--init", "tiny-unet-start") == 0
    card = json.loads((tmp_path / "continued" / "card.json").read_text())
    assert card["training"]["init"]["model"] == "tiny-unet-start"
    assert "--init tiny-unet-start" in card["training"]["command"]

    with pytest.raises(ModelError, match="differs"):
        run(tmp_path / "other", "--base-channels", "8", "--init", "tiny-unet-start")


def test_train_init_may_add_a_native_head_to_a_prnet(tmp_path):
    """`--native-head K --init M` starts from M's weights with a head that adds zero; a front-end
    network may also move to another native grid; `--init-encoder M` takes M's encoder only."""
    import argparse
    import shutil

    from napari_qpi.cli.training import add_train_arguments, train_main
    from napari_qpi.errors import ModelError
    from napari_qpi.models.registry import clear_cache, load_model, user_models_dir
    from napari_qpi.models.weights import load_model_folder
    from napari_qpi.nn import build_network
    from napari_qpi.training.data import DataConfig, synthetic_batch
    from napari_qpi.training.warm_start import warm_start, warm_start_encoder

    tiny = ["--width", "0.25", "--decoder-channels", "8", "--no-cells-positive", "--residual"]
    tiny += ["--connectivity", '{"D0": ["E2", "G"]}']

    def run(out, *extra):
        parser = argparse.ArgumentParser()
        add_train_arguments(parser)
        args = ["--out", str(out), *tiny, "--size", "64", "--steps", "2", "--batch-size", "2"]
        args += ["--eval-images", "1", "--val-every", "0", "--quiet", *extra]
        return train_main(parser.parse_args(args))

    assert run(tmp_path / "tiny-prnet-start") == 0
    shutil.copytree(tmp_path / "tiny-prnet-start", user_models_dir() / "tiny-prnet-start")
    clear_cache()
    start, card = load_model("tiny-prnet-start", device="cpu", cached=False)
    start_card_config = card.config
    headed = build_network("prnet", {**card.config, "native_head": 4})
    provenance = warm_start(headed, "prnet", "tiny-prnet-start")
    assert provenance["added"] == ["native_head"]
    x, _ = synthetic_batch(DataConfig(size=64, batch_size=1), seed=0, step=0)
    with torch.no_grad():
        torch.testing.assert_close(headed.eval()(x), start.eval()(x))

    assert run(tmp_path / "headed", "--native-head", "4", "--init", "tiny-prnet-start") == 0
    card = json.loads((tmp_path / "headed" / "card.json").read_text())
    assert card["architecture"]["config"]["native_head"] == 4
    assert card["training"]["init"]["added"] == ["native_head"]
    assert "--native-head 4" in card["training"]["command"]
    assert run(tmp_path / "tight", "--native-grid", "tight", "--init", "tiny-prnet-start") == 0
    card = json.loads((tmp_path / "tight" / "card.json").read_text())
    assert card["architecture"]["config"]["front_end"]["grid"] == "tight"
    assert card["training"]["init"]["grid"] == {"from": "integer", "to": "tight"}
    assert "grid" not in start_card_config["front_end"]  # the start's card was left as it was
    assert run(tmp_path / "coma", "--background-order", "3", "--init", "tiny-prnet-start") == 0
    card = json.loads((tmp_path / "coma" / "card.json").read_text())
    assert card["architecture"]["config"]["front_end"]["background_order"] == 3
    assert card["training"]["init"]["background_order"] == {"from": 2, "to": 3}
    assert "--background-order 3" in card["training"]["command"]
    coma, _ = load_model_folder(tmp_path / "coma")
    assert coma.front_end.config.background_order == 3
    # a model folder works as a registered name
    start_folder = str(tmp_path / "tiny-prnet-start")
    assert run(tmp_path / "from-folder", "--native-head", "4", "--init", start_folder) == 0
    card = json.loads((tmp_path / "from-folder" / "card.json").read_text())
    assert card["training"]["init"]["sha256"] == provenance["sha256"]

    # another connectivity on the start's encoder
    other = ["--connectivity", '{"D0": ["E0", "D2"], "D2": ["E2", "G"]}']
    assert run(tmp_path / "re", *other, "--init-encoder", "tiny-prnet-start") == 0
    card = json.loads((tmp_path / "re" / "card.json").read_text())
    assert card["training"]["init"]["part"] == "encoder"
    retrained, _ = load_model_folder(tmp_path / "re")
    assert retrained.connectivity == {"D0": ["E0", "D2"], "D2": ["E2", "G"]}
    fresh = build_network("prnet", retrained.config.to_dict())
    warm_start_encoder(fresh, "prnet", "tiny-prnet-start")
    for key, value in start.encoder.state_dict().items():
        assert torch.equal(fresh.encoder.state_dict()[key], value), key
    with pytest.raises(ModelError, match="does not fit"):
        run(tmp_path / "wide", "--width", "0.5", "--init-encoder", "tiny-prnet-start")
    with pytest.raises(ModelError, match="differs"):  # a head does not excuse another change
        run(
            tmp_path / "other",
            "--native-head",
            "4",
            "--decoder-channels",
            "16",
            "--init",
            "tiny-prnet-start",
        )


def test_train_close_up_sets_the_fraction_of_close_up_batches(tmp_path):
    import argparse

    from napari_qpi.cli.training import add_train_arguments, train_main

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = ["--out", str(tmp_path / "m"), "--family", "unet", "--base-channels", "4"]
    args += ["--size", "64", "--steps", "1", "--batch-size", "2", "--eval-images", "0"]
    args += ["--val-every", "0", "--quiet", "--data", "large-cells", "--close-up", "0.1"]
    assert train_main(parser.parse_args(args)) == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["data"]["close_up"] == 0.1  # large-cells' own is 0.3
    assert (
        card["training"]["settings"]["close_up"] == 0.1
        and "--close-up 0.1" in card["training"]["command"]
    )
