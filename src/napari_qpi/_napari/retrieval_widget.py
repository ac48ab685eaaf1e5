"""The *Phase retrieval* widget: hologram layer in, phase layer (radians, same scale) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_error, show_info

from ..errors import InputError, QPIError
from ..lazy import lazy_reconstruct
from ..reconstruct import (
    CDP_SOLVERS,
    CLASSICAL_METHODS,
    available_cdp_methods,
    available_methods,
    iter_reconstruct,
    output_acquisition,
    plane_indices,
    reconstruct_cdp,
    settings_record,
)
from ..retrieval import OffAxisSettings
from .layers import CDP_KEY, METHOD_KEY, acquisition_of, image_layer, phase_contrast_limits
from .task import Job, TaskControls

WHOLE_STACK = "whole stack"
VIEWED_PLANES = "viewed planes only"


class PhaseRetrievalWidget(Container):
    """Retrieve unwrapped, background-corrected phase from an off-axis hologram layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        defaults = OffAxisSettings()
        self.hologram = create_widget(annotation=napari.layers.Image, label="hologram")
        self.reference = create_widget(
            annotation=napari.layers.Image | None, label="background", options={"nullable": True}
        )
        self.method = ComboBox(
            label="method",
            choices=self._method_choices,
            tooltip="classical method or solver, or a trained network",
        )
        self.filter = ComboBox(
            label="filter", choices=["smooth_disk", "disk", "gaussian"], value=defaults.filter
        )
        self.radius_fraction = FloatSpinBox(
            label="filter radius",
            value=defaults.radius_fraction,
            min=0.05,
            max=1.0,
            step=0.05,
            tooltip="fraction of the carrier distance",
        )
        self.background_order = SpinBox(
            label="background order", value=defaults.background_order, min=0, max=3
        )
        self.resolution = ComboBox(label="resolution", choices=["full", "native"], value="full")
        self.planes = ComboBox(
            label="stack",
            choices=[WHOLE_STACK, VIEWED_PLANES],
            value=WHOLE_STACK,
            tooltip="viewed planes only: a lazy phase layer whose planes are retrieved when shown",
        )
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
        self.controls = TaskControls(self._make_job, self._add_result)
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
                self.mask_file,
                self.export_masks,
                self.controls,
            ]
        )
        self.method.changed.connect(self._show_method_options)
        self.hologram.changed.connect(self.method.reset_choices)
        self.hologram.changed.connect(self._show_stack_options)
        self.hologram.changed.connect(self._show_method_options)
        self.reset_choices()
        self._show_stack_options()
        self._show_method_options()
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)

    def _cdp_record(self) -> dict[str, Any] | None:
        layer = self.hologram.value
        return None if layer is None else layer.metadata.get(CDP_KEY)

    def _method_choices(self, _widget: Any = None) -> list[str]:
        record = self._cdp_record()
        if record is not None:
            return available_cdp_methods(len(record["masks"]))
        return available_methods("hologram")

    def _show_stack_options(self, *_: Any) -> None:
        layer = self.hologram.value
        self.planes.visible = layer is not None and layer.ndim > 2 and self._cdp_record() is None

    def _show_method_options(self, *_: Any) -> None:
        classical = self.method.value in CLASSICAL_METHODS
        for widget in (self.reference, self.filter, self.radius_fraction, self.resolution):
            widget.visible = classical
        cdp_model = self._cdp_record() is not None and self.method.value not in CDP_SOLVERS
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
        acquisition = acquisition_of(layer.metadata)
        settings = self.settings()
        job = {
            "layer": layer,
            "settings": settings,
            "method": method,
            "reference": reference_layer.name if reference_layer else None,
        }

        if data.ndim > 2 and self.planes.value == VIEWED_PLANES:
            return self._lazy_job(layer, data, method, reference, acquisition, settings, job)

        def run() -> Job:
            planes = []
            total = len(plane_indices(tuple(data.shape)))
            factor = 1.0
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
                planes.append(result.phase)
                factor = result.pixel_size_factor
                yield done, total
            phase = (
                planes[0]
                if len(planes) == 1
                else np.stack(planes).reshape(*data.shape[:-2], *planes[0].shape)
            )
            return {
                **job,
                "phase": phase,
                "factor": factor,
                "acquisition": output_acquisition(acquisition, factor),
            }

        return run()

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
                "sample": lazy.first.phase,
            }

        return run()

    def _cdp_job(self, layer: napari.layers.Image) -> Job:
        record = self._cdp_record()
        patterns = np.asarray(layer.data)
        masks = np.asarray(record["masks"])
        oversampling = int(record.get("oversampling", 2))
        method = self.method.value
        acquisition = acquisition_of(layer.metadata)

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

    def _add_cdp_result(self, result: dict[str, Any]) -> None:
        source = result["layer"]
        method = {"name": result["method"], "source": source.name, **result["info"]}
        data, kwargs, _ = image_layer(
            result["phase"],
            name=f"{source.name} phase",
            acquisition=result["acquisition"],
            extra_metadata={METHOD_KEY: method},
            colormap="viridis",
            contrast_limits=phase_contrast_limits(result["phase"]),
        )
        self.viewer.add_image(data, **kwargs)

    def _add_result(self, result: dict[str, Any]) -> None:
        if "factor" not in result:
            self._add_cdp_result(result)
            return
        source = result["layer"]
        phase = result["phase"]
        factor = result["factor"]
        scale = np.array(source.scale, dtype=float)
        scale[-2:] *= factor
        method = {
            "name": result["method"],
            "settings": settings_record(result["settings"]),
            "source": source.name,
            "reference": result["reference"],
        }
        data, kwargs, _ = image_layer(
            phase,
            name=f"{source.name} phase",
            acquisition=result["acquisition"],
            extra_metadata={METHOD_KEY: method},
            colormap="viridis",
            contrast_limits=phase_contrast_limits(result.get("sample", phase)),
        )
        kwargs["scale"] = tuple(scale)
        kwargs["translate"] = tuple(source.translate)
        if source.units is not None:
            kwargs["units"] = tuple(str(u) for u in source.units)
        self.viewer.add_image(data, **kwargs)
