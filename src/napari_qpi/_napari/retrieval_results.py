"""How the *Phase retrieval* widget shows a result: layers added in event-loop turns.

A result (or, on Cancel, the planes already done) becomes a phase layer named after its method
(radians, on the hologram's grid: its scale, translate and units, with the pixel size of the
dock when one is known), then the optional 2 pi jumps labels layer and the network-vs-hologram
residual layer. Each layer is added in turns of its own (:mod:`.layer_insert`), or, on a rerun,
updated in place: removing a layer makes napari run a full garbage collection on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import napari
import numpy as np

from ..reconstruct import settings_record
from .layer_insert import add_layer_steps, image_layer_steps
from .layers import METHOD_KEY, image_layer, phase_contrast_limits


def result_steps(
    viewer: napari.viewer.Viewer, result: dict[str, Any]
) -> Generator[None, None, str]:
    """Add the phase layer of an off-axis ``result`` (named after the method, on the
    hologram's grid), then the optional jumps and residual layers, each in turns of their own;
    returns the phase layer's name."""
    source = result["layer"]
    scale = np.array(source.scale, dtype=float)
    scale[-2:] *= result["factor"]
    pixel = result["acquisition"].pixel_size_um
    if pixel is not None:  # the pixel size shown in the dock (metadata, profile or typed)
        scale[-2:] = pixel
    method = {
        "name": result["method"],
        "settings": settings_record(result["settings"]),
        "source": source.name,
        "reference": result["reference"],
    }
    label = result["method"]
    if "done" in result:
        method["planes_done"] = list(result["done"])
        label += ", {} of {} planes".format(*result["done"])
    data, kwargs, _ = image_layer(
        result["phase"],
        name=f"{source.name} phase ({label})",
        acquisition=result["acquisition"],
        extra_metadata={METHOD_KEY: method},
        colormap="viridis",
        contrast_limits=result["contrast_limits"],
    )
    kwargs["scale"] = tuple(scale)
    kwargs["translate"] = tuple(source.translate)
    kwargs["units"] = tuple(str(u) for u in source.units)
    name = (yield from image_layer_steps(viewer, data, kwargs)).name
    if "jumps" in result:
        yield
        yield from jumps_steps(viewer, name, result["jumps"], kwargs)
    if "residual_map" in result:
        yield
        yield from image_layer_steps(
            viewer,
            result["residual_map"],
            {
                "name": f"{name} residual vs hologram",
                "scale": kwargs["scale"],
                "translate": kwargs["translate"],
                "units": kwargs["units"],
                "colormap": "bwr",
                "contrast_limits": (-np.pi, np.pi),
                "metadata": {"qpi": {"modality": "residual", "of": name, "unit": "rad"}},
            },
        )
    return name


def jumps_steps(
    viewer: napari.viewer.Viewer, name: str, labels: np.ndarray, kwargs: dict[str, Any]
) -> Generator[None, None, None]:
    """Add (or refresh in place) the labels layer ``labels`` of the 2 pi jumps of the phase layer
    ``name`` (computed in the worker); a new layer's model is built a turn before it is added."""
    jumps = f"{name} 2π jumps"
    metadata = {"jump_fraction": float(labels.mean())}
    old = viewer.layers[jumps] if jumps in viewer.layers else None
    if isinstance(old, napari.layers.Labels) and old.ndim == labels.ndim:
        old.metadata, old.scale, old.data = metadata, kwargs["scale"], labels
        return
    if old is not None:
        viewer.layers.remove(old)
    new = napari.layers.Labels(
        labels,
        name=jumps,
        scale=kwargs["scale"],
        translate=kwargs["translate"],
        units=kwargs["units"],
        opacity=0.6,
        metadata=metadata,
    )
    yield
    yield from add_layer_steps(viewer, new)


def partial_steps(
    viewer: napari.viewer.Viewer, partial: dict[str, Any]
) -> Generator[None, None, str]:
    """Show a cancelled run's planes (the rest NaN, their jumps empty) as a result is shown
    (:func:`result_steps`); what was kept, for the status line."""
    done = len(partial["planes"])  # the worker has stopped: no plane is added any more
    planes, total, shape = partial["planes"][:done], partial["total"], partial["shape"]
    yield  # the worker's last signals are handled in the turn that delivers the Cancel
    missing = np.full_like(planes[0], np.nan)
    result = {
        **partial["job"],
        "phase": stack_planes(planes + [missing] * (total - done), shape),
        "contrast_limits": phase_contrast_limits(planes[0]),
        "done": (done, total),
    }
    if partial["jumps"] is not None:  # the planes not done have no jumps
        jumps = partial["jumps"][:done]
        none = np.zeros_like(jumps[0])
        result["jumps"] = stack_planes(jumps + [none] * (total - done), shape)
    yield
    name = yield from result_steps(viewer, result)
    return f"kept the {done} of {total} planes done in '{name}' (the others are NaN)"


def cdp_result_steps(
    viewer: napari.viewer.Viewer, result: dict[str, Any]
) -> Generator[None, None, str]:
    """Add the phase layer of a CDP ``result`` (named after its solver or model, with the
    solver's record in its metadata) in turns; its name."""
    source = result["layer"]
    method = {"name": result["method"], "source": source.name, **result["info"]}
    data, kwargs, _ = image_layer(
        result["phase"],
        name=f"{source.name} phase ({result['method']})",
        acquisition=result["acquisition"],
        extra_metadata={METHOD_KEY: method},
        colormap="viridis",
        contrast_limits=phase_contrast_limits(result["phase"]),
    )
    return (yield from image_layer_steps(viewer, data, kwargs)).name


def stack_planes(planes: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Planes of a stack of ``shape`` (leading axes, then Y, X) as one array."""
    if len(planes) == 1 and len(shape) == 2:
        return planes[0]
    return np.stack(planes).reshape(*shape[:-2], *planes[0].shape)
