"""Fine-tuning data: settings, pairs of measurement and target, the split, classical targets."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError, ModelError
from ...models.card import ModelCard, validate_name
from ..losses import Reduction

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
        Learn from the measurements alone, no targets: CDP models through their masks
        (measurement consistency), hologram models through the sideband the phase re-forms
        (:func:`~napari_qpi.retrieval.consistency.consistency_loss`: test-time adaptation to a
        new microscope).
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
    front_end_order
        Hologram models whose off-axis front end computes the classical phase (residual models,
        ``classical*`` channels): the total degree (0-5) of the polynomial background it removes
        from that phase, radians (:class:`~napari_qpi.nn.frontend.FrontEndConfig`
        ``background_order``; 2 removes tilt, defocus and astigmatism, 4 also spherical
        aberration). Set before the base model is scored and trained, and recorded in the new
        card. ``None`` keeps the base model's order. A microscope whose classical phase needs a
        higher order needs it here too: a residual network would otherwise have to learn to
        remove the aberration the fit leaves.
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
    front_end_order: int | None = None

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
        order = self.front_end_order
        if order is not None and (
            isinstance(order, bool)
            or not isinstance(order, (int, np.integer))
            or not 0 <= order <= 5
        ):
            raise InputError(f"the front end's background order must be 0-5, got {order!r}")

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


def classical_targets(
    measurements: Sequence[np.ndarray],
    acquisitions: Sequence[Any] | None = None,
    *,
    background_order: int = 2,
) -> list[np.ndarray]:
    """Target phases from the classical off-axis method at full resolution (one per array)."""
    from ...reconstruct import iter_reconstruct
    from ...retrieval import OffAxisSettings

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
