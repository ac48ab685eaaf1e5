"""Training of napari-qpi's networks, without any GUI code.

- :mod:`.loop`: :func:`fit`, the one training loop (callbacks for progress, loss, validation,
  cancel and checkpoints; resume; time budget);
- :mod:`.data`: synthetic hologram / phase pairs made on the fly, fixed held-out sets, pairs from
  user arrays;
- :mod:`.losses`, :mod:`.metrics`: offset-free phase loss; PSNR, SSIM, RMSE and
  :func:`evaluate` for any retrieval method;
- :mod:`.search`: the SparseMask search of NAS-PRNet, retraining, baselines and model folders
  (the ``napari-qpi search`` / ``train`` commands are :mod:`napari_qpi.cli.training`).
"""

from .data import (
    NORMALISATION,
    DataConfig,
    HeldOutSet,
    SyntheticHolograms,
    held_out_set,
    normalise_hologram,
    pairs_from_arrays,
    synthetic_batch,
    synthetic_batches,
    synthetic_field,
)
from .loop import Callback, FitResult, ProgressBar, StopFlag, fit
from .losses import phase_loss
from .metrics import evaluate, image_metrics, network_predictor, psnr
from .search import (
    SearchSettings,
    TrainOutcome,
    TrainSettings,
    model_card,
    retrain,
    save_model_folder,
    search,
    train,
)

__all__ = [
    "NORMALISATION",
    "Callback",
    "DataConfig",
    "FitResult",
    "HeldOutSet",
    "ProgressBar",
    "SearchSettings",
    "StopFlag",
    "SyntheticHolograms",
    "TrainOutcome",
    "TrainSettings",
    "evaluate",
    "fit",
    "held_out_set",
    "image_metrics",
    "model_card",
    "network_predictor",
    "normalise_hologram",
    "pairs_from_arrays",
    "phase_loss",
    "psnr",
    "retrain",
    "save_model_folder",
    "search",
    "synthetic_batch",
    "synthetic_batches",
    "synthetic_field",
    "train",
]
