"""Shared test configuration."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytest

# User models written by tests go to a throw-away folder, never to the real per-user folder.
os.environ["NAPARI_QPI_USER_DIR"] = tempfile.mkdtemp(prefix="napari-qpi-tests-")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="session")
def _discover_plugins() -> None:
    """Let npe2 find napari-qpi's manifest (napari does this itself at start-up)."""
    import npe2

    npe2.PluginManager.instance().discover()


_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without tearing the interpreter down once pytest has reported.

    With Qt (PySide6), vispy and torch all loaded, CPython's final garbage collection sometimes
    aborts with "Fatal Python error: none_dealloc" after every test has passed, turning a green
    run into exit code 134. The results are already printed and every plugin has unconfigured
    (this hook runs last), so exit with pytest's own status instead.
    """
    if _exit_status is None:
        return
    xvfb = sys.modules.get("pytest_xvfb")
    if xvfb is not None:  # it stops Xvfb in an atexit handler, which os._exit skips
        xvfb.shutdown_xvfb()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
