"""Install a retrained pair of single-snapshot CDP models and state their measured margin.

    python benchmarks/cdp_ship_students.py STUDENT_FOLDER CONTROL_FOLDER [--dest DIR]

STUDENT_FOLDER and CONTROL_FOLDER are the ``cdp-student`` and ``cdp-control`` model folders that
``napari-qpi distill`` wrote (their cards already hold the command that made them and their
held-out scores). This script

1. measures both on 128 held-out objects of each set of ``benchmarks/cdp_unseen.py``
   (``paired_scores``: cells and image crops, procedural sharp-edged objects; seed 2**22),
   paired per object;
2. decides which one a user should use, by the rule of issue 22: the KD student where it beats
   the control by more than two standard deviations of the seed-to-seed spread
   (``SEED_SD_DB``, the control's spread in the base regime of
   ``benchmarks/cdp_kd_regimes.py``), else the better of the two on the mean over both sets;
3. writes the measured margin (mean +- s.e.m. over objects, per set) and that recommendation into
   both cards (``description`` and ``extra.kd_margin``; the weights and their hash are untouched)
   and copies the folders to ``--dest`` (default: the package's shipped models).

Afterwards: ``python sample_data/make_samples.py`` (the single-pattern sample is made through
``cdp-student``'s mask), ``python benchmarks/cdp_unseen.py --write`` and
``python benchmarks/cdp.py --write``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cdp_unseen import SYNTHETIC_SETS, paired_scores
from napari_qpi.models.card import CARD_FILE, ModelCard
from napari_qpi.training.distill import load_cdp_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "napari_qpi" / "models" / "shipped"
#: Standard deviation over seeds of the control's PSNR, base regime of cdp_kd_regimes (32 px).
SEED_SD_DB = 0.82
N_OBJECTS = 128
REGIMES_COMMAND = (
    "python benchmarks/cdp_kd_regimes.py --seeds 3 "
    "--regimes base mask4 mask2 student16 photons10 photons1000 data256 data1024 --write"
)


def portable(path: Path) -> str:
    """``path`` relative to the working directory when inside it (no temporary absolute paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def margins(student: Path, control: Path) -> tuple[dict[str, tuple[float, float]], float]:
    """Per set, KD student - control PSNR (mean, s.e.m. over objects); and the pooled mean."""
    torch.set_num_threads(1)
    models = {"student": load_cdp_model(student)[0], "control": load_cdp_model(control)[0]}
    scores = paired_scores(N_OBJECTS, models)
    out = {}
    for name in SYNTHETIC_SETS:
        diff = scores[name]["student"][:, 0] - scores[name]["control"][:, 0]
        out[name] = (float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))))
    pooled = float(np.mean([mean for mean, _ in out.values()]))
    return out, pooled


def recommendation(per_set: dict[str, tuple[float, float]], pooled: float) -> str:
    """``"cdp-student"`` or ``"cdp-control"``, by the rule in the module docstring."""
    if all(mean > 2 * SEED_SD_DB for mean, _ in per_set.values()):
        return "cdp-student"
    return "cdp-student" if pooled > 0 else "cdp-control"


SOURCE_WORDS = {
    "cells": "cells",
    "images": "image crops",
    "shapes": "procedural sharp-edged objects",
}


def describe(card: ModelCard, per_set: dict[str, tuple[float, float]], use: str) -> str:
    """Card description of ``card`` (``cdp-student`` or ``cdp-control``)."""
    role = card.name
    sources = card.training.get("config", {}).get("sources", ["cells", "images"])
    trained_on = ", ".join(SOURCE_WORDS.get(source, source) for source in sources)
    sign = 1 if role == "cdp-student" else -1
    other = "cdp-control" if role == "cdp-student" else "cdp-student"
    what = (
        "Coded diffraction patterns, single-snapshot, distilled: starts from the teacher's "
        "trained mask 0 and learns with the reconstruction loss (kd weights 1 0 0)"
        if role == "cdp-student"
        else "Coded diffraction patterns, single-snapshot, no teacher (the control of the "
        "distillation): its mask started from the random mask the teacher's mask 0 started from"
    )
    measured = "; ".join(
        f"{name} {sign * mean:+.2f} +- {sem:.2f} dB" for name, (mean, sem) in per_set.items()
    )
    verdict = (
        "the recommended single-snapshot model"
        if use == role
        else f"{use} is the recommended single-snapshot model"
    )
    network = card.architecture.get("config", {})
    if network.get("first_estimate") == "flat-modulus":
        steps = network.get("unrolled_steps")
        what += (
            f"; its first estimate is {steps} unrolled iterations of the classical phase-object "
            "solver (flat start, measured modulus: for objects without absorption), which the "
            "network corrects"
        )
    return (
        f"{what}; learned mask and recovery network for 64x64 objects at oversampling 2, trained "
        f"on {trained_on}. Against {other} (PSNR, mean "
        f"+- s.e.m. over {N_OBJECTS} held-out objects per set, benchmarks/cdp_unseen.py): "
        f"{measured}; the seed-to-seed spread is +-{SEED_SD_DB} dB (benchmarks/cdp_kd_regimes.py)."
        f" By the rule 'the KD student where it beats the control by more than two standard "
        f"deviations, else the better of the two': {verdict}. Each runs only on patterns made "
        "through its own mask."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", type=Path)
    parser.add_argument("control", type=Path)
    parser.add_argument("--dest", type=Path, default=SHIPPED)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    per_set, pooled = margins(args.student, args.control)
    use = recommendation(per_set, pooled)
    command = shlex.join(
        [
            "python",
            "benchmarks/cdp_ship_students.py",
            *(portable(p) for p in (args.student, args.control)),
        ]
    )
    for role, source in (("cdp-student", args.student), ("cdp-control", args.control)):
        sign = 1 if role == "cdp-student" else -1
        card = ModelCard.load(source / CARD_FILE)
        if card.name != role:
            raise SystemExit(f"{source} holds {card.name!r}, not {role!r}")
        extra = {
            **card.extra,
            "kd_margin": {
                "psnr_db_vs_other_single_snapshot": {
                    name: round(sign * mean, 2) for name, (mean, _) in per_set.items()
                },
                "sem_db": {name: round(sem, 2) for name, (_, sem) in per_set.items()},
                "objects_per_set": N_OBJECTS,
                "seed_sd_db_32px_grid": SEED_SD_DB,
                "recommended": use,
                "command": f"{command}; {REGIMES_COMMAND}",
            },
        }
        target = args.dest / role
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        card.replace(description=describe(card, per_set, use), extra=extra).save(target / CARD_FILE)
        print(f"{role}: {per_set} -> {target}")
    print(f"recommended: {use}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
