"""The off-axis front end inside the model (napari_qpi.nn.frontend, issue 18 item 1)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from napari_qpi.errors import InputError, ModelError, SidebandError
from napari_qpi.models import ModelCard
from napari_qpi.models.weights import load_model_folder, save_model_folder
from napari_qpi.nn import PRNet, PRNetConfig, UNet, UNetConfig, build_network, frontend
from napari_qpi.nn.frontend import (
    CLASSICAL_INPUTS,
    RESIDUAL_FRONT_END,
    FrontEndConfig,
    OffAxisFrontEnd,
    classical_views,
    detect_carriers,
    residual_front_end,
    upsample_native,
)
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.retrieval.background import MASK_GRID
from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.retrieval.fourier import crop_factor, demodulate, find_sideband
from napari_qpi.retrieval.offaxis import OffAxisSettings, retrieve_offaxis
from napari_qpi.training.data import DataConfig, normalise_hologram, synthetic_batch
from napari_qpi.training.losses import phase_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hologram(
    shape: tuple[int, int] = (128, 128),
    period: float = 5.0,
    angle: float = 30.0,
    noise: bool = True,
    seed: int = 1,
) -> tuple[np.ndarray, OffAxisSystem]:
    cells = random_cells(shape, n_cells=3, peak_phase_rad=(3.0, 8.0), seed=seed)
    system = OffAxisSystem(
        carrier_period_px=period, carrier_angle_deg=angle, aberrations_rad={"defocus": 1.5}
    )
    hologram = simulate_hologram(cells.phase, cells.amplitude, system, seed=seed, noise=noise)
    return np.asarray(hologram, dtype=np.float32), system


def _tensor(hologram: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(normalise_hologram(hologram))[None, None]


def _small(family: str, **config: object) -> torch.nn.Module:
    if family == "prnet":
        base = {"width": 0.25, "decoder_channels": 8, "coord_channels": True}
        return PRNet(PRNetConfig(**{**base, "front_end": {}, **config}))
    return UNet(UNetConfig(**{"base_channels": 4, "depth": 2, "front_end": {}, **config}))


@pytest.mark.parametrize(
    ("shape", "period", "angle"),
    [((128, 128), 5.0, 30.0), ((96, 160), 3.2, 200.0), ((128, 192), 7.0, 100.0)],
)
def test_front_end_field_is_the_classical_native_field(shape, period, angle):
    hologram, _ = _hologram(shape, period, angle)
    sideband = find_sideband(hologram)
    classical = demodulate(hologram, sideband)
    field, grid = OffAxisFrontEnd().field(torch.from_numpy(hologram)[None, None])
    ours = field[0].numpy()
    q = crop_factor(shape, sideband)
    assert grid.pitch == (q, q) and ours.shape == classical.shape
    strong = np.abs(classical) > 0.05 * np.abs(classical).mean()
    difference = np.angle(ours * np.conj(classical))[strong]
    assert np.abs(difference).max() < 1e-4  # radians: exp(i phi) agrees to float32 rounding
    np.testing.assert_allclose(np.abs(ours), np.abs(classical), rtol=1e-4, atol=1e-3)
    features, _ = OffAxisFrontEnd()(_tensor(hologram))
    wrapped = np.angle(classical)
    assert features.shape == (1, 3, *classical.shape)
    cos, sin = features[0, 0].numpy(), features[0, 1].numpy()
    np.testing.assert_allclose(np.arctan2(sin, cos)[strong], wrapped[strong], atol=1e-4)


def test_given_carrier_is_used_and_checked():
    hologram, system = _hologram()
    x = torch.from_numpy(hologram)[None, None]
    plus = torch.tensor([system.sideband_cycles_per_px])
    field, _ = OffAxisFrontEnd().field(x, plus)
    sideband = find_sideband(hologram, carrier=system.sideband_cycles_per_px)
    classical = demodulate(hologram, sideband)
    np.testing.assert_allclose(field[0].numpy(), classical, rtol=1e-3, atol=1e-2)
    for bad in ([[0.0, 0.01]], [[0.0, 0.7]], [[0.1, 0.1], [0.1, 0.1]]):
        with pytest.raises(SidebandError):
            OffAxisFrontEnd().field(x, torch.tensor(bad))
    with pytest.raises(SidebandError):
        detect_carriers(np.random.default_rng(0).normal(size=(1, 64, 64)))


def _unit(features: torch.Tensor) -> np.ndarray:
    """exp(i phi_w) from the cos / sin channels of one image."""
    return features[0, 0].numpy() + 1j * features[0, 1].numpy()


def _distance(a: np.ndarray, b: np.ndarray, border: int = 6) -> tuple[float, float]:
    """Median and largest |b - exp(i c) a| for the best constant phase c, ``border`` native
    pixels from the edge left out (the fringes do not continue across it: ringing)."""
    inner = (slice(border, -border), slice(border, -border))
    a, b = a[inner], b[inner]
    c = np.angle(np.sum(b * np.conj(a)))
    error = np.abs(b - np.exp(1j * c) * a)
    return float(np.median(error)), float(error.max())


def test_mirrored_carrier_conjugates_the_field_unless_the_sideband_is_given():
    """Carrier f and -f: the sideband at one position carries +phi in one hologram and -phi in
    the other, so exp(i phi_w) is conjugated (sin flips; up to a constant phase, where the fringes
    start); demodulated at each one's +phi sideband the features agree. Not to float precision:
    the DC term leaks into the filter mirrored (largest error ~0.1 for cells of 1-2 rad)."""
    cells = random_cells((128, 128), n_cells=3, peak_phase_rad=(1.0, 2.0), seed=1)
    holograms, plus = [], []
    for angle in (30.0, 210.0):
        system = OffAxisSystem(
            carrier_period_px=4.0, carrier_angle_deg=angle, aberrations_rad={"defocus": 1.5}
        )
        hologram = simulate_hologram(cells.phase, cells.amplitude, system, noise=False)
        holograms.append(_tensor(np.asarray(hologram, np.float32)))
        plus.append(torch.tensor([system.sideband_cycles_per_px]))
    front = OffAxisFrontEnd()
    same = [front(h, plus[1])[0] for h in holograms]  # one sideband position (fx > 0) for both
    median, largest = _distance(np.conj(_unit(same[0])), _unit(same[1]))
    assert median < 0.01 and largest < 0.15
    assert _distance(_unit(same[0]), _unit(same[1]))[0] > 0.3
    own = [front(h, p)[0] for h, p in zip(holograms, plus, strict=True)]
    median, largest = _distance(_unit(own[0]), _unit(own[1]))
    assert median < 0.01 and largest < 0.15
    for a, b in (same, own):
        assert (a[0, 2] - b[0, 2]).abs().numpy()[6:-6, 6:-6].max() < 0.1


def test_upsampling_puts_native_samples_on_their_hologram_pixels():
    q, (h, w) = 4, (32, 48)
    ys, xs = torch.meshgrid(torch.arange(h // q), torch.arange(w // q), indexing="ij")
    native = (0.3 * q * ys + 0.1 * q * xs).float()[None, None]
    full = upsample_native(native, q, (h, w))
    Y, X = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = (slice(0, h - q + 1), slice(0, w - q + 1))
    torch.testing.assert_close(full[0, 0][inside], (0.3 * Y + 0.1 * X).float()[inside])
    torch.testing.assert_close(full[..., ::q, ::q], native)


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_gradients_reach_the_hologram_and_every_parameter(family):
    net = _small(family).train()
    hologram, _ = _hologram((128, 128), 4.0, 60.0)
    x = _tensor(hologram).requires_grad_(True)
    net(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    unused = [name for name, p in net.named_parameters() if p.grad is None]
    assert not unused


def _adam_steps(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int = 30
) -> list[float]:
    """Losses of ``steps`` Adam steps of the L1 phase loss on one batch."""
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = phase_loss(net(x), y, kind="l1")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("family", "config", "lr", "factor"),
    [("prnet", {"decoder_channels": 16}, 1e-2, 0.9), ("unet", {"base_channels": 8}, 3e-3, 0.5)],
)
def test_front_end_networks_train_on_simulated_holograms(family, config, lr, factor):
    """Real steps on one batch of simulated 64 px holograms, carriers detected in the forward."""
    torch.manual_seed(0)
    net = _small(family, **config).train()
    x, y = synthetic_batch(DataConfig(size=64, batch_size=4), seed=3, step=0)
    losses = _adam_steps(net, x, y, lr)
    assert np.mean(losses[-3:]) < factor * np.mean(losses[:3]), losses


def test_config_round_trip_and_old_configs_unchanged():
    front = FrontEndConfig(filter="gaussian", radius_fraction=0.5, channels=["cos", "sin"])
    assert FrontEndConfig.from_dict(json.loads(json.dumps(front.to_dict()))) == front
    for config in (PRNetConfig(width=0.25, front_end=front), UNetConfig(front_end=front)):
        data = json.loads(json.dumps(config.to_dict()))
        assert data["front_end"] == front.to_dict()
        assert type(config).from_dict(data) == config
    assert "front_end" not in PRNetConfig().to_dict() and "front_end" not in UNetConfig().to_dict()
    for bad in ({"filter": "box"}, {"radius_fraction": 1.2}, {"channels": ["phase"]}, {"x": 1}):
        with pytest.raises(ModelError):
            FrontEndConfig.from_dict(bad)
    with pytest.raises(ModelError):
        UNetConfig(in_channels=2, front_end={})
    with pytest.raises(InputError):
        UNet(UNetConfig(base_channels=4, depth=2))(torch.zeros(1, 1, 32, 32), carrier=[0.1, 0.2])


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_fp16_weights_round_trip_gives_the_same_output(family, tmp_path):
    torch.manual_seed(1)
    net = _small(family).eval()
    card = ModelCard(
        name=f"fe-{family}",
        family="baseline",
        modality="hologram",
        architecture={"network": family, "config": net.config.to_dict()},
        normalisation={"method": "mean_std", "eps": 1e-6},
    )
    save_model_folder(tmp_path / family, net, card)
    loaded, loaded_card = load_model_folder(tmp_path / family)
    assert loaded_card.config["front_end"] == FrontEndConfig().to_dict()
    assert isinstance(build_network(family, loaded_card.config).front_end, OffAxisFrontEnd)
    reference = net.half().float()
    hologram, _ = _hologram((128, 128), 4.0, 60.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_tensor(hologram)), reference(_tensor(hologram)))


def test_retrieve_deep_passes_each_planes_sideband(tmp_path):
    torch.manual_seed(2)
    net = _small("prnet").eval()
    card = ModelCard(
        name="fe",
        family="baseline",
        modality="hologram",
        architecture={"network": "prnet", "config": net.config.to_dict()},
        normalisation={"method": "mean_std", "eps": 1e-6},
    )
    one, _ = _hologram((128, 128), 5.0, 30.0)
    two, _ = _hologram((128, 128), 3.5, 120.0, seed=4)
    result = retrieve_deep(np.stack([one, two]), model=(net, card))
    carriers = result.info["front_end_carriers"]
    expected = [find_sideband(h).center_cycles_per_px for h in (one, two)]
    np.testing.assert_allclose(carriers, expected, atol=1e-6)
    with torch.no_grad():
        direct = net(_tensor(two), carrier=torch.tensor([expected[1]]))[0, 0].numpy()
    np.testing.assert_allclose(result.phase[1], direct, atol=1e-5)
    tiled = retrieve_deep(one, model=(net, card), tile=64, overlap=16)
    assert tiled.phase.shape == one.shape and tiled.info["tiles"] > 1
    with pytest.raises(SidebandError):
        retrieve_deep(np.ones((64, 64), np.float32), model=(net, card))


@pytest.mark.parametrize(
    ("flags", "front_end"),
    [
        (["--front-end"], FrontEndConfig()),
        (["--residual"], RESIDUAL_FRONT_END),
        (["--residual", "--classical-input", "gradient"], residual_front_end("gradient")),
    ],
)
def test_train_command_with_front_end_writes_a_card_that_loads(tmp_path, flags, front_end):
    from napari_qpi.cli.training import add_train_arguments, train_main

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    out = tmp_path / "fe-unet"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--family",
            "unet",
            "--base-channels",
            "4",
            *flags,
            "--size",
            "64",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--eval-images",
            "0",
            "--val-every",
            "0",
            "--quiet",
        ]
    )
    assert train_main(args) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"]["config"]["front_end"] == front_end.to_dict()
    assert " ".join(flags) in card["training"]["command"]
    model, _ = load_model_folder(out)
    assert model.front_end is not None and model.front_end.config == front_end


def test_pilot_script_runs_quick(capsys):
    from test_benchmarks import load_script

    pilot = load_script("frontend_pilot")
    arms = "no,yes,residual-wrapped"
    assert pilot.main(["--quick", "--families", "unet", "--arms", arms]) == 0
    out = capsys.readouterr().out
    assert "| unet | yes |" in out and "| unet | no |" in out
    assert "| unet | residual-wrapped |" in out


@pytest.mark.parametrize("family", ["prnet", "unet"])
@pytest.mark.parametrize(("period", "angle"), [(5.0, 30.0), (3.5, 200.0)])
@pytest.mark.parametrize("classical_input", ["phase", "gradient"])
def test_untrained_residual_model_is_the_classical_method(family, period, angle, classical_input):
    """Zero-initialised last layer: the output is the classical native phase (cells positive)
    on the hologram pixels that carry native samples, whichever sideband was detected, whether
    or not the network reads that phase."""
    torch.manual_seed(3)
    net = _small(family, front_end=residual_front_end(classical_input).to_dict()).eval()
    hologram, _ = _hologram((128, 128), period, angle)
    classical = retrieve_offaxis(hologram, settings=OffAxisSettings(resolution="native"))
    q = round(classical.pixel_size_factor)
    with torch.no_grad():
        ours = net(_tensor(hologram))[0, 0].numpy()
    assert ours.shape == hologram.shape
    np.testing.assert_allclose(ours[::q, ::q], classical.phase, atol=2e-3)
    assert ours.max() > 2.0 and ours.min() > -1.0  # cells rise above the medium (3-8 rad)


def test_residual_front_end_trains_and_starts_at_the_classical_loss():
    torch.manual_seed(0)
    net = _small("unet", base_channels=8, front_end=RESIDUAL_FRONT_END.to_dict()).train()
    x, y = synthetic_batch(DataConfig(size=64, batch_size=4), seed=3, step=0)
    with torch.no_grad():
        classical = net.front_end.prepare(x, None, net.stride)
        start = OffAxisFrontEnd.restore(torch.zeros_like(classical.base), classical, (64, 64))
    losses = _adam_steps(net, x, y, 3e-3)
    assert losses[0] == pytest.approx(phase_loss(start, y, kind="l1").item(), rel=1e-5)
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_residual_configs_round_trip_and_the_shipped_one_is_unchanged():
    data = json.loads(json.dumps(RESIDUAL_FRONT_END.to_dict()))
    assert data["residual"] is True and data["channels"][-1] == "classical"
    assert FrontEndConfig.from_dict(data) == RESIDUAL_FRONT_END == residual_front_end("phase")
    assert "residual" not in FrontEndConfig().to_dict()
    for name in CLASSICAL_INPUTS:
        config = residual_front_end(name)
        assert FrontEndConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert residual_front_end("none").channels == ("cos", "sin", "log_amplitude")
    with pytest.raises(ModelError, match="classical input"):
        residual_front_end("level")


def test_classical_views_do_not_see_the_phase_level():
    """Differences ignore any constant, cos / sin any multiple of 2 pi."""
    y, x = np.mgrid[0:32, 0:40] / 8.0
    phase = torch.from_numpy(3.0 * np.exp(-((x - 2.5) ** 2) - (y - 2) ** 2))[None].float()
    views, shifted, turned = (classical_views(phase + c) for c in (0.0, 0.7, 4 * np.pi))
    for name in ("classical_dy", "classical_dx"):
        np.testing.assert_allclose(views[name], shifted[name], atol=1e-5)
        assert views[name].shape == phase.shape
    for name in ("classical_cos", "classical_sin"):
        np.testing.assert_allclose(views[name], turned[name], atol=1e-5)
    np.testing.assert_allclose(views["classical_dx"][..., :-1], torch.diff(phase), atol=1e-6)
    assert views["classical"].sub(shifted["classical"]).abs().max() > 0.69


@pytest.mark.parametrize(("classical_input", "level_free"), [("phase", False), ("gradient", True)])
def test_level_free_residual_network_corrects_a_raised_phase_the_same(
    monkeypatch, classical_input, level_free
):
    """A classical phase raised by 4 pi raises the output of a network that reads only level-free
    views of it by exactly 4 pi (its correction is unchanged); one reading the phase itself moves
    its correction too."""
    torch.manual_seed(5)
    net = _small("unet", base_channels=8, front_end=residual_front_end(classical_input).to_dict())
    torch.nn.init.normal_(net.head.weight, std=0.3)  # a correction that is not zero
    hologram = _tensor(_hologram((128, 128))[0])
    with torch.no_grad():
        out = net.eval()(hologram)
        native = frontend.classical_native
        monkeypatch.setattr(
            frontend, "classical_native", lambda f, order: native(f, order) + 4 * np.pi
        )
        raised = net(hologram)
    change = (raised - out - 4 * np.pi).abs().max().item()
    assert (change < 1e-3) if level_free else (change > 0.05), change


@pytest.mark.parametrize("seed", [1, 2])
def test_front_end_classifies_background_on_a_coarser_grid(seed, monkeypatch):
    """The front end's classical phase finds the background pixels on a subgrid of at most
    ``CLASSICAL_MASK_GRID`` pixels a side (half its cost at 256^2), fitting the polynomial at
    the full native grid: its phase stays within a few mrad of the one classified at full
    resolution (measured: 0.8-1.8 mrad RMS, at most 10 mrad, on 3 fields)."""
    hologram, _ = _hologram((256, 256), 3.0, 30.0, seed=seed)
    field, _ = OffAxisFrontEnd(FrontEndConfig(grid="tight")).field(_tensor(hologram))
    assert max(field.shape[-2:]) > frontend.CLASSICAL_MASK_GRID  # the subgrid is coarser
    coarse = frontend.classical_native(field, 3)
    monkeypatch.setattr(frontend, "CLASSICAL_MASK_GRID", MASK_GRID)
    fine = frontend.classical_native(field, 3)
    difference = (coarse - fine).numpy()
    assert np.sqrt(np.mean(difference**2)) < 4e-3
    assert 0 < np.abs(difference).max() < 0.02  # the coarse grid was used, and it is close
    assert np.abs(fine.numpy()).max() > 3.0  # cells of several radians


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_front_end_model_runs_a_field_of_any_size_unpadded(family, monkeypatch):
    """A field whose sides are not multiples of the network's stride (here 150 x 170, 3.3 px
    fringes) reaches the front end as it is: ``retrieve_deep`` gives exactly the network's output
    on the unpadded hologram, and an untrained residual model is the classical method there
    (a hologram padded by reflection mirrors its fringes, and the demodulated field, the
    classical phase and the features would be computed on that broken field). The front end
    classifies background pixels on the classical method's grid here, so that the two agree to
    rounding (its own, coarser grid moves the background by a few mrad: the next test)."""
    monkeypatch.setattr(frontend, "CLASSICAL_MASK_GRID", MASK_GRID)
    torch.manual_seed(2)
    net = _small(family, front_end=RESIDUAL_FRONT_END.to_dict()).eval()
    hologram, _ = _hologram((150, 170), 3.3, 40.0)
    assert 150 % net.stride and 170 % net.stride
    card = ModelCard(
        name="odd",
        family="baseline",
        modality="hologram",
        architecture={"network": family, "config": net.config.to_dict()},
        normalisation={"method": "mean_std", "eps": 1e-6},
    )
    result = retrieve_deep(hologram, model=(net, card), device="cpu")
    assert result.info["padded_shape"] == [150, 170]
    with torch.no_grad():
        direct = net(_tensor(hologram))[0, 0].numpy()
    np.testing.assert_allclose(result.phase, direct, atol=1e-5)
    classical = retrieve_offaxis(hologram, settings=OffAxisSettings(resolution="native"))
    q = round(classical.pixel_size_factor)
    np.testing.assert_allclose(result.phase[::q, ::q], classical.phase, atol=2e-3)


# the tight native grid --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "period"), [((128, 128), 3.0), ((238, 267), 2.6), ((96, 160), 6.0)]
)
def test_tight_grid_holds_the_filter_in_fewer_samples_than_the_integer_one(shape, period):
    """3 px fringes on 128^2: the integer grid is the full 128^2 (q = 1), the tight one ~70^2; a
    238 x 267 field (no common divisor) gets q = 1 whatever the fringes, the tight grid does not.
    Either grid holds the filter: 2 support N + 2 bins or more on each side."""
    hologram, _ = _hologram(shape, period, 30.0)
    x = torch.from_numpy(hologram)[None, None]
    tight = OffAxisFrontEnd(FrontEndConfig(grid="tight"))
    centres = tight.carriers(x, None)
    grid = tight.grid(shape, centres)
    integer = OffAxisFrontEnd().grid(shape, centres)
    support = 0.7 * np.hypot(*centres[0]) * 1.1  # smooth disk: radius (1 + edge / 2)
    assert all(m >= 2 * support * n + 2 - 1e-9 for m, n in zip(grid.crop, shape, strict=True))
    assert np.prod(grid.crop) <= np.prod(integer.crop)
    assert abs(grid.pitch[0] - grid.pitch[1]) < 0.02 * grid.pitch[0]  # one pitch on both axes
    if period < 4:
        assert np.prod(grid.crop) < 0.5 * np.prod(integer.crop)


def test_tight_field_samples_the_band_limited_field_at_its_positions():
    """On a grid of pitch 1.5 (120 -> 80 samples), every second native sample lies on a hologram
    pixel (3 j / 2): there it equals the classical field demodulated at full resolution."""
    hologram, system = _hologram((120, 120), 5.0, 30.0)
    sideband = find_sideband(hologram, carrier=system.sideband_cycles_per_px)
    full = demodulate(hologram, sideband, resolution="full")
    centre = np.array([sideband.center_cycles_per_px])
    grid = frontend.NativeGrid((80, 80), (120, 120))
    assert grid.pitch == (1.5, 1.5)
    ours = frontend.demodulate_torch(
        torch.from_numpy(hologram)[None], centre, grid, 0.7, "smooth_disk"
    )[0].numpy()
    strong = np.abs(full[::3, ::3]) > 0.05 * np.abs(full).mean()
    difference = np.angle(ours[::2, ::2] * np.conj(full[::3, ::3]))[strong]
    assert np.abs(difference).max() < 1e-3
    np.testing.assert_allclose(np.abs(ours[::2, ::2]), np.abs(full[::3, ::3]), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_untrained_residual_model_on_a_tight_grid_is_the_classical_phase(family):
    """The residual model on a tight grid is the classical phase of that grid, upsampled: on
    3 px fringes it agrees with the classical method (full grid) in the cells and the
    background, and the config round-trips through a card (``grid`` written only when tight)."""
    torch.manual_seed(3)
    config = FrontEndConfig(**{**RESIDUAL_FRONT_END.to_dict(), "grid": "tight"})
    assert FrontEndConfig.from_dict(config.to_dict()) == config
    assert "grid" not in RESIDUAL_FRONT_END.to_dict()
    net = _small(family, front_end=config.to_dict()).eval()
    hologram, _ = _hologram((128, 128), 3.0, 60.0)
    classical = retrieve_offaxis(hologram).phase
    with torch.no_grad():
        ours = net(_tensor(hologram))[0, 0].numpy()
    assert ours.shape == hologram.shape
    inner = (slice(8, -8), slice(8, -8))
    error = ours[inner] - classical[inner]
    error -= np.median(error)
    assert np.sqrt(np.mean(error**2)) < 0.1, np.sqrt(np.mean(error**2))
    assert np.corrcoef(ours[inner].ravel(), classical[inner].ravel())[0, 1] > 0.99


def test_grid_must_be_known():
    with pytest.raises(ModelError, match="grid"):
        FrontEndConfig(grid="fine")


def test_memory_estimate_of_a_tight_model_covers_the_finest_grid():
    """The memory probe measures a tight model on the finest grid (q = 1), as the integer one:
    a hologram with 2 px fringes needs a tight grid close to the hologram's own."""
    from napari_qpi.retrieval.deep import bytes_per_pixel

    torch.manual_seed(0)
    integer = _small("unet", front_end=RESIDUAL_FRONT_END.to_dict()).eval()
    tight = _small("unet", front_end={**RESIDUAL_FRONT_END.to_dict(), "grid": "tight"}).eval()
    tight.load_state_dict(integer.state_dict())
    device = torch.device("cpu")
    assert bytes_per_pixel(tight, 1, 4, device) == bytes_per_pixel(integer, 1, 4, device)
    assert tight.front_end.config.grid == "tight"  # the model itself is left alone


def test_background_order_round_trips_and_old_cards_stay_as_they_were():
    """The classical background order is a card field written only when it is not the
    default: every card written before it existed reads back to the same config and dict."""
    from importlib.resources import files

    assert "background_order" not in RESIDUAL_FRONT_END.to_dict()
    assert RESIDUAL_FRONT_END.background_order == frontend.CLASSICAL_BACKGROUND_ORDER == 2
    fourth = FrontEndConfig(channels=RESIDUAL_FRONT_END.channels, residual=True, background_order=4)
    data = json.loads(json.dumps(fourth.to_dict()))
    assert data["background_order"] == 4 and FrontEndConfig.from_dict(data) == fourth
    config = PRNetConfig(width=0.25, front_end=fourth)
    assert PRNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in (6, -1, 2.5, True, "4"):
        with pytest.raises(ModelError, match="background_order"):
            FrontEndConfig(background_order=bad)
    shipped = files("napari_qpi.models") / "shipped"
    stored = [
        json.loads((folder / "card.json").read_text())["architecture"]["config"]["front_end"]
        for folder in shipped.iterdir()
        if (folder / "card.json").is_file()
        and "front_end" in json.loads((folder / "card.json").read_text())["architecture"]["config"]
    ]
    assert stored  # the shipped hologram models have a front end
    for data in stored:  # read back as written; order 3 (coma) written, 2 left out
        read = FrontEndConfig.from_dict(data)
        assert read.background_order == data.get("background_order", 2) and read.to_dict() == data


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_untrained_residual_model_removes_the_background_order_it_is_given(family):
    """An untrained residual model is the classical method with the card's background order:
    order 4 removes the spherical aberration that order 2 leaves; the default is order 2."""
    torch.manual_seed(3)
    cells = random_cells((128, 128), n_cells=3, peak_phase_rad=(3.0, 6.0), seed=4)
    system = OffAxisSystem(
        carrier_period_px=5.0, carrier_angle_deg=30.0, aberrations_rad={"spherical": 2.0}
    )
    hologram = np.asarray(simulate_hologram(cells.phase, cells.amplitude, system, seed=4))
    outputs = {}
    for order in (2, 4):
        front = FrontEndConfig(
            channels=RESIDUAL_FRONT_END.channels, residual=True, background_order=order
        )
        net = _small(family, front_end=front.to_dict()).eval()
        settings = OffAxisSettings(resolution="native", background_order=order)
        classical = retrieve_offaxis(hologram.astype(np.float32), settings=settings)
        q = round(classical.pixel_size_factor)
        with torch.no_grad():
            outputs[order] = net(_tensor(hologram.astype(np.float32)))[0, 0].numpy()[::q, ::q]
        np.testing.assert_allclose(outputs[order], classical.phase, atol=2e-3)
    default = _small(family, front_end=RESIDUAL_FRONT_END.to_dict()).eval()
    with torch.no_grad():
        same = default(_tensor(hologram.astype(np.float32)))[0, 0].numpy()[::q, ::q]
    np.testing.assert_array_equal(same, outputs[2])
    assert np.abs(outputs[4] - outputs[2]).max() > 0.3  # the spherical term the fit removes
