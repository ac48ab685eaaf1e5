"""Deep phase retrieval: run a registered network on holograms or coded diffraction patterns.

:func:`retrieve_deep` has the call shape and output conventions of
:func:`~napari_qpi.retrieval.offaxis.retrieve_offaxis`: float32 phase in radians, same orientation
and size as the input. The measurement is normalised once per field as the model card says and
padded by reflection to the network's stride (not for a network with an off-axis front end, which
takes any size and pads its native-grid features itself). A field runs whole when one network
call fits the memory allowed (``max_memory``, by default half of what is free); otherwise the tile
and the number of tiles per call shrink until a call fits, and :mod:`.tiling` cuts and blends the
tiles so that they agree with the whole field. Tiles of all planes of a stack are batched together.
With ``check=True`` a hologram model's input is checked against its training range
(:mod:`.model_range`) and its output against the hologram's sideband (:mod:`.consistency`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..acquisition import Acquisition
from ..errors import ConsistencyWarning, InputError, ModelError, OutOfRangeWarning
from ..models.card import ModelCard, normalise
from ..models.registry import load_model, select_device
from ..nn.frontend import carriers_for, probe_arguments
from .background import background_mask as auto_background_mask
from .background import fit_background
from .consistency import RELATIVE_WARN, SidebandTarget, consistency, sideband_target
from .fourier import looks_like_hologram
from .model_range import check_hologram, check_phase
from .offaxis import PhaseResult
from .tiling import Progress, run_tiles

#: Smallest image side accepted.
MIN_SIZE = 16
#: Share of the free device memory the network calls may use when ``max_memory`` is not given.
MEMORY_FRACTION = 0.5
#: Smallest tile side (px, rounded up to the network's stride) that memory may shrink tiles to:
#: smaller tiles give the network too little context.
MIN_TILE = 64
#: Float32 copies of the whole measurement alive at once on the host (converted, normalised,
#: padded, output): a measurement needs about ``4 * HOST_COPIES`` bytes per value.
HOST_COPIES = 4

ModelSpec = str | tuple[nn.Module, ModelCard]


def _resolve(
    model: ModelSpec, device: str | torch.device | None
) -> tuple[nn.Module, ModelCard, torch.device]:
    """Module, card and device of a model name or a ``(module, card)`` pair."""
    if isinstance(model, str):
        module, card = load_model(model, device=device)
        return module, card, next(_tensors(module), torch.empty(0)).device
    if (
        not isinstance(model, tuple)
        or len(model) != 2
        or not isinstance(model[0], nn.Module)
        or not isinstance(model[1], ModelCard)
    ):
        raise InputError(
            "model must be a registered model's name or a (torch.nn.Module, ModelCard) pair, "
            f"got {type(model).__name__}."
        )
    module, card = model
    if device is None:
        return module, card, next(_tensors(module), torch.empty(0)).device
    dev = select_device(device)
    return module.to(dev), card, dev


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _check_modality(card: ModelCard, acquisition: Acquisition, first: np.ndarray) -> None:
    """Refuse a measurement of another kind than the model reconstructs."""
    names = {"hologram": "off-axis holograms", "cdp": "coded diffraction patterns"}
    given = acquisition.modality
    if given == "phase":
        raise InputError(
            "This image is already a phase image (its metadata say so); phase retrieval needs the "
            "raw hologram or diffraction patterns."
        )
    if given is not None and given != card.modality:
        raise ModelError(
            f"Model {card.name!r} reconstructs {names[card.modality]}, but this data are "
            f"{names[given]}. Choose a {given} model."
        )
    if given is None and card.modality == "cdp" and looks_like_hologram(first):
        raise ModelError(
            f"Model {card.name!r} reconstructs coded diffraction patterns, but this image looks "
            "like an off-axis hologram (it has fringes). Choose a hologram model, or set the "
            "modality in the acquisition metadata to 'cdp' if this is a diffraction pattern."
        )


def _as_batch(measurement: np.ndarray, channels: int, card: ModelCard) -> tuple[np.ndarray, bool]:
    """(N, C, H, W) float32 view of a measurement, and whether it was a stack."""
    arr = np.asarray(measurement)
    if np.iscomplexobj(arr):
        raise InputError("The measurement must be real intensities, got complex values.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"The measurement must be numeric, got dtype {arr.dtype}.")
    if channels == 1:
        if arr.ndim not in (2, 3):
            raise InputError(
                f"Expected one image (height, width) or a stack (planes, height, width), got an "
                f"array of shape {arr.shape}."
            )
        stacked = arr.ndim == 3
        batch = arr.reshape(-1, 1, *arr.shape[-2:])
    else:
        if arr.ndim == 2:
            raise ModelError(
                f"Model {card.name!r} needs {channels} coded diffraction patterns per measurement "
                f"({channels}, height, width), got a single 2-D image. For a hologram choose a "
                "hologram model."
            )
        if arr.ndim not in (3, 4) or arr.shape[-3] != channels:
            raise InputError(
                f"Model {card.name!r} needs ({channels}, height, width) patterns or a stack "
                f"(planes, {channels}, height, width), got an array of shape {arr.shape}."
            )
        stacked = arr.ndim == 4
        batch = arr.reshape(-1, channels, *arr.shape[-2:])
    if batch.shape[0] == 0 or min(batch.shape[-2:]) < MIN_SIZE:
        raise InputError(
            f"The measurement is too small ({arr.shape}); it needs at least "
            f"{MIN_SIZE}x{MIN_SIZE} pixels and one plane."
        )
    needed, free = 4 * HOST_COPIES * batch.size, free_host_memory()
    if needed > free:
        raise InputError(
            f"The measurement {arr.shape} needs about {needed / 2**30:.1f} GiB of memory to "
            f"retrieve in one go, but only {free / 2**30:.1f} GiB are free. Retrieve it plane by "
            "plane (the Phase retrieval widget does so for stacks, as does napari-qpi batch), "
            "or crop it."
        )
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not np.isfinite(batch).all():
        raise InputError(
            "The measurement contains NaN or infinite values; replace or crop them before "
            "retrieval."
        )
    return batch, stacked


def _stride(module: nn.Module, card: ModelCard) -> int:
    """The multiple the measurement is padded to (by reflection) before the network.

    1 for a network with an off-axis front end: it takes holograms of any size and pads its
    native-grid features to its body's stride itself (``OffAxisFrontEnd.prepare``). Padding the
    hologram would mirror its fringes at the border, and the demodulated field, the classical
    phase a residual model corrects (unwrapping, background fit, sign) and the features would all
    be computed on that broken field (the HL60 HDF5 holograms, 294 x 280 px: correlation -0.43
    with the reference for the shipped ``unet`` padded to 304 x 288, 0.98 on a 288 x 272 crop).
    """
    if getattr(module, "front_end", None) is not None:
        return 1
    stride = getattr(module, "stride", None) or card.architecture.get("stride") or 1
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ModelError(f"Model {card.name!r} has an invalid stride {stride!r}.")
    return stride


def free_host_memory() -> int:
    """Bytes of system memory available to this process without swapping."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: GPU memory for CUDA, otherwise :func:`free_host_memory`.

    On CUDA this counts the blocks torch's caching allocator holds but does not use, which
    this process can reuse.
    """
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0] + cached)
    return free_host_memory()


_PER_PIXEL: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int, str], float]] = (
    weakref.WeakKeyDictionary()
)


def bytes_per_pixel(module: nn.Module, channels: int, stride: int, device: torch.device) -> float:
    """Upper bound of the memory one network call takes per input pixel, in bytes.

    Measured once per module (and input channels, stride, device) on a small probe through a
    copy of the module, so the module itself, which other threads may be running, is left
    alone: the input plus the outputs of every leaf module, all counted as if alive at once
    (inference frees most of them early, so the true peak is lower).
    """
    key = (channels, stride, str(device))
    known = _PER_PIXEL.get(module, {})
    if key in known:
        return known[key]
    side = stride * max(2, -(-32 // stride))
    total = 0

    def count(_: nn.Module, __: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    twin = copy.deepcopy(module).eval()
    if (front_end := getattr(twin, "front_end", None)) is not None:
        # the probe's sideband gives q = 1 on the integer grid: the finest native grid any
        # hologram can need, which a tight grid (never finer than the hologram) stays under
        front_end.config = dataclasses.replace(front_end.config, grid="integer")
    for leaf in twin.modules():
        if next(leaf.children(), None) is None:
            leaf.register_forward_hook(count)
    probe = torch.zeros((1, channels, side, side), device=device)
    total += probe.numel() * probe.element_size()
    with torch.inference_mode():
        twin(probe, **probe_arguments(twin, probe))
    del twin
    per_pixel = total / (side * side)
    _PER_PIXEL.setdefault(module, {})[key] = per_pixel
    return per_pixel


def _fit_memory(
    tile: int | None,
    batch_size: int,
    *,
    shape: tuple[int, int],
    stride: int,
    per_pixel: float,
    budget: int,
) -> tuple[int, int, bool]:
    """Largest tile (<= ``tile``) and batch (<= ``batch_size``) whose network call fits ``budget``.

    Returns the tile side, the batch size and whether memory made the tiles smaller.

    Raises
    ------
    InputError
        Not even one tile of :data:`MIN_TILE` pixels fits.
    """
    whole = -(-max(shape) // stride) * stride
    limit = whole if not tile else max(stride, tile // stride * stride)
    fits = int(math.sqrt(budget / per_pixel)) // stride * stride
    smallest = min(limit, -(-MIN_TILE // stride) * stride)
    if fits < smallest:
        raise InputError(
            f"Not enough memory for deep retrieval: one {smallest}x{smallest} px tile needs about "
            f"{per_pixel * smallest**2 / 2**20:.0f} MiB, but only {budget / 2**20:.0f} MiB may be "
            "used. Free memory (close other programs or images), allow more with max_memory, or "
            "run on another device."
        )
    reduced = fits < min(limit, whole)
    limit = min(limit, fits)
    tile_h = min(limit, -(-shape[0] // stride) * stride)
    tile_w = min(limit, -(-shape[1] // stride) * stride)
    batch = max(1, min(batch_size, int(budget // (per_pixel * tile_h * tile_w))))
    return limit, batch, reduced


def _whole_fields_only(module: nn.Module) -> bool:
    """A residual front end corrects the classical phase of the whole field (unwrapping,
    background fit and sign are properties of the field): tiles would each get their own and
    disagree by whole radians, so such a model runs whole planes, whatever ``tile`` asks."""
    front_end = getattr(module, "front_end", None)
    return bool(front_end is not None and front_end.config.residual)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _run_whole(
    module: nn.Module, batch: np.ndarray, *, device: torch.device, stride: int, batch_size: int
) -> np.ndarray:
    """Network output for a (N, C, H, W) batch run as is (coded diffraction patterns)."""
    height, width = batch.shape[-2:]
    if height % stride or width % stride:
        raise InputError(
            f"The diffraction patterns are {height}x{width} pixels, but this network needs sides "
            f"that are multiples of {stride}; crop or pad them to the size it was trained on."
        )
    planes = []
    for start in range(0, batch.shape[0], batch_size):
        inputs = torch.from_numpy(batch[start : start + batch_size]).to(device)
        predict = getattr(module, "predict_phase", module)
        output = predict(inputs)
        if output.ndim != 4 or output.shape[1] != 1:
            raise ModelError(
                f"The network returned shape {tuple(output.shape)}; expected (batch, 1, H, W)."
            )
        planes.append(output[:, 0].float().cpu().numpy())
    return np.concatenate(planes)


def _subtract_background(phase: np.ndarray, order: int, mask: np.ndarray | None) -> np.ndarray:
    """Fit and subtract a polynomial background from each (H, W) plane, in place."""
    for plane in phase:
        chosen = mask if mask is not None else auto_background_mask(plane, order=order)
        plane -= fit_background(plane, order=order, mask=chosen)
    return phase


class _Checks:
    """The trust checks of ``retrieve_deep(check=True)`` for a stack of raw holograms."""

    def __init__(self, card: ModelCard, holograms: np.ndarray, acquisition: Acquisition) -> None:
        self.card = card
        self.targets: list[SidebandTarget] = []
        self.range: dict[str, Any] = {}
        for i, plane in enumerate(holograms):
            with warnings.catch_warnings():
                if i:  # the range warnings once per stack
                    warnings.simplefilter("ignore", OutOfRangeWarning)
                sideband, record = check_hologram(card, plane, acquisition)
            self.range = self.range or record
            self.targets.append(sideband_target(plane, sideband=sideband))

    def after(self, phase: np.ndarray) -> dict[str, Any]:
        """Range of the output and consistency of each plane; warnings; the info entries."""
        check_phase(self.card, phase, self.range)
        scores = [consistency(t, p) for t, p in zip(self.targets, phase, strict=True)]
        failed = [i for i, c in enumerate(scores) if not c.trusted]
        if failed:
            worst = max(scores, key=lambda c: c.relative)
            planes = "" if len(scores) == 1 else f" in {len(failed)} of {len(scores)} planes"
            warnings.warn(
                f"Model {self.card.name!r} does not explain this hologram{planes}: its phase "
                f"leaves {100 * min(worst.relative, 9.99):.0f}% of the cells' fringe pattern "
                f"unexplained (residual {worst.residual:.3f}; trusted up to "
                f"{100 * RELATIVE_WARN:.0f}%). Use the classical method, or check the result.",
                ConsistencyWarning,
                stacklevel=3,
            )
        records = [c.to_dict() for c in scores]
        return {
            "training_range": self.range,
            "consistency": records[0] if len(records) == 1 else records,
        }


def retrieve_deep(
    hologram: np.ndarray,
    *,
    model: ModelSpec,
    acquisition: Acquisition | None = None,
    device: str | torch.device | None = None,
    tile: int | None = None,
    overlap: int = 128,
    batch_size: int = 4,
    max_memory: int | None = None,
    background_order: int | None = None,
    background_mask: np.ndarray | None = None,
    progress: Progress | None = None,
    check: bool = False,
) -> PhaseResult:
    """Phase in radians of a hologram (or CDP measurement), or of a stack, from a network.

    Parameters
    ----------
    hologram
        A hologram (H, W) or a stack (N, H, W). For a model reading K coded diffraction patterns:
        (K, H, W) or (N, K, H, W).
    model
        A registered model's name (loaded with :func:`~napari_qpi.models.load_model`, cached), or
        a ``(module, card)`` pair. A pair's module is put in eval mode while it runs (its mode is
        restored) and moved to ``device`` only when a device is given.
    acquisition
        Metadata; its ``modality``, when set, must match the model's.
    device
        ``"cpu"``, ``"cuda"``, ``"mps"``, ``None`` for the best available.
    tile
        Largest tile side in pixels (rounded down to a multiple of the network's stride);
        not used by a model with a residual front end (it corrects the classical phase of the
        whole field: whole planes only, or a clear error when one does not fit ``max_memory``);
        ``None`` (default) runs whole images whenever one network call fits ``max_memory``, and
        tiles only when it does not. Tiles start on the stride grid and blend away seams, but a
        network that pools globally (PRNet's ``G``) or reads coordinate channels sees one tile
        at a time, which can leave blocks: tile only when memory says so. Coded diffraction
        patterns always run whole.
    overlap
        Pixels by which neighbouring tiles overlap; blended with raised-cosine weights.
    batch_size
        Tiles (or planes) per network call.
    max_memory
        Bytes of device memory one network call may take; ``None``: :data:`MEMORY_FRACTION` of
        what is free (:func:`free_memory`). Holograms are cut into smaller tiles, and fewer
        tiles go into one call, until a call fits (estimated with :func:`bytes_per_pixel`);
        ``info["memory"]`` says what was chosen.
    background_order
        If given (0-5), fit a polynomial of this order to the background of each output plane
        and subtract it, as the classical method does.
    background_mask
        Background pixels (True), (H, W), for that fit; found automatically if ``None``.
    progress
        Called as ``progress(done, total)`` after each network call (it may raise
        :class:`~napari_qpi.errors.CancelledError` to stop).
    check
        For a hologram model, check the data against the model before and after running, as the
        napari widget and the command line do: no sideband is refused
        (:class:`~napari_qpi.errors.SidebandError`, as by the classical method); a fringe
        period, pixel size or phase outside the card's training range gives an
        :class:`~napari_qpi.errors.OutOfRangeWarning` (:mod:`.model_range`); and each plane's
        phase is scored against its hologram's sideband (:mod:`.consistency`), in
        ``info["consistency"]``, with a :class:`~napari_qpi.errors.ConsistencyWarning` when it
        does not explain the hologram. Off by default for code that runs networks on other data.

    Returns
    -------
    PhaseResult
        ``phase`` float32 (H, W) or (N, H, W); ``pixel_size_factor`` 1.0; ``sideband`` None;
        ``info`` with the model's name, family and sha256, device, tiling and timings.

    Raises
    ------
    SidebandError
        With ``check``, or for a model with an off-axis front end (which demodulates each plane
        at its detected sideband, or at the acquisition's carrier, ``info["front_end_carriers"]``):
        a hologram model given an image without off-axis fringes.
    InputError
        Wrong dimensions, non-finite values, a phase image, bad tiling parameters, a
        measurement whose copies (:data:`HOST_COPIES`) do not fit the free memory, or too
        little memory for even one tile of :data:`MIN_TILE` pixels.
    ModelError
        Unknown or damaged model, or a measurement of another modality than the model's.
    """
    t0 = time.perf_counter()
    acq = acquisition or Acquisition()
    tile = None if tile is None else _check_int("tile", tile, 0) or None
    overlap = _check_int("overlap", overlap, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    if max_memory is not None:
        max_memory = _check_int("max_memory", max_memory, 1)
    module, card, dev = _resolve(model, device)
    batch, stacked = _as_batch(hologram, card.input_channels, card)
    _check_modality(card, acq, batch[0, 0])
    height, width = batch.shape[-2:]
    background_mask = _checked_mask(background_mask, (height, width))
    checks = _Checks(card, batch[:, 0], acq) if check and card.modality == "hologram" else None
    carriers = carriers_for(module, batch[:, 0], acq.carrier_cycles_per_px)
    axes = (2, 3) if card.normalisation.get("per_channel", False) else (1, 2, 3)
    batch = normalise(batch, card.normalisation, axes=axes)
    stride = _stride(module, card)
    t_ready = time.perf_counter()
    phase, plan, memory, batch_size = _run_network(
        module,
        card,
        batch,
        dev,
        stride=stride,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        max_memory=max_memory,
        progress=progress,
        carriers=carriers,
    )
    t_network = time.perf_counter()
    background: dict[str, Any] | None = None
    if background_order is not None:
        _subtract_background(phase, background_order, background_mask)
        background = {
            "order": int(background_order),
            "mask": "given" if background_mask is not None else "auto",
        }
    t_checks = time.perf_counter()
    checked = checks.after(phase) if checks is not None else {}
    info: dict[str, Any] = {
        "method": "deep",
        "model": card.name,
        "family": card.family,
        "network": card.network,
        "modality": card.modality,
        "source": card.source,
        "sha256": card.sha256,
        "device": str(dev),
        "stride": stride,
        "batch_size": batch_size,
        "normalisation": card.normalisation.get("method"),
        **({} if carriers is None else {"front_end_carriers": carriers.round(6).tolist()}),
        **plan,
        "memory": memory,
        "background": background,
        **checked,
        "time_ms": {
            "prepare": 1e3 * (t_ready - t0),
            "network": 1e3 * (t_network - t_ready),
            "checks": 1e3 * (time.perf_counter() - t_checks),
            "total": 1e3 * (time.perf_counter() - t0),
        },
    }
    phase = phase.astype(np.float32, copy=False)
    return PhaseResult(phase if stacked else phase[0], 1.0, None, info)


def _checked_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The background mask as booleans, checked to have the images' ``shape`` (H, W)."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise InputError(f"The background mask has shape {mask.shape} but the images are {shape}.")
    return mask


def _run_network(
    module: nn.Module,
    card: ModelCard,
    batch: np.ndarray,
    dev: torch.device,
    *,
    stride: int,
    tile: int | None,
    overlap: int,
    batch_size: int,
    max_memory: int | None,
    progress: Progress | None,
    carriers: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any] | None, int]:
    """Run the network (in eval mode, its mode restored) on a normalised batch (N, C, H, W).

    Hologram models run in tiles and batches sized to ``max_memory`` bytes (or the free device
    memory); CDP models run whole. Returns the phase (N, H, W) in radians, the tiling plan, the
    memory record (``None`` for CDP) and the batch size used.
    """
    height, width = batch.shape[-2:]
    was_training = module.training
    module.eval()
    memory: dict[str, Any] | None = None
    try:
        with torch.inference_mode():
            if card.modality != "cdp":
                budget = max_memory or int(MEMORY_FRACTION * free_memory(dev))
                per_pixel = bytes_per_pixel(module, batch.shape[1], stride, dev)
                whole_only = _whole_fields_only(module)
                tile, batch_size, reduced = _fit_memory(
                    None if whole_only else tile,
                    batch_size,
                    shape=(height, width),
                    stride=stride,
                    per_pixel=per_pixel,
                    budget=budget,
                )
                if whole_only and reduced:
                    raise InputError(
                        f"Not enough memory for this model on a {height}x{width} px field: it "
                        "corrects the classical phase of the whole field, so it cannot run in "
                        "tiles. Free memory, allow more with max_memory, run on another device, "
                        "or use the classical method."
                    )
                memory = {
                    "limit_bytes": budget,
                    "bytes_per_pixel": round(per_pixel, 1),
                    "tile_reduced": reduced,
                }
            if card.modality == "cdp":
                phase = _run_whole(module, batch, device=dev, stride=stride, batch_size=batch_size)
                plan: dict[str, Any] = {"tiles": 1}
                if progress is not None:
                    progress(1, 1)
            else:
                phase, plan = run_tiles(
                    module,
                    batch,
                    device=dev,
                    tile=tile,
                    overlap=overlap,
                    stride=stride,
                    batch_size=batch_size,
                    progress=progress,
                    carriers=carriers,
                )
    finally:
        module.train(was_training)
    return phase, plan, memory, batch_size


__all__ = [
    "HOST_COPIES",
    "MEMORY_FRACTION",
    "MIN_SIZE",
    "MIN_TILE",
    "bytes_per_pixel",
    "free_host_memory",
    "free_memory",
    "retrieve_deep",
]
