"""MobileNet-v2 encoder (Sandler et al., 2018) that returns its intermediate feature maps.

Written here because torchvision does not import beside the torch this project pins. The network is
the standard one without the classifier: a 3x3 stride-2 stem, seven groups of inverted residual
blocks (1x1 expansion, 3x3 depthwise, linear 1x1 projection, ReLU6 and batch norm) and a final 1x1
convolution to 1280 channels. Its nine *endpoints* E0..E8 are the outputs of the stem, of each
group and of the last convolution:

    endpoint   E0   E1   E2   E3   E4   E5   E6    E7    E8
    channels   32   16   24   32   64   96   160   320   1280
    stride     2    2    4    8    16   16   32    32    32

Channel counts are multiplied by the width multiplier and rounded to multiples of 8, except the
last one, which never shrinks below 1280 (the rule of the paper).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

#: Inverted residual groups of the paper: (expansion t, output channels c, blocks n, stride s).
BOTTLENECK_GROUPS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
#: Number of endpoints (stem, seven groups, last convolution).
NUM_ENDPOINTS = 2 + len(BOTTLENECK_GROUPS)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, losing at most 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Convolution (no bias), batch norm and ReLU6, with 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1), filter (3x3 depthwise, strided), project linearly (1x1); add the input back
    when the shape allows it."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        expand = [ConvBNReLU6(in_channels, hidden, kernel_size=1)] if expansion != 1 else []
        self.block = nn.Sequential(
            *expand,
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride), rounded up."""
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNet-v2 feature extractor returning its endpoints E0..E(num_stages - 1).

    Parameters
    ----------
    width
        Width multiplier applied to every channel count but the last (see the module docstring).
    in_channels
        Channels of the input image (1 for a normalised hologram, 3 with two coordinate channels).
    num_stages
        How many endpoints to build and return, 1..9. A decoder that reads only shallow endpoints
        builds a truncated encoder, which has fewer parameters and runs faster.

    Attributes
    ----------
    channels
        Channels of each returned endpoint.
    strides
        Downsampling factor of each returned endpoint relative to the input.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 1, num_stages: int = NUM_ENDPOINTS):
        super().__init__()
        if not 1 <= num_stages <= NUM_ENDPOINTS:
            raise ValueError(f"num_stages must be in 1..{NUM_ENDPOINTS}, got {num_stages}")
        channels = [make_divisible(STEM_CHANNELS * width)]
        strides = [2]
        stages: list[nn.Module] = [ConvBNReLU6(in_channels, channels[0], stride=2)]
        for expansion, out, repeats, stride in BOTTLENECK_GROUPS:
            out_channels = make_divisible(out * width)
            blocks = [InvertedResidual(channels[-1], out_channels, stride, expansion)]
            blocks += [
                InvertedResidual(out_channels, out_channels, 1, expansion)
                for _ in range(repeats - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            channels.append(out_channels)
            strides.append(strides[-1] * stride)
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, width))
        stages.append(ConvBNReLU6(channels[-1], last_channels, kernel_size=1))
        channels.append(last_channels)
        strides.append(strides[-1])

        self.stages = nn.ModuleList(stages[:num_stages])
        self.channels: tuple[int, ...] = tuple(channels[:num_stages])
        self.strides: tuple[int, ...] = tuple(strides[:num_stages])
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Endpoints of an image batch.

        Parameters
        ----------
        x
            (B, in_channels, H, W) input.

        Returns
        -------
        list of Tensor
            Endpoint k has shape (B, channels[k], ceil(H / strides[k]), ceil(W / strides[k])).
        """
        endpoints = []
        for stage in self.stages:
            x = stage(x)
            endpoints.append(x)
        return endpoints


def init_weights(
    module: nn.Module, nonlinearity: str = "relu", mode: Literal["fan_in", "fan_out"] = "fan_out"
) -> None:
    """Kaiming-normal convolutions with zero bias; batch norms at identity.

    Hidden layers use the default (fan-out, ReLU gain); an output layer that should start with
    outputs of unit scale uses ``nonlinearity="linear", mode="fan_in"``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
