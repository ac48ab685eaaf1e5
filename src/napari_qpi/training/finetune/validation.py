"""Fine-tuning losses (wrapped phase, measurement consistency) and the validation score."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import InputError, SidebandError
from ...models.card import ModelCard, normalise
from ...nn import pad_to_multiple
from ..losses import Reduction, offset_free_difference, phase_loss
from ..metrics import psnr_from_mse
from .data import VALIDATION_WINDOW, FinetunePlan
from .plan import _oversampling, _stride

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
    from ...physics.cdp import cdp_forward_torch

    predicted = cdp_forward_torch(estimate, model.masks(), _oversampling(model) or 1)
    measured = patterns.clamp_min(0)
    residual = torch.sqrt(predicted + 1e-12) - torch.sqrt(measured)
    return residual.square().mean() / measured.mean().clamp_min(1e-12)


def sideband_loss(model: nn.Module, x: Tensor) -> Tensor:
    """Target-free loss of a hologram network on normalised holograms (B, 1, H, W): how much of
    each hologram's sideband its phase leaves unexplained
    (:func:`~napari_qpi.retrieval.consistency.consistency_loss`; the sideband of each crop,
    flipped or rotated or not, is found in the crop itself)."""
    from ...retrieval.consistency import consistency_loss as hologram_consistency_loss
    from ...retrieval.consistency import sideband_target

    targets, kept = [], []
    for i, plane in enumerate(x[:, 0].detach().float().cpu().numpy()):
        try:
            targets.append(sideband_target(plane))
            kept.append(i)
        except SidebandError:  # a crop without clear fringes (e.g. a large cell) teaches nothing
            continue
    if not kept:
        raise InputError(
            "self-supervised fine-tuning found no off-axis fringes in any crop of this batch: "
            "use larger crops, or give target phases (the 'fill' button: classical targets)"
        )
    return hologram_consistency_loss(model(x[kept]), targets)


def _loss_fn(plan: FinetunePlan) -> Callable[[nn.Module, Sequence[Tensor]], Tensor]:
    """Training loss; sign-free for a base network that picks its own sign (``cells_positive``):
    a crop with few cells cannot tell the sign rule which way is up."""
    device, kind = plan.device, plan.settings.loss
    sign_free = bool(plan.base.config.get("cells_positive"))

    def hologram_loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        x, y, ignore = (t.to(device) for t in batch)
        if plan.settings.self_supervised:
            return sideband_loss(model, x)
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
            if plan.modality == "hologram" and plan.settings.self_supervised:
                losses.append(float(sideband_loss(model, x[..., :height, :width])))
                continue
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
