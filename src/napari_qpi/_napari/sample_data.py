"""napari sample data: a simulated off-axis hologram of cells, and a CDP stack.

The files are made by ``sample_data/make_samples.py`` (``make samples``) from the physics in
:mod:`napari_qpi.physics`, and ship inside the package so that they open with no network.
"""

from __future__ import annotations

from importlib.resources import as_file, files

from ..io import read_image
from .layers import LayerDataTuple, image_layer, phase_contrast_limits
from .pickers import ROLE_KEY
from .reader import read_cdp_layers

SAMPLE_PACKAGE = "napari_qpi.sample_data"
HOLOGRAM_FILE = "cells_hologram.ome.tif"
BACKGROUND_FILE = "cells_background.ome.tif"
TRUTH_FILE = "cells_phase_truth.ome.tif"
CDP_FILE = "cells_cdp.npz"
CDP_SINGLE_FILE = "cells_cdp_single.npz"


def _read(name: str):
    with as_file(files(SAMPLE_PACKAGE) / name) as path:
        return read_image(path)


def hologram_sample() -> list[LayerDataTuple]:
    """Off-axis hologram of several cells, its background hologram and the true phase."""
    truth = _read(TRUTH_FILE)
    background = _read(BACKGROUND_FILE)
    hologram = _read(HOLOGRAM_FILE)
    return [
        image_layer(
            truth.data,
            name="true phase",
            acquisition=truth.acquisition,
            colormap="viridis",
            contrast_limits=phase_contrast_limits(truth.data),
            visible=False,
        ),
        image_layer(
            background.data,
            name="background hologram",
            acquisition=background.acquisition,
            extra_metadata={ROLE_KEY: "background"},
            colormap="gray",
            visible=False,
        ),
        image_layer(
            hologram.data, name="hologram", acquisition=hologram.acquisition, colormap="gray"
        ),
    ]


def cdp_sample() -> list[LayerDataTuple]:
    """Coded diffraction patterns of a cell field, with the phase masks that made them.

    Two stacks of one field: four patterns through the shipped teacher's masks (``cells_cdp``)
    and one through the shipped single-snapshot student's mask (``cells_cdp_single``).
    """
    layers = []
    for name in (CDP_FILE, CDP_SINGLE_FILE):
        with as_file(files(SAMPLE_PACKAGE) / name) as path:
            layers += read_cdp_layers(str(path))
    return layers
