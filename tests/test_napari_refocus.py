"""The refocus section of *Phase retrieval* in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_background
from napari_qpi.physics.defocus import simulate_defocused_hologram

SHAPE = (256, 256)
DEFOCUS_UM = 20.0
SYSTEM = OffAxisSystem(
    pixel_size_um=0.2,
    carrier_period_px=4.0,
    carrier_angle_deg=30.0,
    fringe_visibility=0.5,
    aberrations_rad={"tilt_x": 3.0},
)


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    phantom = random_cells(
        SHAPE, pixel_size_um=0.2, n_cells=(3, 5), kinds=("round",), margin_px=24.0, seed=4
    )
    metadata = {"qpi": SYSTEM.acquisition().to_dict()}
    viewer.add_image(
        simulate_background(SHAPE, SYSTEM, seed=9),
        name="background",
        metadata={**metadata, "qpi_role": "background"},
        scale=(0.2, 0.2),
    )
    viewer.add_image(
        simulate_defocused_hologram(phantom, DEFOCUS_UM, SYSTEM, seed=4),
        name="hologram",
        metadata=metadata,
        scale=(0.2, 0.2),
    )
    viewer.add_image(phantom.phase, name="true phase", scale=(0.2, 0.2), visible=False)
    widget = PhaseRetrievalWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.hologram.value = viewer.layers["hologram"]
    widget.reference.value = viewer.layers["background"]
    return widget


def _run(controls, qtbot, timeout=30_000):
    """Start ``controls``' job and wait until the run is over (its result shown)."""
    with qtbot.waitSignal(controls.finished, timeout=timeout):
        assert controls.start() is not None, controls.status.value


def test_autofocus_sets_the_slider_and_run_refocuses(widget, qtbot):
    panel = widget.refocus
    assert panel.usable and panel.z.max == pytest.approx(51.2)
    _run(panel.autofocus, qtbot)
    assert abs(panel.z.value - DEFOCUS_UM) <= 1.0, panel.status.value
    assert "in focus at z" in panel.status.value
    panel.apply.value = True
    _run(widget.controls, qtbot)
    layer = widget.viewer.layers["hologram phase (classical)"]
    assert layer.metadata["qpi_method"]["settings"]["refocus_um"] == pytest.approx(panel.z.value)
    truth = np.asarray(widget.viewer.layers["true phase"].data)
    cells = truth > 0.5
    error = np.asarray(layer.data) - truth
    error -= np.median(error[~cells])
    assert np.sqrt(np.mean(error[cells] ** 2)) < 0.15


def test_slider_preview_runs_in_a_worker_and_shows_the_latest_z(widget, qtbot):
    panel = widget.refocus
    panel.preview.value = True  # first preview at z = 0
    for z in (5.0, 10.0, 20.0):  # moved while the first one runs: only the last is kept
        panel.z.value = z
    qtbot.waitUntil(lambda: panel.preview_worker is None and panel._pending is None, timeout=20_000)
    preview = widget.viewer.layers["hologram refocus preview"]
    assert preview.metadata["refocus_um"] == pytest.approx(20.0)
    assert 1 <= panel.previews <= 3  # never one per slider move queued up
    assert preview.scale[-1] > 0.2  # native resolution, in um


def test_zstack_goes_to_the_viewer_with_z_in_um(widget, qtbot):
    panel = widget.refocus
    panel.z_start.value, panel.z_stop.value, panel.z_step.value = 0.0, 30.0, 10.0
    _run(panel.zstack, qtbot)
    layer = widget.viewer.layers["hologram z-stack"]
    assert layer.data.shape == (4, *SHAPE)
    assert tuple(layer.scale) == pytest.approx((10.0, 0.2, 0.2))
    assert layer.metadata["qpi_method"]["zstack_um"] == [0.0, 10.0, 20.0, 30.0]


def test_refocus_refuses_a_network_and_missing_optics(widget, qtbot):
    panel = widget.refocus
    widget.wavelength.value = 0.0  # unknown
    assert panel.autofocus.start() is None
    assert "wavelength" in panel.autofocus.status.value
    networks = [m for m in widget.method.choices if m != "classical"]
    if networks:
        widget.method.value = networks[0]
        assert not panel.usable and panel.refocus_um() is None
        with pytest.raises(Exception, match="classical method"):
            panel.inputs()


def test_autofocus_scores_the_current_view(widget, qtbot, monkeypatch):
    """Zoomed into one cell, "current view" scores the pixels the canvas shows, and finds z."""
    from napari_qpi._napari import refocus_panel

    panel, viewer = widget.refocus, widget.viewer
    viewer.window.show()  # a shown canvas: its size is the one the camera's numbers refer to
    canvas = viewer.window._qt_viewer.canvas
    qtbot.waitUntil(lambda: tuple(viewer.canvas.size) == tuple(canvas.size), timeout=5_000)
    truth = np.asarray(viewer.layers["true phase"].data)
    cy, cx = np.unravel_index(int(np.argmax(truth)), truth.shape)  # the strongest cell
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    height, width = viewer.canvas.size
    camera.center = (cy * 0.2, cx * 0.2)
    camera.zoom = min(height, width) / (96 * 0.2)  # 96 pixels along the smaller canvas side
    used = []
    real = refocus_panel.iter_hologram_autofocus

    def spy(*args, **kwargs):
        used.append(kwargs["region"])
        return real(*args, **kwargs)

    monkeypatch.setattr(refocus_panel, "iter_hologram_autofocus", spy)
    assert panel.region.value == refocus_panel.WHOLE_FIELD
    panel.region.value = refocus_panel.CURRENT_VIEW
    _run(panel.autofocus, qtbot)
    y0, y1, x0, x1 = used[-1]
    for lo, hi, centre, extent, n in (
        (y0, y1, cy, height, SHAPE[0]),
        (x0, x1, cx, width, SHAPE[1]),
    ):
        half = 0.5 * extent / camera.zoom / 0.2  # data pixels either side of the centre
        assert lo == max(0, int(np.floor(centre - half + 0.5)))
        assert hi == min(n, int(np.ceil(centre + half + 0.5)))
    assert (y1 - y0) * (x1 - x0) < SHAPE[0] * SHAPE[1] / 2  # a part of the field
    assert abs(panel.z.value - DEFOCUS_UM) <= 1.0, panel.status.value
    viewer.reset_view()  # all of it in view: the whole field
    _run(panel.autofocus, qtbot)
    assert used[-1] is None
