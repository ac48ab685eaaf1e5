"""One-click actions of the dock: *Save analysis* and *make napari-qpi the reader for holograms*.

*Save analysis* writes every phase layer (OME-TIFF with the acquisition and method records),
every labels layer (OME-TIFF) and its cell table (CSV + JSON sidecar) into one folder with our
writers (:func:`napari_qpi._napari.writer.write_analysis_folder`), so that nothing napari's own
TIFF writer would drop (pixel size, units, method, table) is lost; our reader opens them again.

napari asks "Choose reader" for every ``.tif``/``.bmp``/``.png`` because its built-in reader
claims those extensions too. :func:`prefer_napari_qpi` records napari-qpi as the preferred reader
for them in napari's own settings (``settings.plugins.extension2reader``, the same table the
dialog's "Remember this choice" fills). Files that are not holograms, phase images or our labels
are then declined by our reader and napari offers its other readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox

from ..errors import InputError, QPIError
from .layers import METHOD_KEY, MORPHOLOGY_KEY
from .pickers import layer_kind
from .writer import analysis_targets, write_analysis_folder

PLUGIN_NAME = "napari-qpi"

#: File patterns napari-qpi becomes the preferred reader for (holograms and our outputs).
HOLOGRAM_PATTERNS = ("*.tif", "*.tiff", "*.bmp", "*.png")


def prefer_napari_qpi(patterns: tuple[str, ...] = HOLOGRAM_PATTERNS) -> dict[str, str]:
    """Make napari-qpi napari's preferred reader for ``patterns``; returns the new table."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    table = dict(plugins.extension2reader)
    table.update({pattern: PLUGIN_NAME for pattern in patterns})
    plugins.extension2reader = table  # assigning (not mutating) saves napari's settings
    return table


def analysis_layers(viewer: napari.viewer.Viewer) -> list[tuple[Any, dict, str]]:
    """Layer-data tuples of what *Save analysis* writes: phase layers and measured labels."""
    chosen = []
    for layer in viewer.layers:
        kind = layer_kind(layer)
        phase = kind in ("phase", "result") or METHOD_KEY in layer.metadata
        measured = kind == "labels" and MORPHOLOGY_KEY in layer.metadata
        if phase or measured:
            chosen.append(layer.as_layer_data_tuple())
    return chosen


def save_analysis(
    viewer: napari.viewer.Viewer, folder: str | Path, *, overwrite: bool
) -> list[str]:
    """Write the analysis layers into ``folder``; refuses to replace files unless ``overwrite``."""
    layers = analysis_layers(viewer)
    if not layers:
        raise InputError("Nothing to save yet: retrieve a phase image or measure cells first.")
    return write_analysis_folder(str(folder), layers, overwrite=overwrite)


def apply_profile(widget: Any, path: str | Path) -> Any:
    """Fill a *Phase retrieval* widget from a microscope profile file; returns the profile.

    The acquisition fields the profile sets replace those shown (the layer's own metadata is not
    changed); its filter, radius and background order become the method's settings; its carrier
    is used for layers whose metadata has none.
    """
    from ..profile import load_profile

    profile = load_profile(path)
    for field, target in (
        ("wavelength_nm", widget.wavelength),
        ("pixel_size_um", widget.pixel_size),
        ("medium_index", widget.medium_index),
        ("filter", widget.filter),
        ("radius_fraction", widget.radius_fraction),
        ("background_order", widget.background_order),
    ):
        value = getattr(profile, field)
        if value is not None:
            target.value = value
    widget.profile = profile
    return profile


def load_profile_dialog(widget: Any) -> Any:
    """Ask for a profile file (JSON) and apply it to ``widget`` (a warning if it is invalid)."""
    path, _ = QFileDialog.getOpenFileName(
        widget.native, "Load microscope profile", "", "Profile (*.json)"
    )
    if not path:
        return None
    try:
        profile = apply_profile(widget, path)
    except QPIError as error:
        show_warning(str(error))
        return None
    show_info(f"Profile '{profile.name or Path(path).stem}' loaded")
    return profile


class ActionsBar(Container):
    """*Save analysis...* and *Open holograms with napari-qpi* buttons."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.save_button = PushButton(
            text="Save analysis...",
            tooltip="write every phase layer, measured labels layer and cell table into a folder "
            "(OME-TIFF with pixel size and method, CSV tables); File > Open reads them back",
        )
        self.reader_button = PushButton(
            text="Open holograms with napari-qpi",
            tooltip="make napari-qpi napari's preferred reader for .tif/.tiff/.bmp/.png, so "
            "dropping a hologram opens it with its phase and napari stops asking 'Choose reader'",
        )
        super().__init__(
            widgets=[self.save_button, self.reader_button], layout="horizontal", labels=False
        )
        self.save_button.changed.connect(self._save_dialog)
        self.reader_button.changed.connect(self._prefer)

    def _prefer(self, *_: Any) -> None:
        prefer_napari_qpi()
        show_info(
            "napari-qpi now opens " + ", ".join(HOLOGRAM_PATTERNS) + " files (change it in "
            "File > Preferences > Plugins); files that are not holograms go to napari's reader."
        )

    def _save_dialog(self, *_: Any) -> list[str]:
        folder = QFileDialog.getExistingDirectory(self.native, "Save analysis into folder")
        if not folder:
            return []
        targets = analysis_targets(folder, analysis_layers(self.viewer))
        existing = [p.name for p in targets if p.exists()]
        overwrite = False
        if existing:
            answer = QMessageBox.question(
                self.native,
                "Replace files?",
                f"{len(existing)} file(s) already exist in {folder} ({', '.join(existing[:3])}"
                f"{', ...' if len(existing) > 3 else ''}). Replace them?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return []
            overwrite = True
        try:
            written = save_analysis(self.viewer, folder, overwrite=overwrite)
        except QPIError as error:
            show_warning(str(error))
            return []
        show_info(f"Saved {len(written)} file(s) in {folder}")
        return written
