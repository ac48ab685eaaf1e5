"""Deep retrieval that cannot make blocks: whole fields by default, tiles that agree with them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.training.data import held_out_set


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    hologram = np.asarray(held_out_set("standard", n=2, size=256).holograms[1])
    return np.pad(hologram, ((0, 64), (0, 64)), mode="reflect")  # 320 x 320: four 256 px tiles


#: The shipped network without a front end: a searched PRNet reading coordinate channels and
#: pooling globally, the hardest case for tiles.
PLAIN = "prnet-searched-transfer"
#: The shipped networks with a residual front end (they correct the classical phase).
RESIDUAL = ["prnet-searched", "unet"]


def test_a_field_cut_into_tiles_gives_the_whole_fields_phase(field) -> None:
    whole = retrieve_deep(field, model=PLAIN)
    assert whole.info["tiles"] == 1  # whole-field inference when it fits in memory
    tiled = retrieve_deep(field, model=PLAIN, tile=256, overlap=128)
    assert tiled.info["tiles"] == 4
    # coordinate channels and global pooling see the whole field
    assert tiled.info["field_context"] == ["coords", "G"]
    # measured 2026-12-06: 0.14 rad at most, 0.06 rad typical (the old prnet-searched, trained on
    # 3-6 px fringes, agreed to 0.015 rad on this 3-6 px field; this model saw 6-8 px ones)
    assert np.abs(tiled.phase - whole.phase).max() < 0.2
    assert whole.phase.std() > 0.2  # a real phase map, not a flat one that agrees trivially


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


def test_tiles_without_the_fields_context_disagree(field, monkeypatch) -> None:
    """The check above can fail: a PRNet tile that sees only itself makes blocks."""
    from napari_qpi.retrieval import tiling

    whole = retrieve_deep(field, model=PLAIN).phase
    monkeypatch.setattr(tiling.FieldContext, "__init__", _no_context)
    alone = retrieve_deep(field, model=PLAIN, tile=256, overlap=128)
    assert "field_context" not in alone.info
    assert np.abs(alone.phase - whole).max() > 0.05


def _no_context(self, module, shape, device) -> None:
    self.uses_coords = self.uses_global = False
    self.used = []
    self.grid, self.global_, self.device = None, {}, device
