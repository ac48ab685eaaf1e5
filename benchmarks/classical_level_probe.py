"""Probe: does a residual hologram network's correction follow the level of its classical input?

    python benchmarks/classical_level_probe.py unet prnet-searched
    python benchmarks/classical_level_probe.py path/to/model-folder --scales 1,0.5,0

For each model (a registered name or a model folder) and each case of the real HL60 corpus
(``tests/data/real_holograms``), the phase is retrieved as ``benchmarks/searched_models.py`` does
(whole plane, hologram only, no background fit) while the ``classical`` channel the network
reads is multiplied by each of ``--scales`` (the phase the output is added to is left alone).
A network whose correction depends on that channel's level changes its agreement with the
reference (correlation / slope inside the cell, background RMS in rad) as the scale moves;
a network that does not read the channel (``--classical-input`` other than ``phase``) is
unchanged by construction and is scored once. One torch thread.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_qpi.models import load_model
from napari_qpi.models.card import CARD_FILE
from napari_qpi.models.weights import load_model_folder
from napari_qpi.nn import frontend
from napari_qpi.retrieval.deep import retrieve_deep


@contextmanager
def scaled_classical_channel(scale: float) -> Iterator[None]:
    """Multiply the ``classical`` feature channel of every front end by ``scale`` meanwhile."""
    original = frontend.OffAxisFrontEnd._features

    def features(self, hologram, carrier):  # type: ignore[no-untyped-def]
        values, q, classical = original(self, hologram, carrier)
        if "classical" in self.config.channels:
            index = list(self.config.channels).index("classical")
            values = values.clone()
            values[:, index] *= scale
        return values, q, classical

    frontend.OffAxisFrontEnd._features = features  # type: ignore[method-assign]
    try:
        yield
    finally:
        frontend.OffAxisFrontEnd._features = original  # type: ignore[method-assign]


def load(spec: str) -> tuple[torch.nn.Module, object]:
    """A model folder, or a registered model by name."""
    if (Path(spec) / CARD_FILE).is_file():
        return load_model_folder(spec)
    return load_model(spec, device="cpu", cached=False)


def main(argv: list[str] | None = None) -> int:
    import real_holograms as corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--scales", default="1,0.5,0")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases, _ = corpus.load_corpus()
    references = corpus.load_references()
    print("| model | classical channel x | " + " | ".join(c.name for c in cases) + " |")
    print("|---|---|" + "---|" * len(cases))
    for spec in args.models:
        module, card = load(spec)
        reads = "classical" in module.front_end.config.channels
        for scale in [float(s) for s in args.scales.split(",")] if reads else [1.0]:
            cells = []
            with scaled_classical_channel(scale):
                for case in cases:
                    hologram, _ = corpus.raw_planes(case)
                    phase = retrieve_deep(
                        np.asarray(hologram, dtype=np.float32),
                        model=(module, card),
                        device="cpu",
                        tile=None,
                    ).phase
                    a = corpus.agreement(phase, references[case.reference])
                    cells.append(
                        f"{a['correlation']:.3f} / {a['slope']:.2f} / {a['background_rms_rad']:.2f}"
                    )
            label = f"{scale:g}" if reads else "(not read)"
            print(f"| {spec} | {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
