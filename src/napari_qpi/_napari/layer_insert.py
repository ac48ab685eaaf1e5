"""Adding a layer to the napari viewer in event-loop turns of its own.

napari adds a layer in one call: ``LayerList.insert`` emits ``inserted``, and in that one
emission napari builds the layer's vispy visual (``QtViewer._on_add_layer_change``) and its
controls widget (``QtLayerControlsContainer._add``; Qt then polishes and lays it out in the events
that call posts), then ``add_layer`` selects the layer, which shows those controls. Measured for
the 512 x 512 sample phase on the shared 2-core machine (Xvfb, software OpenGL, load 2-3.6): the
model's own handlers 18-37 ms of GUI-thread CPU time, the visual 43-65 (its first draw 15-25
more), the controls widget 45-75 (its posted events 35-45 more), the selection 13-27; all but
the selection in one turn was 100-160 ms in a bare window, and the longest turn of a first
result 200-333 ms in the tests.

:func:`add_layer_steps` inserts the layer with the two Qt-side handlers held back (napari's
``EventEmitter.block(callback)``), runs each of them with the event napari emitted in a turn of
its own, and selects the layer a turn later. napari's canvas already tolerates a layer without
its visual for a while: it rebuilds its scene graph only once every layer has one (as during a
batch insert). Anything that would need the visual or the controls first runs the handlers held
back at once: another insert, a removal, a move or a change of the active layer (napari emits
``inserting``, ``removing``, ``moving`` and the selection's ``active`` before the events whose
handlers use them). A layer with more axes than the viewer (the first z-stack) also has napari's
dims sliders rebuilt a turn later (:class:`_SlidersLater`). Where this napari lacks one of the
handlers or the insert-without-selecting switch, the layer is added the plain way.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

#: napari's Qt-side handlers of ``LayerList.events.inserted`` run in turns of their own, by the
#: name of their class and method: the layer's vispy visual, then its controls widget.
HELD_BACK = (("QtViewer", "_on_add_layer_change"), ("QtLayerControlsContainer", "_add"))
#: The viewer's dims events that napari's slider widget follows, and its handlers of them.
DIMS_EVENTS = ("ndim", "current_step", "range", "ndisplay", "order", "last_used")
SLIDER_HANDLERS = tuple(
    ("QtDims", method)
    for method in (
        "_update_nsliders",
        "_update_slider",
        "_update_range",
        "_update_display",
        "_on_last_used_changed",
    )
)


def add_layer_steps(viewer: Any, layer: Any) -> Generator[None, None, Any]:
    """Add a built layer to ``viewer`` in event-loop turns (see the module); the layer.

    Turn 1: the layer joins the list (napari's model, the layer list, the pickers); then one
    turn for the dims sliders where the layer brings new axes (:class:`_SlidersLater`), one for
    its vispy visual and one for its controls widget; then it is selected, as ``add_layer``
    would have done (napari's ``LayerList._activate_on_insert``).
    """
    layers = viewer.layers
    activate = getattr(layers, "_activate_on_insert", None)
    if activate is None:
        return viewer.add_layer(layer)
    sliders = _SlidersLater(viewer, layer)
    held = _HeldBack(layers)
    layers._activate_on_insert = False
    try:
        viewer.add_layer(layer)
    except BaseException:
        sliders.run()  # the sliders follow the dims again at once
        raise
    finally:
        layers._activate_on_insert = activate
        held.release_block()
    try:
        if sliders.pending:
            yield
            sliders.run()
        while held.pending:
            yield
            held.run_next()
    finally:  # steps abandoned half-way: napari still gets its sliders, visual and controls
        sliders.run()
        held.run_all()
    if activate:
        yield
        if layer in layers:
            layers.selection.active = layer
    return layer


class _HeldBack:
    """napari's Qt-side handlers of one layer insert, held back to run later, each once.

    Created just before the insert: it blocks the handlers of :data:`HELD_BACK` and records the
    ``inserted`` event; :meth:`release_block` (just after the insert) unblocks them for later
    inserts and keeps them, with that event, as :attr:`pending`.
    """

    def __init__(self, layers: Any) -> None:
        self.layers = layers
        self.inserted = layers.events.inserted
        self.handlers = _napari_handlers(self.inserted, HELD_BACK)
        self.pending: list[Callable[[Any], None]] = []
        self.events: list[Any] = []
        for handler in self.handlers:
            self.inserted.block(handler)
        self.inserted.connect(self.events.append)

    def release_block(self) -> None:
        """After the insert: unblock the handlers; keep them to run if the insert happened."""
        self.inserted.disconnect(self.events.append)
        for handler in self.handlers:
            self.inserted.unblock(handler)
        if not self.events:
            return
        self.pending = list(self.handlers)
        for emitter in self._first_needs():
            emitter.connect(self.run_all)

    def _first_needs(self) -> tuple[Any, ...]:
        """napari's events that come before any use of a layer's visual or controls."""
        events, selection = self.layers.events, self.layers.selection.events
        return (events.inserting, events.removing, events.moving, selection.active)

    def run_next(self) -> None:
        """Run the next handler held back; forget the hooks once none is left."""
        if self.pending:
            _call(self.pending.pop(0), self.events[0])
        if not self.pending:
            for emitter in self._first_needs():
                emitter.disconnect(self.run_all)

    def run_all(self, _event: Any = None) -> None:
        """Run every handler still held back (something needs them now)."""
        while self.pending:
            self.run_next()


class _SlidersLater:
    """napari's dims sliders for a layer with more axes than the viewer, built a turn after it.

    Such an insert makes napari's slider widget (``QtDims``) rebuild every slider in the insert's
    turn, and show the new one (the canvas shrinks and repaints): 50-100 ms of CPU time for the
    first z-stack. Here ``QtDims`` ignores the viewer's dims events from just before the insert
    until :meth:`run`, a turn later, which rebuilds the sliders from the dims as napari does on a
    change of their number (``QtDims._update_nsliders``, its full refresh). Nothing else uses
    those sliders, and no slider of the new axes exists to be moved meanwhile.
    """

    def __init__(self, viewer: Any, layer: Any) -> None:
        self.blocked: list[tuple[Any, Callable[..., None]]] = []
        self.refresh: Callable[[], None] | None = None
        if layer.ndim <= viewer.dims.ndim:
            return
        for name in DIMS_EVENTS:
            emitter = getattr(viewer.dims.events, name, None)
            for handler in [] if emitter is None else _napari_handlers(emitter, SLIDER_HANDLERS):
                emitter.block(handler)
                self.blocked.append((emitter, handler))
                self.refresh = getattr(handler.__self__, "_update_nsliders", None)
        if self.refresh is None:  # not the napari this was written for: the plain way
            self.run()

    @property
    def pending(self) -> bool:
        """The sliders are still to be rebuilt."""
        return bool(self.blocked)

    def run(self) -> None:
        """Let ``QtDims`` follow the dims again and rebuild its sliders (once)."""
        blocked, self.blocked = self.blocked, []
        for emitter, handler in blocked:
            emitter.unblock(handler)
        refresh, self.refresh = self.refresh, None
        if blocked and refresh is not None:
            _call(lambda _event: refresh(), None)


def _napari_handlers(
    emitter: Any, wanted: tuple[tuple[str, str], ...]
) -> list[Callable[..., None]]:
    """The callbacks of ``emitter`` named in ``wanted`` (class, method), in napari's order, as
    bound methods (napari keeps a weak reference and the method's name)."""
    handlers = []
    for callback in emitter.callbacks:
        if not isinstance(callback, tuple):
            continue
        owner = callback[0]()
        if owner is None or not type(owner).__module__.startswith("napari."):
            continue
        if (type(owner).__name__, callback[1]) in wanted:
            handlers.append(getattr(owner, callback[1]))
    return handlers


def _call(handler: Callable[[Any], None], event: Any) -> None:
    """Run a napari handler held back, unless its Qt object was deleted meanwhile (the viewer
    was closed: as napari's own emitter does, such a handler is skipped)."""
    try:
        handler(event)
    except RuntimeError as error:
        if "deleted" not in str(error):
            raise


def image_layer_steps(viewer: Any, data: Any, kwargs: dict[str, Any]) -> Generator[None, None, Any]:
    """Show ``data`` in the image layer named ``kwargs["name"]``, in event-loop turns; the layer.

    A rerun updates that layer in place (metadata, scale, translate, data, contrast limits):
    removing a layer makes napari run a full garbage collection on the GUI thread (0.5-0.7 s on
    the sample). A new layer's model (thumbnail, slice: ~10-15 ms) is built in a turn before the
    one that adds it (itself several turns: :func:`add_layer_steps`); a layer of that name that
    cannot take the data (another kind, number of dimensions or RGB) is left as it is.
    """
    import napari

    name = kwargs["name"]
    layer = viewer.layers[name] if name in viewer.layers else None
    if not isinstance(layer, napari.layers.Image) or layer.ndim != np.ndim(data) or layer.rgb:
        new = napari.layers.Image(data, **kwargs)
        yield
        return (yield from add_layer_steps(viewer, new))
    for key in ("metadata", "scale", "translate"):
        if key in kwargs:
            setattr(layer, key, kwargs[key])
    layer.data = data
    layer.contrast_limits = kwargs["contrast_limits"]
    return layer
