"""One FFT-thread setting for the whole package (napari_qpi.threads)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.fft

from napari_qpi.threads import WORKERS_ENV, fft_workers, set_fft_workers


@pytest.fixture(autouse=True)
def _default_setting(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    set_fft_workers(None)
    yield
    set_fft_workers(None)


def test_default_is_the_cpus_this_process_may_use_and_the_setting_wins(monkeypatch):
    assert fft_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert fft_workers() == 3
    set_fft_workers(1)
    assert fft_workers() == 1
    set_fft_workers(None)
    assert fft_workers() == 3
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            set_fft_workers(bad)


def test_the_retrieval_ffts_use_the_setting(monkeypatch):
    """Every scipy.fft call of the off-axis retrieval passes workers=fft_workers()."""
    from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
    from napari_qpi.retrieval import retrieve_offaxis

    cells = random_cells((128, 128), n_cells=2, seed=0, pixel_size_um=0.25)
    hologram = simulate_hologram(cells.phase, cells.amplitude, OffAxisSystem(), seed=0)
    seen: list[object] = []
    for name in ("fft2", "ifft2", "rfft2", "ifft", "dctn", "idctn"):
        original = getattr(scipy.fft, name)

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs.get("workers"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(scipy.fft, name, spy)
    set_fft_workers(1)
    one = retrieve_offaxis(hologram).phase
    assert seen and set(seen) == {1}
    seen.clear()
    set_fft_workers(2)
    two = retrieve_offaxis(hologram).phase
    assert seen and set(seen) == {2}
    np.testing.assert_array_equal(one, two)
