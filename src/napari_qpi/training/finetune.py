"""Fine-tune a registered model to a user's microscope, on arrays (no GUI code).

A lab whose fringes, aberrations or cells differ from the training data gives pairs of their own
measurements and target phases (e.g. the classical method's result, corrected by hand), optionally
with masks of pixels to ignore. :func:`finetune` adapts any registered model of the matching
modality with the shared loop :func:`~napari_qpi.training.loop.fit` and returns the network with
the weights that did best on a held-out part of the pairs, and a ``"finetuned"`` model card (base
model, data summary, settings, validation metrics). :func:`save_finetuned` registers it as a user
model. The *Fine-tune* widget and ``napari-qpi finetune`` are thin layers over these.

Two steps, so a GUI can check the input before it starts a thread:

1. :func:`plan_finetune` loads a private copy of the base model and checks and splits the data,
   raising :class:`~napari_qpi.errors.QPIError` with a message for people when something is wrong;
2. :func:`run_finetune` trains (resumable from a checkpoint, stoppable, with a memory fallback that
   halves the batch) and makes the card.

Holograms
    Random square crops (``crop`` px, a multiple of the network's stride) of the training pairs,
    with flips and 90-degree rotations (:func:`~napari_qpi.training.data.pairs_from_arrays`),
    offset-free L1 (or MSE) phase loss over the pixels not ignored.
Coded diffraction patterns
    Whole measurements (the network reads patterns of the size it was made for; the phase masks are
    hardware and stay frozen). With targets: offset-free loss on the wrapped phase difference.
    Self-supervised (no targets): measurement consistency, the estimate ``x_hat`` pushed through
    the model's own masks, ``|F(M_k x_hat)|^2``, compared with the measured patterns ``y_k`` as
    amplitudes (``sqrt``), relative to the measured energy.

Validation: a ``val_fraction`` of the images is held out (or, with a single hologram, that fraction
of its rows), scored after every ``val_every`` steps with the training loss (``val_loss``) and
PSNR against the target (data range = the target's range over the pixels not ignored), both over
the pixels not ignored. The best weights by ``val_loss`` are kept (in memory and beside the
checkpoint), so a run stopped early or one that over-fits still yields its best model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError, ModelError, QPIError
from ..models.card import ModelCard, normalise, validate_name
from ..models.registry import (
    get_card,
    load_model,
    save_user_model,
    select_device,
    user_data_dir,
)
from ..nn import count_parameters, pad_to_multiple
from .data import pairs_from_arrays
from .loop import FitResult, StopFlag, fit
from .losses import Reduction, offset_free_difference, phase_loss
from .metrics import psnr_from_mse

#: Largest side (px) of a validation image scored at once; larger ones are centre-cropped.
VALIDATION_WINDOW = 512
#: Fewest rows kept for training and for validation when a single hologram is split.
MIN_SPLIT_ROWS = 32
#: Validations in a run limited by steps (at most one per epoch).
VALIDATIONS_PER_RUN = 25
#: Steps between validations in a run limited by time.
TIMED_VALIDATION_STEPS = 10

BaseSpec = str | tuple[nn.Module, ModelCard]
Arrays = np.ndarray | Sequence[np.ndarray]
OptionalArrays = np.ndarray | Sequence[np.ndarray | None] | None


@dataclass
class FinetuneSettings:
    """How a model is fine-tuned; every field is a ``napari-qpi finetune`` flag.

    Attributes
    ----------
    name
        Name of the new user model (see :func:`~napari_qpi.models.card.validate_name`).
    epochs
        Passes over the training pixels: one epoch is as many crops as cover the training images
        once (at least one batch).
    lr
        AdamW base learning rate (cosine decay with 2% warm-up). For a few minutes on a CPU
        higher rates learn faster (``benchmarks/finetune.py`` uses 4e-3); lower ones change a
        good base model less.
    batch_size
        Crops (or CDP measurements) per step; halved automatically if memory runs out.
    crop
        Side of the square training crops, pixels, rounded down to the network's stride and to
        the smallest training image. Networks with coordinate channels do best on whole fields.
    augment
        Random flips and 90-degree rotations of holograms (not of CDPs: masks break the symmetry).
    val_fraction
        Fraction of the images held out for validation and choosing the best weights (0: none;
        the last weights are kept).
    loss
        ``"l1"`` or ``"mse"``, offset-free.
    self_supervised
        CDP models only: learn from the measurements alone (measurement consistency), no targets.
    minutes
        Optional wall-time budget; the learning rate anneals over it and training ends when spent.
    weight_decay
        AdamW weight decay (convolution weights only).
    seed
        Seeds the crops, the validation split and torch's generator.
    val_every
        Steps between validations; 0 chooses (see :data:`VALIDATIONS_PER_RUN`).
    checkpoint_every
        Steps between resumable checkpoints (one is also written when training ends).
    description
        One or two sentences for the model card (default: made up from the base and data).
    """

    name: str
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 4
    crop: int = 256
    augment: bool = True
    val_fraction: float = 0.2
    loss: Reduction = "l1"
    self_supervised: bool = False
    minutes: float | None = None
    weight_decay: float = 1e-4
    seed: int = 0
    val_every: int = 0
    checkpoint_every: int = 50
    description: str = ""

    def __post_init__(self) -> None:
        validate_name(self.name)
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(
                f"epochs and batch size must be at least 1, got {self.epochs} and {self.batch_size}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"the learning rate must be a positive number, got {self.lr}")
        if self.crop < 16:
            raise InputError(f"crops must be at least 16 px, got {self.crop}")
        if not 0.0 <= self.val_fraction <= 0.5:
            raise InputError(
                f"the validation fraction must lie between 0 and 0.5, got {self.val_fraction}"
            )
        if self.loss not in ("l1", "mse"):
            raise InputError(f"the loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"the time budget must be positive minutes, got {self.minutes}")
        if self.val_every < 0 or self.checkpoint_every < 1:
            raise InputError("val_every must be >= 0 and checkpoint_every >= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)


@dataclass
class Pair:
    """One training or validation example.

    Attributes
    ----------
    measurement
        Raw hologram (H, W), or CDP patterns (K, sH, sW); float32.
    target
        Target phase (h, w) in radians, float32 (0 where ignored), or ``None`` (self-supervised).
    ignore
        (h, w) bool, True where the loss ignores the pixel.
    source
        Where it came from, for messages and the card (``"layer [plane]"``).
    """

    measurement: np.ndarray
    target: np.ndarray | None
    ignore: np.ndarray
    source: str


@dataclass
class FinetunePlan:
    """A checked fine-tuning run, ready for :func:`run_finetune` (see :func:`plan_finetune`)."""

    model: nn.Module
    base: ModelCard
    settings: FinetuneSettings
    train: list[Pair]
    validation: list[Pair]
    crop: int
    steps_per_epoch: int
    total_steps: int
    val_every: int
    device: torch.device
    summary: dict[str, Any]
    fingerprint: str
    command: str = ""

    @property
    def modality(self) -> str:
        """``"hologram"`` or ``"cdp"``."""
        return self.base.modality


@dataclass
class FinetuneEvent:
    """Progress of a run in the background, for a GUI (see :func:`iter_finetune`).

    ``kind`` is ``"start"``, ``"step"``, ``"validation"``, ``"notice"`` (e.g. a smaller batch after
    running out of memory) or ``"saving"``; ``elapsed_s`` counts training time in this session.
    """

    kind: Literal["start", "step", "validation", "notice", "saving"]
    step: int = 0
    total: int = 0
    loss: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    elapsed_s: float = 0.0


@dataclass
class FinetuneOutcome:
    """A saved fine-tuned model: its card (as registered), folder and how the run ended."""

    card: ModelCard
    folder: Path
    status: str
    steps: int
    total: int


# Data ------------------------------------------------------------------------------------------


def _as_list(arrays: Any, what: str) -> list[Any]:
    if arrays is None:
        return []
    if isinstance(arrays, (list, tuple)):
        return list(arrays)
    if not hasattr(arrays, "shape"):
        raise InputError(f"{what} must be an array or a list of arrays, got {type(arrays)}")
    return [arrays]


def _planes(array: np.ndarray, plane_ndim: int) -> list[np.ndarray]:
    """Split ``array`` into its trailing ``plane_ndim``-D planes."""
    return list(array.reshape(-1, *array.shape[array.ndim - plane_ndim :]))


def _measurement_planes(
    array: Any, card: ModelCard, name: str, *, oversampling: int | None
) -> list[np.ndarray]:
    arr = np.asarray(array)
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name}: the measurement must be real numbers, got {arr.dtype}")
    channels = card.input_channels
    if card.modality == "hologram":
        if arr.ndim < 2:
            raise InputError(f"{name}: expected an image or a stack of images, got {arr.shape}")
        planes = _planes(arr.astype(np.float32, copy=False), 2)
    else:
        if arr.ndim < 3 or arr.shape[-3] != channels:
            raise ModelError(
                f"{name}: model {card.name!r} reads {channels} coded diffraction pattern(s) per "
                f"measurement, shaped ({channels}, height, width), got an array of shape "
                f"{arr.shape}. Pick inputs made with this model's masks, or another base model."
            )
        planes = _planes(arr.astype(np.float32, copy=False), 3)
    if min(planes[0].shape[-2:]) < 16:
        raise InputError(f"{name}: images of {planes[0].shape[-2:]} px are too small (16 px min)")
    if oversampling is not None and card.modality == "cdp":
        sh, sw = planes[0].shape[-2:]
        if sh % oversampling or sw % oversampling:
            raise InputError(
                f"{name}: patterns of {sh}x{sw} px do not fit oversampling {oversampling}"
            )
    for plane in planes:
        if not np.isfinite(plane).all():
            raise InputError(f"{name}: the measurement has NaN or infinite values; crop them")
    return planes


def collect_pairs(
    card: ModelCard,
    measurements: Arrays,
    targets: OptionalArrays = None,
    ignore: OptionalArrays = None,
    *,
    names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    oversampling: int | None = None,
) -> list[Pair]:
    """Check user arrays against a model's card and cut them into pairs, one per plane.

    Parameters
    ----------
    card
        The base model's card (modality, input channels).
    measurements
        One array per layer or file: a hologram (H, W) or a stack (..., H, W); for a CDP model
        (K, sH, sW) patterns or a stack (..., K, sH, sW).
    targets
        One target phase (radians) per measurement array, of the measurement's shape (holograms)
        or (..., sH / s, sW / s) (CDPs); ``None`` only for self-supervised CDP fine-tuning.
        NaN or infinite target pixels are ignored.
    ignore
        Nonzero marks pixels to ignore: one array for all measurements (the shape of each
        target, or of one of its planes), or one per measurement (``None`` entries allowed).
    names, target_names
        Layer or file names for messages.
    oversampling
        CDP zero-padding factor, to check the target size against the patterns.

    Raises
    ------
    InputError
        Counts or shapes that do not fit, non-finite measurements, or an ignore mask that covers
        every pixel.
    ModelError
        Measurements of another kind than the model reads.
    """
    inputs = _as_list(measurements, "the measurements")
    if not inputs:
        raise InputError("choose at least one input layer (holograms or CDP stacks)")
    names = list(names) if names is not None else [f"input {i + 1}" for i in range(len(inputs))]
    goals = _as_list(targets, "the targets")
    if goals and len(goals) != len(inputs):
        raise InputError(
            f"give one target layer per input layer, in the same order: got {len(inputs)} "
            f"input(s) ({', '.join(names)}) and {len(goals)} target(s)"
        )
    target_names = (
        list(target_names)
        if target_names is not None
        else [f"target {i + 1}" for i in range(len(goals))]
    )
    if ignore is None or not isinstance(ignore, (list, tuple)):
        masks: list[Any] = [ignore] * len(inputs)
    else:
        masks = list(ignore)
        if len(masks) != len(inputs):
            raise InputError(
                f"give one ignore mask for all inputs or one per input: got {len(masks)} for "
                f"{len(inputs)} inputs"
            )

    pairs: list[Pair] = []
    for i, (array, name) in enumerate(zip(inputs, names, strict=True)):
        planes = _measurement_planes(array, card, name, oversampling=oversampling)
        if card.modality == "hologram":
            plane_shape = planes[0].shape
        else:
            s = oversampling or 1
            plane_shape = (planes[0].shape[-2] // s, planes[0].shape[-1] // s)
        stack_shape = (len(planes), *plane_shape)
        if goals:
            target = np.asarray(goals[i], dtype=np.float32)
            expected = np.asarray(array).shape[: -2 if card.modality == "hologram" else -3]
            if target.shape not in ((*expected, *plane_shape), stack_shape):
                raise InputError(
                    f"the target {target_names[i]!r} has shape {target.shape}, but the input "
                    f"{name!r} needs targets of shape {(*expected, *plane_shape)}: one phase "
                    "image per plane, on the measurement's pixel grid (retrieve the phase at "
                    "full resolution)"
                )
            target_planes: list[np.ndarray | None] = list(target.reshape(stack_shape))
        else:
            target_planes = [None] * len(planes)
        mask_planes = _mask_planes(masks[i], stack_shape, name)
        for k, (plane, goal, mask) in enumerate(
            zip(planes, target_planes, mask_planes, strict=True)
        ):
            if goal is not None:
                bad = ~np.isfinite(goal)
                if bad.any():
                    mask = mask | bad
                    goal = np.where(bad, np.float32(0), goal)
            label = name if len(planes) == 1 else f"{name} [{k}]"
            pairs.append(Pair(plane, goal, mask, label))
    if all(p.ignore.all() for p in pairs):
        raise InputError(
            "the ignore mask covers every pixel: nothing is left to learn from. Erase part of the "
            "labels layer (it marks pixels to ignore), or choose no ignore layer."
        )
    return [p for p in pairs if not p.ignore.all()]


def _mask_planes(mask: Any, stack_shape: tuple[int, ...], name: str) -> list[np.ndarray]:
    if mask is None:
        return [np.zeros(stack_shape[1:], bool) for _ in range(stack_shape[0])]
    arr = np.asarray(mask) != 0
    if arr.shape == stack_shape[1:]:
        return [arr] * stack_shape[0]
    if arr.size == math.prod(stack_shape) and arr.shape[-2:] == stack_shape[1:]:
        return list(arr.reshape(stack_shape))
    raise InputError(
        f"the ignore mask has shape {arr.shape}, but the targets of {name!r} have shape "
        f"{stack_shape} (or planes of {stack_shape[1:]}): paint it on the same grid"
    )


def split_pairs(
    pairs: list[Pair], fraction: float, seed: int, *, can_split_rows: bool
) -> tuple[list[Pair], list[Pair], str]:
    """Training and validation pairs, and how they were split.

    Whole images are held out when there are two or more (at least one each way); a single
    hologram gives its bottom ``fraction`` of rows when both parts keep :data:`MIN_SPLIT_ROWS`.

    Returns
    -------
    train, validation, how
        ``how`` is ``"images"``, ``"rows"`` or ``"none"``.
    """
    if fraction <= 0:
        return pairs, [], "none"
    if len(pairs) >= 2:
        count = min(max(round(fraction * len(pairs)), 1), len(pairs) - 1)
        order = np.random.default_rng((seed, 7)).permutation(len(pairs))
        held = set(order[:count].tolist())
        return (
            [p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held],
            "images",
        )
    pair = pairs[0]
    height = pair.ignore.shape[0]
    rows = round(fraction * height)
    if not can_split_rows or min(rows, height - rows) < MIN_SPLIT_ROWS:
        return pairs, [], "none"
    cut = height - rows
    parts = []
    for window, suffix in ((slice(0, cut), "top"), (slice(cut, height), "bottom")):
        target = None if pair.target is None else pair.target[window]
        parts.append(
            Pair(pair.measurement[window], target, pair.ignore[window], f"{pair.source} {suffix}")
        )
    return [parts[0]], [parts[1]], "rows"


def _fingerprint(pairs: Iterable[Pair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        for array in (pair.measurement, pair.target, pair.ignore):
            if array is not None:
                digest.update(str(array.shape).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# Models ----------------------------------------------------------------------------------------


def _load_base(base: BaseSpec, device: str | torch.device | None) -> tuple[nn.Module, ModelCard]:
    """A private, trainable copy of the base model and its card."""
    if isinstance(base, str):
        return load_model(base, device=device, cached=False)
    if (
        not isinstance(base, tuple)
        or len(base) != 2
        or not isinstance(base[0], nn.Module)
        or not isinstance(base[1], ModelCard)
    ):
        raise InputError(
            "the base model must be a registered model's name or a (torch.nn.Module, ModelCard) "
            f"pair, got {type(base).__name__}"
        )
    module = copy.deepcopy(base[0]).float()
    return module.to(select_device(device)), base[1]


def _stride(model: nn.Module, card: ModelCard) -> int:
    return int(getattr(model, "stride", None) or card.architecture.get("stride") or 1)


def _oversampling(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "oversampling", None)


def _check_masks(model: nn.Module, card: ModelCard, masks: np.ndarray) -> None:
    own = getattr(model, "masks", None)
    if own is None or not hasattr(own, "export"):
        return
    expected = np.asarray(own.export(), dtype=np.float32)
    masks = masks[None] if masks.ndim == 2 else masks
    if expected.shape != masks.shape or not np.allclose(
        np.angle(np.exp(1j * (expected - masks))), 0, atol=1e-2
    ):
        raise ModelError(
            f"these patterns were recorded through other masks than model {card.name!r} has: a "
            "CDP network only works with its own masks; choose the model made for these optics"
        )


def _freeze_masks(model: nn.Module) -> int:
    """Freeze a CDP model's phase masks (hardware); returns the number of frozen tensors."""
    masks = getattr(model, "masks", None)
    if not isinstance(masks, nn.Module):
        return 0
    frozen = 0
    for parameter in masks.parameters():
        parameter.requires_grad_(False)
        frozen += 1
    return frozen


def plan_finetune(
    base: BaseSpec,
    measurements: Arrays,
    targets: OptionalArrays = None,
    ignore: OptionalArrays = None,
    *,
    settings: FinetuneSettings,
    modality: str | None = None,
    names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    command: str = "",
    masks: np.ndarray | None = None,
) -> FinetunePlan:
    """Load the base model and check, pair and split the data (see :func:`collect_pairs`).

    Parameters
    ----------
    base
        A registered model's name, or a ``(module, card)`` pair (the module is copied).
    measurements, targets, ignore
        See :func:`collect_pairs`; ``targets`` may be ``None`` only with
        ``settings.self_supervised`` on a CDP model.
    settings
        :class:`FinetuneSettings`.
    modality
        What the measurements are (``"hologram"`` or ``"cdp"``, e.g. from their acquisition
        metadata); a base model of another modality is refused.
    names, target_names
        For messages and the model card.
    device
        Where to train (``None``: the best available, see
        :func:`~napari_qpi.models.select_device`).
    command
        How the run was started, recorded in the card.
    masks
        CDP models: the phase masks (K, H, W) the measurements were recorded through, if known;
        they must be the model's own (a network works only with the optics it was made for).

    Raises
    ------
    ModelError
        Unknown base model, or one of another modality.
    InputError
        Data that do not fit (see :func:`collect_pairs`), missing targets, images smaller than
        the network's stride.
    """
    model, card = _load_base(base, device)
    kinds = {"hologram": "off-axis holograms", "cdp": "coded diffraction patterns"}
    if modality is not None and modality not in kinds:
        raise InputError(f"unknown modality {modality!r}; the inputs must be holograms or CDPs")
    if modality is not None and modality != card.modality:
        raise ModelError(
            f"the base model {card.name!r} reconstructs {kinds[card.modality]}, but the inputs "
            f"are {kinds[modality]}: choose a {modality} model as the base"
        )
    if settings.self_supervised and card.modality != "cdp":
        raise InputError(
            "self-supervised fine-tuning needs a CDP model (it checks the estimate against the "
            "measured patterns through the model's masks); for holograms give target phases, "
            "e.g. from the classical method"
        )
    if targets is None and not settings.self_supervised:
        raise InputError(
            "choose target phase layers (one per input; the 'fill' button makes them with the "
            "classical method), or, for a CDP model, tick self-supervised"
        )
    if settings.self_supervised:
        targets = None
    oversampling = _oversampling(model) if card.modality == "cdp" else None
    if masks is not None and card.modality == "cdp":
        _check_masks(model, card, np.asarray(masks, dtype=np.float32))
    if card.modality == "hologram" and card.normalisation.get("method") != "mean_std":
        raise ModelError(
            f"model {card.name!r} normalises its input with "
            f"{card.normalisation.get('method')!r}; fine-tuning supports hologram models that "
            "normalise by mean and standard deviation (all models trained by napari-qpi do)"
        )
    pairs = collect_pairs(
        card,
        measurements,
        targets,
        ignore,
        names=names,
        target_names=target_names,
        oversampling=oversampling,
    )
    train, validation, how = split_pairs(
        pairs, settings.val_fraction, settings.seed, can_split_rows=card.modality == "hologram"
    )
    stride = _stride(model, card)
    if card.modality == "hologram":
        smallest = min(min(p.measurement.shape) for p in train)
        crop = min(settings.crop, smallest) // stride * stride
        if crop < max(stride, 16):
            raise InputError(
                f"the training images are too small: the smallest side is {smallest} px, model "
                f"{card.name!r} needs at least {max(stride, 16)} px (a multiple of its stride "
                f"{stride})"
            )
        pixels = sum(p.ignore.size for p in train)
        steps_per_epoch = max(1, math.ceil(pixels / (crop * crop * settings.batch_size)))
    else:
        crop = int(train[0].ignore.shape[0])
        steps_per_epoch = max(1, math.ceil(len(train) / settings.batch_size))
        _freeze_masks(model)
    total = settings.epochs * steps_per_epoch
    val_every = settings.val_every or (
        TIMED_VALIDATION_STEPS
        if settings.minutes is not None
        else max(steps_per_epoch, total // VALIDATIONS_PER_RUN)
    )
    every = [p.target for p in pairs if p.target is not None]
    valid = [p.target[~p.ignore] for p in pairs if p.target is not None]
    summary = {
        "pairs": len(pairs),
        "train": len(train),
        "validation": len(validation),
        "validation_split": how,
        "sources": [p.source for p in pairs][:50],
        "validation_sources": [p.source for p in validation][:50],
        "measurement_shapes": sorted({str(tuple(p.measurement.shape)) for p in pairs})[:10],
        "ignored_fraction": round(
            float(sum(p.ignore.sum() for p in pairs) / sum(p.ignore.size for p in pairs)), 4
        ),
        "target_range_rad": (
            [
                round(float(min(v.min() for v in valid if v.size)), 3),
                round(float(max(v.max() for v in valid if v.size)), 3),
            ]
            if every
            else None
        ),
        "self_supervised": settings.self_supervised,
        "crop": crop,
        "steps_per_epoch": steps_per_epoch,
    }
    identity = {
        "base": card.name,
        "base_sha256": card.sha256,
        "settings": {k: v for k, v in settings.to_dict().items() if k != "batch_size"},
        "data": _fingerprint(pairs),
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    summary["fingerprint"] = fingerprint
    return FinetunePlan(
        model=model,
        base=card,
        settings=settings,
        train=train,
        validation=validation,
        crop=crop,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        val_every=val_every,
        device=next(model.parameters()).device,
        summary=summary,
        fingerprint=fingerprint,
        command=command,
    )


# Losses and validation -------------------------------------------------------------------------


def _normalise_cdp(patterns: np.ndarray, card: ModelCard) -> np.ndarray:
    """Network input of CDP measurements (N, K, sH, sW), normalised as the card says."""
    axes = (2, 3) if card.normalisation.get("per_channel", False) else (1, 2, 3)
    return normalise(patterns, card.normalisation, axes=axes)


def wrapped_phase_loss(
    estimate: Tensor, target: Tensor, ignore: Tensor, kind: Reduction = "l1"
) -> Tensor:
    """Loss of a complex estimate (B, H, W) against target phase (B, 1, H, W), offset-free.

    The global phase is the angle of ``sum(estimate * exp(-i target))`` over the pixels not
    ignored; the loss is the mean absolute (or squared) wrapped phase difference after removing
    it, radians.
    """
    weight = (~ignore[:, 0]).to(target.dtype)
    rotated = estimate * torch.polar(torch.ones_like(target[:, 0]), -target[:, 0])
    inner = (rotated * weight).sum(dim=(-2, -1), keepdim=True)
    difference = torch.angle(rotated * (inner.conj() / (inner.abs() + 1e-12)))
    error = difference.abs() if kind == "l1" else difference.square()
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def consistency_loss(estimate: Tensor, patterns: Tensor, model: nn.Module) -> Tensor:
    """Measurement consistency of a CDP estimate: ``|F(M_k x_hat)|^2`` against ``y_k``.

    Compared as amplitudes, ``mean((sqrt(y_hat) - sqrt(y))^2) / mean(y)`` (dimensionless;
    amplitudes weigh dim and bright pixels more evenly than intensities, as Poisson noise asks).
    """
    from ..physics.cdp import cdp_forward_torch

    predicted = cdp_forward_torch(estimate, model.masks(), _oversampling(model) or 1)
    measured = patterns.clamp_min(0)
    residual = torch.sqrt(predicted + 1e-12) - torch.sqrt(measured)
    return residual.square().mean() / measured.mean().clamp_min(1e-12)


def _loss_fn(plan: FinetunePlan) -> Callable[[nn.Module, Sequence[Tensor]], Tensor]:
    """Training loss; sign-free for a base network that picks its own sign (``cells_positive``):
    a crop with few cells cannot tell the sign rule which way is up."""
    device, kind = plan.device, plan.settings.loss
    sign_free = bool(plan.base.config.get("cells_positive"))

    def hologram_loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        x, y, ignore = (t.to(device) for t in batch)
        return phase_loss(model(x), y, ignore, kind=kind, sign_free=sign_free)

    def cdp_loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        x, y, ignore = (t.to(device) for t in batch)
        estimate = model(x)
        if plan.settings.self_supervised:
            return consistency_loss(estimate, x, model)
        return wrapped_phase_loss(estimate, y, ignore, kind)

    return hologram_loss if plan.modality == "hologram" else cdp_loss


def _cdp_batches(
    plan: FinetunePlan, batch_size: int
) -> Callable[[int], Iterator[tuple[Tensor, ...]]]:
    """Batch source of whole CDP measurements, batch ``k`` a function of ``(seed, k)``."""
    x = torch.from_numpy(_normalise_cdp(np.stack([p.measurement for p in plan.train]), plan.base))
    h, w = plan.train[0].ignore.shape
    y = torch.from_numpy(
        np.stack(
            [p.target if p.target is not None else np.zeros((h, w), np.float32) for p in plan.train]
        )
    )[:, None]
    ignore = torch.from_numpy(np.stack([p.ignore for p in plan.train]))[:, None]
    count = min(batch_size, len(plan.train))

    def source(first_step: int) -> Iterator[tuple[Tensor, ...]]:
        step = first_step
        while True:
            rng = np.random.default_rng((plan.settings.seed, step))
            index = torch.from_numpy(rng.choice(len(plan.train), count, replace=False))
            yield x[index], y[index], ignore[index]
            step += 1

    return source


def _centre_window(shape: tuple[int, ...], size: int, stride: int) -> tuple[slice, slice]:
    windows = []
    for length in shape[-2:]:
        side = length if length <= size else size // stride * stride
        start = (length - side) // 2
        windows.append(slice(start, start + side))
    return windows[0], windows[1]


def _masked_psnr(difference: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """PSNR of an offset-free difference over the valid pixels (data range: the target's)."""
    values = target[valid]
    data_range = float(values.max() - values.min()) if values.size else 0.0
    return psnr_from_mse(float(np.mean(np.square(difference[valid], dtype=np.float64))), data_range)


def _validation_fn(plan: FinetunePlan) -> Callable[[nn.Module], dict[str, float]] | None:
    """``val_fn(model)`` -> ``{"val_loss", "psnr_db"}`` averaged over the validation pairs."""
    if not plan.validation:
        return None
    device, kind, card = plan.device, plan.settings.loss, plan.base
    stride = _stride(plan.model, card)
    items = []
    for pair in plan.validation:
        if plan.modality == "hologram":
            window = _centre_window(pair.measurement.shape, VALIDATION_WINDOW, stride)
            x = torch.from_numpy(normalise(pair.measurement[window], card.normalisation))
            x, size = pad_to_multiple(x[None, None], stride)
        else:
            window = (slice(None), slice(None))
            x = torch.from_numpy(_normalise_cdp(pair.measurement[None], card))
            size = pair.ignore.shape
        target = None if pair.target is None else torch.from_numpy(pair.target[window])[None, None]
        ignore = torch.from_numpy(pair.ignore[window])[None, None]
        items.append((x, size, target, ignore))

    def val_fn(model: nn.Module) -> dict[str, float]:
        losses, psnrs = [], []
        for x, (height, width), target, ignore in items:
            x = x.to(device)
            if plan.modality == "hologram":
                prediction = model(x)[..., :height, :width].float().cpu()
                losses.append(float(phase_loss(prediction, target, ignore, kind=kind)))
                difference, weight = offset_free_difference(prediction, target, ignore)
                psnrs.append(
                    _masked_psnr(
                        difference[0, 0].numpy(), target[0, 0].numpy(), weight[0, 0].numpy() > 0
                    )
                )
                continue
            estimate = model(x)
            if plan.settings.self_supervised:
                losses.append(float(consistency_loss(estimate, x, model)))
            estimate = estimate.cpu()
            if target is not None:
                losses.append(float(wrapped_phase_loss(estimate, target, ignore, kind)))
            if target is not None:
                valid = ~ignore[0, 0].numpy()
                rotated = estimate[0].numpy() * np.exp(-1j * target[0, 0].numpy())
                inner = np.sum(rotated[valid])
                difference = np.angle(rotated * np.exp(-1j * np.angle(inner)))
                psnrs.append(_masked_psnr(difference, target[0, 0].numpy(), valid))
        metrics = {"val_loss": float(np.mean(losses))}
        finite = [p for p in psnrs if not math.isnan(p)]
        if finite:
            metrics["psnr_db"] = float(np.mean(finite))
        return metrics

    return val_fn


# Running ---------------------------------------------------------------------------------------


def default_checkpoint(name: str) -> Path:
    """Where the resumable checkpoint of the fine-tuning run of model ``name`` lives."""
    return user_data_dir() / "finetune" / f"{validate_name(name)}.pt"


def _work_files(checkpoint: Path) -> tuple[Path, Path, Path]:
    """The checkpoint, its run description (JSON) and the best weights so far."""
    return (
        checkpoint,
        checkpoint.with_name(checkpoint.name + ".json"),
        checkpoint.with_name(checkpoint.name + ".best"),
    )


def clear_work_files(checkpoint: str | os.PathLike) -> None:
    """Remove a run's checkpoint, description and best weights (a finished run's work files)."""
    for path in _work_files(Path(checkpoint)):
        path.unlink(missing_ok=True)


def resumable(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    """The description of the stopped run whose checkpoint is at ``checkpoint``, if any."""
    if checkpoint is None:
        return None
    ckpt, description, _ = _work_files(Path(checkpoint))
    if not (ckpt.exists() and description.exists()):
        return None
    try:
        return json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _BestWeights:
    """Keeps the weights of the best validation so far, in memory and beside the checkpoint."""

    def __init__(self, model: nn.Module, path: Path | None) -> None:
        self.model, self.path = model, path
        self.step: int | None = None
        self.metrics: dict[str, float] = {}
        self.state: dict[str, Tensor] | None = None
        self._dirty = False

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise QPIError(
                f"cannot read the best weights {self.path} of the run to resume ({error}); "
                "untick resume to start afresh"
            ) from error
        self.step, self.metrics, self.state = saved["step"], saved["metrics"], saved["state"]

    def consider(self, step: int, metrics: Mapping[str, float]) -> None:
        loss = metrics.get("val_loss", math.nan)
        if math.isnan(loss) or (self.state is not None and loss >= self.metrics["val_loss"]):
            return
        self.step, self.metrics = step, dict(metrics)
        self.state = {
            k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
        }
        self._dirty = True

    def save(self) -> None:
        if self.path is None or self.state is None or not self._dirty:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save({"step": self.step, "metrics": self.metrics, "state": self.state}, partial)
        os.replace(partial, self.path)
        self._dirty = False

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        self.consider(step, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.save()


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        phrase in text for phrase in ("out of memory", "can't allocate memory", "not enough memory")
    )


def _notify(callbacks: Sequence[Any], message: str) -> None:
    for callback in callbacks:
        method = getattr(callback, "on_notice", None)
        if method is not None:
            method(message)


def run_finetune(
    plan: FinetunePlan,
    *,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
) -> tuple[nn.Module, ModelCard]:
    """Train a planned run and return the best network and its ``"finetuned"`` card.

    Parameters
    ----------
    plan
        From :func:`plan_finetune`; its model is trained in place.
    callbacks
        :class:`~napari_qpi.training.loop.Callback` objects (or functions called on every step);
        an ``on_notice(message)`` method, if any, hears about batch-size fallbacks.
    checkpoint_path
        Resumable checkpoint; beside it ``<name>.json`` (what run it is) and ``<name>.best``
        (the best weights). Kept after the run: :func:`save_finetuned` removes them once a
        completed run is saved.
    resume
        Continue the run in ``checkpoint_path`` if there is one. It must be the same run (base
        model, settings and data), else :class:`QPIError` says so. ``False`` starts afresh
        (removing any old work files).

    Returns
    -------
    model, card
        The network (eval mode) with the best validation weights (the last ones without
        validation), and its card; ``card.training["status"]`` is ``"finished"``,
        ``"out_of_time"`` or ``"stopped"``.

    Raises
    ------
    QPIError
        Another run's checkpoint, a loss that diverged, or no memory even for one crop.
    """
    callbacks = list(callbacks)
    settings = plan.settings
    checkpoint = Path(checkpoint_path) if checkpoint_path is not None else None
    batch_size = settings.batch_size
    if checkpoint is not None:
        previous = resumable(checkpoint)
        if resume and previous is not None:
            if previous.get("fingerprint") != plan.fingerprint:
                raise QPIError(
                    f"the checkpoint {checkpoint} belongs to another fine-tuning run (other base "
                    "model, settings or data): repeat that run's settings to resume it, or untick "
                    "resume to start afresh"
                )
            batch_size = int(previous.get("batch_size", batch_size))
        elif not resume or previous is None:
            clear_work_files(checkpoint)
    best = _BestWeights(plan.model, None if checkpoint is None else _work_files(checkpoint)[2])
    if resume:
        best.load()
    val_fn = _validation_fn(plan)
    initial = {k: v.detach().clone() for k, v in plan.model.state_dict().items()}
    while True:
        if checkpoint is not None:
            _write_description(checkpoint, plan, batch_size)
        try:
            result = fit(
                plan.model,
                _loss_fn(plan),
                _batch_source(plan, batch_size),
                steps=plan.total_steps,
                lr=settings.lr,
                weight_decay=settings.weight_decay,
                val_fn=val_fn,
                val_every=plan.val_every,
                callbacks=[best, *callbacks],
                checkpoint_path=checkpoint,
                checkpoint_every=settings.checkpoint_every,
                resume=resume,
                time_budget_s=None if settings.minutes is None else 60.0 * settings.minutes,
                seed=settings.seed,
            )
            break
        except Exception as error:
            if not _out_of_memory(error):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size == 1:
                raise QPIError(
                    f"not enough memory to train on even one crop of {plan.crop} px on "
                    f"{plan.device}: lower the crop size, close other programs, or train on "
                    "another device"
                ) from None
            batch_size //= 2
            _notify(
                callbacks,
                f"not enough memory for the batch: starting again with {batch_size} per batch",
            )
            if checkpoint is not None:
                clear_work_files(checkpoint)
            plan.model.load_state_dict(initial)
            best = _BestWeights(plan.model, best.path)
            resume = False
    if (
        val_fn is not None
        and result.step > 0
        and (not result.validation or result.validation[-1]["step"] != result.step)
    ):
        metrics = _validate_now(plan.model, val_fn)
        result.validation.append({"step": result.step, **metrics})
        best.consider(result.step, metrics)
        for callback in callbacks:
            method = getattr(callback, "on_validation", None)
            if method is not None:
                method(result.step, metrics)
    best.save()
    if best.state is not None:
        plan.model.load_state_dict(best.state)
    plan.model.eval()
    return plan.model, _card(plan, result, best, batch_size)


def _validate_now(
    model: nn.Module, val_fn: Callable[[nn.Module], Mapping[str, float]]
) -> dict[str, float]:
    rng = torch.get_rng_state()
    model.eval()
    try:
        with torch.no_grad():
            return dict(val_fn(model))
    finally:
        torch.set_rng_state(rng)


def _batch_source(plan: FinetunePlan, batch_size: int) -> Callable[[int], Iterator[Any]]:
    if plan.modality == "cdp":
        return _cdp_batches(plan, batch_size)
    return pairs_from_arrays(
        [p.measurement for p in plan.train],
        [p.target for p in plan.train],
        [p.ignore for p in plan.train],
        size=plan.crop,
        batch_size=batch_size,
        seed=plan.settings.seed,
        augment=plan.settings.augment,
    )


def _write_description(checkpoint: Path, plan: FinetunePlan, batch_size: int) -> None:
    description = _work_files(checkpoint)[1]
    description.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "name": plan.settings.name,
        "base_model": plan.base.name,
        "fingerprint": plan.fingerprint,
        "batch_size": batch_size,
        "total_steps": plan.total_steps,
        "settings": plan.settings.to_dict(),
    }
    partial = description.with_name(description.name + ".partial")
    partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(partial, description)


def _card(plan: FinetunePlan, result: FitResult, best: _BestWeights, batch_size: int) -> ModelCard:
    settings, base = plan.settings, plan.base
    loss_name = (
        "measurement-consistency"
        if settings.self_supervised
        else (f"offset-free {settings.loss.upper()} phase")
    )
    training = {
        "recipe": (
            f"fine-tuned from {base.name!r} with napari_qpi.training.finetune: AdamW, cosine "
            f"learning rate with 2% warm-up, {loss_name} loss on "
            + (
                f"random {plan.crop}^2 crops"
                + (" with flips and 90-degree rotations" if settings.augment else "")
                if plan.modality == "hologram"
                else "whole measurements (masks frozen)"
            )
            + " of user data"
        ),
        "command": plan.command or "napari_qpi.training.finetune.finetune",
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "batch_size_used": batch_size,
        "base_model": {"name": base.name, "family": base.family, "sha256": base.sha256},
        "data": plan.summary,
        "steps": result.step,
        "total_steps": result.total,
        "status": result.status,
        "best_step": best.step,
        "weights": "best validation" if best.state is not None else "last step",
        "seconds": round(result.seconds, 1),
        "threads": torch.get_num_threads(),
        "device": str(plan.device),
        "loss_curve": result.loss_curve(points=100, digits=6),
        "validation": [
            {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
            for row in result.validation[-100:]
        ],
    }
    metrics: dict[str, dict[str, Any]] = {}
    if best.state is not None:
        metrics["finetune_validation"] = {
            **{k: round(v, 4) for k, v in best.metrics.items()},
            "step": best.step,
            "n": len(plan.validation),
            "command": (
                f"{training['command']}  # held-out {plan.summary['validation_split']} of the "
                f"user data ({', '.join(plan.summary['validation_sources'][:5])}), scored "
                "against the targets over the pixels not ignored"
            ),
        }
    description = settings.description or (
        f"{base.name} fine-tuned on {plan.summary['pairs']} user "
        f"{'measurement' if plan.modality == 'cdp' else 'hologram'}(s)"
        + (" without targets (measurement consistency)" if settings.self_supervised else "")
        + f"; {result.step} of {result.total} steps ({result.status})."
    )
    return ModelCard(
        name=settings.name,
        family="finetuned",
        modality=base.modality,
        architecture=copy.deepcopy(base.architecture),
        normalisation=dict(base.normalisation),
        training=training,
        metrics=metrics,
        base_model=base.name,
        description=description,
        extra={
            **{k: v for k, v in base.extra.items() if k != "masks_file"},
            "parameters": count_parameters(plan.model),
        },
    )


def finetune(
    base: BaseSpec,
    holograms: Arrays,
    targets: OptionalArrays = None,
    ignore: OptionalArrays = None,
    *,
    settings: FinetuneSettings,
    callbacks: Iterable[Any] = (),
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    modality: str | None = None,
    names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    command: str = "",
    masks: np.ndarray | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Fine-tune ``base`` on user pairs: :func:`plan_finetune`, then :func:`run_finetune`.

    Parameters
    ----------
    base
        Registered model name, or a ``(module, card)`` pair (copied, not changed).
    holograms
        Measurements: holograms (H, W) / stacks, or CDP patterns (K, sH, sW) / stacks; one array
        or a list (e.g. one per layer).
    targets
        Target phases, one per measurement array (``None`` for self-supervised CDP runs).
    ignore
        Masks of pixels to ignore (nonzero), one for all or one per measurement array.
    settings
        :class:`FinetuneSettings` (the new model's name among them).
    callbacks, checkpoint_path, resume
        See :func:`run_finetune`.
    modality, names, device, command, masks
        See :func:`plan_finetune`.

    Returns
    -------
    model, card
        Not yet registered: see :func:`save_finetuned`.
    """
    plan = plan_finetune(
        base,
        holograms,
        targets,
        ignore,
        settings=settings,
        modality=modality,
        names=names,
        device=device,
        command=command,
        masks=masks,
    )
    return run_finetune(plan, callbacks=callbacks, checkpoint_path=checkpoint_path, resume=resume)


def check_new_name(
    name: str, *, checkpoint_path: str | os.PathLike | None = None, resume: bool = False
) -> bool:
    """Check that fine-tuning may save a model called ``name``; True if it replaces one.

    A free name passes. A user model of that name may only be replaced by resuming its own
    stopped run (its checkpoint at ``checkpoint_path``, with ``resume``); otherwise, and for
    shipped models always, :class:`ModelError` asks for another name. Nothing is overwritten
    silently.
    """
    validate_name(name)
    try:
        card = get_card(name)
    except ModelError as error:
        if "No model named" in str(error):
            return False
        raise
    if card.source == "shipped":
        raise ModelError(f"{name!r} is a model shipped with napari-qpi; choose another name")
    previous = resumable(checkpoint_path) if resume else None
    if previous is not None and previous.get("name") == name:
        return True
    raise ModelError(
        f"a model named {name!r} exists already; choose another name"
        + (
            ", or tick 'resume' to continue its stopped run"
            if resumable(checkpoint_path) is not None
            else " (or delete that model first)"
        )
    )


def save_finetuned(
    model: nn.Module,
    card: ModelCard,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Register a fine-tuned model as a user model; then tidy the run's work files.

    The checkpoint files are removed once a completed run is saved; a stopped run's stay, so it
    can be resumed (the resumed run replaces this model when it is saved).

    Raises
    ------
    ModelError
        The name is taken (without ``overwrite``); the work files are then kept, so nothing is
        lost: save again under another name after resuming the run.
    """
    folder = save_user_model(model, card, overwrite=overwrite)
    if checkpoint_path is not None and card.training.get("status") != "stopped":
        clear_work_files(checkpoint_path)
    return folder


# Background runs (GUI) -------------------------------------------------------------------------


class _Forward:
    """Fit callback that puts :class:`FinetuneEvent` objects on a queue."""

    def __init__(self, events: queue.Queue, stop: StopFlag) -> None:
        self.events, self.stop = events, stop
        self.started = time.perf_counter()

    def on_start(self, step: int, total: int) -> None:
        self.started = time.perf_counter()
        self.events.put(FinetuneEvent("start", step, total))

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self.events.put(
            FinetuneEvent("step", step, total, loss, elapsed_s=time.perf_counter() - self.started)
        )

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        self.events.put(FinetuneEvent("validation", step, metrics=dict(metrics)))

    def on_notice(self, message: str) -> None:
        self.events.put(FinetuneEvent("notice", message=message))

    def should_stop(self) -> bool:
        return self.stop.should_stop()


def iter_finetune(
    plan: FinetunePlan,
    *,
    stop: StopFlag,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    overwrite: bool = False,
    poll_s: float = 0.05,
) -> Generator[FinetuneEvent, None, FinetuneOutcome]:
    """Train and save in a background thread, yielding its events; returns the outcome.

    For a GUI worker: the generator itself only waits on a queue. ``stop.set()`` ends training
    after the current step, and the best weights so far are still saved (status ``"stopped"``).
    Closing the generator early also stops the thread.
    """
    events: queue.Queue[FinetuneEvent] = queue.Queue()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            model, card = run_finetune(
                plan,
                callbacks=[_Forward(events, stop)],
                checkpoint_path=checkpoint_path,
                resume=resume,
            )
            events.put(FinetuneEvent("saving", message=f"saving model {card.name!r}"))
            replace = overwrite or check_new_name(
                card.name, checkpoint_path=checkpoint_path, resume=resume
            )
            folder = save_finetuned(model, card, checkpoint_path=checkpoint_path, overwrite=replace)
            box["outcome"] = FinetuneOutcome(
                get_card(card.name),
                folder,
                card.training["status"],
                card.training["steps"],
                card.training["total_steps"],
            )
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=work, name=f"finetune-{plan.settings.name}", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not events.empty():
            try:
                yield events.get(timeout=poll_s)
            except queue.Empty:
                continue
    finally:
        if thread.is_alive():
            stop.set()
            thread.join(timeout=30)
    if "error" in box:
        raise box["error"]
    return box["outcome"]


def classical_targets(
    measurements: Sequence[np.ndarray],
    acquisitions: Sequence[Any] | None = None,
    *,
    background_order: int = 2,
) -> list[np.ndarray]:
    """Target phases from the classical off-axis method at full resolution (one per array)."""
    from ..reconstruct import iter_reconstruct
    from ..retrieval import OffAxisSettings

    settings = OffAxisSettings(resolution="full", background_order=background_order)
    targets = []
    for i, array in enumerate(measurements):
        acquisition = acquisitions[i] if acquisitions else None
        planes = [
            r.phase
            for r in iter_reconstruct(
                array, method="classical", acquisition=acquisition, settings=settings
            )
        ]
        targets.append(np.stack(planes).reshape(np.shape(array)).astype(np.float32))
    return targets


__all__ = [
    "FinetuneEvent",
    "FinetuneOutcome",
    "FinetunePlan",
    "FinetuneSettings",
    "Pair",
    "check_new_name",
    "classical_targets",
    "clear_work_files",
    "collect_pairs",
    "consistency_loss",
    "default_checkpoint",
    "finetune",
    "iter_finetune",
    "plan_finetune",
    "resumable",
    "run_finetune",
    "save_finetuned",
    "split_pairs",
    "wrapped_phase_loss",
]
