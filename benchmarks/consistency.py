"""Calibration of the sideband consistency check (``napari_qpi.retrieval.consistency``).

    python benchmarks/consistency.py              # n=16 fields per split; prints the table
    python benchmarks/consistency.py --n 4        # quick

For each held-out split (``napari_qpi.training.data.held_out_set``, 256^2) every field is
demodulated once (``sideband_target``) and these phases are scored against its sideband:

* good: the true phase, the classical method's (``retrieve_offaxis``, cubic background);
* each shipped hologram network's (``retrieve_deep``, whole field);
* deliberately wrong (made from the true phase): flat (zero), half the contrast, blurred
  (Gaussian, sigma 4 px), shifted by 20 px, plus 1 rad of white noise, and block offsets
  (96 px squares each offset by a random +-2 to 4 rad, the failure seen on real holograms).

And on the real HL60 corpus (``tests/data/real_holograms``, see ``benchmarks/real_holograms.py``):
the peers' reference phase, the classical phase and each shipped network's, each with its
correlation and contrast (slope) against the reference inside the cell.

Printed per split and phase: median and range of ``residual`` and ``relative`` and the share of
fields the check flags (``not Consistency.trusted``), at the thresholds in the module.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_qpi.models import list_models
from napari_qpi.retrieval import OffAxisSettings, retrieve_offaxis
from napari_qpi.retrieval.consistency import (
    RELATIVE_WARN,
    RESIDUAL_WARN,
    consistency,
    sideband_target,
)
from napari_qpi.retrieval.deep import retrieve_deep
from napari_qpi.training.data import SPLITS, held_out_set


def blocks(truth: np.ndarray, rng: np.random.Generator, side: int = 96) -> np.ndarray:
    """The true phase plus a piecewise-constant offset of +-2 to 4 rad on ``side`` px squares."""
    h, w = truth.shape
    ny, nx = -(-h // side), -(-w // side)
    offsets = rng.uniform(2, 4, (ny, nx)) * rng.choice([-1, 1], (ny, nx))
    return truth + np.kron(offsets, np.ones((side, side)))[:h, :w].astype(np.float32)


def classical(hologram: np.ndarray) -> np.ndarray:
    """The classical phase with the cubic background the check assumes (coma included)."""
    return retrieve_offaxis(hologram, settings=OffAxisSettings(background_order=3)).phase


def wrong_phases(truth: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "wrong: flat": np.zeros_like(truth),
        "wrong: half": 0.5 * truth,
        "wrong: blur 4px": ndimage.gaussian_filter(truth, 4),
        "wrong: shift 20px": np.roll(truth, 20, axis=1),
        "wrong: noise 1rad": truth + rng.normal(0, 1, truth.shape).astype(np.float32),
        "wrong: blocks": blocks(truth, rng),
    }


Rows = dict[str, list[tuple[float, float, bool]]]


def score_split(split: str, n: int, models: list[str]) -> Rows:
    data = held_out_set(split, n=n, size=256)
    rng = np.random.default_rng(0)
    rows: Rows = {}
    for hologram, truth in zip(data.holograms, data.phases, strict=True):
        target = sideband_target(hologram)
        phases = {"truth": truth, "classical": classical(hologram)}
        for name in models:
            phases[name] = retrieve_deep(hologram, model=name, tile=None).phase
        phases |= wrong_phases(truth, rng)
        for name, phase in phases.items():
            c = consistency(target, phase)
            rows.setdefault(name, []).append((c.residual, c.relative, not c.trusted))
    return rows


def score_real(models: list[str]) -> None:
    """Consistency of the reference, classical and network phases of each real hologram."""
    sys.path.insert(0, str(Path(__file__).parent))
    from real_holograms import agreement, load_corpus, load_references, raw_planes

    references = load_references()
    print(f"{'real case':24} {'phase':16} residual relative flagged  corr  slope")
    for case in load_corpus()[0]:
        hologram, _ = raw_planes(case)
        if hologram.ndim == 3:  # an RGB JPEG: its channels are equal
            hologram = hologram[..., 0]
        reference = references[case.reference]
        target = sideband_target(hologram)
        phases = {"reference": reference, "classical": classical(hologram)}
        for name in models:
            phases[name] = retrieve_deep(hologram, model=name, tile=None).phase
        for name, phase in phases.items():
            c = consistency(target, phase)
            a = agreement(phase, reference)
            print(
                f"{case.name:24} {name:16} {c.residual:8.4f} {c.relative:8.3f} "
                f"{not c.trusted!s:7} {a['correlation']:5.2f} {a['slope']:6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="fields per split")
    parser.add_argument("--splits", nargs="*", default=list(SPLITS))
    parser.add_argument("--no-real", action="store_true", help="skip the real HL60 corpus")
    args = parser.parse_args()
    models = [card.name for card in list_models("hologram") if card.source == "shipped"]
    print(f"thresholds: residual > {RESIDUAL_WARN} and relative > {RELATIVE_WARN} -> flagged")
    columns = f"{'residual median [min-max]':32} {'relative median [min-max]':32}"
    print(f"{'split':9} {'phase':20} {columns} flagged")
    for split in args.splits:
        for name, values in score_split(split, args.n, models).items():
            res, rel, flag = zip(*values, strict=True)
            print(
                f"{split:9} {name:20} "
                f"{statistics.median(res):7.4f} [{min(res):.4f}-{max(res):.4f}]{'':8} "
                f"{statistics.median(rel):7.3f} [{min(rel):.3f}-{max(rel):.3f}]{'':9} "
                f"{sum(flag)}/{len(flag)}"
            )

    if not args.no_real:
        score_real(models)


if __name__ == "__main__":
    main()
