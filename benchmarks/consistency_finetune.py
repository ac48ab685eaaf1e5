"""The consistency loss as a fine-tuning loss without targets, against classical targets.

    python benchmarks/consistency_finetune.py              # U-Net, 30 steps per hologram
    python benchmarks/consistency_finetune.py --steps 10   # quick

Test-time adaptation on the real HL60 corpus (``tests/data/real_holograms``, one entry per
distinct hologram): starting from the shipped ``unet`` each time, the network is fine-tuned on
that one hologram (each reference once; the network sees the hologram alone) for ``--steps``
Adam steps (learning rate ``--lr``, whole field, batch norm in eval mode) with

* ``consistency``: :func:`napari_qpi.retrieval.consistency.consistency_loss`, which needs only the
  hologram;
* ``classical targets``: the offset-free mean squared error to the classical method's phase
  (``retrieve_offaxis``, default settings), the sign matched to the network's start.

Each result is scored against the peers' reference phase inside the cell (correlation, contrast
slope; :func:`real_holograms.agreement`) and by the consistency check (relative residual). The
hologram the network adapts to is also the one it is scored on: this measures adaptation to a
microscope's data, not generalisation to new fields.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_qpi.models import load_model
from napari_qpi.models.card import normalise
from napari_qpi.retrieval import retrieve_offaxis
from napari_qpi.retrieval.consistency import consistency, consistency_loss, sideband_target


def _input(module, card, hologram: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """Normalised, reflect-padded (1, 1, H', W') input and the original size."""
    stride = getattr(module, "stride", None) or card.architecture.get("stride") or 1
    h, w = hologram.shape
    x = normalise(hologram.astype(np.float32), card.normalisation)
    x = np.pad(x, ((0, -h % stride), (0, -w % stride)), mode="reflect")
    return torch.from_numpy(np.ascontiguousarray(x))[None, None], (h, w)


def _predict(module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return module(x)[:, :, : size[0], : size[1]]


def adapt(base, card, hologram, loss_name: str, steps: int, lr: float) -> np.ndarray:
    """Fine-tune a copy of ``base`` on one hologram; its phase afterwards."""
    module = copy.deepcopy(base).float().eval()  # batch norm keeps its statistics
    for p in module.parameters():
        p.requires_grad_(True)
    x, size = _input(module, card, hologram)
    target = sideband_target(hologram)
    classical = torch.from_numpy(retrieve_offaxis(hologram).phase)[None, None]
    with torch.no_grad():
        start = _predict(module, x, size)
    sign = 1.0 if float(((start - start.mean()) * classical).sum()) >= 0 else -1.0
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        phase = _predict(module, x, size)
        if loss_name == "consistency":
            loss = consistency_loss(phase, [target])
        else:
            diff = sign * phase - classical
            loss = ((diff - diff.mean()) ** 2).mean()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return _predict(module, x, size)[0, 0].numpy()


def _oriented(phase: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The phase with the sign that correlates positively with the reference (a hologram cannot
    tell the sign; the network's output convention is checked elsewhere)."""
    return phase if np.corrcoef(phase.ravel(), reference.ravel())[0, 1] >= 0 else -phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from real_holograms import agreement, load_corpus, load_references, raw_planes

    torch.manual_seed(0)
    base, card = load_model(args.model, device="cpu", cached=False)
    references = load_references()
    cases, seen = [], set()
    for case in load_corpus()[0]:
        if case.reference not in seen and case.background != "bg_data":
            seen.add(case.reference)
            cases.append(case)
    print(f"model {args.model}, {args.steps} Adam steps at lr {args.lr} per hologram")
    print(f"{'hologram':26} {'training':18} {'corr':>5} {'slope':>6} {'relative':>8} {'s':>6}")
    for case in cases:
        hologram, _ = raw_planes(case)
        if hologram.ndim == 3:
            hologram = hologram[..., 0]
        hologram = hologram.astype(np.float32)
        reference = references[case.reference]
        target = sideband_target(hologram)
        with torch.no_grad():
            x, size = _input(base, card, hologram)
            start = _predict(base.float().eval(), x, size)[0, 0].numpy()
        for name in ("none (base)", "consistency", "classical targets"):
            t0 = time.perf_counter()
            if name == "none (base)":
                phase = start
            else:
                phase = adapt(base, card, hologram, name.split()[0], args.steps, args.lr)
            seconds = time.perf_counter() - t0
            a = agreement(_oriented(phase, reference), reference)
            c = consistency(target, phase)
            print(
                f"{case.name:26} {name:18} {a['correlation']:5.2f} {a['slope']:6.2f} "
                f"{c.relative:8.3f} {seconds:6.1f}"
            )


if __name__ == "__main__":
    main()
