"""Warm starts: a network begins training from another model's weights (``train --init``,
``--init-encoder``).

A start is a registered model name or a model folder. :func:`warm_start` takes the whole
network of the same architecture (a PRNet may add a native head, a front-end network may move to
another native grid or background order); :func:`warm_start_encoder` only a PRNet's encoder,
for another connectivity. Each returns the provenance the card records under ``training.init``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError
from ..models.card import CARD_FILE, ModelCard
from ..nn.frontend import CLASSICAL_BACKGROUND_ORDER


def load_start(name: str) -> tuple[nn.Module, ModelCard]:
    """The model a warm start reads: a registered name, or a model folder (with its card)."""
    from ..models.registry import load_model
    from ..models.weights import load_model_folder

    if (Path(name) / CARD_FILE).is_file():
        return load_model_folder(name)
    return load_model(name, device="cpu", cached=False)


def warm_start(model: nn.Module, family: str, name: str) -> dict[str, Any]:
    """Load the weights of the registered model ``name`` into ``model``; return its provenance.

    Raises
    ------
    ModelError
        ``name`` is not registered, or its architecture differs from ``model``'s.
    """
    source, card = load_start(name)
    ours, theirs = copy.deepcopy(model.config.to_dict()), copy.deepcopy(dict(card.config))
    for config in (ours, theirs):
        config.pop("gated", None)
    # A PRNet may add a native head to the network it starts from (the head starts at zero,
    # so the warm-started model computes exactly what its init did on the same grid), and any
    # front-end network may move to another native grid (no weight depends on the grid).
    added = ["native_head"] if ours.get("native_head") and not theirs.get("native_head") else []
    for key in added:
        ours.pop(key)
    # No weight depends on the front end's grid or background order either.
    grids = [config.get("front_end", {}).pop("grid", "integer") for config in (ours, theirs)]
    orders = [
        config.get("front_end", {}).pop("background_order", CLASSICAL_BACKGROUND_ORDER)
        for config in (ours, theirs)
    ]
    if card.architecture.get("network") != family or ours != theirs:
        raise ModelError(
            f"--init {name}: its architecture ({card.architecture.get('network')}, {theirs}) "
            f"differs from the one to train ({family}, {ours}); give the same network flags "
            "(for a searched model: --connectivity with its card; a PRNet may add "
            "--native-head to one without)"
        )
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=not added)
    if unexpected or any(not key.startswith(tuple(f"{a}." for a in added)) for key in missing):
        raise ModelError(f"--init {name}: weights do not fit ({missing=}, {unexpected=})")
    return {
        "model": card.name,
        "sha256": card.sha256,
        "steps": card.training.get("steps"),
        "command": card.training.get("command"),
        **({"added": added} if added else {}),
        **({"grid": {"from": grids[1], "to": grids[0]}} if grids[0] != grids[1] else {}),
        **(
            {"background_order": {"from": orders[1], "to": orders[0]}}
            if orders[0] != orders[1]
            else {}
        ),
    }


def warm_start_encoder(model: nn.Module, family: str, name: str) -> dict[str, Any]:
    """Load the encoder of the PRNet ``name`` (registered, or a model folder) into the PRNet
    ``model``.

    Raises
    ------
    ModelError
        ``model`` or ``name`` is not a PRNet, or the encoders' inputs or shapes differ.
    """
    source, card = load_start(name)
    if family != "prnet" or card.architecture.get("network") != "prnet":
        raise ModelError(f"--init-encoder {name}: both networks must be PRNets")
    ours, theirs = model.encoder.state_dict(), source.encoder.state_dict()
    inputs = [
        (c.in_channels, c.coord_channels, c.front_end and c.front_end.channels)
        for c in (model.config, source.config)
    ]
    misfit = [k for k, v in ours.items() if k not in theirs or theirs[k].shape != v.shape]
    if inputs[0] != inputs[1] or misfit:
        raise ModelError(
            f"--init-encoder {name}: its encoder does not fit (inputs {inputs[1]} vs ours "
            f"{inputs[0]}; {len(misfit)} tensors differ, e.g. {misfit[:2]}); give the same "
            "--width, --coord-channels and front-end flags"
        )
    model.encoder.load_state_dict({k: theirs[k] for k in ours})
    return {
        "model": card.name,
        "sha256": card.sha256,
        "part": "encoder",
        "steps": card.training.get("steps"),
        "command": card.training.get("command"),
    }


__all__ = ["load_start", "warm_start", "warm_start_encoder"]
