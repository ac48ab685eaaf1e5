"""The *Phase retrieval* widget: hologram layer in, phase layer (radians, same scale) out.

The pickers offer holograms first and follow a newly opened one (:mod:`.pickers`); only methods
that can run on the chosen layer are offered; every field has a tooltip and is remembered between
sessions (:mod:`.gui_settings`); the acquisition fields start from the layer's metadata; Cancel on
a stack keeps the planes already retrieved. Results are named after their method.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info

from ..acquisition import Acquisition
from ..errors import InputError, QPIError
from ..lazy import lazy_reconstruct
from ..reconstruct import (
    CDP_SOLVERS,
    CLASSICAL_METHODS,
    available_cdp_methods,
    available_methods,
    default_cdp_method,
    iter_reconstruct,
    output_acquisition,
    plane_indices,
    reconstruct_cdp,
)
from ..retrieval import OffAxisSettings
from ..retrieval.consistency import network_residual
from .actions import ActionsBar, load_profile_dialog
from .dock import DockContainer
from .gui_settings import remember
from .layers import CDP_KEY, acquisition_of, jump_labels, phase_contrast_limits
from .pickers import background_rank, hologram_rank, layer_picker
from .refocus_panel import RefocusPanel
from .retrieval_results import cdp_result_steps, partial_steps, result_steps, stack_planes
from .task import Job, TaskControls

WHOLE_STACK = "whole stack"
VIEWED_PLANES = "viewed planes only"


class PhaseRetrievalWidget(DockContainer):
    """Retrieve unwrapped, background-corrected phase from an off-axis hologram layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        defaults = OffAxisSettings()
        self._make_inputs(viewer)
        self._make_method_fields(defaults)
        self._make_acquisition_fields()
        self._make_mask_export()
        self.controls = TaskControls(
            self._make_job, self._show_result, on_cancel=self._keep_partial
        )
        self.actions = ActionsBar(viewer)
        self._partial: dict[str, Any] | None = None
        self.refocus = RefocusPanel(self)  # refocus section (its own module)
        super().__init__(
            widgets=[
                self.hologram,
                self.reference,
                self.method,
                self.filter,
                self.radius_fraction,
                self.background_order,
                self.resolution,
                self.planes,
                self.mark_jumps,
                self.residual_map,
                self.wavelength,
                self.pixel_size,
                self.medium_index,
                self.profile_button,
                self.mask_file,
                self.export_masks,
                self.refocus,
                self.controls,
                self.actions,
            ]
        )
        self._connect_events(viewer)

    def _make_inputs(self, viewer: napari.viewer.Viewer) -> None:
        """The layer pickers (hologram, background) and the method offered for the hologram."""
        self.hologram = layer_picker(
            viewer,
            hologram_rank,
            label="hologram",
            tooltip="the off-axis hologram (or CDP stack) to retrieve the phase of; holograms "
            "are listed first and a newly opened one is picked",
        )
        self.reference = layer_picker(
            viewer,
            background_rank,
            label="background",
            nullable=True,
            tooltip="optional hologram of the same field without cells (same camera region): "
            "its phase is subtracted, which removes the optics' own phase",
        )
        self.method = ComboBox(
            label="method",
            choices=self._method_choices,
            tooltip="classical: Fourier filtering, no model; or a trained network (holograms), "
            "or a solver or distilled network (CDP stacks); only methods that can run on this "
            "layer are listed",
        )

    def _make_method_fields(self, defaults: OffAxisSettings) -> None:
        """The classical method's settings (filter, radius, background order, resolution), how a
        stack is retrieved, and the 2 pi jump marking."""
        self.filter = ComboBox(
            label="filter",
            choices=["smooth_disk", "disk", "gaussian"],
            value=defaults.filter,
            tooltip="shape of the window cutting the +1 sideband out of the spectrum; the smooth "
            "disk rings least",
        )
        self.radius_fraction = FloatSpinBox(
            label="filter radius",
            value=defaults.radius_fraction,
            min=0.05,
            max=1.0,
            step=0.05,
            tooltip="radius of the sideband window as a fraction of the carrier distance: larger "
            "keeps finer detail and more noise and twin-image leakage",
        )
        self.background_order = SpinBox(
            label="background order",
            value=defaults.background_order,
            min=0,
            max=3,
            tooltip="order of the polynomial fitted to the background phase and subtracted "
            "(0: constant, 1: tilt, 2: curvature); raise it for curved backgrounds",
        )
        self.resolution = ComboBox(
            label="resolution",
            choices=["full", "native"],
            value="full",
            tooltip="full: the phase on the camera grid; native: on the coarser grid the "
            "sideband really resolves (faster, larger pixels; the layer scale says so)",
        )
        self.planes = ComboBox(
            label="stack",
            choices=[WHOLE_STACK, VIEWED_PLANES],
            value=WHOLE_STACK,
            tooltip="whole stack: every plane now, with progress and Cancel; viewed planes only: "
            "a lazy phase layer whose planes are retrieved when shown",
        )
        self.mark_jumps = CheckBox(
            text="mark 2π jumps",
            value=False,
            tooltip="also add a labels layer over the pixels where the unwrapped phase jumps by "
            "more than pi between neighbours: where unwrapping may have failed (out of focus, "
            "noise); an empty layer means none",
        )
        self.residual_map = CheckBox(
            text="show network vs hologram residual",
            value=False,
            tooltip="networks only: also add a layer of what the network's phase leaves "
            "unexplained in the hologram's sideband (radians; the sideband re-formed from the "
            "phase and the measured amplitude, compared with the recorded one). Flat near 0: "
            "the physics agrees; structure where the cells are: the network invents or misses "
            "phase there, compare with the classical method",
        )

    def _make_acquisition_fields(self) -> None:
        """Wavelength (nm), pixel size (um) and medium index (0: unknown), and Load profile."""
        self.wavelength = FloatSpinBox(
            label="wavelength (nm)",
            value=0.0,
            min=0.0,
            max=2000.0,
            step=1.0,
            tooltip="vacuum wavelength of the illumination; filled from the layer's metadata; "
            "0: unknown",
        )
        self.pixel_size = FloatSpinBox(
            label="pixel size (µm)",
            value=0.0,
            min=0.0,
            max=100.0,
            step=0.01,
            tooltip="pixel pitch in the sample plane (camera pixel / magnification); filled from "
            "the layer's metadata; 0: unknown (the phase layer is then in pixels)",
        )
        self.medium_index = FloatSpinBox(
            label="medium index",
            value=0.0,
            min=0.0,
            max=3.0,
            step=0.001,
            tooltip="refractive index of the medium around the cells (e.g. 1.335); filled from "
            "the layer's metadata; 0: unknown",
        )
        self.profile_button = PushButton(
            text="Load profile...",
            tooltip="fill the acquisition fields and the method's settings from a microscope "
            "profile (JSON, e.g. written by napari-qpi reconstruct --save-profile)",
        )
        self.profile_button.changed.connect(lambda *_: load_profile_dialog(self))
        self.profile = None  # the loaded MicroscopeProfile, if any

    def _make_mask_export(self) -> None:
        """Where to write a CDP model's phase masks (radians), and the button that writes them."""
        self.mask_file = FileEdit(
            label="masks TIFF",
            mode="w",
            filter="*.tif",
            tooltip="where to write the chosen CDP model's phase masks (radians, as trained)",
        )
        self.export_masks = PushButton(
            text="Export the model's masks",
            tooltip="the masks a plate or SLM must realise for this network, as a TIFF",
        )
        self.export_masks.changed.connect(self._export_masks)

    def _connect_events(self, viewer: napari.viewer.Viewer) -> None:
        """Follow the layers and the chosen method, remember the fields, show what applies."""
        self.method.changed.connect(self._show_method_options)
        self.hologram.changed.connect(self.method.reset_choices)
        self.hologram.changed.connect(self._show_stack_options)
        self.hologram.changed.connect(self._show_method_options)
        self.hologram.changed.connect(self._fill_acquisition)
        self.reset_choices()
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        remember(
            "retrieval",
            {
                "method": self.method,
                "filter": self.filter,
                "radius_fraction": self.radius_fraction,
                "background_order": self.background_order,
                "resolution": self.resolution,
                "planes": self.planes,
                "mark_jumps": self.mark_jumps,
                "residual_map": self.residual_map,
            },
        )
        self._show_stack_options()
        self._show_method_options()
        self._fill_acquisition()

    def _cdp_record(self) -> dict[str, Any] | None:
        layer = self.hologram.value
        return None if layer is None else layer.metadata.get(CDP_KEY)

    def _method_choices(self, _widget: Any = None) -> list[str]:
        record = self._cdp_record()
        if record is not None:
            masks = np.asarray(record["masks"])
            names = [
                name
                for name in available_cdp_methods(len(masks))
                if name in CDP_SOLVERS or _cdp_model_fits(name, masks)
            ]
            first = default_cdp_method(len(masks))  # the combo shows the first choice
            return [first, *(name for name in names if name != first)]
        return available_methods("hologram")

    def _fill_acquisition(self, *_: Any) -> None:
        """Show the chosen layer's wavelength, pixel size and medium index (0: not known)."""
        layer = self.hologram.value
        if layer is None:
            return
        try:
            acquisition = acquisition_of(layer.metadata)
        except QPIError:
            acquisition = Acquisition()
        pixel = acquisition.pixel_size_um
        if pixel is None and float(layer.scale[-1]) != 1.0:
            pixel = float(layer.scale[-1])
        self.wavelength.value = acquisition.wavelength_nm or 0.0
        self.pixel_size.value = pixel or 0.0
        self.medium_index.value = acquisition.medium_index or 0.0

    def acquisition(self, layer: napari.layers.Image) -> Acquisition:
        """The layer's acquisition record with the fields the user set (0 leaves it unknown)."""
        base = acquisition_of(layer.metadata)
        fields = {
            "wavelength_nm": float(self.wavelength.value),
            "pixel_size_um": float(self.pixel_size.value),
            "medium_index": float(self.medium_index.value),
        }
        acquisition = base.replace(**{k: (v if v > 0 else None) for k, v in fields.items()})
        if self.profile is not None and acquisition.carrier_cycles_per_px is None:
            carrier = self.profile.acquisition().carrier_cycles_per_px
            acquisition = acquisition.replace(carrier_cycles_per_px=carrier)
        return acquisition

    def _show_stack_options(self, *_: Any) -> None:
        layer = self.hologram.value
        self.planes.visible = layer is not None and layer.ndim > 2 and self._cdp_record() is None

    def _show_method_options(self, *_: Any) -> None:
        """Show only the fields the chosen method uses."""
        classical = self.method.value in CLASSICAL_METHODS
        cdp = self._cdp_record() is not None
        for widget in (self.reference, self.filter, self.radius_fraction, self.resolution):
            widget.visible = classical and not cdp
        self.background_order.visible = not cdp  # classical and hologram networks fit it
        self.residual_map.visible = not classical and not cdp
        cdp_model = cdp and self.method.value not in CDP_SOLVERS
        self.mask_file.visible = self.export_masks.visible = cdp_model

    def _export_masks(self, *_: Any) -> Path | None:
        """Write the chosen CDP model's masks to the TIFF named in ``mask_file``."""
        from ..training.distill import export_model_masks

        name = self.method.value
        path = Path(str(self.mask_file.value))
        if not str(self.mask_file.value) or path.is_dir():
            show_error("Choose a file name for the masks TIFF first.")
            return None
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_name(path.name + ".tif")
        try:
            written, masks = export_model_masks(name, path, overwrite=True)
        except QPIError as error:
            show_error(str(error))
            return None
        show_info(f"{len(masks)} mask(s) of model '{name}' (radians) written to {written}")
        return written

    def settings(self) -> OffAxisSettings:
        return OffAxisSettings(
            filter=self.filter.value,
            radius_fraction=float(self.radius_fraction.value),
            background_order=int(self.background_order.value),
            resolution=self.resolution.value,
            refocus_um=self.refocus.refocus_um(),
        )

    def _make_job(self) -> Job:
        layer = self.hologram.value
        if layer is None:
            raise InputError("Open a hologram first: there is no image layer to reconstruct.")
        if layer.rgb:
            raise InputError(f"Layer '{layer.name}' is an RGB image; holograms are monochrome.")
        if self._cdp_record() is not None:
            return self._cdp_job(layer)
        method = self.method.value
        reference_layer = self.reference.value if method in CLASSICAL_METHODS else None
        reference = None if reference_layer is None else np.asarray(reference_layer.data)
        data = layer.data
        plane_indices(tuple(data.shape))
        acquisition = self.acquisition(layer)
        settings = self.settings()
        job = {
            "layer": layer,
            "settings": settings,
            "method": method,
            "reference": reference_layer.name if reference_layer else None,
            "acquisition": output_acquisition(acquisition, 1.0),
            "factor": 1.0,
        }
        if data.ndim > 2 and self.planes.value == VIEWED_PLANES:
            return self._lazy_job(layer, data, method, reference, acquisition, settings, job)
        total = len(plane_indices(tuple(data.shape)))
        planes: list[np.ndarray] = []
        # the jumps of each plane, computed in the worker as it goes (~1 ms a 512^2 plane)
        jumps: list[np.ndarray] | None = [] if self.mark_jumps.value else None
        self._partial = {
            "job": job,
            "planes": planes,
            "jumps": jumps,
            "total": total,
            "shape": data.shape,
        }
        maps: list[np.ndarray] | None = (
            [] if self.residual_map.value and method not in CLASSICAL_METHODS else None
        )

        def run() -> Job:
            for done, result in enumerate(
                iter_reconstruct(
                    data,
                    method=method,
                    reference=reference,
                    acquisition=acquisition,
                    settings=settings,
                ),
                start=1,
            ):
                if jumps is not None:  # before the plane counts as done (a Cancel keeps both)
                    jumps.append(jump_labels(result.phase))
                planes.append(result.phase)
                if maps is not None:
                    hologram = np.asarray(data[result.index])
                    maps.append(network_residual(hologram, result.phase, acquisition))
                job["factor"] = result.pixel_size_factor
                job["acquisition"] = output_acquisition(acquisition, result.pixel_size_factor)
                yield done, total
            if maps:
                job["residual_map"] = stack_planes(maps, data.shape)
            phase = stack_planes(planes, data.shape)
            if jumps is not None:  # here, not on the GUI thread: 170 ms for 16 planes of 1024^2
                job["jumps"] = stack_planes(jumps, data.shape)
            return {**job, "phase": phase, "contrast_limits": phase_contrast_limits(phase)}

        return run()

    def _keep_partial(self) -> Generator[None, None, str] | None:
        """On Cancel: the steps that show the planes already retrieved (the rest NaN) and say
        how many, or ``None`` when none was done."""
        partial, self._partial = self._partial, None
        if partial is None or not partial["planes"]:
            return None
        return partial_steps(self.viewer, partial)

    def _lazy_job(self, layer, data, method, reference, acquisition, settings, job) -> Job:
        def run() -> Job:
            yield 0, 1
            lazy = lazy_reconstruct(
                data,
                method=method,
                reference=reference,
                acquisition=acquisition,
                settings=settings,
            )
            yield 1, 1
            return {
                **job,
                "phase": lazy.data,
                "factor": lazy.pixel_size_factor,
                "acquisition": lazy.acquisition,
                "contrast_limits": phase_contrast_limits(lazy.first.phase),
            }

        self._partial = None
        return run()

    def _cdp_job(self, layer: napari.layers.Image) -> Job:
        record = self._cdp_record()
        patterns = np.array(layer.data, dtype=np.float32)
        masks = np.asarray(record["masks"])
        oversampling = int(record.get("oversampling", 2))
        method = self.method.value
        acquisition = acquisition_of(layer.metadata)
        self._partial = None

        def run() -> Job:
            yield 0, 1
            phase, info = reconstruct_cdp(patterns, masks, method=method, oversampling=oversampling)
            yield 1, 1
            return {
                "layer": layer,
                "phase": phase,
                "method": method,
                "info": info,
                "acquisition": output_acquisition(acquisition, 1.0),
            }

        return run()

    def _show_result(self, result: dict[str, Any]) -> Iterator[None]:
        """Show the result in event-loop turns of their own (see TaskControls and
        :mod:`.retrieval_results`): the worker's last signals are handled in the turn that
        delivers the result."""
        self._partial = None
        yield
        if "settings" not in result:
            yield from cdp_result_steps(self.viewer, result)
        else:
            yield from result_steps(self.viewer, result)


_FITS: dict[tuple[str, str, str], bool] = {}


def _cdp_model_fits(name: str, masks: np.ndarray) -> bool:
    """Whether CDP model ``name`` was trained with exactly these masks (else it cannot run)."""
    from ..models import get_card, load_model

    try:
        key = (name, get_card(name).sha256, hashlib.sha1(masks.tobytes()).hexdigest())
        if key not in _FITS:
            model_masks = load_model(name)[0].masks.export()
            _FITS[key] = model_masks.shape == masks.shape and bool(
                np.allclose(np.angle(np.exp(1j * (model_masks - masks))), 0, atol=1e-2)
            )
    except QPIError:
        return False
    return _FITS[key]
