"""Networks of napari-qpi, pure PyTorch.

:func:`build_network` makes a network from the ``family`` and ``config`` of a model card:

- ``"prnet"``: :class:`PRNet`, the MobileNet-v2 encoder-decoder whose connectivity is data (the
  SparseMask supernet, a searched network, or anything in between), see :mod:`.prnet`;
- ``"unet"``: :class:`UNet`, the classic baseline.

Both map (B, C, H, W) normalised holograms to (B, 1, H, W) phase in radians and have a ``stride``:
pad inputs to a multiple of it with :func:`pad_to_multiple` and crop the output back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from .cdpnet import CDPNet, CDPNetConfig
from .mobilenet import MobileNetV2, make_divisible
from .prnet import (
    PRNet,
    PRNetConfig,
    allowed_inputs,
    count_parameters,
    normalise_connectivity,
    supernet_connectivity,
)
from .sparsemask import (
    Gate,
    clamp_gates_,
    drop_dangling,
    gate_parameters,
    gate_table,
    prune,
    sparsity_loss,
)
from .unet import UNet, UNetConfig

#: Network families by model-card name: (network class, config class).
FAMILIES: dict[str, tuple[type[nn.Module], type]] = {
    "prnet": (PRNet, PRNetConfig),
    "unet": (UNet, UNetConfig),
    "cdpnet": (CDPNet, CDPNetConfig),
}


def build_network(family: str, config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised network of a family from its config dictionary.

    Raises
    ------
    ModelError
        For an unknown family, an unknown config field or an invalid value.
    """
    if family not in FAMILIES:
        raise ModelError(f"unknown network family {family!r}; known families: {sorted(FAMILIES)}")
    network, config_class = FAMILIES[family]
    return network(config_class.from_dict(config))


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad a batch on the bottom and right so H and W are multiples of ``multiple``.

    Reflection padding continues fringes and texture more smoothly than zeros; inputs too small to
    reflect are padded by replication.

    Parameters
    ----------
    x
        (B, C, H, W) input.
    multiple
        Typically the network's ``stride``.

    Returns
    -------
    padded, (H, W)
        The padded batch and the original size: crop outputs with ``y[..., :H, :W]``.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (height, width)


__all__ = [
    "FAMILIES",
    "CDPNet",
    "CDPNetConfig",
    "Gate",
    "MobileNetV2",
    "PRNet",
    "PRNetConfig",
    "UNet",
    "UNetConfig",
    "allowed_inputs",
    "build_network",
    "clamp_gates_",
    "count_parameters",
    "drop_dangling",
    "gate_parameters",
    "gate_table",
    "make_divisible",
    "normalise_connectivity",
    "pad_to_multiple",
    "prune",
    "sparsity_loss",
    "supernet_connectivity",
]
