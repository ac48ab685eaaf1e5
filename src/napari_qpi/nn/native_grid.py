"""The native grid of an off-axis hologram, in torch: demodulation onto it and back.

The object field of an off-axis hologram is band-limited: the sideband filter reaches
``support`` cycles per pixel from the sideband centre (:func:`~napari_qpi.retrieval.fourier.
_filter_support`), so a crop of the spectrum ``2 support H + 2`` bins or more on a side holds all
of it, and its inverse transform samples the field on a coarser grid than the camera's without
losing anything. :class:`NativeGrid` describes such a grid (the crop's size and the hologram's;
its pitch in hologram pixels per native pixel), :func:`demodulate_torch` computes the field on it
(differentiable, batched), :func:`upsample_native` brings a map back to the hologram's pixels, and
:class:`NativeInput` carries a batch on its grid through a network
(:class:`~napari_qpi.nn.frontend.OffAxisFrontEnd`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..retrieval.fourier import crop_window


@dataclass(frozen=True)
class NativeGrid:
    """A native grid: ``crop`` = ``(h', w')`` frequency bins of an ``(H, W)`` hologram's spectrum.

    Native sample ``[j, i]`` lies at hologram pixel ``[j H / h', i W / w']``; the pitch
    ``(H / h', W / w')`` is in hologram pixels per native pixel (the crop factor ``q`` on both
    axes for an ``"integer"`` grid).
    """

    crop: tuple[int, int]
    shape: tuple[int, int]

    @classmethod
    def integer(cls, shape: tuple[int, int], q: int) -> NativeGrid:
        """Every ``q``-th pixel of a hologram whose sides ``q`` divides."""
        return cls((shape[0] // q, shape[1] // q), shape)

    @classmethod
    def tight(cls, shape: tuple[int, int], support: float) -> NativeGrid:
        """The smallest grid, at one pitch on both axes, that holds a filter reaching
        ``support`` cycles per pixel from the sideband centre (``2 support H + 2`` bins as
        :func:`~napari_qpi.retrieval.fourier.crop_factor`), never finer than the hologram."""
        pitch = max(1.0, min(n / (2.0 * support * n + 2.0) for n in shape))
        crop = tuple(min(n, math.ceil(n / pitch)) for n in shape)
        return cls((int(crop[0]), int(crop[1])), shape)

    @property
    def pitch(self) -> tuple[float, float]:
        """Hologram pixels per native pixel along y and x."""
        return self.shape[0] / self.crop[0], self.shape[1] / self.crop[1]

    def positions(self, dim: int) -> np.ndarray:
        """Hologram pixel coordinate of each native sample along ``dim`` (0: y, 1: x)."""
        return np.arange(self.crop[dim]) * self.pitch[dim]


def demodulate_torch(
    images: Tensor,
    centres: np.ndarray,
    grid: NativeGrid | int,
    radius_fraction: float,
    kind: str,
) -> Tensor:
    """Complex native-grid field (B, h', w') of real holograms (B, H, W), differentiably.

    ``centres`` (B, 2): sideband centres in cycles per pixel; ``grid`` the native grid (or an
    integer crop factor q dividing H and W). On an integer grid the field equals
    :func:`~napari_qpi.retrieval.fourier.demodulate` at ``"native"`` resolution (sub-bin ramp
    removed); amplitude in hologram units over the pixels per native pixel, as there.
    """
    batch, h, w = images.shape
    if not isinstance(grid, NativeGrid):
        grid = NativeGrid.integer((h, w), int(grid))
    (my, mx), (py, px) = grid.crop, grid.pitch
    spectrum = torch.fft.fft2(images - images.mean(dim=(-2, -1), keepdim=True))
    oy = np.fft.fftfreq(my, 1.0 / my).round().astype(np.int64)
    ox = np.fft.fftfreq(mx, 1.0 / mx).round().astype(np.int64)
    bins = [(round(fy * h), round(fx * w)) for fy, fx in centres.tolist()]
    rows = np.stack([np.mod(ky + oy, h) for ky, _ in bins])
    cols = np.stack([np.mod(kx + ox, w) for _, kx in bins])
    device = images.device
    index_b = torch.arange(batch, device=device)[:, None, None]
    crop = spectrum[
        index_b,
        torch.from_numpy(rows).to(device)[:, :, None],
        torch.from_numpy(cols).to(device)[:, None, :],
    ]
    subs = [
        (ky / h - fy, kx / w - fx)
        for (ky, kx), (fy, fx) in zip(bins, centres.tolist(), strict=True)
    ]
    windows = np.stack(
        [
            crop_window((my, mx), tuple(sub), (h, w), radius_fraction * math.hypot(*centre), kind)
            for sub, centre in zip(subs, centres.tolist(), strict=True)
        ]
    )
    crop = crop * torch.from_numpy(windows).to(device=device, dtype=crop.real.dtype)
    field = torch.fft.ifft2(crop) / (py * px)
    sub = torch.tensor(subs, dtype=torch.float64)
    ramp_y = torch.exp(2j * math.pi * sub[:, 0, None] * torch.from_numpy(grid.positions(0)))
    ramp_x = torch.exp(2j * math.pi * sub[:, 1, None] * torch.from_numpy(grid.positions(1)))
    ramp = (ramp_y[:, :, None] * ramp_x[:, None, :]).to(device=device, dtype=field.dtype)
    return field * ramp


def block_mean(images: Tensor, grid: NativeGrid) -> Tensor:
    """(B, C, H, W) averaged over the hologram pixels of each native pixel: ``q x q`` blocks on
    an integer grid, adaptive (overlapping) windows on a tight one."""
    if grid.crop == grid.shape:
        return images
    if grid.pitch[0].is_integer() and grid.pitch == grid.pitch[::-1]:
        return F.avg_pool2d(images, int(grid.pitch[0]))
    return F.adaptive_avg_pool2d(images, grid.crop)


def pad_to(x: Tensor, multiple: int, mode: str = "reflect") -> Tensor:
    """Pad (B, C, h, w) on the bottom and right to multiples of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return x
    if mode == "reflect" and not (pad_h < height and pad_w < width):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def upsample_native(
    phase: Tensor, factor: float | tuple[float, float], size: Sequence[int]
) -> Tensor:
    """Bilinear interpolation of a native-grid map (B, C, h, w) to the hologram grid ``size``.

    ``factor``: the grid's pitch (hologram pixels per native pixel; one number for both axes, or
    ``(y, x)``). Native sample ``[j, i]`` lies at hologram pixel ``[j py, i px]`` (as in the
    classical ``demodulate`` for an integer ``q``), so hologram pixel ``y`` reads native position
    ``y / py``; beyond the last native sample the map is held constant. A pitch of 1 only crops.
    """
    height, width = int(size[0]), int(size[1])
    pitch = (float(factor), float(factor)) if np.isscalar(factor) else tuple(map(float, factor))
    if pitch == (1.0, 1.0):
        return phase[..., :height, :width]
    padded = F.pad(phase, (0, 1, 0, 1), mode="replicate")
    for dim, length, step in ((-2, height, pitch[0]), (-1, width, pitch[1])):
        position = torch.arange(length, device=phase.device, dtype=torch.float64) / step
        low = position.floor().long().clamp(max=padded.shape[dim] - 2)
        weight = (position - low.to(position.dtype)).clamp(0.0, 1.0).to(phase.dtype)
        shape = (-1, 1) if dim == -2 else (1, -1)
        a = padded.index_select(dim, low)
        b = padded.index_select(dim, low + 1)
        padded = a + (b - a) * weight.reshape(shape)
    return padded


@dataclass
class NativeInput:
    """A batch on the native grid, ready for the network body.

    Attributes
    ----------
    features
        (B, C, h', w') front-end features padded to the body's stride (h' >= h).
    coords
        (B, 2, h', w') coordinate channels subsampled to the native grid (or None).
    grid
        The native grid: its size ``crop`` = (h, w) before padding, its pitch in hologram pixels
        per native pixel.
    base
        (B, 1, h', w') the classical phase (radians) the network's output is added to, padded as
        the features; None unless the front end is ``residual``.
    """

    features: Tensor
    coords: Tensor | None
    grid: NativeGrid
    base: Tensor | None = None


__all__ = [
    "NativeGrid",
    "NativeInput",
    "block_mean",
    "demodulate_torch",
    "pad_to",
    "upsample_native",
]
