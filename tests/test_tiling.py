"""Deep retrieval that cannot make blocks: whole fields by default, tiles that agree with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_qpi.models import ModelCard
from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.training.data import NORMALISATION, held_out_set


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    hologram = np.asarray(held_out_set("standard", n=2, size=256).holograms[1])
    return np.pad(hologram, ((0, 64), (0, 64)), mode="reflect")  # 320 x 320: four 256 px tiles


#: A network without a front end, the only kind ``retrieve_deep`` still tiles: a small searched
#: PRNet (untrained, seed 0) reading coordinate channels, taps from stride 2 to 32 and the global
#: pool G, the hardest case for tiles. None is shipped since ``prnet-searched-transfer`` was
#: dropped (docs/searched_models.md), so the test builds its own.
PLAIN_CONFIG = {
    "width": 0.25,
    "decoder_channels": 8,
    "connectivity": {"D0": ["E0", "E2", "E5", "E8", "G"]},
    "coord_channels": True,
}
#: The shipped networks with a residual front end (they correct the classical phase).
RESIDUAL = ["prnet-searched", "unet"]
#: Issue 18, item 4: a field cut into tiles gives the whole field's phase within this (rad).
TILE_TOLERANCE_RAD = 0.02


@pytest.fixture(scope="module")
def plain() -> tuple[torch.nn.Module, ModelCard]:
    from napari_qpi.nn import build_network

    torch.manual_seed(0)
    module = build_network("prnet", PLAIN_CONFIG).eval()
    assert module.front_end is None
    card = ModelCard(
        name="tiny-plain-prnet",
        family="searched",
        modality="hologram",
        architecture={"network": "prnet", "config": module.config.to_dict()},
        normalisation=dict(NORMALISATION),
    )
    return module, card


def test_a_field_cut_into_tiles_gives_the_whole_fields_phase(field, plain) -> None:
    whole = retrieve_deep(field, model=plain)
    assert whole.info["tiles"] == 1  # whole-field inference when it fits in memory
    tiled = retrieve_deep(field, model=plain, tile=256, overlap=128)
    assert tiled.info["tiles"] == 4
    # coordinate channels and global pooling see the whole field
    assert tiled.info["field_context"] == ["coords", "G"]
    # measured 2026-12-06: 3e-7 rad at most (overlap 64: 1e-5, 32: 1e-4, 8: 0.005 rad)
    assert np.abs(tiled.phase - whole.phase).max() < TILE_TOLERANCE_RAD
    assert whole.phase.std() > 0.1  # a phase map (0.20 rad), not a flat one that agrees trivially
    # the overlap is what makes them agree: abutting tiles differ by 0.23 rad (measured)
    abutting = retrieve_deep(field, model=plain, tile=256, overlap=0)
    assert abutting.info["tiles"] == 4
    assert np.abs(abutting.phase - whole.phase).max() > 5 * TILE_TOLERANCE_RAD


@pytest.mark.parametrize("name", RESIDUAL)
def test_residual_models_run_whole_planes_whatever_tile_is_asked(field, name) -> None:
    from napari_qpi.models import load_model

    assert load_model(name)[0].front_end.config.residual
    whole = retrieve_deep(field, model=name)
    asked = retrieve_deep(field, model=name, tile=256, overlap=128)
    assert whole.info["tiles"] == asked.info["tiles"] == 1
    np.testing.assert_array_equal(asked.phase, whole.phase)
    assert whole.phase.std() > 0.2


def test_residual_tiles_would_disagree_by_radians(field, monkeypatch) -> None:
    """Why: each tile would unwrap, fit its background and choose its sign on its own."""
    from napari_qpi.retrieval import deep

    whole = retrieve_deep(field, model="unet").phase
    monkeypatch.setattr(deep, "_whole_fields_only", lambda module: False)
    tiled = retrieve_deep(field, model="unet", tile=256, overlap=128)
    assert tiled.info["tiles"] == 4
    assert np.abs(tiled.phase - whole).max() > 0.5


def test_tiles_without_the_fields_context_disagree(field, plain, monkeypatch) -> None:
    """The check above can fail: a PRNet tile that sees only itself makes blocks."""
    from napari_qpi.retrieval import tiling

    whole = retrieve_deep(field, model=plain).phase
    monkeypatch.setattr(tiling.FieldContext, "__init__", _no_context)
    alone = retrieve_deep(field, model=plain, tile=256, overlap=128)
    assert "field_context" not in alone.info
    # measured 2026-12-06: 0.14 rad (each tile's own coordinates and G)
    assert np.abs(alone.phase - whole).max() > 5 * TILE_TOLERANCE_RAD


def _no_context(self, module, shape, device) -> None:
    self.uses_coords = self.uses_global = False
    self.used = []
    self.grid, self.global_, self.device = None, {}, device
