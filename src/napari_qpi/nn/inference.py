"""A trained network made faster for inference, with the same output.

Two rewrites that change no result beyond float rounding (1e-6 rad on the shipped models):

- **Batch norms folded into the convolutions before them.** In eval mode a batch norm is a fixed
  per-channel affine map ``y = gamma (x - mean) / sqrt(var + eps) + beta``; after a convolution
  without a nonlinearity between them it folds into the convolution's weights and bias
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``), saving a pass over every feature map. Only a
  convolution directly followed by its batch norm in an ``nn.Sequential`` is folded (the
  MobileNet-v2 blocks, the U-Net's double convolutions, the decoder branches); the batch norm
  becomes an ``nn.Identity``, so the module keeps its structure and parameter names but loses
  the batch norms' statistics: it can no longer be trained or saved as a model. A PRNet decoder
  stage's own batch norm, after the sum of its branches, folds into the branches' last
  convolutions as well (:meth:`~napari_qpi.nn.prnet.DecoderStage.fold_norm`: upsampling is
  linear and keeps constants).
- **Channels-last weights on the CPU** (``torch.channels_last``): oneDNN's convolutions then run
  without reordering every feature map to its blocked layout and back. Measured at 256^2 on a
  2-core Intel Xeon @ 2.80 GHz (2026-12-07): the searched network's body 22.4 -> 14.4 ms, the
  untrained U-Net(64) 675 -> 531 ms (``benchmarks/searched_models.py`` times every network so).

:func:`~napari_qpi.models.load_model` applies :func:`for_inference` to the models it caches (a
cached model is shared and must not be trained); a private copy (``cached=False``, for
fine-tuning) is left as it was built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .prnet import DecoderStage


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution in an
    ``nn.Sequential`` of ``module`` into that convolution, in place; returns how many."""
    folded = 0
    for sequence in module.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for index in range(len(sequence) - 1):
            conv, norm = sequence[index], sequence[index + 1]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(norm, nn.BatchNorm2d)
                and norm.track_running_stats
                and norm.running_mean is not None
            ):
                sequence[index] = fuse_conv_bn_eval(conv.eval(), norm.eval())
                sequence[index + 1] = nn.Identity()
                folded += 1
    return folded


def fold_stage_norms(module: nn.Module) -> int:
    """Fold the batch norm of every ungated PRNet decoder stage of ``module`` into its branches
    (:meth:`~napari_qpi.nn.prnet.DecoderStage.fold_norm`), in place, after
    :func:`fold_batch_norms`; returns how many."""
    return sum(stage.fold_norm() for stage in module.modules() if isinstance(stage, DecoderStage))


def for_inference(module: nn.Module) -> nn.Module:
    """``module`` in eval mode, batch norms folded (:func:`fold_batch_norms`, then
    :func:`fold_stage_norms`), and, on the CPU, its weights in channels-last layout; in place,
    returned for chaining. No gradient is tracked for its parameters afterwards (inference
    only)."""
    module.eval()
    fold_batch_norms(module)
    fold_stage_norms(module)
    module.requires_grad_(False)
    parameter = next(module.parameters(), None)
    if parameter is not None and parameter.device.type == "cpu":
        module.to(memory_format=torch.channels_last)
    return module


__all__ = ["fold_batch_norms", "fold_stage_norms", "for_inference"]
