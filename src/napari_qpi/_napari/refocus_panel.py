"""The refocus section of *Phase retrieval*: a z slider with a live preview, Autofocus, z-stacks.

Refocusing works on the complex field of the classical method (:mod:`napari_qpi.retrieval.refocus`);
the section shows only for it. The slider's z (um, positive downstream) is applied by *Run* when
*refocus on Run* is ticked. The live preview retrieves the viewed plane at native resolution in a
worker thread: while one preview runs, slider moves only remember the latest z, which is shown
next, so the GUI never waits. *Autofocus* searches the viewed plane with a progress bar and Cancel,
then sets the slider; it scores the *focus region*: the whole field, the current view (what the
canvas shows of the hologram: :func:`~napari_qpi._napari.view_region.visible_box`) or the bounding
box of the last shape drawn in a shapes layer (the whole field is propagated in every case). *Send
z-stack to viewer* adds the phase refocused from START to STOP in STEP um as a ZYX layer whose z
scale is STEP um.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, Label
from napari.qt.threading import thread_worker

from ..errors import InputError, QPIError
from ..reconstruct import CLASSICAL_METHODS, output_acquisition, settings_record
from ..retrieval import retrieve_offaxis
from ..retrieval.autofocus import DEFAULT_METRIC, METRICS, default_range
from ..retrieval.refocus import iter_hologram_autofocus, iter_zstack, optics
from .gc_pin import pin_while_running
from .layer_insert import add_layer_steps, image_layer_steps
from .layers import METHOD_KEY, acquisition_of, image_layer, phase_contrast_limits
from .pickers import ranked_layers
from .task import Job, TaskControls, show_in_turns, wrapping_label
from .view_region import visible_box

if TYPE_CHECKING:
    from .retrieval_widget import PhaseRetrievalWidget


#: Focus-region choices besides the shapes layers.
WHOLE_FIELD, CURRENT_VIEW = "whole field", "current view"


def shapes_rank(layer: Any) -> int | None:
    """Shapes layers (a drawn focus region)."""
    return 0 if isinstance(layer, napari.layers.Shapes) else None


class RefocusPanel(Container):
    """Refocus controls for the hologram chosen in a :class:`PhaseRetrievalWidget`."""

    def __init__(self, retrieval: PhaseRetrievalWidget) -> None:
        self.retrieval = retrieval
        self.viewer = retrieval.viewer
        self.title = Label(value="<b>Refocus</b> (classical method)")
        self.apply = CheckBox(text="refocus on Run", value=False)
        self.apply.tooltip = "Run propagates the field to z before unwrapping"
        self.z = FloatSlider(label="z (um)", min=-100.0, max=100.0, step=0.1, value=0.0)
        self.z.tooltip = "refocus distance in um; positive: the focus moves along the light"
        self.preview = CheckBox(text="live preview", value=False)
        self.preview.tooltip = "show the viewed plane refocused to z (native resolution)"
        self.region = ComboBox(
            label="focus region",
            choices=self._region_choices,
            value=WHOLE_FIELD,
            tooltip="what autofocus scores: the whole field, what the canvas shows of the "
            "hologram, or the box of the last shape drawn in a shapes layer",
        )
        self.viewer.layers.events.inserted.connect(self.region.reset_choices)
        self.viewer.layers.events.removed.connect(self.region.reset_choices)
        self.metric = ComboBox(
            label="focus metric",
            choices=sorted(METRICS),
            value=DEFAULT_METRIC,
            tooltip="how autofocus scores sharpness of the refocused field at each z",
        )
        self.autofocus = TaskControls(
            self._autofocus_job, self._autofocus_done, run_text="Autofocus"
        )
        self.z_start = FloatSpinBox(
            label="z-stack from (um)",
            min=-1e4,
            max=1e4,
            value=-20.0,
            tooltip="first refocus distance of the z-stack sent to the viewer",
        )
        self.z_stop = FloatSpinBox(
            label="to (um)",
            min=-1e4,
            max=1e4,
            value=20.0,
            tooltip="last refocus distance of the z-stack",
        )
        self.z_step = FloatSpinBox(
            label="step (um)",
            min=0.01,
            max=1e3,
            value=2.0,
            tooltip="distance between the planes of the z-stack",
        )
        self.zstack = TaskControls(
            self._zstack_job, self._zstack_done, run_text="Send z-stack to viewer"
        )
        self.status = wrapping_label(Label(value=""))
        super().__init__(
            widgets=[
                self.title,
                self.apply,
                self.z,
                self.preview,
                self.region,
                self.metric,
                self.autofocus,
                self.z_start,
                self.z_stop,
                self.z_step,
                self.zstack,
                self.status,
            ]
        )
        self.preview_worker: Any = None
        self._pending: float | None = None
        self.previews = 0
        self.usable = True
        self.z.changed.connect(self._request_preview)
        self.preview.changed.connect(self._request_preview)
        retrieval.hologram.changed.connect(self._fit_range)
        retrieval.pixel_size.changed.connect(self._fit_range)
        retrieval.hologram.changed.connect(self._show)
        retrieval.method.changed.connect(self._show)
        self._fit_range()
        self._show()

    # --- what the retrieval widget asks --------------------------------------------------------

    def refocus_um(self) -> float | None:
        """The z that *Run* applies, or ``None``."""
        return float(self.z.value) if self.apply.value and self.usable else None

    def _show(self, *_: Any) -> None:
        """Shown for the classical method on a hologram only."""
        self.usable = (
            self.retrieval.method.value in CLASSICAL_METHODS
            and self.retrieval._cdp_record() is None
        )
        if self.native.parent() is not None or not self.usable:
            self.native.setVisible(self.usable)  # never shows a parentless panel as a window

    def _fit_range(self, *_: Any) -> None:
        """Slider range: plus or minus the field width (um), when the pixel size is known."""
        layer = self.retrieval.hologram.value
        if layer is None:
            return
        try:
            pixel = (
                float(self.retrieval.pixel_size.value)
                or acquisition_of(layer.metadata).pixel_size_um
            )
        except QPIError:
            pixel = None
        if not pixel and float(layer.scale[-1]) != 1.0:
            pixel = float(layer.scale[-1])
        if pixel:
            _, high = default_range(layer.data.shape, pixel)
            self.z.min, self.z.max = -round(high, 1), round(high, 1)

    # --- inputs --------------------------------------------------------------------------------

    def inputs(self) -> dict[str, Any]:
        """The viewed hologram plane, its reference, acquisition and settings (checked)."""
        retrieval = self.retrieval
        layer = retrieval.hologram.value
        if layer is None:
            raise InputError("Open a hologram first: there is no image layer to refocus.")
        if retrieval._cdp_record() is not None:
            raise InputError(
                "Refocusing needs an off-axis hologram; this is a coded diffraction pattern stack."
            )
        if retrieval.method.value not in CLASSICAL_METHODS:
            raise InputError(
                f"Refocusing needs the complex field of the classical method; the network "
                f"'{retrieval.method.value}' gives only a phase image."
            )
        index = tuple(int(i) for i in self.viewer.dims.current_step[: layer.data.ndim - 2])
        plane = np.asarray(layer.data[index])
        reference_layer = retrieval.reference.value
        reference = None
        if reference_layer is not None:
            reference = np.asarray(reference_layer.data)
            reference = reference[index] if reference.ndim > 2 else reference
        acquisition = retrieval.acquisition(layer)
        optics(acquisition)  # says what is missing
        settings = replace(retrieval.settings(), refocus_um=None)
        return {
            "layer": layer,
            "plane": plane,
            "reference": reference,
            "acquisition": acquisition,
            "settings": settings,
        }

    def _region_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        shapes = [(f"{s.name} (last shape)", s) for s in ranked_layers(self.viewer, shapes_rank)]
        return [(WHOLE_FIELD, WHOLE_FIELD), (CURRENT_VIEW, CURRENT_VIEW), *shapes]

    def _region_box(self, layer: Any) -> tuple[int, int, int, int] | None:
        """The focus region in ``layer``'s pixels ``(y0, y1, x0, x1)``, or ``None``: all of it."""
        shapes = self.region.value
        if shapes == CURRENT_VIEW:
            return self._view_box(layer)
        if not isinstance(shapes, napari.layers.Shapes) or len(shapes.data) == 0:
            return None
        corners = np.array([layer.world_to_data(shapes.data_to_world(v)) for v in shapes.data[-1]])
        lo = np.floor(corners.min(axis=0)[-2:]).astype(int)
        hi = np.ceil(corners.max(axis=0)[-2:]).astype(int)
        return int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1])

    def _view_box(self, layer: Any) -> tuple[int, int, int, int] | None:
        """The pixels of ``layer`` that the canvas shows (2-D view of its last two axes)."""
        dims = self.viewer.dims
        if dims.ndisplay != 2 or tuple(dims.displayed) != (dims.ndim - 2, dims.ndim - 1):
            raise InputError(
                "The current view as focus region needs a 2-D view of the image's own y and x "
                "axes: switch the viewer to 2-D (and untranspose it), or choose another region."
            )
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        camera = scene.camera if scene is not None else self.viewer.camera
        canvas = getattr(self.viewer, "canvas", None)
        if canvas is not None and hasattr(canvas, "viewbox_size"):
            size = canvas.viewbox_size(self.viewer.layers)  # one viewbox in grid mode
        else:
            size = self.viewer._canvas_size
        return visible_box(
            camera.center[-2:],
            float(camera.zoom),
            size,
            layer.data.shape[-2:],
            scale=tuple(float(v) for v in layer.scale[-2:]),
            translate=tuple(float(v) for v in layer.translate[-2:]),
        )

    # --- live preview --------------------------------------------------------------------------

    def _request_preview(self, *_: Any) -> None:
        if not self.preview.value:
            return
        self._pending = float(self.z.value)
        if self.preview_worker is None:
            self._start_preview()

    def _start_preview(self) -> None:
        z, self._pending = self._pending, None
        try:
            job = self.inputs()
        except QPIError as error:
            self.status.value = str(error)
            return
        settings = replace(job["settings"], resolution="native", refocus_um=z)
        worker = pin_while_running(
            _preview(job["plane"], job["reference"], job["acquisition"], settings)
        )
        worker.returned.connect(lambda result: self._show_preview(result, job["layer"], z))
        worker.errored.connect(self._preview_finished)
        self.preview_worker = worker
        worker.start()

    def _preview_finished(self, *_: Any) -> None:
        """The preview is shown (or failed): start the latest z asked for meanwhile, if any."""
        self.preview_worker = None
        if self._pending is not None and self.preview.value:
            self._start_preview()

    def _show_preview(self, result: Any, source: Any, z: float) -> None:
        """Show a preview in turns of the event loop; the next preview starts after it (so
        two previews never both add a layer)."""
        if isinstance(result, Exception):
            self.status.value = str(result)
            self._preview_finished()
            return
        show_in_turns(self._preview_steps(result, source, z), self._preview_finished)

    def _preview_steps(self, result: Any, source: Any, z: float) -> Iterator[None]:
        """Show a preview: the first one's layer model is built a turn before napari adds it
        (in turns of their own: :func:`.layer_insert.add_layer_steps`); later ones replace its
        data."""
        phase, factor, limits = result
        name = f"{source.name} refocus preview"
        scale = np.array(source.scale[-2:], dtype=float) * factor
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = phase
            layer.scale = tuple(scale)
        else:
            new = napari.layers.Image(
                phase,
                name=name,
                scale=tuple(scale),
                translate=tuple(source.translate[-2:]),
                units=tuple(str(u) for u in source.units[-2:]),
                colormap="viridis",
                contrast_limits=limits,
            )
            yield
            layer = yield from add_layer_steps(self.viewer, new)
        layer.metadata["refocus_um"] = z
        self.previews += 1
        self.status.value = f"preview at z = {z:+.2f} um"

    # --- autofocus -----------------------------------------------------------------------------

    def _autofocus_job(self) -> Job:
        job = self.inputs()
        region = self._region_box(job["layer"])
        z_range = (float(self.z.min), float(self.z.max))
        return iter_hologram_autofocus(
            job["plane"],
            reference=job["reference"],
            acquisition=job["acquisition"],
            settings=job["settings"],
            z_range=z_range,
            metric=self.metric.value,
            region=region,
        )

    def _autofocus_done(self, result: tuple[float, Any]) -> None:
        z, search = result
        self.z.value = float(np.clip(z, self.z.min, self.z.max))
        self.status.value = (
            f"in focus at z = {z:+.2f} um ({search.metric}, {search.evaluations} planes)"
        )

    # --- z-stack -------------------------------------------------------------------------------

    def _zstack_job(self) -> Job:
        job = self.inputs()
        start, stop, step = (float(w.value) for w in (self.z_start, self.z_stop, self.z_step))
        if stop < start:
            raise InputError(f"The z-stack from {start:g} to {stop:g} um is empty: swap them.")
        zs = np.arange(start, stop + step / 2, step)

        def run() -> Job:
            phase, _ = yield from iter_zstack(
                job["plane"],
                zs,
                reference=job["reference"],
                acquisition=job["acquisition"],
                settings=job["settings"],
            )
            return {**job, "phase": phase, "zs": zs, "step": step}

        return run()

    def _zstack_done(self, result: dict[str, Any]) -> Iterator[None]:
        """Show the z-stack in event-loop turns; a rerun updates its layer in place."""
        source, phase = result["layer"], result["phase"]
        factor = source.data.shape[-1] / phase.shape[-1]
        acquisition = output_acquisition(result["acquisition"], factor)
        method = {
            "name": "classical",
            "settings": settings_record(result["settings"]),
            "source": source.name,
            "zstack_um": [float(z) for z in result["zs"]],
        }
        data, kwargs, _ = image_layer(
            phase,
            name=f"{source.name} z-stack",
            acquisition=acquisition,
            axes="ZYX",
            extra_metadata={METHOD_KEY: method},
            colormap="viridis",
            contrast_limits=phase_contrast_limits(phase),
        )
        pixel = np.array(source.scale[-2:], dtype=float) * factor
        kwargs["scale"] = (result["step"], *pixel)
        kwargs["translate"] = (float(result["zs"][0]), *source.translate[-2:])
        kwargs["units"] = ("um", "um", "um")
        layer = yield from image_layer_steps(self.viewer, data, kwargs)
        self.status.value = f"z-stack of {len(phase)} planes in '{layer.name}'"


@thread_worker
def _preview(plane, reference, acquisition, settings) -> Any:
    """Phase of one plane refocused (native resolution), its pixel-size factor and display
    range, or the error to show."""
    try:
        result = retrieve_offaxis(
            plane, reference=reference, acquisition=acquisition, settings=settings
        )
    except QPIError as error:
        return error
    return result.phase, result.pixel_size_factor, phase_contrast_limits(result.phase)


__all__ = ["CURRENT_VIEW", "WHOLE_FIELD", "RefocusPanel", "shapes_rank"]
