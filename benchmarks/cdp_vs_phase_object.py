"""Single-snapshot CDP models against the classical phase-object solver on the same patterns.

    python benchmarks/cdp_vs_phase_object.py [MODEL ...]   # default: cdp-student cdp-control

For each model (a registered name or a model folder) and each object set, one pattern per object
through the model's own mask at ``cdp_unseen.PHOTONS`` photons per pattern pixel (the noise of
``cdp_unseen.measure``): the network, and
:func:`~napari_qpi.retrieval.cdp_solvers.solve_phase_object` with ``cdp_unseen.ITERATIONS``
iterations. Sets: the 8 unseen scikit-image images of ``cdp_unseen.py``, and ``N_SYNTHETIC``
held-out objects of each of ``cdp_unseen.SYNTHETIC_SETS`` (seed ``cdp_unseen.SYNTHETIC_SEED``).
Prints mean PSNR / SSIM of both and the paired difference (mean +- s.e.m. over objects).

``--starts`` also scores, on the unseen images through the first model's mask, what the start
does to the classical solvers with the modulus imposed (``amplitude=1``): Gerchberg-Saxton from
the spectral, random and flat starts and HIO from the flat start (``cdp_unseen.ITERATIONS``
iterations each).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import cdp_unseen
from cdp import load
from napari_qpi.retrieval.cdp_solvers import solve_cdp, solve_phase_object

N_SYNTHETIC = 32


def compare(name: str) -> list[str]:
    """One table row per object set for the model ``name``."""
    model = load(name)[0].eval()
    mask, s = model.masks.export(), model.config.oversampling

    def network(y: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(y)[None])[0].numpy()

    def solver(y: np.ndarray) -> np.ndarray:
        return solve_phase_object(y, mask, oversampling=s, iterations=cdp_unseen.ITERATIONS)

    sets = {"unseen scikit-image": cdp_unseen.unseen_objects(model.config.shape, cdp_unseen.IMAGES)}
    for set_name in cdp_unseen.SYNTHETIC_SETS:
        sets[set_name] = cdp_unseen.synthetic_objects(set_name, model.config.shape[0], N_SYNTHETIC)
    rows = []
    for set_name, objects in sets.items():
        patterns = cdp_unseen.measure(objects, mask, s)
        net = cdp_unseen.per_object(network, patterns, objects)
        classical = cdp_unseen.per_object(solver, patterns, objects)
        diff = net[:, 0] - classical[:, 0]
        sem = diff.std(ddof=1) / np.sqrt(len(diff))
        rows.append(
            f"| {Path(name).name} | {set_name} ({len(objects)}) | {net[:, 0].mean():.2f} / "
            f"{net[:, 1].mean():.3f} | {classical[:, 0].mean():.2f} / {classical[:, 1].mean():.3f}"
            f" | {diff.mean():+.2f} +- {sem:.2f} |"
        )
    return rows


def starts(name: str) -> list[str]:
    """Rows of the ``--starts`` table: the same solvers from different starts."""
    model = load(name)[0].eval()
    mask, s = model.masks.export(), model.config.oversampling
    objects = cdp_unseen.unseen_objects(model.config.shape, cdp_unseen.IMAGES)
    patterns = cdp_unseen.measure(objects, mask, s)
    rows = []
    for method, init in (("gs", "spectral"), ("gs", "random"), ("gs", "flat"), ("hio", "flat")):

        def run(y: np.ndarray, method: str = method, init: str = init) -> np.ndarray:
            return solve_cdp(
                y, mask, method=method, oversampling=s, iterations=cdp_unseen.ITERATIONS,
                init=init, amplitude=1.0, seed=0,
            )  # fmt: skip

        scores = cdp_unseen.per_object(run, patterns, objects)
        rows.append(
            f"| {method} | {init} | {scores[:, 0].mean():.2f} / {scores[:, 1].mean():.3f} |"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    args = list(sys.argv[1:] if argv is None else argv)
    with_starts = "--starts" in args
    names = [arg for arg in args if arg != "--starts"] or ["cdp-student", "cdp-control"]
    torch.set_num_threads(1)
    if with_starts:
        print(
            "| solver (modulus imposed) | start | unseen images through "
            f"{names[0]}'s mask: dB / SSIM |"
        )
        print("|---|---|---|")
        print("\n".join(starts(names[0])), flush=True)
    print(
        "| model | objects | network dB / SSIM | phase object dB / SSIM | network - solver (dB) |"
    )
    print("|---|---|---|---|---|")
    for name in names:
        for row in compare(name):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
