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

from typing import Literal, get_args

import torch
from torch import Tensor

from ..errors import InputError

Reduction = Literal["l1", "mse", "log_mse"]
#: The loss kinds :func:`phase_loss` takes (the CLI's ``--loss`` choices).
LOSS_KINDS: tuple[str, ...] = get_args(Reduction)

#: Squared error (rad^2) added to each field's mean squared error before the logarithm of the
#: ``"log_mse"`` loss: a field already fitted to ~0.01 rad RMS no longer pulls harder.
LOG_MSE_FLOOR_RAD2 = 1e-4


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
    """Offset-free phase error of a batch.

    ``"l1"``: mean absolute error (radians) over all valid pixels of the batch; ``"mse"``: mean
    squared error (rad^2) over them; ``"log_mse"``: the mean over the fields of
    ``ln(mse_i + LOG_MSE_FLOOR_RAD2)``, the mean squared error of each field on a log scale. The
    held-out score is the mean over fields of ``PSNR_i = 10 log10(range_i^2 / mse_i)``, so
    ``"log_mse"`` descends that score directly: every field pulls by its *relative* error, and a
    few fields with large phase (close-ups of big, many-times-wrapped cells, whose squared errors
    were 7-70x those of the others in a run of 12 % close-ups) no longer set the direction of
    every step as they do under ``"mse"``.

    The per-image mean of ``prediction - target`` over the pixels not ignored is removed first
    (:func:`offset_free_difference`). With ``sign_free``, each image counts with the sign of
    ``prediction`` that fits it better.
    """
    if kind not in LOSS_KINDS:
        raise InputError(f"loss kind must be one of {', '.join(LOSS_KINDS)}, got {kind!r}")

    def per_image(candidate: Tensor) -> tuple[Tensor, Tensor]:
        difference, weight = offset_free_difference(candidate, target, ignore_mask)
        error = difference.abs() if kind == "l1" else difference.square()
        return error.flatten(1).sum(dim=1), weight.flatten(1).sum(dim=1)

    error, count = per_image(prediction)
    if sign_free:
        error = torch.minimum(error, per_image(-prediction)[0])
    if kind == "log_mse":
        per_field = error / count.clamp_min(1.0)
        return torch.log(per_field + LOG_MSE_FLOOR_RAD2).mean()
    return error.sum() / count.sum().clamp_min(1.0)
