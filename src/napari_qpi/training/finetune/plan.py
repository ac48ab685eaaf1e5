"""Checking a fine-tuning run before it starts: the base model, the data, the step plan
(:func:`plan_finetune`)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError, ModelError
from ...models.card import ModelCard
from ...models.registry import (
    load_model,
    select_device,
)
from .data import (
    TIMED_VALIDATION_STEPS,
    VALIDATIONS_PER_RUN,
    Arrays,
    BaseSpec,
    FinetunePlan,
    FinetuneSettings,
    OptionalArrays,
    Pair,
    _fingerprint,
    collect_pairs,
    split_pairs,
)

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
        ``settings.self_supervised``.
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
    _check_request(card, settings, modality, targets)
    order_change = set_front_end_order(model, card, settings.front_end_order)
    if settings.self_supervised:
        targets = None
    oversampling = _oversampling(model) if card.modality == "cdp" else None
    if masks is not None and card.modality == "cdp":
        _check_masks(model, card, np.asarray(masks, dtype=np.float32))
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
    crop, steps_per_epoch = _crop_and_steps(model, card, settings, train)
    total = settings.epochs * steps_per_epoch
    val_every = settings.val_every or (
        TIMED_VALIDATION_STEPS
        if settings.minutes is not None
        else max(steps_per_epoch, total // VALIDATIONS_PER_RUN)
    )
    summary = _summary(pairs, train, validation, how, settings)
    summary |= {"crop": crop, "steps_per_epoch": steps_per_epoch}
    if order_change is not None:
        summary["front_end_order"] = order_change
    identity = {
        "base": card.name,
        "base_sha256": card.sha256,
        "settings": {  # without an unset front-end order, as before the option existed
            k: v
            for k, v in settings.to_dict().items()
            if k != "batch_size" and not (k == "front_end_order" and v is None)
        },
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


def uses_classical_phase(model: nn.Module) -> bool:
    """Whether ``model``'s off-axis front end computes the classical phase (a residual model, or
    one reading a ``classical*`` channel): what ``front_end_order`` changes."""
    from ...nn.frontend import reads_classical

    return reads_classical(getattr(getattr(model, "front_end", None), "config", None))


def base_front_end_order(card: ModelCard) -> int | None:
    """The background order of the classical phase ``card``'s model computes in its front end
    (the shipped hologram networks: 3), or None when it computes none. What the classical
    targets of a fine-tuning default to, so that fine-tuning keeps the model's order."""
    from ...nn.frontend import as_front_end_config, reads_classical

    config = card.architecture.get("config")
    front_end = as_front_end_config(config.get("front_end")) if isinstance(config, dict) else None
    if front_end is None or not reads_classical(front_end):
        return None
    return front_end.background_order


def front_end_order_for(card: ModelCard, order: int) -> int | None:
    """``order`` for :class:`FinetuneSettings` ``front_end_order`` when ``card``'s model computes
    the classical phase in its front end with another background order; else None (nothing to
    change). What the CLI and the widget do with the order the user chose for the targets."""
    base = base_front_end_order(card)
    return None if base is None or base == int(order) else int(order)


def set_front_end_order(
    model: nn.Module, card: ModelCard, order: int | None
) -> dict[str, int] | None:
    """Give ``model``'s front end the classical background ``order`` (in place; the new card
    takes its architecture from the model); returns ``{"base": old, "used": order}``, or None
    when ``order`` is None.

    Raises
    ------
    InputError
        ``order`` given for a model whose front end does not compute the classical phase.
    """
    if order is None:
        return None
    if not uses_classical_phase(model):
        raise InputError(
            f"model {card.name!r} does not compute the classical phase in its front end, so it "
            "has no background order to set; leave the front-end order unset"
        )
    front_end = model.front_end
    before = int(front_end.config.background_order)
    front_end.config = dataclasses.replace(front_end.config, background_order=int(order))
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "front_end", None) is not None:
        config.front_end = front_end.config
    return {"base": before, "used": int(order)}


def _check_request(
    card: ModelCard, settings: FinetuneSettings, modality: str | None, targets: OptionalArrays
) -> None:
    """Refuse a base model of another modality, a run without targets that is not
    self-supervised, and hologram models with another input normalisation."""
    kinds = {"hologram": "off-axis holograms", "cdp": "coded diffraction patterns"}
    if modality is not None and modality not in kinds:
        raise InputError(f"unknown modality {modality!r}; the inputs must be holograms or CDPs")
    if modality is not None and modality != card.modality:
        raise ModelError(
            f"the base model {card.name!r} reconstructs {kinds[card.modality]}, but the inputs "
            f"are {kinds[modality]}: choose a {modality} model as the base"
        )
    if targets is None and not settings.self_supervised:
        raise InputError(
            "choose target phase layers (one per input; the 'fill' button makes them with the "
            "classical method), or tick self-supervised"
        )
    if card.modality == "hologram" and card.normalisation.get("method") != "mean_std":
        raise ModelError(
            f"model {card.name!r} normalises its input with "
            f"{card.normalisation.get('method')!r}; fine-tuning supports hologram models that "
            "normalise by mean and standard deviation (all models trained by napari-qpi do)"
        )


def _crop_and_steps(
    model: nn.Module, card: ModelCard, settings: FinetuneSettings, train: Sequence[Pair]
) -> tuple[int, int]:
    """Crop side (px) and steps per epoch: holograms in random crops covering the training pixels
    once an epoch; CDP measurements whole (their masks frozen)."""
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
        return crop, max(1, math.ceil(pixels / (crop * crop * settings.batch_size)))
    _freeze_masks(model)
    return int(train[0].ignore.shape[0]), max(1, math.ceil(len(train) / settings.batch_size))


def _summary(
    pairs: Sequence[Pair],
    train: Sequence[Pair],
    validation: Sequence[Pair],
    how: str,
    settings: FinetuneSettings,
) -> dict[str, Any]:
    """What the card records about the data."""
    every = [p.target for p in pairs if p.target is not None]
    valid = [p.target[~p.ignore] for p in pairs if p.target is not None]
    return {
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
    }
