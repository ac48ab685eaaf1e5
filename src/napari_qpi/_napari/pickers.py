"""Layer pickers that offer the right kind of layer first, and follow newly opened ones.

What a layer holds is read from its metadata (``metadata["qpi"]["modality"]``, written by our
reader, sample data and widgets; the method record of our phase results; the CDP record), and for
an image with no such metadata from a quick sideband check on its first plane
(:func:`napari_qpi.retrieval.looks_like_hologram`, a few ms, cached per layer). A picker lists only
the kinds its widget can use, best first, and switches to a layer of the best kind when one is
added (e.g. *Open Sample* or a finished retrieval), so Run works on the layer the user expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox

from ..retrieval import looks_like_hologram
from .layers import CDP_KEY, METHOD_KEY, acquisition_of

#: ``layer.metadata[ROLE_KEY]``: ``"background"`` marks a background hologram (no cells),
#: ``"masks"`` the phase masks of a CDP stack (a phase image, but not of cells).
ROLE_KEY = "qpi_role"

#: ``rank(layer) -> int | None``: lower is better; ``None`` leaves the layer out.
Rank = Callable[[Any], "int | None"]

_SIDEBAND: dict[tuple[int, int], bool] = {}


def layer_kind(layer: Any) -> str | None:
    """What a layer holds, for the pickers.

    ``"hologram"``, ``"background"``, ``"cdp"``, ``"phase"``, ``"result"`` (a phase made by a
    method), ``"labels"``, ``"masks"`` (CDP masks), ``"other"`` (an image that shows no fringes) or
    ``None`` (RGB...).
    """
    if isinstance(layer, napari.layers.Labels):
        return "labels"
    if not isinstance(layer, napari.layers.Image) or layer.rgb:
        return None
    metadata = layer.metadata or {}
    try:
        modality = acquisition_of(metadata).modality
    except Exception:  # damaged metadata: judge by content
        modality = None
    if metadata.get(ROLE_KEY) == "masks":
        return "masks"
    if CDP_KEY in metadata or modality == "cdp":
        return "cdp"
    if METHOD_KEY in metadata:
        return "result"
    if modality == "phase":
        return "phase"
    if modality == "hologram" or _shows_fringes(layer):
        return "background" if metadata.get(ROLE_KEY) == "background" else "hologram"
    return "other"


def _shows_fringes(layer: Any) -> bool:
    data = layer.data
    if not isinstance(data, np.ndarray) or data.ndim < 2:
        return False  # lazy data: reading a plane to guess is not worth it here
    key = (id(layer), id(data))
    if key not in _SIDEBAND:
        _SIDEBAND[key] = looks_like_hologram(data)
    return _SIDEBAND[key]


def hologram_rank(layer: Any) -> int | None:
    """For *Phase retrieval*: holograms and CDP stacks, then images of unknown content."""
    return {"hologram": 0, "cdp": 0, "background": 1, "other": 2}.get(layer_kind(layer))


def background_rank(layer: Any) -> int | None:
    """For the background hologram: layers marked as background, then other holograms."""
    return {"background": 0, "hologram": 1, "other": 2}.get(layer_kind(layer))


def phase_rank(layer: Any) -> int | None:
    """For *Cell morphology*: retrieved phase, then other phase images, then unknown images."""
    return {"result": 0, "phase": 1, "other": 2}.get(layer_kind(layer))


def ranked_layers(viewer: napari.viewer.Viewer, rank: Rank) -> list[Any]:
    """The layers ``rank`` accepts, best first; the newest first among equals."""
    scored = [(rank(layer), -i, layer) for i, layer in enumerate(viewer.layers)]
    kept = [s for s in scored if s[0] is not None]
    return [layer for _, _, layer in sorted(kept, key=lambda s: s[:2])]


def layer_picker(
    viewer: napari.viewer.Viewer,
    rank: Rank,
    *,
    label: str,
    tooltip: str,
    nullable: bool = False,
    follow: int | None = 0,
) -> ComboBox:
    """A combo box of the layers ``rank`` accepts, best first.

    When a layer whose rank is at most ``follow`` is added to the viewer, the picker selects it
    (``follow=None``: never). A nullable picker starts empty unless such a layer is there.
    """

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in ranked_layers(viewer, rank)]

    picker = ComboBox(label=label, choices=choices, tooltip=tooltip, nullable=nullable)
    if nullable:  # empty unless a layer of the followed kind is already there
        best = ranked_layers(viewer, rank)[:1]
        follows = follow is not None and best and rank(best[0]) <= follow
        picker.value = best[0] if follows else None

    def on_inserted(event: Any) -> None:
        layer = event.value
        picker.reset_choices()
        score = rank(layer)
        if follow is not None and score is not None and score <= follow:
            picker.value = layer

    viewer.layers.events.inserted.connect(on_inserted)
    return picker
