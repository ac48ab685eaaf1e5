"""Tiles of a hologram for a network that cannot take it whole, blended so seams do not show.

:func:`run_tiles` cuts a normalised (N, C, H, W) batch, padded by reflection to the network's
stride, into overlapping tiles on the stride grid and blends their outputs. Over the ``overlap``
pixels at a tile's edge facing a neighbour the weight is 0 for the outer half (a halo: the
network's view there is cut short by the tile's border) and a raised cosine over the inner
half. A PRNet sees the field as the whole image does (:class:`FieldContext`): the whole image's
coordinate channels cut to the tile, and the whole image's global feature ``G``. A network with an
off-axis front end (:mod:`napari_qpi.nn.frontend`) gets each plane's sideband centre with every
tile of it; it demodulates each tile on its own, and its tiles see their own coordinates and ``G``
(a front end runs the network at the native grid, ``q^2`` fewer pixels, so whole fields are the
rule: ``retrieve_deep`` tiles only when memory says so).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..nn.sign import cells_positive_sign

Progress = Callable[[int, int], None]


def axis_plan(length: int, tile: int, overlap: int, stride: int) -> tuple[int, int, list[int]]:
    """Padded length, tile length and tile starts along one axis.

    The axis is padded to a multiple of ``stride`` either way, so the image border sees the same
    context whether it is tiled or not. If that is no longer than ``tile`` (a multiple of
    ``stride``) it is one tile. Otherwise tiles of ``tile`` pixels start at multiples of
    ``stride`` (so pooling grids line up with the whole image's) spread evenly from 0 to
    ``padded - tile``, adjacent tiles overlapping by at least ``overlap`` where the tile allows.
    """
    padded = -(-length // stride) * stride
    if padded <= tile:
        return padded, padded, [0]
    span, size = (padded - tile) // stride, tile // stride
    step = size - min(-(-overlap // stride), size - 1)
    count = 1 + -(-span // step)
    starts = np.linspace(0, span, count).round().astype(int) * stride
    return padded, tile, [int(s) for s in starts]


def ramp(size: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D blending weights where a neighbour exists: over the ``overlap`` pixels of the edge,
    zero for the outer half (a halo: the network's view there is cut short by the tile's border)
    and a raised cosine over the inner half."""
    weights = np.ones(size, dtype=np.float32)
    if overlap > 0:
        halo = overlap // 2
        blend = max(overlap - halo, 1)
        edge = np.zeros(overlap, dtype=np.float32)
        edge[halo:] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap - halo) + 0.5) / blend)
        if rise:
            weights[:overlap] = edge
        if fall:
            weights[-overlap:] = edge[::-1]
    return weights


class FieldContext:
    """What a tile of a PRNet needs to see the field as the whole image does.

    A PRNet reading coordinate channels gets the whole padded image's coordinates cut to the
    tile instead of its own [-1, 1] grid; one pooling globally (``G``) gets the whole image's
    ``G``, estimated in a first pass as the mean of the tiles' ``G`` weighted by their share of
    the blending weights. Without this each tile sees its own field, and tiles disagree.
    """

    def __init__(self, module: nn.Module, shape: tuple[int, int], device: torch.device) -> None:
        config = getattr(module, "config", None)
        able = callable(getattr(module, "last_endpoint", None))
        able = able and getattr(module, "front_end", None) is None
        self.module = module
        self.uses_coords = able and bool(getattr(config, "coord_channels", False))
        self.uses_global = able and bool(getattr(module, "uses_global", False))
        self.device = device
        flags = (("coords", self.uses_coords), ("G", self.uses_global))
        self.used = [name for name, on in flags if on]
        self.grid: torch.Tensor | None = None
        if self.uses_coords:
            from ..nn.prnet import coordinate_grid

            self.grid = coordinate_grid(torch.empty((1, 1, *shape), device=device))
        self.global_: dict[int, torch.Tensor] = {}

    def _coords(self, chunk: list[tuple[int, int, int]], size: tuple[int, int]) -> torch.Tensor:
        assert self.grid is not None
        th, tw = size
        return torch.cat([self.grid[..., y : y + th, x : x + tw] for _, y, x in chunk])

    def arguments(self, chunk: list[tuple[int, int, int]], size: tuple[int, int]) -> dict:
        """Keyword arguments of the network call for a chunk of ``(plane, y, x)`` tiles."""
        extra: dict[str, torch.Tensor] = {}
        if self.uses_coords:
            extra["coords"] = self._coords(chunk, size)
        if self.uses_global:
            extra["global_feature"] = torch.cat([self.global_[i] for i, _, _ in chunk])
        return extra

    def measure_global(
        self,
        batch: np.ndarray,
        windows: dict[tuple[int, int], np.ndarray],
        weight: np.ndarray,
        batch_size: int,
        calls: int,
        progress: Progress | None,
    ) -> None:
        """First pass: each plane's ``G`` as the mean of its tiles' last endpoints, blended.

        Each endpoint cell counts with the tile's share of the blending weight over the pixels
        it covers, so the halo of a tile (weight 0) does not count and the result is the mean of
        the blended endpoint map: the whole image's ``G`` where the tiles agree with it.
        """
        tile_h, tile_w = next(iter(windows.values())).shape
        jobs = [(i, y, x) for i in range(batch.shape[0]) for (y, x) in windows]
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, float] = {}
        for done in range(0, len(jobs), batch_size):
            chunk = jobs[done : done + batch_size]
            tiles = np.stack([batch[i, :, y : y + tile_h, x : x + tile_w] for i, y, x in chunk])
            inputs = torch.from_numpy(tiles).to(self.device)
            coords = self._coords(chunk, (tile_h, tile_w)) if self.uses_coords else None
            endpoints = self.module.last_endpoint(inputs, coords=coords)
            for (i, y, x), endpoint in zip(chunk, endpoints, strict=True):
                share = windows[(y, x)] / weight[y : y + tile_h, x : x + tile_w]
                h, w = endpoint.shape[-2:]
                cells = share.reshape(h, tile_h // h, w, tile_w // w).mean(axis=(1, 3))
                cells_t = torch.from_numpy(np.ascontiguousarray(cells)).to(endpoint)
                sums[i] = sums.get(i, 0) + (endpoint * cells_t).sum(dim=(-2, -1))
                counts[i] = counts.get(i, 0.0) + float(cells.sum())
            if progress is not None:
                progress(min(done + batch_size, len(jobs)), calls)
        self.global_ = {i: (sums[i] / counts[i])[None, :, None, None] for i in sums}


def run_tiles(
    module: nn.Module,
    batch: np.ndarray,
    *,
    device: torch.device,
    tile: int | None,
    overlap: int,
    stride: int,
    batch_size: int,
    progress: Progress | None,
    carriers: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, H, W) network output for a normalised (N, C, H, W) batch, tiled and blended.

    ``carriers``: (N, 2) sideband centres (cycles per pixel) of a front-end network's planes,
    passed with each tile as ``carrier``.

    A network that fixes its output's sign (``config.cells_positive``) runs its tiles without the
    rule, which is applied once to each blended plane: a tile holding only background would
    otherwise take a random sign.
    """
    fix_sign = bool(getattr(getattr(module, "config", None), "cells_positive", False))
    call = functools.partial(module, fix_sign=False) if fix_sign else module
    n, _, height, width = batch.shape
    whole = -(-max(height, width) // stride) * stride
    limit = whole if not tile else max(stride, tile // stride * stride)
    overlap = min(overlap, limit // 2)
    pad_h, tile_h, ys = axis_plan(height, limit, overlap, stride)
    pad_w, tile_w, xs = axis_plan(width, limit, overlap, stride)
    if (pad_h, pad_w) != (height, width):
        batch = np.pad(
            batch, ((0, 0), (0, 0), (0, pad_h - height), (0, pad_w - width)), mode="reflect"
        )
    windows = {
        (y, x): np.outer(
            ramp(tile_h, overlap, y > 0, y + tile_h < pad_h),
            ramp(tile_w, overlap, x > 0, x + tile_w < pad_w),
        )
        for y in ys
        for x in xs
    }
    total = np.zeros((n, pad_h, pad_w), dtype=np.float32)
    weight = np.zeros((pad_h, pad_w), dtype=np.float32)
    for (y, x), window in windows.items():
        weight[y : y + tile_h, x : x + tile_w] += window
    jobs = [(i, y, x) for i in range(n) for y in ys for x in xs]
    context = FieldContext(module, (pad_h, pad_w), device) if len(windows) > 1 else None
    calls = len(jobs) * (2 if context is not None and context.uses_global else 1)
    if context is not None and context.uses_global:
        context.measure_global(batch, windows, weight, batch_size, calls, progress)
    first = calls - len(jobs)
    for done in range(0, len(jobs), batch_size):
        chunk = jobs[done : done + batch_size]
        tiles = np.stack([batch[i, :, y : y + tile_h, x : x + tile_w] for i, y, x in chunk])
        inputs = torch.from_numpy(tiles).to(device)
        extra = {} if context is None else context.arguments(chunk, tiles.shape[-2:])
        if carriers is not None:
            extra["carrier"] = torch.from_numpy(carriers[[i for i, _, _ in chunk]])
        output = call(inputs, **extra)
        if tuple(output.shape) != (len(chunk), 1, tile_h, tile_w):
            raise ModelError(
                f"The network returned shape {tuple(output.shape)} for input "
                f"{tuple(tiles.shape)}; expected ({len(chunk)}, 1, {tile_h}, {tile_w})."
            )
        phase = output[:, 0].float().cpu().numpy()
        for (i, y, x), plane in zip(chunk, phase, strict=True):
            total[i, y : y + tile_h, x : x + tile_w] += plane * windows[(y, x)]
        if progress is not None:
            progress(first + min(done + batch_size, len(jobs)), calls)
    total /= weight
    total = np.ascontiguousarray(total[:, :height, :width])
    if fix_sign:
        total *= cells_positive_sign(torch.from_numpy(total[:, None])).numpy()[:, 0]
    plan = {
        "tile": [tile_h, tile_w],
        "overlap": overlap if len(windows) > 1 else 0,
        "tiles": len(windows),
        "padded_shape": [pad_h, pad_w],
    }
    if context is not None and context.used:
        plan["field_context"] = context.used
    return total, plan


__all__ = ["FieldContext", "Progress", "axis_plan", "ramp", "run_tiles"]
