"""CDP model folders and scores: save / load (the registry's format plus ``masks.tif``), the card,
the masks as trained, and the scores of networks and classical solvers on held-out objects.

Used by distillation (:mod:`.distill`), the CLI, the GUI's mask export and the CDP benchmarks.
Phases in radians; objects and estimates in units of the object's amplitude.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ModelError
from ..io import write_mask_tiff
from ..models.card import ModelCard
from ..models.weights import load_model_folder, save_model_folder
from ..nn.cdpnet import CDPNet
from ..physics.cdp import add_poisson_noise, coded_diffraction_patterns
from ..retrieval.cdp_solvers import global_phase_align, solve_cdp
from .metrics import image_metrics

#: File name of the exported masks inside a model folder.
MASKS_FILE = "masks.tif"


def snap_masks(model: CDPNet) -> None:
    """Replace the latent mask phases by the phases as realised (wrapped, quantised if levelled).

    The model's output does not change; stored in fp16, the masks then stay what was trained.
    """
    with torch.no_grad():
        model.masks.latent.copy_(torch.from_numpy(model.masks.export()))


def _phase_near(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phases (radians) of an aligned estimate on the branch nearest the truth, and the truth's."""
    truth_phase = np.angle(truth)
    aligned = global_phase_align(estimate, truth)
    return truth_phase + np.angle(aligned * np.conj(truth)), truth_phase


def cdp_metrics(estimates: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Mean scores of complex estimates against true objects, after the global phase.

    ``relative_error`` is ``||x_hat - x|| / ||x||``; ``psnr_db``, ``ssim``, ``rmse_rad`` are
    :func:`~napari_qpi.training.metrics.image_metrics` of the phase (the estimate's phase taken on
    the branch nearest the truth, background offset removed).
    """
    rows = []
    for estimate, truth in zip(estimates, truths, strict=True):
        aligned = global_phase_align(estimate, truth)
        phase, truth_phase = _phase_near(estimate, truth)
        scores = image_metrics(phase, truth_phase)
        scores["relative_error"] = float(np.linalg.norm(aligned - truth) / np.linalg.norm(truth))
        rows.append(scores)
    keys = ("relative_error", "psnr_db", "ssim", "rmse_rad")
    summary = {key: float(np.mean([row[key] for row in rows])) for key in keys}
    summary["n"] = len(rows)
    return summary


def evaluate_model(model: CDPNet, objects: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Scores (:func:`cdp_metrics`) of a CDP model on objects measured through its own masks.

    Measurement noise (as the model is configured) is drawn from ``seed``; ``seconds_per_image``
    is the reconstruction time.
    """
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        patterns = model.measure(torch.from_numpy(objects))
        start = time.perf_counter()
        estimates = model(patterns).numpy()
        seconds = (time.perf_counter() - start) / len(objects)
    return {**cdp_metrics(estimates, objects), "seconds_per_image": seconds}


def evaluate_solver(
    objects: np.ndarray,
    mask_phases: np.ndarray,
    *,
    method: str,
    oversampling: int,
    iterations: int,
    photons_per_pixel: float | None = None,
    read_noise_photons: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Scores of a classical solver (:func:`~napari_qpi.retrieval.cdp_solvers.solve_cdp`)."""
    rng = np.random.default_rng(seed)
    estimates = []
    start = time.perf_counter()
    for obj in objects:
        patterns = coded_diffraction_patterns(obj, mask_phases, oversampling=oversampling)
        if photons_per_pixel is not None:
            patterns = add_poisson_noise(
                patterns, photons_per_pixel, read_noise_photons=read_noise_photons, seed=rng
            )
        estimates.append(
            solve_cdp(
                patterns,
                mask_phases,
                method=method,
                oversampling=oversampling,
                iterations=iterations,
                seed=rng,
            )
        )
    seconds = (time.perf_counter() - start) / len(objects)
    return {**cdp_metrics(np.stack(estimates), objects), "seconds_per_image": seconds}


def model_masks(model: CDPNet) -> tuple[np.ndarray, dict[str, Any]]:
    """A CDP network's masks as trained (wrapped to [-pi, pi), quantised to its levels, if any),
    (K, H, W) radians, and what :func:`~napari_qpi.io.write_mask_tiff` records with them."""
    info = {"levels": model.config.mask_levels, "oversampling": model.config.oversampling}
    return model.masks.export(), info


def export_model_masks(
    name: str, path: str | Path, *, overwrite: bool = False
) -> tuple[Path, np.ndarray]:
    """Write the masks of the registered CDP model ``name`` to a TIFF (``napari-qpi models
    export-mask``); returns the path and the (K, H, W) phases in radians.

    These are the masks the model reads patterns through: quantised as trained, so a plate or an
    SLM made from them reproduces the optics the network expects.
    """
    from ..models import get_card, load_model

    card = get_card(name)
    if card.modality != "cdp":
        raise InputError(
            f"Model '{name}' reconstructs {card.modality}s and has no phase masks; choose a CDP "
            "model (see `napari-qpi models`)."
        )
    model, _ = load_model(name, device="cpu")
    masks, info = model_masks(model)
    return write_mask_tiff(path, masks, overwrite=overwrite, **info, model=name), masks


def save_cdp_model(model: CDPNet, folder: str | Path, card: ModelCard) -> Path:
    """Write a model folder: ``card.json``, fp16 ``model.safetensors`` and ``masks.tif``.

    The format is the registry's (:func:`napari_qpi.models.weights.save_model_folder`: the card
    records the weights' sha256); an existing folder is replaced atomically, once the new one is
    complete. The masks are snapped to their levels and rounded to fp16 first, so that
    ``masks.tif`` holds what loads. Returns the folder.
    """
    snap_masks(model)
    with torch.no_grad():  # the masks as stored (fp16), so that masks.tif is what loads
        model.masks.latent.copy_(model.masks.latent.half().float())
    masks, info = model_masks(model)
    folder, _ = save_model_folder(
        folder,
        model,
        card,
        overwrite=True,
        extras=lambda tmp: write_mask_tiff(tmp / MASKS_FILE, masks, **info),
    )
    return folder


def load_cdp_model(folder: str | Path) -> tuple[CDPNet, ModelCard]:
    """Read a folder written by :func:`save_cdp_model` (sha256 checked, never unpickled)."""
    card = ModelCard.load(Path(folder))
    if card.network != "cdpnet":
        raise ModelError(f"{folder} holds a {card.network!r} network, not a CDP model.")
    model, card = load_model_folder(folder)
    return model, card


def make_card(
    name: str,
    family: str,
    model: CDPNet,
    *,
    description: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
) -> ModelCard:
    """A model card for a CDP model (modality ``"cdp"``, network ``"cdpnet"``)."""
    return ModelCard(
        name=name,
        family=family,
        modality="cdp",
        architecture={
            "network": "cdpnet",
            "config": model.config.to_dict(),
            "input_channels": model.config.n_masks,
            "stride": 1,
        },
        normalisation={"method": "none"},
        training=dict(training),
        metrics={split: dict(scores) for split, scores in (metrics or {}).items()},
        description=description,
        extra={"masks_file": MASKS_FILE, "mask_levels": model.config.mask_levels},
    )
