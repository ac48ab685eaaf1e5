"""Classical targets for the Fine-tune widget: the phase of every plane of every input layer,
retrieved off the GUI thread, shown as one target layer per input in turns of the event loop.

A target is the classical method's unwrapped, background-corrected phase (radians) at the
hologram's full resolution, on the hologram's grid (same scale and translate), with a polynomial
background of the order the user chose.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import napari
import numpy as np
from napari.qt.threading import GeneratorWorker

from ..reconstruct import iter_reconstruct
from ..retrieval import OffAxisSettings
from .gc_pin import pin_while_running
from .layer_insert import add_layer_steps
from .layers import METHOD_KEY, acquisition_of, image_layer, phase_contrast_limits
from .task import Job, _run_in_thread


def fill_worker(layers: list[Any], background_order: int) -> GeneratorWorker:
    """A worker (not started) that retrieves the classical phase of every plane of ``layers``,
    yielding ``(plane, total)`` and returning, per layer, ``(phase, acquisition, contrast
    limits)`` (or a ``_Failure``)."""
    settings = OffAxisSettings(resolution="full", background_order=int(background_order))
    jobs = [(layer.name, layer.data, acquisition_of(layer.metadata)) for layer in layers]
    return pin_while_running(_run_in_thread(_fill_job(jobs, settings)))


def target_layer_steps(
    viewer: napari.viewer.Viewer, layers: list[Any], results: list[Any]
) -> Generator[None, None, list[Any]]:
    """Show the targets of ``layers`` (named ``<input> target``): a layer of that name is updated
    in place, a new one's model is built a turn before napari adds it, itself in turns of their
    own (:func:`.layer_insert.add_layer_steps`); the target layers."""
    added = []
    for layer, (phase, acquisition, limits) in zip(layers, results, strict=True):
        out, kwargs, _ = image_layer(
            phase,
            name=f"{layer.name} target",
            acquisition=acquisition.replace(modality="phase", carrier_cycles_per_px=None),
            extra_metadata={METHOD_KEY: {"name": "classical", "source": layer.name}},
            colormap="viridis",
            contrast_limits=limits,
        )
        kwargs["scale"] = tuple(layer.scale)
        kwargs["translate"] = tuple(layer.translate)
        name = kwargs["name"]
        if name in viewer.layers:
            viewer.layers[name].data = out
            added.append(viewer.layers[name])
        else:
            new = napari.layers.Image(out, **kwargs)
            yield
            added.append((yield from add_layer_steps(viewer, new)))
        yield
    return added


def _fill_job(jobs: list[tuple[str, Any, Any]], settings: OffAxisSettings) -> Job:
    """Classical phase of every plane of every input, yielding ``(plane, total)`` as it goes."""
    total = sum(int(np.prod(data.shape[:-2], dtype=int)) for _, data, _ in jobs)
    done, results = 0, []
    for _, data, acquisition in jobs:
        planes = []
        for result in iter_reconstruct(
            data, method="classical", acquisition=acquisition, settings=settings
        ):
            planes.append(result.phase)
            done += 1
            yield done, total
        phase = np.stack(planes).reshape(data.shape).astype(np.float32)
        results.append((phase, acquisition, phase_contrast_limits(phase)))
    return results
