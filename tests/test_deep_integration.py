"""A registered network is offered by the widget and the CLI, and produces phase."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi.cli import main
from napari_qpi.io import read_image
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram

MODEL = "tiny-test-prnet"


@pytest.fixture
def tiny_model(register_tiny_prnet):
    return register_tiny_prnet(MODEL)


def test_widget_offers_a_user_model_and_runs_it(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    system = OffAxisSystem()
    hologram = simulate_hologram(
        random_cells((96, 128), n_cells=2, seed=1).phase, None, system, seed=1
    )
    viewer.add_image(
        hologram, name="holo", scale=(0.2, 0.2), metadata={"qpi": system.acquisition().to_dict()}
    )
    widget = PhaseRetrievalWidget(viewer)
    widget.reset_choices()
    assert tiny_model in widget.method.choices
    widget.hologram.value = viewer.layers["holo"]
    widget.method.value = tiny_model
    assert not widget.filter.visible
    with qtbot.waitSignal(widget.controls.finished, timeout=30_000):  # the result shown
        assert widget.controls.start() is not None
    phase = viewer.layers[f"holo phase ({tiny_model})"]
    assert phase.data.shape == (96, 128) and phase.data.dtype == np.float32
    assert phase.metadata["qpi_method"]["name"] == tiny_model


def test_cli_runs_a_model_by_name_and_refuses_unknown_ones(tmp_path, tiny_model, capsys):
    system = OffAxisSystem()
    hologram = simulate_hologram(
        random_cells((96, 96), n_cells=1, seed=2).phase, None, system, seed=2
    )  # the smallest field whose fringes the sideband search finds: a network needs them too
    tifffile.imwrite(tmp_path / "h.tif", hologram)
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "h.tif"),
                "--model",
                tiny_model,
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    written = read_image(out / "h_phase.ome.tif")
    assert written.data.shape == (96, 96)
    assert written.extra["method"]["name"] == tiny_model
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "h.tif"),
                "--model",
                "nope",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    assert "unknown method 'nope'" in capsys.readouterr().err
