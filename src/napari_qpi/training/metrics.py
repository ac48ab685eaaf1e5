"""Image quality of a retrieved phase against the true phase, for any method.

Every score is taken after the prediction is aligned to the truth: phase is defined up to a
constant, so the median of ``prediction - truth`` over the true background (``labels == 0``) is
subtracted first (or, with ``background_order >= 1``, a least-squares polynomial of that order
fitted to the difference over the background, which also forgives a residual tilt or curvature).

Definitions, per image, then averaged over the images of a set:

- ``psnr_db``: ``10 log10(R^2 / MSE)`` with the data range ``R = max(truth) - min(truth)`` of that
  image and the MSE over the whole field (rad^2). Identical images give ``inf``.
- ``ssim``: :func:`skimage.metrics.structural_similarity` with the same data range ``R``.
- ``rmse_rad``: root mean square error over the field; ``rmse_cells_rad`` inside cells
  (``labels > 0``), both in radians.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn

from ..errors import InputError
from ..models.card import normalise
from ..nn import pad_to_multiple
from ..retrieval.background import fit_background

#: Names of the per-image scores, in report order.
METRICS: tuple[str, ...] = ("psnr_db", "ssim", "rmse_rad", "rmse_cells_rad")

PredictFn = Callable[[np.ndarray], Any]


class PhaseSet(Protocol):
    """What :func:`evaluate` reads from a held-out set (see :class:`.data.HeldOutSet`)."""

    holograms: np.ndarray
    phases: np.ndarray
    labels: np.ndarray


def psnr_from_mse(mse: float, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / mse)``: the one definition
    every score of napari-qpi uses. ``inf`` for ``mse == 0``; ``nan`` for ``data_range <= 0``."""
    if not data_range > 0:
        return float("nan")
    if mse == 0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / mse))


def psnr(prediction: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of ``prediction`` against ``truth``
    (:func:`psnr_from_mse`).

    ``data_range`` defaults to ``truth.max() - truth.min()``. Returns ``inf`` for identical images
    and ``nan`` for a flat truth with no range given.
    """
    truth = np.asarray(truth, np.float64)
    mse = float(np.mean(np.square(np.asarray(prediction, np.float64) - truth)))
    if data_range is None:
        data_range = float(truth.max() - truth.min())
    return psnr_from_mse(mse, data_range)


def align_to_truth(
    prediction: np.ndarray,
    truth: np.ndarray,
    background: np.ndarray | None = None,
    *,
    order: int = 0,
) -> np.ndarray:
    """Prediction minus its offset (order 0: median) or background polynomial relative to truth.

    Parameters
    ----------
    prediction, truth
        (H, W) phase in radians.
    background
        True where the truth is background; the whole field if ``None`` or empty.
    order
        0 removes the median of ``prediction - truth`` over the background; 1-3 remove a
        least-squares 2-D polynomial of that total degree fitted to it.

    Returns
    -------
    numpy.ndarray
        float64 (H, W) aligned prediction, radians.
    """
    prediction = np.asarray(prediction, np.float64)
    difference = prediction - np.asarray(truth, np.float64)
    if background is None or not background.any():
        background = np.ones(difference.shape, bool)
    if order == 0:
        return prediction - np.median(difference[background])
    return prediction - fit_background(difference, order=order, mask=background)


def image_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    background_order: int = 0,
) -> dict[str, float]:
    """The scores of :data:`METRICS` for one image (see the module docstring).

    ``labels`` marks cells (> 0); without it, cells are where ``truth != 0``.
    """
    prediction = np.asarray(prediction)
    truth = np.asarray(truth, np.float64)
    if prediction.shape != truth.shape or truth.ndim != 2:
        raise InputError(
            f"prediction {prediction.shape} and truth {truth.shape} must be images of one shape; "
            "resample the method's output to the hologram's grid first"
        )
    cells = labels > 0 if labels is not None else truth != 0
    aligned = align_to_truth(prediction, truth, ~cells, order=background_order)
    data_range = float(truth.max() - truth.min())
    error = aligned - truth
    ssim = (
        structural_similarity(truth, aligned, data_range=data_range)
        if data_range > 0
        else float("nan")
    )
    return {
        "psnr_db": psnr(aligned, truth, data_range),
        "ssim": float(ssim),
        "rmse_rad": float(np.sqrt(np.mean(error**2))),
        "rmse_cells_rad": float(np.sqrt(np.mean(error[cells] ** 2))) if cells.any() else 0.0,
    }


def summarise(per_image: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each score over images (``inf`` PSNRs propagate) and the image count ``n``."""
    rows = list(per_image)
    summary = {name: float(np.mean([row[name] for row in rows])) for name in METRICS}
    summary["n"] = len(rows)
    return summary


def evaluate(
    predict_fn: PredictFn,
    held_out: PhaseSet,
    *,
    background_order: int = 0,
    limit: int | None = None,
) -> dict[str, float]:
    """Score a retrieval method on a held-out set.

    Parameters
    ----------
    predict_fn
        ``predict_fn(hologram)`` with the raw (H, W) hologram as stored in the set; returns the
        (H, W) phase in radians, or an object with a ``phase`` attribute (e.g. the classical
        method's ``PhaseResult`` at full resolution).
    held_out
        Holograms, true phases and labels, e.g. :func:`.data.held_out_set`.
    background_order
        Alignment to the truth (:func:`align_to_truth`).
    limit
        Score only the first ``limit`` images.

    Returns
    -------
    dict
        Mean ``psnr_db``, ``ssim``, ``rmse_rad``, ``rmse_cells_rad``, the count ``n`` and
        ``seconds_per_image`` (wall time of ``predict_fn``).
    """
    count = len(held_out.holograms) if limit is None else min(limit, len(held_out.holograms))
    rows = []
    elapsed = 0.0
    for i in range(count):
        start = time.perf_counter()
        output = predict_fn(held_out.holograms[i])
        elapsed += time.perf_counter() - start
        phase = getattr(output, "phase", output)
        rows.append(
            image_metrics(
                phase, held_out.phases[i], held_out.labels[i], background_order=background_order
            )
        )
    summary = summarise(rows)
    summary["seconds_per_image"] = elapsed / max(count, 1)
    return summary


def network_predictor(
    model: nn.Module, normalisation: dict[str, Any] | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(hologram) -> phase`` for :func:`evaluate` from a network, whole field at once.

    The hologram is normalised as ``normalisation`` says (default: the training data's, see
    :data:`.data.NORMALISATION`), padded to the network's stride and run in eval mode on the
    model's device; the output is cropped back to (H, W), float32 radians.
    """
    from .data import NORMALISATION

    spec = dict(normalisation or NORMALISATION)
    stride = int(getattr(model, "stride", 1))
    device = next(model.parameters()).device

    def predict(hologram: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalise(hologram, spec))[None, None].to(device)
        x, (height, width) = pad_to_multiple(x, stride)
        model.eval()
        with torch.no_grad():
            phase = model(x)[0, 0, :height, :width]
        return phase.float().cpu().numpy()

    return predict
