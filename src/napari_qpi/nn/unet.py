"""Classic U-Net (Ronneberger et al., 2015), the baseline of the searched networks.

Four 2x2 max-pool downsamplings, each level a double 3x3 convolution with batch norm and ReLU; the
channels double at every level (64, 128, 256, 512, 1024 with the default 64 base channels, about
31 M parameters). Every upsampling halves the channels (2x2 transposed convolution, or 1x1
convolution followed by bilinear interpolation), is concatenated with the skip connection of the
same level and passes another double convolution; a 1x1 convolution gives the output (phase in
radians). Padded convolutions keep the input size; H and W should be multiples of
:attr:`UNet.stride` (16), otherwise the skips are matched by zero padding or interpolation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError
from .frontend import FrontEndConfig, OffAxisFrontEnd, as_front_end_config
from .mobilenet import init_weights
from .sign import make_cells_positive

Upsampling = Literal["transposed", "bilinear"]


@dataclass
class UNetConfig:
    """Architecture of a :class:`UNet`; JSON round trip with :meth:`to_dict` / :meth:`from_dict`.

    Attributes
    ----------
    in_channels
        Channels of the input image (1: normalised hologram).
    out_channels
        Channels of the output (1: phase in radians).
    base_channels
        Channels of the first level; level k has ``base_channels * 2**k``.
    depth
        Number of downsamplings.
    upsampling
        ``"transposed"`` (2x2 transposed convolution, the original) or ``"bilinear"``.
    cells_positive
        Flip the sign of each output image so that its cells are positive
        (:mod:`napari_qpi.nn.sign`), for networks trained with the sign-free loss.
    front_end
        ``None`` (default): the network reads the normalised hologram. A
        :class:`~napari_qpi.nn.frontend.FrontEndConfig` (or its dict): the hologram is first
        demodulated at its detected (or given) sideband (:class:`~.frontend.OffAxisFrontEnd`),
        the U-Net runs on the field features at the native grid (``q`` times coarser) and its
        phase is interpolated back to the hologram grid. ``in_channels`` must then be 1.
    """

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 64
    depth: int = 4
    upsampling: Upsampling = "transposed"
    cells_positive: bool = False
    front_end: FrontEndConfig | None = None

    def __post_init__(self) -> None:
        self.front_end = as_front_end_config(self.front_end)
        if self.front_end is not None and self.in_channels != 1:
            raise ModelError(
                f"a front-end U-Net reads one hologram channel, not {self.in_channels}"
            )
        if min(self.in_channels, self.out_channels, self.base_channels, self.depth) < 1:
            raise ModelError(
                "in_channels, out_channels, base_channels and depth must be at least 1, got "
                f"{self.in_channels}, {self.out_channels}, {self.base_channels}, {self.depth}"
            )
        if self.upsampling not in ("transposed", "bilinear"):
            raise ModelError(
                f"upsampling must be 'transposed' or 'bilinear', got {self.upsampling!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields; ``front_end`` only when set (old cards stay as they were)."""
        data = asdict(self)
        data.pop("front_end")
        if self.front_end is not None:
            data["front_end"] = self.front_end.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Config from :meth:`to_dict` output; missing fields take their defaults."""
        if unknown := sorted(set(data) - {f.name for f in fields(cls)}):
            raise ModelError(f"unknown UNetConfig fields {unknown}")
        return cls(**data)


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 convolution, batch norm, ReLU) layers; the spatial size is kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Upsample by 2 while halving the channels, concatenate the skip, double convolution."""

    def __init__(self, in_channels: int, out_channels: int, upsampling: Upsampling) -> None:
        super().__init__()
        self.upsampling = upsampling
        if upsampling == "transposed":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        else:
            self.up = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.conv = double_conv(2 * out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """(B, in_channels, h, w) and skip (B, out_channels, H, W), H in {2h, 2h + 1} ->
        (B, out_channels, H, W)."""
        size = skip.shape[-2:]
        x = self.up(x)
        if self.upsampling == "bilinear":
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        elif x.shape[-2:] != size:
            x = F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net mapping (B, in_channels, H, W) inputs to (B, out_channels, H, W) outputs."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        self.front_end = None if config.front_end is None else OffAxisFrontEnd(config.front_end)
        first = config.in_channels if self.front_end is None else self.front_end.out_channels
        channels = [config.base_channels * 2**k for k in range(config.depth + 1)]
        self.down = nn.ModuleList(
            double_conv(c_in, c_out)
            for c_in, c_out in zip([first, *channels[:-1]], channels, strict=True)
        )
        self.up = nn.ModuleList(
            Up(c_in, c_out, config.upsampling)
            for c_in, c_out in zip(channels[:0:-1], channels[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(channels[0], config.out_channels, kernel_size=1)
        init_weights(self)
        init_weights(self.head, nonlinearity="linear", mode="fan_in")
        if config.front_end is not None and config.front_end.residual:
            nn.init.zeros_(self.head.weight)  # starts as the classical method
            nn.init.zeros_(self.head.bias)

    @property
    def stride(self) -> int:
        """Input height and width should be multiples of this (16 for depth 4)."""
        return 2**self.config.depth

    def forward(
        self, x: Tensor, fix_sign: bool | None = None, *, carrier: Tensor | None = None
    ) -> Tensor:
        """(B, in_channels, H, W) normalised holograms -> (B, out_channels, H, W) phase, radians.

        ``fix_sign`` applies the cells-positive sign rule (default: ``config.cells_positive``).
        ``carrier``: with a front end, the (B, 2) sideband centres in cycles per pixel; ``None``
        detects them (:func:`~napari_qpi.nn.frontend.detect_carriers`).
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(
                f"UNet expects a (batch, {self.config.in_channels}, height, width) tensor, "
                f"got shape {tuple(x.shape)}"
            )
        if self.front_end is None:
            if carrier is not None:
                raise InputError("this UNet has no front end; it takes no carrier")
            phase = self._body(x)
        else:
            native = self.front_end.prepare(x, carrier, self.stride)
            phase = self.front_end.restore(self._body(native.features), native, x.shape[-2:])
        if self.config.cells_positive if fix_sign is None else fix_sign:
            return make_cells_positive(phase)
        return phase

    def _body(self, x: Tensor) -> Tensor:
        """The U-Net proper: (B, C, H, W) -> (B, out_channels, H, W)."""
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = F.max_pool2d(x, kernel_size=2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)
