"""Single-snapshot CDP phase retrieval by knowledge distillation from a multi-snapshot teacher.

Three end-to-end systems (masks and recovery network, :class:`~napari_qpi.nn.cdpnet.CDPNet`) are
trained on synthetic objects (phase-only cells and complex fields made from scikit-image's
bundled images, :func:`~napari_qpi.physics.cdp.random_objects`) with the one training loop
:func:`~napari_qpi.training.loop.fit`:

1. the **teacher**: K = 4 learnable masks, a wide refiner, trained alone on the reconstruction
   loss, then frozen;
2. the **student with KD**: one learnable mask, started from the teacher's trained mask k
   (``DistillConfig.student_mask``), and a small refiner, trained on

   ``L = l1 * L_rec + l2 * L_feat + l3 * L_mask``;

3. the **control**: the same student (same initial weights, batches and noise) trained on
   ``L_rec`` alone, for the same number of steps, its mask started from the random mask k the
   teacher started from; the two students thus differ by the loss and by what the teacher's
   training did to that mask.

Handing the student the teacher's trained mask is what made distillation pay here: short
ablations (``benchmarks/cdp_kd_ablation.py``, ``docs/cdp.md``) found no gain from the feature or
output losses beyond the spread caused by the choice of a random mask, while every trained
teacher mask tried beat every random one for the single-snapshot student.

Loss terms, for a batch of objects x (complex, amplitude units):

``L_rec``
    ``mean_b min_theta mean_pixels |exp(i theta) x_s - x|^2``: squared error of the student's
    estimate x_s after the best global phase (which no intensity measurement can fix), see
    :func:`~napari_qpi.nn.cdpnet.complex_mse`.
``L_feat``
    ``mean_{l in S} mean (a_l(F_s^l) - F_t^l)^2`` over the chosen refiner layers S (default the
    two finest decoder outputs ``"dec1"``, ``"dec0"``): F_s^l and F_t^l are the student's and the
    frozen teacher's features for the same objects (each measured through its own masks), a_l a
    learnt 1x1 convolution from the student's to the teacher's channels (identity when they are
    equal), bilinearly resized if the resolutions differ.
``L_mask``
    Gram-matrix alignment of the student's mask with the teacher's masks. For a mask phase phi
    (H, W), take its transmission ``u = exp(i phi)``, all N = (H-p+1)(W-p+1) patches of p x p
    pixels (default p = 5) as rows of ``P(u)`` (N x p^2), with a column of ones appended (so the
    mean transmission, the light the mask leaves in the zero order, is compared too), and the
    Hermitian Gram matrix ``G(u) = P^H P / N`` ((p^2+1) x (p^2+1)): its entries are the mask's
    autocorrelation ``mean_r conj(u(r + a)) u(r + b)`` for lags within a patch, and its mean.
    With ``G_T = (1/K) sum_k G(u_k)`` over the teacher's masks,
    ``L_mask = mean_ab |G(u_s)_ab - (G_T)_ab|^2``. It transfers the local statistics of the
    teacher's masks (their correlation length and zero-order content) to the student's mask
    without asking for pixel-wise agreement, which one mask cannot have with four.

Phases in radians throughout; objects and estimates in units of the object's amplitude.
Model folders hold ``card.json`` (family ``"teacher"``, ``"distilled"`` or ``"baseline"``,
modality ``"cdp"``), ``model.safetensors`` (fp16, masks included) and ``masks.tif`` (the masks as
trained, float32 radians, quantised if levelled).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..models.card import ModelCard
from ..nn.cdpnet import CDPNet, CDPNetConfig, complex_mse
from ..physics.cdp import random_objects
from .cdp_models import (
    MASKS_FILE,
    cdp_metrics,
    evaluate_model,
    evaluate_solver,
    export_model_masks,
    load_cdp_model,
    make_card,
    model_masks,
    save_cdp_model,
    snap_masks,
)
from .loop import FitResult, ProgressBar, default_optimizer, fit


@dataclass
class DistillConfig:
    """Everything that defines a distillation run (the CLI flags of ``napari-qpi distill``).

    Attributes
    ----------
    size
        Object side in pixels (square objects, multiple of ``2**(depth-1)``).
    oversampling
        Zero-padding factor of the far field.
    teacher_masks
        Snapshots of the teacher (the student has one).
    mask_levels
        Quantise all masks to this many phase levels (``None``: free phases).
    student_mask_levels
        Quantise the student's mask to this many levels instead (``None``: as ``mask_levels``):
        a teacher with free phases, lower-constrained, teaching a student whose plate must be
        fabricated with a few etch depths (the setting the distillation paper motivates; measured
        in docs/cdp.md).
    photons_per_pixel, read_noise_photons
        Noise of the simulated measurements (``None``: noiseless), the same for every system.
    teacher_channels, student_channels, depth
        Refiner widths (base channels) and depth.
    batch_size
        Objects per step.
    teacher_steps, student_steps
        Steps of the teacher and of the KD student (a time budget may end them earlier; the
        control then gets as many steps as the KD student made).
    lr, mask_lr, weight_decay
        AdamW learning rates of the networks and of the mask phases (radians per step, no weight
        decay on masks), cosine schedule.
    reconstruction_weight, feature_weight, mask_weight
        l1, l2, l3 of the distillation loss.
    feature_layers
        Refiner features compared by ``L_feat`` (see :class:`~napari_qpi.nn.cdpnet.Refiner`).
    gram_patch
        Patch side p of the mask Gram matrices.
    sources
        Object kinds: any of ``"cells"``, ``"images"`` and ``"shapes"`` (see
        :func:`~napari_qpi.physics.cdp.random_objects`).
    seed
        Seeds weights, masks, data and noise.
    val_objects
        Size of the held-out set used for the final scores.
    student_mask
        Index k of the teacher's mask that the student starts from (``None``: the student's own
        random mask). The KD student starts from the teacher's *trained* mask k; the control
        starts from the same mask *before* the teacher was trained (the random draw the teacher
        started from), so the two differ only by what the teacher learnt.
    student_first_estimate, student_unrolled_steps
        The student's physics first estimate (:class:`~napari_qpi.nn.cdpnet.CDPNetConfig`
        ``first_estimate``; ``"flat-modulus"``: the classical phase-object iterations, for phase
        objects) and its number of unrolled steps (``None``: the network's default).
    train_objects
        Size of a finite training set (``None``: a fresh batch every step, unlimited objects).
        The set is one fixed draw (seed ``TRAIN_POOL_SEED``, whatever ``seed``), shared by the
        teacher and the students, as an experiment has one set of measured objects; the seed
        then only orders the batches drawn from it.
    """

    size: int = 64
    oversampling: int = 2
    teacher_masks: int = 4
    mask_levels: int | None = None
    student_mask_levels: int | None = None
    photons_per_pixel: float | None = None
    read_noise_photons: float = 0.0
    teacher_channels: int = 32
    student_channels: int = 16
    depth: int = 3
    batch_size: int = 8
    teacher_steps: int = 3000
    student_steps: int = 3000
    lr: float = 2e-3
    mask_lr: float = 2e-2
    weight_decay: float = 1e-4
    reconstruction_weight: float = 1.0
    feature_weight: float = 0.1
    mask_weight: float = 1.0
    feature_layers: tuple[str, ...] = ("dec1", "dec0")
    gram_patch: int = 5
    sources: tuple[str, ...] = ("cells", "images")
    seed: int = 0
    val_objects: int = 16
    student_mask: int | None = 0
    train_objects: int | None = None
    student_first_estimate: str = "spectral"
    student_unrolled_steps: int | None = None

    def __post_init__(self) -> None:
        self.feature_layers = tuple(self.feature_layers)
        self.sources = tuple(self.sources)
        if min(self.teacher_steps, self.student_steps, self.batch_size, self.val_objects) < 1:
            raise InputError("steps, batch size and the held-out set size must be at least 1")
        if self.train_objects is not None and self.train_objects < self.batch_size:
            raise InputError(
                f"train_objects ({self.train_objects}) must be at least the batch size "
                f"({self.batch_size}), or None for unlimited objects"
            )
        if self.gram_patch < 1 or self.gram_patch > self.size:
            raise InputError(f"gram_patch must be in [1, size], got {self.gram_patch}")
        if min(self.reconstruction_weight, self.feature_weight, self.mask_weight) < 0:
            raise InputError("the loss weights l1, l2, l3 must be non-negative")
        if self.student_mask is not None and not 0 <= self.student_mask < self.teacher_masks:
            raise InputError(
                f"student_mask must index one of the teacher's {self.teacher_masks} masks "
                f"(0 to {self.teacher_masks - 1}) or be None, got {self.student_mask}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """Object shape (H, W)."""
        return self.size, self.size

    def network_config(self, role: str) -> CDPNetConfig:
        """Config of the ``"teacher"`` or the ``"student"`` network."""
        common = {
            "shape": self.shape,
            "oversampling": self.oversampling,
            "mask_levels": self.mask_levels,
            "depth": self.depth,
            "photons_per_pixel": self.photons_per_pixel,
            "read_noise_photons": self.read_noise_photons,
        }
        if role == "teacher":
            return CDPNetConfig.teacher(
                n_masks=self.teacher_masks,
                base_channels=self.teacher_channels,
                mask_seed=self.seed,
                **common,
            )
        if role == "student":
            if self.student_mask_levels is not None:
                common["mask_levels"] = self.student_mask_levels
            if self.student_unrolled_steps is not None:
                common["unrolled_steps"] = self.student_unrolled_steps
            return CDPNetConfig.student(
                base_channels=self.student_channels,
                mask_seed=self.seed + 1,
                first_estimate=self.student_first_estimate,
                **common,
            )
        raise InputError(f"role must be 'teacher' or 'student', got {role!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return json.loads(json.dumps(asdict(self)))


#: Seed of the finite training set (``DistillConfig.train_objects``): not the held-out sets'.
TRAIN_POOL_SEED = 2**19


def object_batches(
    batch_size: int,
    shape: tuple[int, int],
    *,
    sources: Sequence[str],
    seed: int,
    pool: int | None = None,
) -> Callable[[int], Iterator[Tensor]]:
    """Batch source for :func:`~napari_qpi.training.loop.fit`: objects drawn with seed (seed, step).

    Every batch is complex64 (batch_size, H, W), a function of the step only, so a resumed run
    sees the same data. With ``pool`` the objects come from a fixed set of that many objects
    (:func:`training_pool`): each batch is ``batch_size`` distinct members of it, chosen with
    seed (seed, step).
    """
    objects = None if pool is None else training_pool(pool, shape, sources)

    def source(first_step: int) -> Iterator[Tensor]:
        step = first_step
        while True:
            rng = np.random.default_rng([seed, step])
            if objects is None:
                batch = random_objects(batch_size, shape, sources=sources, seed=rng)
            else:
                batch = objects[rng.choice(len(objects), size=batch_size, replace=False)]
            yield torch.from_numpy(batch)
            step += 1

    return source


def training_pool(n: int, shape: tuple[int, int], sources: Sequence[str]) -> np.ndarray:
    """The finite training set of ``n`` objects, complex64 (n, H, W), seed ``TRAIN_POOL_SEED``.

    Object i is drawn with seed (TRAIN_POOL_SEED, i), so a smaller set is the start of a larger.
    """
    return np.concatenate(
        [
            random_objects(
                1, shape, sources=sources, seed=np.random.default_rng([TRAIN_POOL_SEED, i])
            )
            for i in range(n)
        ]
    )


def held_out_objects(config: DistillConfig, seed: int = 2**20) -> np.ndarray:
    """The fixed held-out objects, complex64 (val_objects, H, W): cells and images alternate."""
    sources = config.sources
    parts = [
        random_objects(
            1,
            config.shape,
            sources=(sources[i % len(sources)],),
            seed=np.random.default_rng([seed, i]),
        )
        for i in range(config.val_objects)
    ]
    return np.concatenate(parts)


def mask_gram(phases: Tensor, patch: int = 5) -> Tensor:
    """Gram matrices of mask transmissions, complex (K, p^2 + 1, p^2 + 1).

    ``phases`` (K, H, W) radians. Row r of ``P`` holds the p x p patch of ``u = exp(i phi)`` at
    position r, plus a constant 1; ``G = P^H P / N`` over the N valid positions (see the module
    docstring).
    """
    if phases.ndim == 2:
        phases = phases.unsqueeze(0)
    u = torch.polar(torch.ones_like(phases), phases).unsqueeze(1)
    rows = torch.complex(
        F.unfold(u.real, kernel_size=patch), F.unfold(u.imag, kernel_size=patch)
    ).transpose(1, 2)
    rows = torch.cat([rows, torch.ones_like(rows[..., :1])], dim=-1)
    return rows.conj().transpose(1, 2) @ rows / rows.shape[1]


def mask_gram_loss(student_phases: Tensor, teacher_gram: Tensor, patch: int = 5) -> Tensor:
    """``L_mask``: mean squared modulus of ``G(u_s) - G_T`` (averaged over the student's masks).

    ``teacher_gram`` is ``G_T``, the mean of :func:`mask_gram` over the teacher's masks.
    """
    difference = mask_gram(student_phases, patch) - teacher_gram
    return (difference.real.square() + difference.imag.square()).mean()


class DistillationStudent(nn.Module):
    """The student and its feature adapters: the parameters trained during distillation."""

    def __init__(self, student: CDPNet, teacher: CDPNet, layers: Sequence[str]) -> None:
        super().__init__()
        student_channels = student.refiner.feature_channels()
        teacher_channels = teacher.refiner.feature_channels()
        if missing := sorted(set(layers) - (set(student_channels) & set(teacher_channels))):
            raise InputError(
                f"feature layers {missing} are not in both refiners; choose from "
                f"{sorted(set(student_channels) & set(teacher_channels))}"
            )
        self.student = student
        self.adapters = nn.ModuleDict(
            {
                name: nn.Identity()
                if student_channels[name] == teacher_channels[name]
                else nn.Conv2d(student_channels[name], teacher_channels[name], kernel_size=1)
                for name in layers
            }
        )


def reconstruction_loss(model: CDPNet, batch: Tensor) -> Tensor:
    """``L_rec`` of a CDP model on a batch of objects (teacher and control training)."""
    return complex_mse(model(batch), batch)


def distillation_loss(
    teacher: CDPNet,
    *,
    weights: tuple[float, float, float],
    layers: Sequence[str],
    patch: int,
) -> Callable[[DistillationStudent, Tensor], dict[str, Tensor]]:
    """Loss function for :func:`fit` on a :class:`DistillationStudent`: total and the three terms.

    The teacher is frozen and run without gradients; its measurement noise is drawn on a forked
    random state, so the student sees exactly the noise of the control run.
    """
    l1, l2, l3 = weights
    with torch.no_grad():
        teacher_gram = mask_gram(teacher.masks(), patch).mean(dim=0)

    def loss_fn(model: DistillationStudent, batch: Tensor) -> dict[str, Tensor]:
        estimate, features = model.student(batch, return_features=True)
        rec = complex_mse(estimate, batch)
        terms = []
        if l2 > 0:  # with l2 = 0 the teacher's features are not needed: it is not run
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                _, targets = teacher(batch, return_features=True)
            for name, adapter in model.adapters.items():
                mapped = adapter(features[name])
                target = targets[name]
                if mapped.shape[-2:] != target.shape[-2:]:
                    mapped = F.interpolate(
                        mapped, size=target.shape[-2:], mode="bilinear", align_corners=False
                    )
                terms.append(F.mse_loss(mapped, target))
        feat = torch.stack(terms).mean() if terms else rec.new_zeros(())
        mask = mask_gram_loss(model.student.masks(), teacher_gram, patch)
        total = l1 * rec + l2 * feat + l3 * mask
        return {"loss": total, "reconstruction": rec, "feature": feat, "mask": mask}

    return loss_fn


def cdp_optimizer(
    model: nn.Module, *, lr: float, mask_lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """:func:`~.loop.default_optimizer` with the mask phases at ``mask_lr`` and no weight decay.

    Weight decay would pull phases towards 0 rad, which means nothing physically; convolution
    weights decay, biases, norms and step sizes do not.
    """
    masks = (lambda name, parameter: name.endswith("masks.latent"), {"lr": mask_lr})
    return default_optimizer(model, lr=lr, weight_decay=weight_decay, own_groups=[masks])


def train_teacher(
    config: DistillConfig,
    *,
    callbacks: Iterable[Any] = (),
    time_budget_s: float | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> tuple[CDPNet, FitResult]:
    """Train the multi-snapshot teacher end to end (masks and network) on ``L_rec``."""
    torch.manual_seed(config.seed)
    teacher = CDPNet(config.network_config("teacher"))
    result = fit(
        teacher,
        reconstruction_loss,
        object_batches(
            config.batch_size,
            config.shape,
            sources=config.sources,
            seed=config.seed,
            pool=config.train_objects,
        ),
        steps=config.teacher_steps,
        optimizer=cdp_optimizer(
            teacher, lr=config.lr, mask_lr=config.mask_lr, weight_decay=config.weight_decay
        ),
        callbacks=callbacks,
        checkpoint_path=checkpoint_path,
        resume=resume,
        time_budget_s=time_budget_s,
        seed=config.seed,
    )
    snap_masks(teacher)
    teacher.eval().requires_grad_(False)
    return teacher, result


def train_student(
    config: DistillConfig,
    teacher: CDPNet | None = None,
    *,
    steps: int | None = None,
    callbacks: Iterable[Any] = (),
    time_budget_s: float | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    initial_masks: Tensor | None = None,
) -> tuple[CDPNet, FitResult]:
    """Train the single-snapshot student, distilled from ``teacher``, or alone (the control).

    With and without a teacher the student starts from the same weights and sees the same batches
    and noise. Its mask (``config.student_mask``) is the teacher's trained mask k with a teacher
    and, without one, the random mask k the teacher started from; the runs thus differ by the
    loss and by what the teacher's training did to that mask. ``initial_masks`` (K, H, W) rad:
    the teacher's masks before training, when the teacher was trained with another seed than
    ``config.seed`` (default :func:`teacher_initial_masks` of ``config``).
    """
    torch.manual_seed(config.seed + 1)
    student = CDPNet(config.network_config("student"))
    if config.student_mask is not None:
        if teacher is not None:
            start = teacher.masks.latent
        else:
            start = teacher_initial_masks(config) if initial_masks is None else initial_masks
        with torch.no_grad():
            student.masks.latent.copy_(start[config.student_mask : config.student_mask + 1])
    data = object_batches(
        config.batch_size,
        config.shape,
        sources=config.sources,
        seed=config.seed + 1,
        pool=config.train_objects,
    )
    trained: nn.Module
    if teacher is None:
        trained, loss_fn = student, reconstruction_loss
    else:
        teacher.eval().requires_grad_(False)
        trained = DistillationStudent(student, teacher, config.feature_layers)
        loss_fn = distillation_loss(
            teacher,
            weights=(config.reconstruction_weight, config.feature_weight, config.mask_weight),
            layers=config.feature_layers,
            patch=config.gram_patch,
        )
    result = fit(
        trained,
        loss_fn,
        data,
        steps=steps or config.student_steps,
        optimizer=cdp_optimizer(
            trained, lr=config.lr, mask_lr=config.mask_lr, weight_decay=config.weight_decay
        ),
        callbacks=callbacks,
        checkpoint_path=checkpoint_path,
        resume=resume,
        time_budget_s=time_budget_s,
        seed=config.seed + 1,
    )
    snap_masks(student)
    return student.eval(), result


def teacher_initial_masks(config: DistillConfig) -> Tensor:
    """The teacher's mask phases before training, (K, H, W) radians (its random start)."""
    from ..nn.cdpnet import LearnedMasks

    role = config.network_config("teacher")
    masks = LearnedMasks(role.n_masks, role.shape, levels=role.mask_levels, seed=role.mask_seed)
    return masks.latent.detach()


@dataclass
class DistillReport:
    """Outcome of :func:`run_distillation`: models, training results and held-out scores.

    ``student`` or ``control`` is ``None`` when that run was not asked for.
    """

    teacher: CDPNet
    student: CDPNet | None
    control: CDPNet | None
    fits: dict[str, FitResult]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


#: The single-snapshot runs of :func:`run_distillation`: the KD student and the control.
STUDENT_RUNS: tuple[str, ...] = ("kd", "control")


def run_distillation(
    config: DistillConfig,
    *,
    minutes: float | None = None,
    classical_iterations: int = 300,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    teacher: tuple[CDPNet, FitResult] | None = None,
    students: Sequence[str] = STUDENT_RUNS,
) -> DistillReport:
    """Teacher, KD student and control, then held-out scores of all of them and of HIO / WF.

    ``minutes`` bounds the whole training: half for the teacher, a quarter for the KD student;
    the control then trains for the steps the KD student made (``config.student_steps`` when the
    KD student is not trained in this run). ``students``: which of ``"kd"`` and ``"control"`` to
    train (the two are independent given the teacher, so they can run as two processes). The
    classical solvers run on the single-snapshot model's learned mask (the KD student's if it was
    trained) and WF on the teacher's masks, at the same noise. ``teacher``: a trained teacher
    (and how it was trained) to distil from instead of training one.
    """
    if not students or set(students) - set(STUDENT_RUNS):
        raise InputError(f"students must be among {list(STUDENT_RUNS)}, got {list(students)}")
    budget = None if minutes is None else 60.0 * minutes

    def bar(label: str) -> list[Any]:
        return [ProgressBar(label)] if progress else []

    def checkpoint(label: str) -> Path | None:
        return None if checkpoint_dir is None else Path(checkpoint_dir) / f"{label}.pt"

    if teacher is None:
        teacher = train_teacher(
            config,
            callbacks=bar("teacher"),
            time_budget_s=None if budget is None else budget / 2,
            checkpoint_path=checkpoint("teacher"),
            resume=resume,
        )
    teacher_model = teacher[0].eval().requires_grad_(False)
    fits, models = {"teacher": teacher[1]}, {"teacher": teacher_model}
    if "kd" in students:
        models["student_kd"], fits["student_kd"] = train_student(
            config,
            teacher_model,
            callbacks=bar("student + KD"),
            time_budget_s=None if budget is None else budget / 4,
            checkpoint_path=checkpoint("student-kd"),
            resume=resume,
        )
    if "control" in students:
        models["student_control"], fits["student_control"] = train_student(
            config,
            None,
            steps=fits["student_kd"].step if "student_kd" in fits else None,
            callbacks=bar("student alone"),
            checkpoint_path=checkpoint("student-control"),
            resume=resume,
        )
    objects = held_out_objects(config)
    scores = {key: evaluate_model(model, objects) for key, model in models.items()}
    if classical_iterations > 0:
        noise = {
            "photons_per_pixel": config.photons_per_pixel,
            "read_noise_photons": config.read_noise_photons,
            "oversampling": config.oversampling,
            "iterations": classical_iterations,
        }
        single = models.get("student_kd", models.get("student_control"))
        one_mask = single.masks.export()
        scores["hio_student_mask"] = evaluate_solver(objects, one_mask, method="hio", **noise)
        scores["wf_student_mask"] = evaluate_solver(objects, one_mask, method="wf", **noise)
        scores["wf_teacher_masks"] = evaluate_solver(
            objects, teacher_model.masks.export(), method="wf", **noise
        )
    return DistillReport(
        teacher_model, models.get("student_kd"), models.get("student_control"), fits, scores
    )


def load_teacher(folder: str | Path, config: DistillConfig) -> tuple[CDPNet, FitResult, ModelCard]:
    """A trained teacher from its model folder, checked against ``config``'s teacher."""
    model, card = load_cdp_model(folder)
    wanted = config.network_config("teacher").to_dict()
    have = model.config.to_dict()
    keys = ("n_masks", "shape", "oversampling", "base_channels", "depth", "mask_levels")
    if differ := [key for key in keys if wanted[key] != have[key]]:
        raise InputError(
            f"The teacher in {folder} does not fit these flags ({', '.join(differ)} differ: "
            f"{ {k: have[k] for k in differ} } vs { {k: wanted[k] for k in differ} })."
        )
    steps = int(card.training.get("steps", 0))
    fit_result = FitResult(step=steps, total=steps, seconds=float(card.training.get("seconds", 0)))
    return model, fit_result, card


__all__ = [
    "MASKS_FILE",
    "STUDENT_RUNS",
    "TRAIN_POOL_SEED",
    "DistillConfig",
    "DistillReport",
    "DistillationStudent",
    "cdp_metrics",
    "cdp_optimizer",
    "distillation_loss",
    "evaluate_model",
    "evaluate_solver",
    "export_model_masks",
    "held_out_objects",
    "load_cdp_model",
    "load_teacher",
    "make_card",
    "mask_gram",
    "mask_gram_loss",
    "model_masks",
    "object_batches",
    "reconstruction_loss",
    "run_distillation",
    "save_cdp_model",
    "snap_masks",
    "teacher_initial_masks",
    "train_student",
    "train_teacher",
    "training_pool",
]
