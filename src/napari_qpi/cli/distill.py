"""``napari-qpi distill``: flags, and the teacher / student / control run they start.

The work is :mod:`napari_qpi.training.distill`; this module turns flags into a
:class:`~napari_qpi.training.distill.DistillConfig`, writes the three model folders and
``report.json`` and prints the score table. It imports torch, so :mod:`napari_qpi.cli` imports
it only when ``distill`` runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..models.card import CARD_FILE, ModelCard
from ..nn.cdpnet import CDPNet
from ..training.cdp_models import evaluate_model, load_cdp_model, make_card, save_cdp_model
from ..training.distill import (
    STUDENT_RUNS,
    DistillConfig,
    DistillReport,
    held_out_objects,
    load_teacher,
    run_distillation,
)
from ..training.loop import FitResult
from ._record import Flags, command_line, set_threads


def add_distill_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``napari-qpi distill``; defaults finish in minutes on 2 CPU cores."""
    d = DistillConfig()
    flags = Flags(parser, "distill")
    flags.add(
        "--out",
        type=Path,
        path="output",
        default=Path("results/distill"),
        help="folder for the model folders, masks and report (default: %(default)s)",
    )
    flags.add(
        "--minutes",
        type=float,
        default=10.0,
        help="wall-time budget of all training, minutes (default: %(default)s)",
    )
    _add_object_flags(flags, d)
    _add_training_flags(flags, d)
    _add_run_flags(flags)
    return parser


def _add_object_flags(flags: Flags, d: DistillConfig) -> None:
    """Objects, oversampling, masks and noise."""
    flags.add("--size", type=int, default=d.size, help="object side, pixels")
    flags.add("--oversampling", type=int, default=d.oversampling)
    flags.add(
        "--teacher-masks",
        type=int,
        default=d.teacher_masks,
        help="snapshots of the teacher (default: %(default)s)",
    )
    flags.add(
        "--mask-levels",
        type=int,
        default=None,
        help="quantise masks to this many phase levels (default: free phases)",
    )
    flags.add(
        "--student-mask-levels",
        type=int,
        default=None,
        help="quantise the student's mask to this many levels (default: as --mask-levels)",
    )
    flags.add(
        "--photons",
        type=float,
        default=None,
        help="mean photons per pattern pixel (default: noiseless)",
    )
    flags.add(
        "--read-noise", type=float, default=d.read_noise_photons, help="camera read noise, photons"
    )


def _add_training_flags(flags: Flags, d: DistillConfig) -> None:
    """Networks, steps, learning rates and the distillation loss."""
    flags.add("--teacher-channels", type=int, default=d.teacher_channels)
    flags.add("--student-channels", type=int, default=d.student_channels)
    flags.add(
        "--student-first-estimate",
        choices=["spectral", "flat-modulus"],
        default=d.student_first_estimate,
        help="the student's physics first estimate: 'flat-modulus' runs the classical "
        "phase-object iterations (flat start, measured modulus) before the refiner, for phase "
        "objects (default: %(default)s)",
    )
    flags.add(
        "--student-unrolled-steps",
        type=int,
        default=d.student_unrolled_steps,
        help="unrolled physics steps of the student (default: the network's, 3)",
    )
    flags.add("--depth", type=int, default=d.depth)
    flags.add("--batch-size", type=int, default=d.batch_size)
    flags.add(
        "--teacher-steps",
        type=int,
        default=d.teacher_steps,
        help="most teacher steps (the time budget may stop it earlier)",
    )
    flags.add(
        "--student-steps",
        type=int,
        default=d.student_steps,
        help="most student steps (the time budget may stop it earlier)",
    )
    flags.add("--lr", type=float, default=d.lr)
    flags.add(
        "--mask-lr", type=float, default=d.mask_lr, help="learning rate of the mask phases, radians"
    )
    flags.add(
        "--kd-weights",
        type=float,
        nargs=3,
        metavar=("L1", "L2", "L3"),
        default=(d.reconstruction_weight, d.feature_weight, d.mask_weight),
        help="weights of reconstruction, feature and mask losses",
    )
    flags.add("--feature-layers", nargs="+", default=list(d.feature_layers))
    flags.add("--gram-patch", type=int, default=d.gram_patch)
    flags.add(
        "--sources",
        nargs="+",
        choices=("cells", "images", "shapes"),
        default=list(d.sources),
        help="training objects: simulated cells, crops of scikit-image's bundled images, "
        "procedural piecewise-constant objects (napari_qpi.physics.shapes)",
    )
    flags.add("--seed", type=int, default=d.seed)
    flags.add("--val-objects", type=int, default=d.val_objects)
    flags.add(
        "--student-mask",
        type=int,
        default=d.student_mask,
        help="start the student from the teacher's mask K (the control from the same mask "
        "before the teacher's training); -1: the student's own random mask",
    )


def _add_run_flags(flags: Flags) -> None:
    """Baselines, names, registration, resuming and threads."""
    flags.add(
        "--classical-iterations",
        type=int,
        default=300,
        help="iterations of the HIO / WF baselines (0: skip them)",
    )
    flags.add(
        "--name",
        default="cdp",
        help="prefix of the model names: NAME-teacher, NAME-student, NAME-control",
    )
    flags.add(
        "--register",
        action="store_true",
        help="also save the models as user models (appear in the plugin)",
    )
    flags.add(
        "--overwrite",
        action="store_true",
        help="replace user models of the same names when registering",
    )
    flags.add(
        "--students",
        nargs="+",
        choices=STUDENT_RUNS,
        default=list(STUDENT_RUNS),
        help="single-snapshot runs to train: the KD student and/or the control (independent "
        "given the teacher: two processes can train them side by side; default: both)",
    )
    flags.add("--resume", action="store_true", help="continue from checkpoints in OUT/checkpoints")
    flags.add(
        "--teacher",
        type=Path,
        path="input",
        help="model folder of a trained teacher to distil from (no teacher is trained; only the "
        "student and the control are written)",
    )
    flags.add(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; on a machine shared with other jobs "
        "give 1)",
    )


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    """The :class:`DistillConfig` of parsed ``napari-qpi distill`` flags."""
    l1, l2, l3 = args.kd_weights
    return DistillConfig(
        size=args.size,
        oversampling=args.oversampling,
        teacher_masks=args.teacher_masks,
        mask_levels=args.mask_levels,
        student_mask_levels=getattr(args, "student_mask_levels", None),
        photons_per_pixel=args.photons,
        read_noise_photons=args.read_noise,
        teacher_channels=args.teacher_channels,
        student_channels=args.student_channels,
        student_first_estimate=getattr(args, "student_first_estimate", "spectral"),
        student_unrolled_steps=getattr(args, "student_unrolled_steps", None),
        depth=args.depth,
        batch_size=args.batch_size,
        teacher_steps=args.teacher_steps,
        student_steps=args.student_steps,
        lr=args.lr,
        mask_lr=args.mask_lr,
        reconstruction_weight=l1,
        feature_weight=l2,
        mask_weight=l3,
        feature_layers=tuple(args.feature_layers),
        gram_patch=args.gram_patch,
        sources=tuple(args.sources),
        seed=args.seed,
        val_objects=args.val_objects,
        student_mask=None if args.student_mask < 0 else args.student_mask,
    )


def _table(scores: Mapping[str, Mapping[str, float]]) -> str:
    lines = [f"{'system':<18} {'rel. error':>10} {'PSNR dB':>8} {'SSIM':>6} {'RMSE rad':>9}"]
    for name, row in scores.items():
        lines.append(
            f"{name:<18} {row['relative_error']:>10.4f} {row['psnr_db']:>8.2f} "
            f"{row['ssim']:>6.3f} {row['rmse_rad']:>9.4f}"
        )
    return "\n".join(lines)


def distill_main(args: argparse.Namespace) -> int:
    """``napari-qpi distill``: train teacher, KD student and control; save, score and report.

    Writes ``OUT/<name>-teacher``, ``OUT/<name>-student`` and ``OUT/<name>-control`` model
    folders (:func:`~napari_qpi.training.distill.save_cdp_model`) and ``OUT/report.json``, prints
    a score table and returns the exit code.
    """
    config = config_from_args(args)
    set_threads(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = command_line(args)
    given = None if getattr(args, "teacher", None) is None else load_teacher(args.teacher, config)
    report = run_distillation(
        config,
        minutes=args.minutes,
        classical_iterations=args.classical_iterations,
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        teacher=None if given is None else given[:2],
        students=getattr(args, "students", STUDENT_RUNS),
    )
    roles = {
        "teacher": ("teacher", report.teacher, "teacher", f"{config.teacher_masks}-snapshot"),
        "student_kd": ("student", report.student, "distilled", "single-snapshot, distilled"),
        "student_control": ("control", report.control, "baseline", "single-snapshot, no teacher"),
    }
    if given is not None:  # distilled from a teacher trained before: it keeps its own folder
        del roles["teacher"]
    roles = {key: role for key, role in roles.items() if key in report.fits}
    teacher_name = f"{args.name}-teacher" if given is None else given[2].name
    objects = held_out_objects(config)
    folders = {}
    for key, (suffix, model, family, what) in roles.items():
        card = make_card(
            f"{args.name}-{suffix}",
            family,
            model,
            description=f"Coded diffraction patterns, {what}: learned mask(s) and recovery "
            f"network for {config.size}x{config.size} objects at oversampling "
            f"{config.oversampling}.",
            training=_training_record(config, command, key, report.fits[key], teacher_name),
        )
        folders[key] = _save_scored(model, out / card.name, card, objects, report.scores, key)
        if args.register:
            from ..models.registry import save_user_model

            save_user_model(model, ModelCard.load(folders[key]), overwrite=args.overwrite)
    _write_report(out, config, command, report, folders)
    print(_table(report.scores))
    print(f"models and report written to {out}")
    return 0


def _training_record(
    config: DistillConfig, command: str, key: str, fit_result: FitResult, teacher_name: str
) -> dict[str, Any]:
    """The ``training`` entry of the card of the system ``key`` (teacher, student or control)."""
    return {
        "recipe": "distill",
        "config": config.to_dict(),
        "command": command,
        "role": key,
        "seed": config.seed,
        "steps": fit_result.step,
        "seconds": round(fit_result.seconds, 1),
        "final_loss": fit_result.mean_loss(20),
        **({"teacher": teacher_name} if key == "student_kd" else {}),
    }


def _save_scored(
    model: CDPNet,
    folder: Path,
    card: ModelCard,
    objects: np.ndarray,
    scores: dict[str, dict[str, float]],
    key: str,
) -> Path:
    """Save a model folder, score the weights as saved (fp16) and put the scores on its card."""
    folder = save_cdp_model(model, folder, card)
    saved, saved_card = load_cdp_model(folder)
    scores[key] = evaluate_model(saved, objects)
    split = f"synthetic-{saved.config.shape[0]}px-heldout"
    metrics = {
        split: {
            **scores[key],
            "command": saved_card.training["command"],
            "evaluated": "fp16 weights as saved; held_out_objects(config), noise seed 0",
        }
    }
    saved_card.replace(metrics=metrics).save(folder / CARD_FILE)
    return folder


def _write_report(
    out: Path, config: DistillConfig, command: str, report: DistillReport, folders: dict[str, Path]
) -> None:
    summary = {
        "config": config.to_dict(),
        "command": command,
        "scores": report.scores,
        "steps": {key: result.step for key, result in report.fits.items()},
        "seconds": {key: round(result.seconds, 1) for key, result in report.fits.items()},
        "models": {key: str(folder) for key, folder in folders.items()},
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")


__all__ = ["add_distill_arguments", "config_from_args", "distill_main"]
