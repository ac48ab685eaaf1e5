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

from .bridge import FinetuneEvent, FinetuneOutcome, iter_finetune
from .data import (
    FinetunePlan,
    FinetuneSettings,
    Pair,
    classical_targets,
    collect_pairs,
    split_pairs,
)
from .plan import (
    base_front_end_order,
    front_end_order_for,
    plan_finetune,
    set_front_end_order,
    uses_classical_phase,
)
from .run import (
    check_new_name,
    clear_work_files,
    default_checkpoint,
    finetune,
    resumable,
    run_finetune,
    save_finetuned,
)
from .validation import consistency_loss, wrapped_phase_loss

__all__ = [
    "FinetuneEvent",
    "FinetuneOutcome",
    "FinetunePlan",
    "FinetuneSettings",
    "Pair",
    "base_front_end_order",
    "check_new_name",
    "classical_targets",
    "clear_work_files",
    "collect_pairs",
    "consistency_loss",
    "default_checkpoint",
    "finetune",
    "front_end_order_for",
    "iter_finetune",
    "plan_finetune",
    "resumable",
    "run_finetune",
    "save_finetuned",
    "set_front_end_order",
    "split_pairs",
    "uses_classical_phase",
    "wrapped_phase_loss",
]
