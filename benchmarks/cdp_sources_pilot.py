"""Single-snapshot CDP models trained on different object sources, scored on three sets.

    python benchmarks/cdp_sources_pilot.py FOLDER [FOLDER ...] [--unseen]

FOLDERs are model folders written by ``napari-qpi distill`` (the first is the reference of the
paired differences), or a KD student's training checkpoint (``OUT/checkpoints/student-kd.pt``,
a copy of it taken at some step), read into the architecture of the shipped ``cdp-student``.
Every model reads one pattern through its own mask at 100 photons per pattern pixel (Poisson,
seeded per object as in ``benchmarks/cdp_unseen.py``), and is scored by PSNR / SSIM of the phase
after the global phase on:

1. ``shapes``: 128 procedural piecewise-constant objects (``napari_qpi.physics.shapes``) drawn
   with seed ``VALIDATION_SEED``, which no training run uses: the selection criterion for
   adding that source;
2. ``cells + images``: 128 held-out objects of the original training kinds (seed
   ``TRAINING_KIND_SEED``; not the cards' set, 2**20, benchmarks/cdp.py's, 2**21, nor
   cdp_unseen's, 2**22);
3. with ``--unseen``: the eight scikit-image images of ``benchmarks/cdp_unseen.py`` (a final
   check, not a selection criterion).

Differences are paired per object: mean +- standard error over objects.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cdp_unseen import IMAGES, measure, per_object, systems, unseen_objects
from napari_qpi.models import load_model
from napari_qpi.nn.cdpnet import CDPNet
from napari_qpi.physics.shapes import shape_objects
from napari_qpi.training.distill import (
    DistillConfig,
    held_out_objects,
    load_cdp_model,
    snap_masks,
)
from napari_qpi.training.loop import load_checkpoint

VALIDATION_SEED = 2**23
TRAINING_KIND_SEED = 2**24
N_OBJECTS = 128


def object_sets(shape: tuple[int, int], unseen: bool) -> dict[str, np.ndarray]:
    """The evaluation sets (see the module docstring), complex64 (n, H, W) each."""
    config = DistillConfig(size=shape[0], sources=("cells", "images"), val_objects=N_OBJECTS)
    sets = {
        "shapes": shape_objects(N_OBJECTS, shape, seed=VALIDATION_SEED),
        "cells + images": held_out_objects(config, seed=TRAINING_KIND_SEED),
    }
    if unseen:
        sets["unseen scikit-image"] = unseen_objects(shape, IMAGES)
    return sets


def load(path: Path) -> CDPNet:
    """A model folder, or a KD student's training checkpoint (see the module docstring)."""
    if path.suffix != ".pt":
        return load_cdp_model(path)[0]
    model, _ = load_model("cdp-student", device="cpu", cached=False)
    state = load_checkpoint(path)["model"]
    model.load_state_dict(
        {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    )
    snap_masks(model)
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--unseen", action="store_true", help="also the scikit-image images")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for folder in args.folders:
        model = load(folder)
        network = systems(model, 0)["network"]
        sets = object_sets(tuple(model.config.shape), args.unseen)
        mask, s = model.masks.export(), model.config.oversampling
        scores[str(folder)] = {
            name: per_object(network, measure(objects, mask, s), objects)
            for name, objects in sets.items()
        }
    reference = str(args.folders[0])
    print("| model | set | PSNR (dB) | SSIM | PSNR - first model (mean +- s.e.m.) | min |")
    print("|---|---|---|---|---|---|")
    for folder, by_set in scores.items():
        for name, s in by_set.items():
            diff = s[:, 0] - scores[reference][name][:, 0]
            sem = diff.std(ddof=1) / np.sqrt(len(diff))
            print(
                f"| {folder} | {name} | {s[:, 0].mean():.2f} | {s[:, 1].mean():.3f} | "
                f"{diff.mean():+.2f} +- {sem:.2f} | {s[:, 0].min():.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
