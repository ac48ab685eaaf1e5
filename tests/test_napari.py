"""The napari plugin: manifest, reader, writer, sample data and the Phase retrieval widget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_qpi._napari.reader import get_reader
from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi._napari.sample_data import cdp_sample, hologram_sample
from napari_qpi.io import read_image
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.reconstruct import iter_reconstruct


def test_manifest_validates_with_imports():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", "napari-qpi"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def hologram_file(tmp_path) -> Path:
    """A plain TIFF hologram with no metadata: the reader must find the sideband itself."""
    phantom = random_cells((256, 256), n_cells=3, seed=3)
    hologram = simulate_hologram(phantom.phase, phantom.amplitude, OffAxisSystem(), seed=3)
    path = tmp_path / "plain_hologram.tif"
    tifffile.imwrite(path, hologram)
    return path


def test_reader_claims_a_hologram_without_metadata(hologram_file):
    reader = get_reader(str(hologram_file))
    assert reader is not None
    [(data, kwargs, layer_type), (phase, phase_kwargs, _)] = reader(str(hologram_file))
    assert layer_type == "image"
    assert np.asarray(data).shape == (256, 256)
    assert kwargs["metadata"]["qpi"]["modality"] == "hologram"
    assert np.asarray(phase).shape == (256, 256) and phase_kwargs["name"].endswith("(classical)")


def test_reader_declines_ordinary_images(tmp_path):
    from skimage import data as skdata

    photo = tmp_path / "camera.tif"
    tifffile.imwrite(photo, skdata.camera())
    noise = tmp_path / "noise.png"
    import imageio.v3 as iio

    iio.imwrite(noise, np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8))
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    for path in (photo, noise, text, tmp_path / "missing.tif"):
        assert get_reader(str(path)) is None, path


def test_npe2_reads_sample_hologram_with_physical_scale():
    from importlib.resources import files

    import npe2

    from napari_qpi._napari.sample_data import HOLOGRAM_FILE, SAMPLE_PACKAGE

    path = files(SAMPLE_PACKAGE) / HOLOGRAM_FILE
    layers = npe2.read([str(path)], stack=False, plugin_name="napari-qpi")
    (_, kwargs, _), (_, phase_kwargs, _) = layers
    assert phase_kwargs["metadata"]["qpi"]["modality"] == "phase"
    acquisition = kwargs["metadata"]["qpi"]
    assert kwargs["scale"][-1] == pytest.approx(acquisition["pixel_size_um"])
    assert kwargs["units"][-1] == "um"
    assert acquisition["wavelength_nm"] > 0


def test_writer_round_trip_through_npe2(tmp_path):
    import npe2

    phase = np.random.default_rng(1).normal(size=(32, 40)).astype(np.float32)
    meta = {
        "qpi": {"wavelength_nm": 532.0, "pixel_size_um": 0.2, "modality": "phase"},
        "qpi_method": {"name": "classical"},
    }
    target = tmp_path / "phase.ome.tif"
    written = npe2.write(
        str(target),
        [(phase, {"name": "p", "metadata": meta, "scale": (0.2, 0.2)}, "image")],
        plugin_name="napari-qpi",
    )
    assert [Path(p) for p in written] == [target]
    back = read_image(target)
    np.testing.assert_array_equal(np.asarray(back.data), phase)
    assert back.acquisition.pixel_size_um == pytest.approx(0.2)
    assert back.acquisition.wavelength_nm == pytest.approx(532.0)


def test_sample_data_opens_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    for data, kwargs, layer_type in hologram_sample() + cdp_sample():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    names = [layer.name for layer in viewer.layers]
    assert "hologram" in names and "true phase" in names
    assert viewer.layers["hologram"].scale[-1] == pytest.approx(
        viewer.layers["hologram"].metadata["qpi"]["pixel_size_um"]
    )
    viewer.screenshot(canvas_only=True, flash=False)


def _run_widget(widget, qtbot, timeout=30_000):
    with qtbot.waitSignal(widget.controls.finished, timeout=timeout):
        assert widget.controls.start() is not None


def test_widget_adds_phase_layer_matching_truth(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    for data, kwargs, layer_type in hologram_sample():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    widget = PhaseRetrievalWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.hologram.value = viewer.layers["hologram"]
    widget.reference.value = viewer.layers["background hologram"]
    _run_widget(widget, qtbot)
    phase_layer = viewer.layers["hologram phase (classical)"]
    phase = np.asarray(phase_layer.data)
    truth = np.asarray(viewer.layers["true phase"].data)
    assert phase.dtype == np.float32 and phase.shape == truth.shape
    assert tuple(phase_layer.scale) == tuple(viewer.layers["hologram"].scale)
    assert phase_layer.metadata["qpi"]["modality"] == "phase"
    cells = truth > 0.5
    error = (phase - truth) - np.median((phase - truth)[~cells])
    assert np.sqrt(np.mean(error[cells] ** 2)) < 0.15
    assert widget.controls.status.value == "done"


def test_widget_adds_the_network_residual_layer_on_request(make_napari_viewer, qtbot):
    """A network run with "show network vs hologram residual": a radians layer on the phase's
    grid holding what the phase leaves unexplained in the sideband; classical runs offer no such
    option."""
    from napari_qpi.retrieval.consistency import network_residual

    viewer = make_napari_viewer()
    for data, kwargs, layer_type in hologram_sample():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["hologram"]
    assert widget.method.value == "classical" and widget.residual_map.native.isHidden()
    widget.method.value = "prnet-searched"
    assert not widget.residual_map.native.isHidden()
    widget.residual_map.value = True
    _run_widget(widget, qtbot, timeout=120_000)
    phase_layer = viewer.layers["hologram phase (prnet-searched)"]
    residual = viewer.layers["hologram phase (prnet-searched) residual vs hologram"]
    hologram = np.asarray(viewer.layers["hologram"].data)
    assert residual.data.shape == hologram.shape
    assert tuple(residual.scale) == tuple(phase_layer.scale)
    assert np.abs(residual.data).max() <= np.pi + 1e-5
    expected = network_residual(
        hologram, np.asarray(phase_layer.data), widget.acquisition(viewer.layers["hologram"])
    )
    np.testing.assert_allclose(residual.data, expected, atol=1e-4)
    assert residual.metadata["qpi"]["of"] == phase_layer.name


def test_widget_native_resolution_scales_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    for data, kwargs, layer_type in hologram_sample():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["hologram"]
    widget.resolution.value = "native"
    _run_widget(widget, qtbot)
    source, phase_layer = viewer.layers["hologram"], viewer.layers["hologram phase (classical)"]
    ratio = source.data.shape[-1] / phase_layer.data.shape[-1]
    assert ratio > 1.5
    assert phase_layer.scale[-1] == pytest.approx(source.scale[-1] * ratio, rel=0.02)


def test_widget_processes_a_stack_plane_by_plane(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    system = OffAxisSystem()
    stack = np.stack(
        [
            simulate_hologram(
                random_cells((128, 128), n_cells=2, seed=s).phase, None, system, seed=s
            )
            for s in range(3)
        ]
    )
    viewer.add_image(stack, name="timelapse", metadata={"qpi": system.acquisition().to_dict()})
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["timelapse"]
    _run_widget(widget, qtbot)
    assert viewer.layers["timelapse phase (classical)"].data.shape == (3, 128, 128)


def test_widget_reports_bad_input_without_traceback(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), dtype=np.uint16), name="dark")
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["dark"]
    worker = widget.controls.start()
    if worker is not None:
        with qtbot.waitSignal(worker.finished, timeout=10_000):
            pass
    assert "dark phase" not in [layer.name for layer in viewer.layers]
    status = widget.controls.status.value.lower()
    assert status and status != "done" and "traceback" not in status


def test_widget_cancel_on_a_long_stack_keeps_the_planes_done(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    system = OffAxisSystem()
    plane = simulate_hologram(
        random_cells((256, 256), n_cells=2, seed=1).phase, None, system, seed=1
    )
    viewer.add_image(
        np.repeat(plane[None], 400, axis=0),
        name="long",
        metadata={"qpi": system.acquisition().to_dict()},
    )
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["long"]
    widget.controls.start()
    qtbot.waitUntil(lambda: widget.controls.progress.value >= 2, timeout=10_000)
    # the run is over once the planes done are shown (in turns of the event loop)
    with qtbot.waitSignal(widget.controls.finished, timeout=10_000):
        widget.controls.cancel_button.native.click()
    [kept] = [layer for layer in viewer.layers if layer.name.startswith("long phase")]
    done = kept.metadata["qpi_method"]["planes_done"][0]
    assert 2 <= done < 400 and kept.metadata["qpi_method"]["planes_done"][1] == 400
    assert kept.name == f"long phase (classical, {done} of 400 planes)"
    phase = np.asarray(kept.data)
    assert phase.shape == (400, 256, 256)
    assert np.isfinite(phase[:done]).all() and np.isnan(phase[done:]).all()
    expected = next(iter_reconstruct(plane, acquisition=system.acquisition())).phase
    np.testing.assert_allclose(phase[done - 1], expected, atol=1e-5)
    status = widget.controls.status.value
    assert status.startswith("cancelled; kept the") and f"{done} of 400 planes" in status


def test_widget_solves_the_sample_cdp_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    for data, kwargs, layer_type in cdp_sample():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    patterns = viewer.layers["cells_cdp"]
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = patterns
    assert "wirtinger flow" in widget.method.choices
    assert "classical" not in widget.method.choices
    widget.method.value = "gerchberg-saxton"
    _run_widget(widget, qtbot, timeout=60_000)
    phase = np.asarray(viewer.layers["cells_cdp phase (gerchberg-saxton)"].data)
    assert phase.shape == patterns.metadata["qpi_cdp"]["masks"].shape[-2:]
    assert phase.dtype == np.float32 and np.isfinite(phase).all()


def test_widget_viewed_planes_only_gives_a_lazy_phase_layer(make_napari_viewer, qtbot):
    import dask.array as da

    viewer = make_napari_viewer()
    system = OffAxisSystem()
    planes = [
        simulate_hologram(random_cells((128, 128), n_cells=2, seed=s).phase, None, system, seed=s)
        for s in range(4)
    ]
    stack = da.from_array(np.stack(planes), chunks=(1, 128, 128))
    viewer.add_image(stack, name="lazy", metadata={"qpi": system.acquisition().to_dict()})
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["lazy"]
    assert widget.planes.native.isVisibleTo(widget.native)
    widget.planes.value = "viewed planes only"
    _run_widget(widget, qtbot)
    phase = viewer.layers["lazy phase (classical)"]
    assert isinstance(phase.data, da.Array) and phase.data.shape == (4, 128, 128)
    expected = next(iter_reconstruct(planes[2], acquisition=system.acquisition())).phase
    np.testing.assert_allclose(np.asarray(phase.data[2]), expected, atol=1e-5)
