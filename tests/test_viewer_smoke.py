import numpy as np


def test_viewer_draws_an_image(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.random.default_rng(0).random((64, 64)), scale=(0.2, 0.2))
    viewer.screenshot(canvas_only=True, flash=False)
    assert layer.scale[-1] == 0.2
