"""The sign of a hologram's phase, and the rule that fixes it.

A hologram cannot tell its phase's sign: the intensity of carrier ``f`` and phase ``phi`` equals
that of carrier ``-f`` and phase ``-phi`` (``cos(2 pi f.r - phi) = cos(-2 pi f.r + phi)``). Only
the sideband's orientation relative to the camera fixes it, and a network sees fringes, not that
orientation. Trained against cells-positive targets over every carrier direction, a network must
infer the sign from the cells themselves (or hedge where it cannot). Instead, a network with
``cells_positive`` is trained with a sign-free loss
(:func:`napari_qpi.training.losses.phase_loss` with ``sign_free=True``), so it may choose its own
sign convention, and its output is flipped by the rule every method here uses (cells are denser
than the medium): the phase rises above the background on balance.
"""

from __future__ import annotations

from torch import Tensor


def cells_positive_sign(phase: Tensor) -> Tensor:
    """+1 or -1 per image of a (B, 1, H, W) phase batch: the sign that makes cells positive.

    The background covers most of a field, so the median is the background level, and cells
    (a minority of the pixels, all on one side of it) pull the mean towards their side: the sign
    is that of ``mean - median``. Returned as (B, 1, 1, 1), detached.
    """
    flat = phase.detach().flatten(1)
    skew = flat.mean(dim=1) - flat.median(dim=1).values
    sign = (skew >= 0).to(phase.dtype) * 2 - 1
    return sign.view(-1, *([1] * (phase.ndim - 1)))


def make_cells_positive(phase: Tensor) -> Tensor:
    """``phase`` with each image's sign flipped where needed so that its cells are positive."""
    return phase * cells_positive_sign(phase)
