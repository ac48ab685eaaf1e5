"""Draw the skip connectivity of a PRNet model card (``docs/images/connectivity_<name>.png``).

Encoder taps E0..E8 (top row, with their stride) and the global pooled feature G feed decoder
stages D0..D8 (bottom row); every connection of the supernet is drawn faintly, the kept ones boldly.

    python docs/make_connectivity_figure.py [MODEL_NAME]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from napari_qpi.models import get_card
from napari_qpi.nn.prnet import supernet_connectivity

STRIDES = (2, 2, 4, 8, 16, 16, 32, 32, 32)


def _position(node: str) -> tuple[float, float]:
    if node == "G":
        return (9.0, 1.0)
    index = int(node[1:])
    return (float(index), 1.0 if node[0] == "E" else 0.0)


def draw(name: str, out: Path) -> Path:
    card = get_card(name)
    kept = card.config.get("connectivity") or {}
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for stage, inputs in supernet_connectivity().items():
        for source in inputs:
            (x0, y0), (x1, y1) = _position(source), _position(stage)
            if source.startswith("D"):
                y0 = 0.0
            ax.annotate(
                "",
                xy=(x1, y1),
                xytext=(x0, y0),
                arrowprops={
                    "arrowstyle": "-",
                    "color": "0.85",
                    "lw": 0.6,
                    "connectionstyle": "arc3,rad=0.25" if y0 == y1 else None,
                },
            )
    for stage, inputs in kept.items():
        for source in inputs:
            (x0, y0), (x1, y1) = _position(source), _position(stage)
            ax.annotate(
                "",
                xy=(x1, y1 + 0.06),
                xytext=(x0, y0 - 0.06),
                arrowprops={
                    "arrowstyle": "->",
                    "color": "tab:red",
                    "lw": 2.0,
                    "connectionstyle": "arc3,rad=0.3" if y0 == y1 else None,
                },
            )
    for i, stride in enumerate(STRIDES):
        ax.text(
            i,
            1.0,
            f"E{i}\n1/{stride}",
            ha="center",
            va="center",
            bbox={"boxstyle": "round", "fc": "tab:blue", "ec": "none", "alpha": 0.25},
        )
        used = f"D{i}" in kept
        ax.text(
            i,
            0.0,
            f"D{i}",
            ha="center",
            va="center",
            bbox={
                "boxstyle": "round",
                "fc": "tab:red" if used else "0.9",
                "ec": "none",
                "alpha": 0.35 if used else 1.0,
            },
        )
    ax.text(
        9,
        1.0,
        "G",
        ha="center",
        va="center",
        bbox={"boxstyle": "round", "fc": "tab:green", "ec": "none", "alpha": 0.3},
    )
    n_kept = sum(len(v) for v in kept.values())
    n_all = sum(len(v) for v in supernet_connectivity().values())
    ax.set_title(f"{name}: {n_kept} of {n_all} encoder-decoder connections kept by the search")
    ax.set_xlim(-0.7, 9.7)
    ax.set_ylim(-0.5, 1.5)
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else "prnet-searched"
    print(draw(model, Path(__file__).parent / "images" / f"connectivity_{model}.png"))
