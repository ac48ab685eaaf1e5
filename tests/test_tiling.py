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


@pytest.mark.parametrize("name", ["prnet-searched", "unet"])
def test_a_field_cut_into_tiles_gives_the_whole_fields_phase(field, name) -> None:
    whole = retrieve_deep(field, model=name)
    assert whole.info["tiles"] == 1  # whole-field inference when it fits in memory
    tiled = retrieve_deep(field, model=name, tile=256, overlap=128)
    assert tiled.info["tiles"] == 4
    if name == "prnet-searched":  # coordinate channels and global pooling see the whole field
        assert tiled.info["field_context"] == ["coords", "G"]
    assert np.abs(tiled.phase - whole.phase).max() < 0.02
    assert whole.phase.std() > 0.2  # a real phase map, not a flat one that agrees trivially


def test_tiles_without_the_fields_context_disagree(field, monkeypatch) -> None:
    """The check above can fail: a PRNet tile that sees only itself makes blocks."""
    from napari_qpi.retrieval import tiling

    whole = retrieve_deep(field, model="prnet-searched").phase
    monkeypatch.setattr(tiling.FieldContext, "__init__", _no_context)
    alone = retrieve_deep(field, model="prnet-searched", tile=256, overlap=128)
    assert "field_context" not in alone.info
    assert np.abs(alone.phase - whole).max() > 0.05


def _no_context(self, module, shape, device) -> None:
    self.uses_coords = self.uses_global = False
    self.used = []
    self.grid, self.global_, self.device = None, {}, device
