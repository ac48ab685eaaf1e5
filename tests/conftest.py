"""Shared test configuration."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# User models written by tests go to a throw-away folder, never to the real per-user folder.
os.environ["NAPARI_QPI_USER_DIR"] = tempfile.mkdtemp(prefix="napari-qpi-tests-")


@pytest.fixture(autouse=True)
def _fresh_gui_settings(tmp_path_factory, monkeypatch) -> None:
    """Each test starts with the widgets' defaults (what one test remembers, others never see)."""
    path = tmp_path_factory.mktemp("gui-settings") / "gui_settings.json"
    monkeypatch.setenv("NAPARI_QPI_GUI_SETTINGS", str(path))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="session")
def _discover_plugins() -> None:
    """Let npe2 find napari-qpi's manifest (napari does this itself at start-up)."""
    import npe2

    npe2.PluginManager.instance().discover()


#: The tiny searched PRNet the tests register as a user model (seconds to run on a CPU).
TINY_PRNET = {"width": 0.25, "decoder_channels": 8, "connectivity": {"D0": ["E0", "E2", "G"]}}


@pytest.fixture
def register_tiny_prnet():
    """``register(name)`` saves an untrained tiny PRNet (seed 0) as the user model ``name`` and
    returns the name (``register(name, "unet", config)``: another network of ``napari_qpi.nn``);
    the models registered this way, and only they, are deleted afterwards."""
    import torch

    from napari_qpi.models import ModelCard, delete_user_model, save_user_model
    from napari_qpi.nn import build_network
    from napari_qpi.training.data import NORMALISATION

    names: list[str] = []

    def register(name: str, network: str = "prnet", config: dict | None = None) -> str:
        torch.manual_seed(0)
        module = build_network(network, TINY_PRNET if config is None else config)
        card = ModelCard(
            name=name,
            family="searched" if network == "prnet" else "baseline",
            modality="hologram",
            architecture={"network": network, "config": module.config.to_dict()},
            normalisation=dict(NORMALISATION),
        )
        save_user_model(module, card, overwrite=True)
        names.append(name)
        return name

    yield register
    for name in names:
        delete_user_model(name)


@pytest.fixture
def one_torch_thread():
    """Tiny networks run fastest on one torch thread, above all on a machine shared with other
    jobs (busy cores make OpenMP threads spin); the previous count is restored after the test."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
