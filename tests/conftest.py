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
