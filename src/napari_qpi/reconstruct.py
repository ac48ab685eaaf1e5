"""Run a retrieval method over one hologram or a whole stack, plane by plane.

This is the one loop shared by the napari widget and the command line: it walks the leading axes of
a stack (a time-lapse or z-stack), materialises one plane at a time (so a lazy dask stack is never
loaded whole), retrieves its phase and yields it with its index. Callers decide where the planes go.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .acquisition import Acquisition
from .errors import InputError
from .io import validate_hologram
from .retrieval import OffAxisSettings, retrieve_offaxis

#: Retrieval methods for off-axis holograms that need no trained model.
CLASSICAL_METHODS = ("classical",)


def available_methods(modality: str = "hologram") -> list[str]:
    """The classical method, then every registered model (shipped, then the user's)."""
    from .models import list_models

    return [*CLASSICAL_METHODS, *(card.name for card in list_models(modality))]


@dataclass
class PlaneResult:
    """The phase of one plane of a stack.

    Attributes
    ----------
    index
        Position of the plane along the stack's leading axes (``()`` for a single image).
    phase
        Unwrapped, background-corrected phase in radians, float32.
    pixel_size_factor
        Output pixel size divided by input pixel size (1.0 at full resolution).
    info
        What the method found (sideband position, filter radius, sign decision, ...).
    """

    index: tuple[int, ...]
    phase: np.ndarray
    pixel_size_factor: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)


def plane_indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Indices of the 2-D planes of an array of ``shape`` (the last two axes are Y, X)."""
    if len(shape) < 2:
        raise InputError(
            f"Expected an image (2-D) or a stack of images, got an array of shape {shape}."
        )
    return list(itertools.product(*(range(n) for n in shape[:-2])))


def iter_reconstruct(
    data: Any,
    *,
    method: str = "classical",
    reference: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> Iterator[PlaneResult]:
    """Yield the phase of every plane of ``data`` (a 2-D hologram or a stack), in order.

    ``data`` may be a numpy array or any lazy array (dask, zarr) indexable plane by plane; only the
    plane being processed is loaded. ``reference`` is an optional background hologram of the same
    field of view without cells (2-D, or a stack of the same shape as ``data``). For a stack, the
    phase sign is decided once, on its first, middle and last planes
    (:func:`napari_qpi.calibration.with_stack_sign`), so it never flips between planes.
    """
    from .calibration import with_stack_sign

    settings = with_stack_sign(
        data, method=method, reference=reference, acquisition=acquisition, settings=settings
    )
    retrieve = make_retriever(method, settings)
    shape = tuple(data.shape)
    indices = plane_indices(shape)
    reference_planes = None
    if reference is not None:
        reference_shape = tuple(reference.shape)
        if reference_shape != shape[-2:] and reference_shape != shape:
            raise InputError(
                f"The reference hologram has shape {reference_shape} but the holograms have "
                f"planes of shape {shape[-2:]}: use a background hologram taken with the same "
                "camera region, or none."
            )
        reference_planes = reference_shape == shape and len(shape) > 2
    for index in indices:
        plane = np.asarray(data[index])
        validate_hologram(plane, name=_plane_name(index))
        ref = None
        if reference is not None:
            ref = np.asarray(reference[index] if reference_planes else reference)
        result = retrieve(plane, ref, acquisition)
        yield PlaneResult(index, result.phase, result.pixel_size_factor, dict(result.info))


def make_retriever(method: str, settings: OffAxisSettings | None):
    """``f(plane, reference, acquisition) -> PhaseResult`` for a method name; a model loads once.

    Shared by the whole-stack loop here, the lazy per-plane path (:mod:`napari_qpi.lazy`) and
    the Dask batch engine (:mod:`napari_qpi.batch`).
    """
    if method in CLASSICAL_METHODS:
        return lambda plane, ref, acq: retrieve_offaxis(
            plane, reference=ref, acquisition=acq, settings=settings
        )
    names = available_methods()
    if method not in names:
        raise InputError(f"Unknown retrieval method {method!r}. Available: {', '.join(names)}.")
    from .models import load_model
    from .retrieval.deep import retrieve_deep

    model = load_model(method)
    background_order = (settings or OffAxisSettings()).background_order

    def run(plane, ref, acq):
        if ref is not None:
            raise InputError(
                f"Model '{method}' works on the hologram alone; a background hologram is used "
                "only by the classical method. Leave the background empty."
            )
        return retrieve_deep(
            plane, model=model, acquisition=acq, background_order=background_order, check=True
        )

    return run


def settings_record(settings: OffAxisSettings | None) -> dict[str, Any]:
    """The settings of a method as a JSON-ready dict, for the method record in outputs (tuples as
    lists, so a record compares equal to itself read back from JSON)."""
    return json.loads(json.dumps(dataclasses.asdict(settings or OffAxisSettings())))


def _plane_name(index: tuple[int, ...]) -> str:
    return "hologram" if not index else f"hologram plane {index}"


def output_acquisition(acquisition: Acquisition | None, pixel_size_factor: float) -> Acquisition:
    """The acquisition record of a phase image made from a measurement with ``acquisition``."""
    acquisition = acquisition or Acquisition()
    pixel = acquisition.pixel_size_um
    return acquisition.replace(
        modality="phase",
        carrier_cycles_per_px=None,
        pixel_size_um=None if pixel is None else pixel * pixel_size_factor,
    )


#: Classical solvers for coded diffraction patterns, by the name the user sees. "phase object" is
#: Gerchberg–Saxton with the modulus the patterns imply, from a flat phase
#: (:func:`~napari_qpi.retrieval.cdp_solvers.solve_phase_object`): the one that finds cells from a
#: single pattern.
CDP_SOLVERS = {
    "phase object": "phase-object",
    "wirtinger flow": "wf",
    "hio": "hio",
    "gerchberg-saxton": "gs",
}


def available_cdp_methods(n_patterns: int | None = None) -> list[str]:
    """Classical CDP solvers, then registered CDP models made for ``n_patterns`` snapshots."""
    from .models import list_models

    models = [
        card.name
        for card in list_models("cdp")
        if n_patterns is None or card.config.get("n_masks") == n_patterns
    ]
    return [*CDP_SOLVERS, *models]


def reconstruct_cdp(
    patterns: np.ndarray,
    masks: np.ndarray,
    *,
    method: str = "wirtinger flow",
    oversampling: int = 2,
    iterations: int = 150,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Phase (float32 radians, background at 0) of the object behind K coded diffraction patterns.

    ``patterns`` (K, sH, sW) were recorded through the phase ``masks`` (K, H, W) in radians.
    Classical solvers use the masks as given; a model must have been trained with exactly these
    masks (its own learned masks are the optics it expects), which is checked.
    """
    from .physics.cdp import remove_global_phase

    patterns = np.asarray(patterns, dtype=np.float32)
    masks = np.asarray(masks, dtype=np.float32)
    if patterns.ndim == 2:
        patterns = patterns[None]
    if masks.ndim == 2:
        masks = masks[None]
    if not np.all(np.isfinite(patterns)) or patterns.min() < 0:
        raise InputError(
            "Diffraction patterns must be finite, non-negative intensities; this stack has "
            "NaN, infinite or negative values (subtract the camera offset and clip at 0)."
        )
    if len(patterns) != len(masks):
        raise InputError(
            f"{len(patterns)} pattern(s) but {len(masks)} mask(s): each snapshot needs the mask "
            "it was recorded through."
        )
    if method in CDP_SOLVERS:
        from .retrieval.cdp_solvers import solve_cdp, solve_phase_object

        if CDP_SOLVERS[method] == "phase-object":
            estimate = solve_phase_object(
                patterns, masks, oversampling=oversampling, iterations=iterations
            )
        else:
            estimate = solve_cdp(
                patterns,
                masks,
                method=CDP_SOLVERS[method],
                oversampling=oversampling,
                iterations=iterations,
            )
        info = {"method": method, "iterations": iterations, "oversampling": oversampling}
    else:
        estimate, info = _cdp_model_estimate(patterns, masks, method)
    phase = np.angle(remove_global_phase(estimate)).astype(np.float32)
    return phase, info


def _cdp_model_estimate(
    patterns: np.ndarray, masks: np.ndarray, name: str
) -> tuple[np.ndarray, dict[str, Any]]:
    import torch

    from .models import list_models, load_model

    names = available_cdp_methods(len(patterns))
    if name not in names:
        every = {card.name: card for card in list_models("cdp")}
        if name in every:
            wanted = every[name].config.get("n_masks")
            raise InputError(
                f"Model '{name}' reads {wanted} snapshot(s) (diffraction patterns, one per mask); "
                f"this stack has {len(patterns)}. Methods for {len(patterns)} snapshot(s): "
                f"{', '.join(names)}."
            )
        raise InputError(
            f"No CDP method {name!r} for {len(patterns)} snapshot(s). "
            f"Available: {', '.join(names)}."
        )
    model, card = load_model(name)
    model_masks = model.masks.export()
    if model_masks.shape != masks.shape or not np.allclose(
        np.angle(np.exp(1j * (model_masks - masks))), 0, atol=1e-2
    ):
        raise InputError(
            f"These patterns were recorded through other masks than model '{name}' was trained "
            "with: a network only works with its own masks (export them with the model and build "
            "the optics from them), or use a classical solver."
        )
    with torch.inference_mode():
        estimate = model(torch.from_numpy(patterns)[None])[0].numpy()
    return estimate, {"method": name, "model_sha256": card.sha256}


def default_cdp_method(n_patterns: int) -> str:
    """The classical solver used for ``--method classical`` on a CDP stack.

    Wirtinger flow with several patterns (it converges to any complex object from the spectral
    start); with a single pattern "phase object" (Gerchberg–Saxton with the measured modulus from a
    flat phase), the only classical method here that finds an object from one pattern (31-33 dB
    where HIO and Wirtinger flow give 1-3 dB, ``docs/cdp.md``), at the price of assuming no
    absorption (cells in their medium).
    """
    return "wirtinger flow" if n_patterns > 1 else "phase object"


def reconstruct_cdp_file(
    path: Any,
    out_dir: Any,
    *,
    method: str = "classical",
    iterations: int = 150,
    overwrite: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Phase of a CDP stack file (``.npz``, :mod:`napari_qpi.io.cdp`) written as an OME-TIFF.

    The masks come from the file; ``method`` is a classical solver (``"classical"`` picks
    :func:`default_cdp_method`) or a CDP model made for the stack's number of patterns and
    trained with exactly these masks. Writes ``OUT/<stem>_phase.ome.tif`` (float32 radians,
    background at 0, the acquisition record of the stack) and returns its path and the method
    record.

    Raises
    ------
    OutputExistsError
        The output exists and ``overwrite`` is false; raised before anything is solved.
    """
    from pathlib import Path

    from .io import read_cdp_stack, write_phase
    from .io._atomic import check_writable

    path = Path(path)
    stem = path.name[: -len(path.suffix)]
    out = check_writable(Path(out_dir) / f"{stem}_phase.ome.tif", overwrite)
    stack = read_cdp_stack(path)
    if method == "classical":
        method = default_cdp_method(stack.n_patterns)
    phase, info = reconstruct_cdp(
        stack.patterns,
        stack.masks,
        method=method,
        oversampling=stack.oversampling,
        iterations=iterations,
    )
    record = {"name": method, "source": str(path), "n_patterns": stack.n_patterns, **info}
    write_phase(
        out,
        phase,
        acquisition=output_acquisition(stack.acquisition, 1.0),
        method=record,
        overwrite=overwrite,
    )
    return out, record
