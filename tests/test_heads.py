"""The native head's detail on a grid finer than the native one (napari_qpi.nn.heads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_qpi.errors import ModelError
from napari_qpi.nn import PRNet, PRNetConfig
from napari_qpi.nn.frontend import OffAxisFrontEnd, residual_front_end
from napari_qpi.nn.native_grid import NativeGrid, NativeInput
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.training.data import normalise_hologram

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"width": 0.25, "decoder_channels": 8, "coord_channels": True, "native_head": 4}
SMALL["connectivity"] = {"D0": ["E0", "E3"]}  # shallow: trains on a batch of one


def _prnet(**config: object) -> PRNet:
    front_end = residual_front_end().to_dict() | {"grid": "integer"}
    return PRNet(PRNetConfig(**{**SMALL, "front_end": front_end, **config}))


def _hologram(shape=(64, 64), period=4.0, seed=1) -> torch.Tensor:
    cells = random_cells(shape, n_cells=2, peak_phase_rad=(2.0, 4.0), seed=seed)
    system = OffAxisSystem(carrier_period_px=period, carrier_angle_deg=40.0)
    hologram = simulate_hologram(cells.phase, cells.amplitude, system, seed=seed, noise=False)
    return torch.from_numpy(normalise_hologram(np.asarray(hologram, np.float32)))[None, None]


@pytest.mark.parametrize(("shape", "pitch", "upscale"), [((16, 16), 2, 2), ((24, 24), 3, 2)])
def test_detail_sample_s_j_plus_r_lies_at_native_position_j_plus_r_over_s(shape, pitch, upscale):
    grid = NativeGrid.integer(shape, pitch)
    native = NativeInput(torch.zeros(1, 1, *grid.crop), None, grid)
    fine = tuple(upscale * n for n in grid.crop)
    detail = torch.arange(float(np.prod(fine))).reshape(1, 1, *fine)
    out = OffAxisFrontEnd.restore(torch.zeros(1, 1, *grid.crop), native, shape, detail)
    step = pitch / upscale  # hologram pixels per detail sample
    for k in range(fine[0]):
        if (k * step).is_integer() and k * step < shape[0]:
            y = int(k * step)
            torch.testing.assert_close(out[0, 0, y, y], detail[0, 0, k, k])


def test_detail_starts_at_zero_and_then_draws_what_the_native_grid_cannot():
    """A head gaining detail computes what it did; trained on a target with structure at the
    hologram's own pixel pitch (a checkerboard, beyond a q = 2 native grid's band), the detail
    fits it and the head without detail cannot."""
    x = _hologram()
    plain = _prnet().eval()
    detailed = _prnet(head_upscale=2).eval()
    missing, unexpected = detailed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("native_head.detail.") for k in missing)
    with torch.no_grad():
        base = plain(x)
        torch.testing.assert_close(detailed(x), base)
    assert plain.front_end.grid(tuple(x.shape[-2:]), plain.front_end.carriers(x, None)).pitch == (
        2.0,
        2.0,
    )

    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    target = base + 0.5 * ((yy + xx) % 2 * 2 - 1).float()
    losses = {}
    for name, net in (("plain", plain), ("detailed", detailed)):
        net.train()
        optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(60):
            loss = F.mse_loss(net(x), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        losses[name] = loss.item()
    assert losses["plain"] > 0.2 and losses["detailed"] < 0.2 * losses["plain"], losses


def test_head_upscale_is_in_the_card_only_when_set_and_needs_a_native_head_and_front_end():
    assert "head_upscale" not in _prnet().config.to_dict()  # old cards stay as they were
    config = _prnet(head_upscale=2).config
    assert config.to_dict()["head_upscale"] == 2
    assert PRNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ModelError, match="head_upscale must be"):
        _prnet(head_upscale=0)
    with pytest.raises(ModelError, match="native_head > 0 and a front end"):
        PRNetConfig(width=0.25, native_head=4, head_upscale=2)  # no front end
    with pytest.raises(ModelError, match="native_head > 0 and a front end"):
        _prnet(native_head=0, head_upscale=2)
