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
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget


class DockContainer(Container):
    """A vertical magicgui container whose ``native`` widget is a scroll area around its fields.

    The dock can then be any height: when the fields need more than the window gives, a vertical
    scroll bar appears (never a horizontal one: the fields take the dock's width). A scroll area
    asks for little height, so Qt would give a dock added below another one hardly more than its
    scroll bar; when docked, the docks of ours stacked in that area share its height equally.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.native
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        # room the dock has beyond what the fields ask for stays below them (napari adds such a
        # stretch to a plain dock); with stretch 0 it gives way to rows with a stretch factor
        self.body.layout().addStretch(0)
        self._docking = _OnFirstShow(scroll, self._share_height)

    @property
    def native(self) -> QScrollArea:
        """The scroll area (what napari puts in the dock)."""
        return self.root_native_widget

    @property
    def body(self) -> QWidget:
        """The widget inside the scroll area that holds the fields' layout."""
        return self.root_native_widget.widget()

    def _share_height(self) -> None:
        """Give our docks stacked in this dock's area equal heights (once, when docked)."""
        dock = self.native.parentWidget()
        window = dock.parentWidget() if isinstance(dock, QDockWidget) else None
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        stacked = [
            other
            for other in window.findChildren(QDockWidget)
            if window.dockWidgetArea(other) == area
            and other.isVisible()
            and not other.isFloating()
            and not window.tabifiedDockWidgets(other)
            and isinstance(getattr(other.widget(), "_magic_widget", None), DockContainer)
        ]
        if len(stacked) > 1:
            height = sum(other.height() for other in stacked) // len(stacked)
            window.resizeDocks(stacked, [height] * len(stacked), Qt.Orientation.Vertical)


class _OnFirstShow(QObject):
    """Calls ``callback`` after ``widget``, shown in a dock, is first laid out by the window."""

    def __init__(self, widget: QWidget, callback: Any) -> None:
        super().__init__(widget)
        self._callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.Resize
            and watched.isVisible()
            and isinstance(watched.parent(), QDockWidget)
        ):
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self._callback)  # after the window's layout pass
        return False
