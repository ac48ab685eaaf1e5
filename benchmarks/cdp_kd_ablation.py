"""Short ablation of what the teacher can pass to the single-snapshot CDP student (docs/cdp.md).

    python benchmarks/cdp_kd_ablation.py 32 600 600 teacher,control,kd_default,maskinit
    # size, teacher steps, student steps, comma-separated variants (see VARIANTS)

One teacher (4 masks, ``napari_qpi.training.distill.train_teacher``, cached in
``results/cdp_ablation/``), then students (1 mask, 16 base channels) trained for the same steps
on the same batches and noise (100 photons per pattern pixel), differing only by the loss and the
mask they start from. Scores: ``evaluate_model`` on 32 held-out objects. One torch thread.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_qpi.nn.cdpnet import CDPNet, LearnedMasks, complex_mse
from napari_qpi.training.distill import (
    DistillationStudent,
    DistillConfig,
    cdp_optimizer,
    evaluate_model,
    held_out_objects,
    load_cdp_model,
    make_card,
    mask_gram,
    mask_gram_loss,
    object_batches,
    save_cdp_model,
    snap_masks,
    train_teacher,
)
from napari_qpi.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]

#: feat: weight of the feature loss (dec1, dec0 unless ``layers``), normf: standardise features
#: per channel first; mask: weight of the Gram mask loss; out: weight of the teacher's estimate
#: as a second target; mask_init: start from the teacher's mask k (``untrained``: the random mask
#: k the teacher started from); mask_seed: the student's own random mask of that seed.
VARIANTS: dict[str, dict] = {
    "control": {},
    "kd_default": {"feat": 0.1, "mask": 1.0},
    "feat1_norm": {"feat": 1.0, "normf": True},
    "out1": {"out": 1.0},
    "maskinit": {"mask_init": 0},
    "maskinit_untrained": {"mask_init": 0, "untrained": True},
    "maskinit1": {"mask_init": 1},
    "maskinit1_untrained": {"mask_init": 1, "untrained": True},
    "maskinit2": {"mask_init": 2},
    "control_seed2": {"mask_seed": 2},
    "control_seed3": {"mask_seed": 3},
    "maskinit_featnorm": {"mask_init": 0, "feat": 1.0, "normf": True},
    "maskinit_kd": {"mask_init": 0, "feat": 0.1, "mask": 1.0},
}


def standardise(features: torch.Tensor) -> torch.Tensor:
    mean = features.mean(dim=(-2, -1), keepdim=True)
    return (features - mean) / (features.std(dim=(-2, -1), keepdim=True) + 1e-5)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    size, teacher_steps, student_steps = (int(v) for v in argv[:3])
    variants = argv[3].split(",")
    cfg = DistillConfig(
        size=size,
        photons_per_pixel=100.0,
        teacher_steps=teacher_steps,
        student_steps=student_steps,
        val_objects=32,
    )
    folder = ROOT / "results" / "cdp_ablation" / f"teacher{size}_{teacher_steps}"
    if folder.is_dir():
        teacher, _ = load_cdp_model(folder)
    else:
        teacher, _ = train_teacher(cfg)
        card = make_card("ablation-teacher", "teacher", teacher, description="", training={})
        save_cdp_model(teacher, folder, card)
    teacher.eval().requires_grad_(False)
    objects = held_out_objects(cfg)

    def show(name: str, model: CDPNet, extra: str = "") -> None:
        s = evaluate_model(model, objects)
        print(
            f"{name:<22} PSNR {s['psnr_db']:.2f} SSIM {s['ssim']:.3f} "
            f"rel {s['relative_error']:.4f} {extra}",
            flush=True,
        )

    if "teacher" in variants:
        show("teacher", teacher)
    gram = mask_gram(teacher.masks(), cfg.gram_patch).mean(0)
    for name in variants:
        if name not in VARIANTS:
            continue
        v = VARIANTS[name]
        torch.manual_seed(cfg.seed + 1)
        student = CDPNet(cfg.network_config("student"))
        with torch.no_grad():
            if "mask_seed" in v:
                start = LearnedMasks(1, cfg.shape, seed=v["mask_seed"]).latent
                student.masks.latent.copy_(start)
            if "mask_init" in v:
                k = v["mask_init"]
                source = (
                    LearnedMasks(cfg.teacher_masks, cfg.shape, seed=cfg.seed).latent
                    if v.get("untrained")
                    else teacher.masks.latent
                )
                student.masks.latent.copy_(source[k : k + 1])
        model = DistillationStudent(student, teacher, ("dec1", "dec0"))

        def loss_fn(m: DistillationStudent, batch: torch.Tensor, v=v) -> dict:
            estimate, features = m.student(batch, return_features=True)
            rec = complex_mse(estimate, batch)
            parts = {"reconstruction": rec}
            total = rec
            if v.get("feat", 0) or v.get("out", 0):
                with torch.no_grad(), torch.random.fork_rng(devices=[]):
                    teacher_estimate, targets = teacher(batch, return_features=True)
            if v.get("feat", 0):
                terms = []
                for layer, adapter in m.adapters.items():
                    mapped, target = adapter(features[layer]), targets[layer]
                    if v.get("normf"):
                        mapped, target = standardise(mapped), standardise(target)
                    terms.append(F.mse_loss(mapped, target))
                parts["feature"] = torch.stack(terms).mean()
                total = total + v["feat"] * parts["feature"]
            if v.get("out", 0):
                parts["out"] = complex_mse(estimate, teacher_estimate)
                total = total + v["out"] * parts["out"]
            if v.get("mask", 0):
                parts["mask"] = mask_gram_loss(m.student.masks(), gram, cfg.gram_patch)
                total = total + v["mask"] * parts["mask"]
            return {"loss": total, **parts}

        start = time.time()
        result = fit(
            model,
            loss_fn,
            object_batches(cfg.batch_size, cfg.shape, sources=cfg.sources, seed=cfg.seed + 1),
            steps=student_steps,
            optimizer=cdp_optimizer(
                model, lr=cfg.lr, mask_lr=cfg.mask_lr, weight_decay=cfg.weight_decay
            ),
            seed=cfg.seed + 1,
        )
        snap_masks(student)
        last = np.mean([row["reconstruction"] for row in result.history[-50:]])
        show(name, student.eval(), f"{time.time() - start:.0f} s, final L_rec {last:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
