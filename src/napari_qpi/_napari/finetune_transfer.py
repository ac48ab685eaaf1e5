"""*Export model...* / *Import model...* of the Fine-tune widget: a model as a .zip file, to use a
model trained here on another computer (:func:`napari_qpi.models.export_model` /
:func:`napari_qpi.models.import_model`: the weights and the model card with its training record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from ..errors import InputError, QPIError
from ..models import export_model, import_model


class ModelTransfer(Container):
    """The two buttons, side by side.

    ``export_name()`` gives the model *Export* writes (``None``: none to export);
    ``on_imported()`` is called once a model is installed (to list it in every widget); ``say``
    shows a refusal on the widget's status line.
    """

    def __init__(
        self,
        export_name: Callable[[], str | None],
        on_imported: Callable[[], None],
        say: Callable[[str], None],
    ) -> None:
        self.export_button = PushButton(
            text="Export model...",
            tooltip="save the model trained last (else the base model) as a .zip for another "
            "computer",
        )
        self.import_button = PushButton(
            text="Import model...", tooltip="install a model exported on another computer"
        )
        super().__init__(
            widgets=[self.export_button, self.import_button], layout="horizontal", labels=False
        )
        self._export_name, self._on_imported, self._say = export_name, on_imported, say
        self.export_button.changed.connect(self._export_dialog)
        self.import_button.changed.connect(self._import_dialog)

    def export_model(self, path: str) -> None:
        """Export the model ``export_name()`` to ``path`` (a .zip file, or a folder)."""
        name = self._export_name()
        if not name:
            raise InputError("no model to export: train one, or choose a base model")
        written = export_model(name, path)
        show_info(f"exported {name!r} to {written}")

    def import_model(self, path: str) -> str:
        """Install a model exported on another machine; returns its name."""
        card = import_model(path)
        self._on_imported()
        show_info(f"imported model {card.name!r}")
        return card.name

    def _export_dialog(self, *_: Any) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Export model", f"{self._export_name() or 'model'}.zip", "Model (*.zip)"
        )
        if path:
            self._guard(self.export_model, path)

    def _import_dialog(self, *_: Any) -> None:
        path, _ = QFileDialog.getOpenFileName(self.native, "Import model", "", "Model (*.zip)")
        if path:
            self._guard(self.import_model, path)

    def _guard(self, action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except QPIError as error:
            self._say(str(error))
            show_warning(str(error))
