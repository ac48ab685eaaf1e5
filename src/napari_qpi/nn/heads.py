"""Blocks a PRNet adds around its searched decoder: a per-stage refinement and the native head.

:class:`RefineBlock` gives a decoder stage a 3x3 neighbourhood of its own
(``PRNetConfig.stage_refine``). :class:`NativeHead` computes a phase correction at the network's
input grid, the native grid of a front end (``PRNetConfig.native_head``), and, with
``upscale`` s > 1, *detail* at s times that grid (``PRNetConfig.head_upscale``).

Why detail finer than the native grid: the native grid holds the whole sideband, so it loses no
information the hologram carries, but the phase it outputs is interpolated bilinearly back to
the camera's pixels, and a cell's edge steeper than one native pixel (1.4-3.6 hologram pixels
at 3-6 px fringes) cannot be drawn by bilinear interpolation. Sampling the true phase of the
standard held-out split onto the tight native grid (area mean) and interpolating it back scores
36.1 dB, at twice the grid it is exact (docs/searched_models.md, "Detail finer than the native
grid"). A sub-pixel convolution (s^2 maps per native pixel, rearranged into an
s x s block: a pixel shuffle) lets the head draw such an edge for a few multiply-adds per pixel.

Every new block starts at zero (the refinement's last batch norm, the heads' last
convolutions), so a network that gains one computes exactly what it did before: a warm start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mobilenet import init_weights


class RefineBlock(nn.Module):
    """``x + BN(conv1x1(ReLU6(BN(dwconv3x3(ReLU6(x))))))``: a 3x3 neighbourhood per stage.

    A depthwise 3x3 and a pointwise 1x1 convolution cost ``C * (9 + C)`` weights, an eighth of a
    full 3x3 convolution at C = 64. The last batch norm starts at zero scale, so a new block is
    the identity and a stage starts as it would without it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU6(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class NativeHead(nn.Module):
    """A phase correction at the network's input grid, added to the coarse head's output.

    ``conv3x3(ReLU6(BN(conv3x3([up(conv1x1(ReLU6(D))), x]))))``: the output stage ``D``
    (stride 2 or coarser) projected to ``channels`` maps and upsampled bilinearly to the input
    grid, concatenated with the network's input ``x`` (at a front end's native grid: cos / sin
    of the wrapped phase, log amplitude, classical phase in radians, coordinates), two 3x3
    convolutions to one channel (radians). The last convolution starts at zero, so a new head
    leaves the network's output as it was (a warm start from the same network without one).
    Cost per input pixel: ``9 * channels * (channels + inputs + 1)`` multiply-adds.

    With ``upscale`` s > 1 the hidden maps also feed a 3x3 convolution to s^2 maps, rearranged
    into s x s blocks (:class:`torch.nn.PixelShuffle`): detail in radians on a grid s times finer
    than the input's (``9 * channels * s^2`` more multiply-adds per input pixel), zero at first.
    """

    def __init__(
        self, stage_channels: int, input_channels: int, channels: int, upscale: int = 1
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.ReLU6(), nn.Conv2d(stage_channels, channels, 1))
        self.body = nn.Sequential(
            nn.Conv2d(channels + input_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        self.detail = (
            nn.Sequential(nn.Conv2d(channels, upscale**2, 3, padding=1), nn.PixelShuffle(upscale))
            if upscale > 1
            else None
        )
        init_weights(self)
        for last in (self.body[-1], None if self.detail is None else self.detail[0]):
            if last is not None:
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    @property
    def upscale(self) -> int:
        """How many detail samples per input pixel along each axis (1: no detail)."""
        return 1 if self.detail is None else self.detail[1].upscale_factor

    def forward(self, stage: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Correction (B, 1, H, W) in radians at the input grid from the stage (B, C, h, w) and
        the input (B, I, H, W), and the detail (B, 1, sH, sW) in radians (None when s = 1)."""
        up = F.interpolate(
            self.project(stage), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        hidden = self.body[:-1](torch.cat([up, x], dim=1))
        detail = None if self.detail is None else self.detail(hidden)
        return self.body[-1](hidden), detail


__all__ = ["NativeHead", "RefineBlock"]
