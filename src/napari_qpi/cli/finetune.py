"""``napari-qpi finetune``: read the files, plan, train with Ctrl-C to stop, register the model.

The work is :mod:`napari_qpi.training.finetune`; this module reads the input, target and mask
files, turns the flags into :class:`~napari_qpi.training.finetune.FinetuneSettings` and prints
progress and the outcome. It imports torch, so :mod:`napari_qpi.cli` imports it only when
``finetune`` runs.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..models.card import ModelCard
from ..models.registry import export_model
from ..training.finetune import (
    FinetunePlan,
    FinetuneSettings,
    base_front_end_order,
    check_new_name,
    classical_targets,
    default_checkpoint,
    front_end_order_for,
    plan_finetune,
    run_finetune,
    save_finetuned,
)
from ..training.loop import ProgressBar, StopFlag
from ._record import Flags, command_line, set_threads


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``napari-qpi finetune``."""
    defaults = FinetuneSettings(name="x")
    flags = Flags(parser, "finetune")
    flags.add("--base", required=True, help="registered model to start from")
    flags.add(
        "--inputs",
        nargs="+",
        path="input",
        required=True,
        help="hologram files (or CDP stacks), stacks allowed",
    )
    flags.add(
        "--targets",
        nargs="+",
        path="input",
        help="target phase files (radians), one per input, same shapes; or the word 'classical' "
        "to make them with the classical method (holograms)",
    )
    flags.add(
        "--classical-order",
        type=int,
        choices=range(6),
        help="background order of --targets classical (raise it for strong aberrations; "
        "default: the order of the classical phase in the base model's front end, 3 for the "
        "shipped hologram networks, else 2 as the classical method)",
    )
    flags.add(
        "--front-end-order",
        type=int,
        choices=range(6),
        help="background order of the classical phase inside a residual hologram model's front "
        "end (the phase its network corrects), set before the base model is scored and "
        "trained and recorded in the new model (default: --classical-order with --targets "
        "classical, else the base model's own)",
    )
    flags.add(
        "--ignore",
        nargs="+",
        path="input",
        help="mask files, nonzero = ignore: one for all inputs or one each",
    )
    flags.add("--out", required=True, help="name of the new user model")
    flags.add("--epochs", type=int, default=defaults.epochs)
    flags.add("--lr", type=float, default=defaults.lr, help="AdamW learning rate")
    flags.add("--batch-size", type=int, default=defaults.batch_size)
    flags.add("--crop", type=int, default=defaults.crop, help="crop side, px")
    flags.add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=defaults.augment,
        help="random flips and 90-degree rotations",
    )
    flags.add(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="fraction of the images held out to pick the best weights",
    )
    flags.add("--loss", choices=("l1", "mse"), default=defaults.loss)
    flags.add(
        "--self-supervised",
        action="store_true",
        help="learn from the measurements alone (no --targets): CDP models through their "
        "masks, hologram models through the sideband their phase re-forms (test-time "
        "adaptation to a new microscope)",
    )
    flags.add("--minutes", type=float, help="wall-time budget (default: no limit)")
    flags.add("--seed", type=int, default=defaults.seed)
    flags.add("--threads", record=False, type=int, help="torch CPU threads")
    flags.add("--device", record=False, help="cpu, cuda, mps (default: the best available)")
    flags.add(
        "--work",
        record=False,
        help="checkpoint file for resuming (default: in the user data folder)",
    )
    flags.add(
        "--resume",
        record=False,
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue a stopped run of the same model name",
    )
    flags.add(
        "--overwrite",
        record=False,
        action="store_true",
        help="replace a user model of the same name",
    )
    flags.add("--export", record=False, help="also export the new model to this .zip file")
    flags.add("--quiet", record=False, action="store_true", help="no progress bar")


def _read_inputs(
    paths: Sequence[str], masks: list[np.ndarray] | None = None
) -> tuple[list[np.ndarray], list[Any]]:
    """Arrays and acquisition records of image files or CDP stacks (their masks go to
    ``masks``)."""
    from ..io import is_cdp_stack, read_cdp_stack, read_image

    arrays, acquisitions = [], []
    for path in paths:
        if is_cdp_stack(path):
            stack = read_cdp_stack(path)
            arrays.append(np.asarray(stack.patterns))
            acquisitions.append(stack.acquisition)
            if masks is not None:
                masks.append(np.asarray(stack.masks))
        else:
            image = read_image(path)
            arrays.append(np.asarray(image.data))
            acquisitions.append(image.acquisition)
    return arrays, acquisitions


def finetune_main(args: argparse.Namespace) -> int:
    """``napari-qpi finetune``: fine-tune a model on files and register it as a user model."""
    set_threads(args)
    checkpoint = Path(args.work) if args.work else default_checkpoint(args.out)
    replace = args.overwrite or check_new_name(
        args.out, checkpoint_path=checkpoint, resume=args.resume
    )
    plan = _plan(args)
    print(
        f"fine-tuning {plan.base.name!r} on {plan.summary['train']} image(s), validating on "
        f"{plan.summary['validation']} ({plan.summary['validation_split']}); "
        f"{plan.total_steps} steps of {plan.settings.batch_size} x {plan.crop}^2"
    )
    if order := plan.summary.get("front_end_order"):
        print(
            f"the front end removes a background of order {order['used']} from its classical "
            f"phase (base model: {order['base']})"
        )
    model, card = _run_stoppable(plan, args, checkpoint)
    folder = save_finetuned(model, card, checkpoint_path=checkpoint, overwrite=replace)
    scores = card.metrics.get("finetune_validation", {})
    shown = ", ".join(
        f"{k} {scores[k]:.4g}" for k in ("val_loss", "psnr_db") if isinstance(scores.get(k), float)
    )
    status = card.training["status"]
    print(
        f"napari-qpi finetune: {status} after {card.training['steps']} of "
        f"{card.training['total_steps']} steps"
        + (f"; best validation (step {card.training['best_step']}): {shown}" if shown else "")
        + f"; model {card.name!r} in {folder}/"
    )
    if status == "stopped":
        print(f"resume with the same command (checkpoint {checkpoint})")
    if args.export:
        print(f"exported to {export_model(card.name, args.export, overwrite=args.overwrite)}")
    return 0


def _plan(args: argparse.Namespace) -> FinetunePlan:
    """Read the files the flags name and check them (:func:`plan_finetune`)."""
    if args.classical_order is None:  # recorded in the new card's command as resolved
        args.classical_order = _default_classical_order(args.base)
    settings = FinetuneSettings(
        name=args.out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        crop=args.crop,
        augment=args.augment,
        val_fraction=args.val_fraction,
        loss=args.loss,
        self_supervised=args.self_supervised,
        minutes=args.minutes,
        seed=args.seed,
        front_end_order=_front_end_order(args),
    )
    stack_masks: list[np.ndarray] = []
    measurements, acquisitions = _read_inputs(args.inputs, stack_masks)
    modalities = {a.modality for a in acquisitions if a.modality in ("hologram", "cdp")}
    if len(modalities) > 1:
        raise InputError("the inputs mix holograms and CDP stacks; fine-tune on one kind")
    targets: list[np.ndarray] | None = None
    if args.targets == ["classical"]:
        targets = classical_targets(
            measurements, acquisitions, background_order=args.classical_order
        )
    elif args.targets:
        targets = [arrays[0] for arrays in (_read_inputs([p])[0] for p in args.targets)]
    ignore: Any = None
    if args.ignore:
        masks = [_read_inputs([p])[0][0] for p in args.ignore]
        ignore = masks[0] if len(masks) == 1 else masks
    return plan_finetune(
        args.base,
        measurements,
        targets,
        ignore,
        settings=settings,
        modality=modalities.pop() if modalities else None,
        names=[Path(p).name for p in args.inputs],
        target_names=[Path(p).name for p in args.targets or []],
        device=args.device,
        command=command_line(args),
        masks=stack_masks[0] if stack_masks else None,
    )


def _default_classical_order(base: str) -> int:
    """The background order of the base model's front-end classical phase, so that classical
    targets do not move it; the classical method's default for any other model."""
    from ..models.registry import get_card
    from ..retrieval.offaxis import OffAxisSettings

    order = base_front_end_order(get_card(base))
    return OffAxisSettings().background_order if order is None else order


def _front_end_order(args: argparse.Namespace) -> int | None:
    """``--front-end-order``; unset, with ``--targets classical`` on a base model whose front end
    computes the classical phase, ``--classical-order`` (the order the user chose for this
    microscope) when it differs from the base model's; else None (the base model's)."""
    if args.front_end_order is not None or args.targets != ["classical"]:
        return args.front_end_order
    from ..models.registry import get_card

    return front_end_order_for(get_card(args.base), args.classical_order)


def _run_stoppable(
    plan: FinetunePlan, args: argparse.Namespace, checkpoint: Path
) -> tuple[Any, ModelCard]:
    """:func:`run_finetune` where the first Ctrl-C stops after the step (best weights kept)."""
    stop = StopFlag()

    def interrupt(signum: int, frame: Any) -> None:
        if stop.should_stop():
            raise KeyboardInterrupt
        stop.set()
        print("\nnapari-qpi finetune: stopping after this step (Ctrl-C again to abort)")

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if main_thread else None
    try:
        return run_finetune(
            plan,
            callbacks=[
                ProgressBar(f"finetune {args.out}", disable=args.quiet),
                _PrintNotices(),
                stop,
            ],
            checkpoint_path=checkpoint,
            resume=args.resume,
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


class _PrintNotices:
    def on_notice(self, message: str) -> None:
        print(f"napari-qpi finetune: {message}")

    def on_base_score(self, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        print(f"napari-qpi finetune: the base model on the validation pairs: {shown}")


__all__ = ["add_finetune_arguments", "finetune_main"]
