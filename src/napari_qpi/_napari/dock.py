"""The container a dock shows: its fields scroll instead of growing the window.

napari docks a magicgui widget's ``.native``. A plain container asks the dock for its whole
minimum height, so every row that appears (a progress bar, the cells table, the plots) raised the
dock's minimum and, when it no longer fitted, napari's whole window grew past the screen (measured
under Xvfb: 1475 px tall at start, 2143 px after the first *Measure*) and repainted its large
OpenGL canvas on each growth. magicgui's ``scrollable=True`` puts the fields in a
``QScrollArea`` but still hands out the inner widget as ``.native``, which the dock then takes
out of the scroll area; :class:`DockContainer` hands out the scroll area itself.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from qtpy.QtWidgets import QFrame, QScrollArea, QWidget


class DockContainer(Container):
    """A vertical magicgui container whose ``native`` widget is a scroll area around its fields.

    The dock can then be any height: when the fields need more than the window gives, a vertical
    scroll bar appears (never a horizontal one: the fields take the dock's width).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.native
        scroll.setFrameShape(QFrame.Shape.NoFrame)

    @property
    def native(self) -> QScrollArea:
        """The scroll area (what napari puts in the dock)."""
        return self.root_native_widget

    @property
    def body(self) -> QWidget:
        """The widget inside the scroll area that holds the fields' layout."""
        return self.root_native_widget.widget()
