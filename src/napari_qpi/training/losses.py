"""Training losses on phase images.

Phase is defined up to a constant, so every loss here compares prediction and target after removing
the mean of their difference over the valid pixels of each image: a prediction that is off by a
constant offset has zero loss.

A hologram does not fix the sign of its phase (:mod:`napari_qpi.nn.sign`): with
``sign_free=True`` the loss of each image is the smaller of those of ``prediction`` and
``-prediction``, so a network trained on both carrier directions may pick its own convention
instead of inferring the sign from the cells.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import InputError

Reduction = Literal["l1", "mse"]


def offset_free_difference(
    prediction: Tensor, target: Tensor, ignore_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Prediction minus target with the per-image mean over the valid pixels removed.

    Parameters
    ----------
    prediction, target
        (B, 1, H, W) or (B, H, W) phase in radians.
    ignore_mask
        Same shape (or broadcastable); True (or nonzero) where pixels are ignored.

    Returns
    -------
    difference, weight
        The offset-free difference (radians) and the float weight (1 valid, 0 ignored), both
        shaped like ``prediction``.
    """
    if prediction.shape != target.shape:
        raise InputError(
            f"prediction and target shapes differ: {tuple(prediction.shape)} vs "
            f"{tuple(target.shape)}"
        )
    if prediction.ndim < 3:
        raise InputError(f"expected a batch of images, got shape {tuple(prediction.shape)}")
    if ignore_mask is None:
        weight = torch.ones_like(prediction)
    else:
        weight = (~ignore_mask.bool()).to(prediction.dtype).expand_as(prediction)
    dims = tuple(range(1, prediction.ndim))
    count = weight.sum(dim=dims, keepdim=True).clamp_min(1.0)
    difference = prediction - target
    offset = (difference * weight).sum(dim=dims, keepdim=True) / count
    return (difference - offset) * weight, weight


def phase_loss(
    prediction: Tensor,
    target: Tensor,
    ignore_mask: Tensor | None = None,
    *,
    kind: Reduction = "l1",
    sign_free: bool = False,
) -> Tensor:
    """Mean absolute (``"l1"``, radians) or squared (``"mse"``, rad^2) phase error, offset-free.

    The per-image mean of ``prediction - target`` over the pixels not ignored is removed first
    (:func:`offset_free_difference`); the result is averaged over all valid pixels of the batch.
    With ``sign_free``, each image counts with the sign of ``prediction`` that fits it better.
    """
    if kind not in ("l1", "mse"):
        raise InputError(f"loss kind must be 'l1' or 'mse', got {kind!r}")

    def per_image(candidate: Tensor) -> tuple[Tensor, Tensor]:
        difference, weight = offset_free_difference(candidate, target, ignore_mask)
        error = difference.abs() if kind == "l1" else difference.square()
        return error.flatten(1).sum(dim=1), weight.flatten(1).sum(dim=1)

    error, count = per_image(prediction)
    if sign_free:
        error = torch.minimum(error, per_image(-prediction)[0])
    return error.sum() / count.sum().clamp_min(1.0)
