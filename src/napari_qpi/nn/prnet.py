"""PRNet: a MobileNet-v2 encoder with a decoder whose skip connectivity is data.

The encoder gives nine endpoints E0..E8 (see :mod:`napari_qpi.nn.mobilenet`) and G, the global
average of E8. Decoder stage D_l works at the resolution of E_l and may read

    E_i for i >= l,   D_i for i > l,   G

so information only flows from coarse to fine. Each connection t contributes
``upsample(BN(conv(ReLU6(t))))`` with a 1x1 convolution, as in the SparseMask search space, or a
3x3 one (``branch_kernel``) that gives every connection a neighbourhood at its source's resolution
(for G always ``conv1x1`` with bias, broadcast over the image; a batch norm over 1x1 maps would fail
on a batch of one), the stage sums its contributions and applies a batch norm. The head applies
ReLU6 and a 1x1 convolution to one channel to the *output stage*, the lowest-numbered stage present
(D0 unless a search removed it), and upsamples bilinearly to the input size: the output is the
phase in radians. An optional :class:`NativeHead` adds a correction computed at the input grid
itself (``PRNetConfig.native_head``).

The connectivity is a JSON-friendly mapping from stage to inputs, e.g.::

    {"D0": ["E0", "E1", "D2"], "D2": ["E2", "E5", "G"], ...}

``None`` stands for the *supernet* in which every stage reads every allowed input (90
connections). Stages with no inputs, or whose output nothing reads, are dropped; so are
encoder stages deeper than the deepest endpoint read. The supernet with ``gated=True`` is the
search space of :mod:`napari_qpi.nn.sparsemask`; a searched network is an ungated PRNet with the
pruned connectivity.

Any input size runs, but features of different stages line up exactly only when H and W are
multiples of :attr:`PRNet.stride` (32 when E6..E8 or G are used): callers pad, e.g. with
:func:`napari_qpi.nn.pad_to_multiple`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError
from .frontend import FrontEndConfig, NativeInput, OffAxisFrontEnd, as_front_end_config
from .mobilenet import NUM_ENDPOINTS, MobileNetV2, init_weights
from .sign import make_cells_positive
from .sparsemask import Gate, drop_dangling

#: Decoder stages, one per encoder endpoint.
STAGES: tuple[str, ...] = tuple(f"D{l}" for l in range(NUM_ENDPOINTS))
GLOBAL = "G"

Connectivity = dict[str, list[str]]


def allowed_inputs(stage: str) -> list[str]:
    """Inputs stage ``D<l>`` may read, in canonical order: E_l..E8, D_(l+1)..D8, G."""
    level = STAGES.index(stage)
    return (
        [f"E{i}" for i in range(level, NUM_ENDPOINTS)]
        + [f"D{i}" for i in range(level + 1, NUM_ENDPOINTS)]
        + [GLOBAL]
    )


def supernet_connectivity() -> Connectivity:
    """The fully dense connectivity: every stage reads every allowed input."""
    return {stage: allowed_inputs(stage) for stage in STAGES}


def normalise_connectivity(
    connectivity: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
) -> Connectivity:
    """Validate a connectivity and bring it to canonical form.

    Parameters
    ----------
    connectivity
        ``{stage: [inputs]}``, or a list whose entry l holds the inputs of ``D<l>``.

    Returns
    -------
    dict
        Stages in increasing order, inputs in the order of :func:`allowed_inputs`, dangling stages
        removed (:func:`~napari_qpi.nn.sparsemask.drop_dangling`).

    Raises
    ------
    ModelError
        For an unknown stage, an input a stage may not read, a repeated input, or a connectivity
        that leaves no stage with inputs.
    """
    if not isinstance(connectivity, Mapping):
        connectivity = {f"D{l}": inputs for l, inputs in enumerate(connectivity)}
    canonical: Connectivity = {}
    for stage, inputs in connectivity.items():
        if stage not in STAGES:
            raise ModelError(f"unknown decoder stage {stage!r} in connectivity; stages are D0..D8")
        if isinstance(inputs, str) or not isinstance(inputs, Sequence):
            raise ModelError(f"the inputs of {stage} must be a list of names, got {inputs!r}")
        allowed = allowed_inputs(stage)
        if bad := [name for name in inputs if name not in allowed]:
            raise ModelError(
                f"{stage} cannot read {bad}: a stage D<l> reads E<i> for i >= l, D<i> for i > l "
                f"and G, i.e. {allowed}"
            )
        if len(set(inputs)) != len(inputs):
            raise ModelError(f"{stage} lists an input twice: {list(inputs)}")
        canonical[stage] = [name for name in allowed if name in inputs]
    canonical = drop_dangling(canonical)
    if not canonical:
        raise ModelError("the connectivity leaves no decoder stage with inputs")
    return canonical


@dataclass
class PRNetConfig:
    """Architecture of a :class:`PRNet`; JSON round trip with :meth:`to_dict` / :meth:`from_dict`.

    Attributes
    ----------
    width
        Width multiplier of the MobileNet-v2 encoder (1.0 in the paper; 0.5 or less for CPU).
    in_channels
        Channels of the input image, not counting coordinate channels (1: normalised hologram).
    decoder_channels
        Channels of every decoder stage.
    connectivity
        ``{stage: [inputs]}`` (see the module docstring), or ``None`` for the full supernet.
        Normalised on construction (canonical order, dangling stages removed).
    coord_channels
        Append two channels with the pixel coordinates (y, x), from -1 to 1 across the tensor
        given to :meth:`PRNet.forward` (after any padding), so the network can learn
        position-dependent corrections such as a background tilt. Tiles of a larger image see
        their own coordinates, not the image's.
    gated
        Multiply each connection by a SparseMask gate (search mode).
    cells_positive
        Flip the sign of each output image so that its cells are positive
        (:mod:`napari_qpi.nn.sign`): for networks trained with the sign-free loss, which
        choose their own sign convention.
    stage_refine
        After its sum, each stage applies a residual depthwise-separable 3x3 block
        (:class:`RefineBlock`). Without it the decoder has no spatial filter of its own: a stage
        is a sum of upsampled 1x1 projections, and any detail finer than the deepest
        connection's stride must come from shallow encoder features as they are.
    branch_kernel
        Kernel side of each connection's convolution (1 or 3; G is always 1x1). With 1 a
        shallow tap can only pass its features on as they are: at stride 2 or 4 they still carry
        the fringes, and turning fringes into phase needs a neighbourhood of about a fringe period.
        With 3 each connection sees a 3x3 neighbourhood at its own resolution (a search then keeps
        shallow taps, but the retrained net was no better: docs/searched_models.md).
    native_head
        Channels of a head at the network's input grid (the native grid with a front end), or 0
        (default: the head reads the output stage, at half that grid or coarser, and upsamples
        bilinearly). With ``k > 0`` a :class:`NativeHead` adds a correction computed at the
        input grid from the output stage (projected to ``k`` channels and upsampled) and the
        input itself (the front end's cos / sin / log amplitude / classical phase): detail
        finer than two input pixels no longer has to pass through the stride-2 encoder.
    front_end
        ``None`` (default): the encoder reads the normalised hologram. A
        :class:`~napari_qpi.nn.frontend.FrontEndConfig` (or its dict): the hologram is first
        demodulated at its detected (or given) sideband (:class:`~.frontend.OffAxisFrontEnd`),
        the network runs on the field features at the native grid (``q`` times coarser;
        coordinate channels subsampled to it) and its phase is interpolated back to the hologram
        grid. ``in_channels`` must then be 1 (the hologram).
    """

    width: float = 1.0
    in_channels: int = 1
    decoder_channels: int = 64
    connectivity: Connectivity | None = None
    coord_channels: bool = False
    gated: bool = False
    cells_positive: bool = False
    stage_refine: bool = False
    branch_kernel: int = 1
    native_head: int = 0
    front_end: FrontEndConfig | None = None

    def __post_init__(self) -> None:
        self.front_end = as_front_end_config(self.front_end)
        if self.front_end is not None and self.in_channels != 1:
            raise ModelError(
                f"a front-end PRNet reads one hologram channel, not {self.in_channels}"
            )
        if not self.width > 0:
            raise ModelError(f"width must be positive, got {self.width}")
        if self.in_channels < 1 or self.decoder_channels < 1:
            raise ModelError(
                f"in_channels and decoder_channels must be at least 1, got {self.in_channels} "
                f"and {self.decoder_channels}"
            )
        if self.branch_kernel not in (1, 3):
            raise ModelError(f"branch_kernel must be 1 or 3, got {self.branch_kernel}")
        if self.native_head < 0:
            raise ModelError(
                f"native_head must be 0 (none) or a channel count, got {self.native_head}"
            )
        if self.connectivity is not None:
            self.connectivity = normalise_connectivity(self.connectivity)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields; ``front_end`` and ``native_head`` only when set (old cards
        stay as they were)."""
        data = asdict(self)
        data.pop("front_end")
        if not self.native_head:
            data.pop("native_head")
        if self.front_end is not None:
            data["front_end"] = self.front_end.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PRNetConfig:
        """Config from :meth:`to_dict` output; missing fields take their defaults."""
        if unknown := sorted(set(data) - {f.name for f in fields(cls)}):
            raise ModelError(f"unknown PRNetConfig fields {unknown}")
        return cls(**data)


class DecoderStage(nn.Module):
    """One decoder stage: the (gated) sum of its input connections, then a batch norm.

    Parameters
    ----------
    name
        Stage name, ``"D<l>"``.
    in_channels
        Channels of each input, by name; the stage reads them in this order.
    channels
        Output channels.
    gated
        Multiply each connection by a :class:`~napari_qpi.nn.sparsemask.Gate`.
    refine
        Follow the sum by a :class:`RefineBlock`.
    kernel
        Kernel side of the connections' convolutions (G's is always 1).
    """

    def __init__(
        self,
        name: str,
        in_channels: Mapping[str, int],
        channels: int,
        gated: bool = False,
        refine: bool = False,
        kernel: int = 1,
    ) -> None:
        super().__init__()
        self.inputs = tuple(in_channels)
        self.branches = nn.ModuleDict(
            {
                source: _branch(c, channels, norm=source != GLOBAL, kernel=kernel)
                for source, c in in_channels.items()
            }
        )
        self.gate = Gate(name, self.inputs) if gated else None
        self.norm = nn.BatchNorm2d(channels)
        self.refine = RefineBlock(channels) if refine else None

    def forward(self, features: Mapping[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Stage output (B, channels, *size) from its inputs ``features[name]`` (B, C, h, w).

        Inputs are no larger than ``size``. Bilinear upsampling commutes with the sum, so
        contributions of equal resolution are summed before they are upsampled once.
        """
        weights = self.gate() if self.gate is not None else None
        in_place = not torch.is_grad_enabled()  # no graph to keep: reuse the branches' outputs
        by_size: dict[torch.Size, Tensor] = {}
        for k, name in enumerate(self.inputs):
            y = self.branches[name](features[name])
            if weights is not None:
                y = weights[k] * y
            key = y.shape[-2:]
            by_size[key] = _add(by_size[key], y, in_place) if key in by_size else y
        total: Tensor | None = None
        for y in by_size.values():
            y = _resize(y, size)
            total = y if total is None else _add(total, y, in_place)
        assert total is not None  # a stage has at least one input
        out = self.norm(total)
        return out if self.refine is None else self.refine(out)

    def fold_norm(self) -> bool:
        """Fold the stage's eval-mode batch norm into its branches' convolutions, in place.

        In eval mode the norm is a per-channel affine map ``s * z + t`` of the stage's sum ``z``.
        Bilinear upsampling and the broadcast of ``G`` are linear and keep constants, so scaling
        each branch's last convolution (weights and bias) by ``s`` and adding ``t`` to one bias
        gives the same output without a pass over the stage's feature map. Only for an ungated
        stage whose branches end in a convolution with a bias, i.e. after
        :func:`~napari_qpi.nn.inference.fold_batch_norms` (a gate would scale ``t`` too).
        Returns whether the norm was folded; the stage's norm is an ``nn.Identity`` afterwards.
        """
        norm = self.norm
        if (
            self.gate is not None
            or not isinstance(norm, nn.BatchNorm2d)
            or norm.training
            or norm.running_mean is None
            or norm.running_var is None
        ):
            return False
        convs = [_last_conv(self.branches[name]) for name in self.inputs]
        if any(conv is None or conv.bias is None for conv in convs):
            return False
        with torch.no_grad():
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shift = -norm.running_mean * scale
            if norm.bias is not None:
                shift = shift + norm.bias
            for index, conv in enumerate(convs):
                assert conv is not None and conv.bias is not None
                conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
                conv.bias.mul_(scale.to(conv.bias.dtype))
                if index == 0:
                    conv.bias.add_(shift.to(conv.bias.dtype))
        self.norm = nn.Identity()
        return True


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
    """

    def __init__(self, stage_channels: int, input_channels: int, channels: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.ReLU6(), nn.Conv2d(stage_channels, channels, 1))
        self.body = nn.Sequential(
            nn.Conv2d(channels + input_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        init_weights(self)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, stage: Tensor, x: Tensor) -> Tensor:
        """(B, 1, H, W) correction in radians from the stage (B, C, h, w) and input (B, I, H, W)."""
        up = F.interpolate(
            self.project(stage), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.body(torch.cat([up, x], dim=1))


class PRNet(nn.Module):
    """Phase retrieval network: hologram in, phase (radians) out.

    Parameters
    ----------
    config
        Architecture; the default is the ungated width-1.0 supernet.

    Attributes
    ----------
    connectivity
        The connectivity actually built (the supernet's when ``config.connectivity`` is None).
    output_stage
        The stage the head reads: the lowest-numbered stage present.
    """

    def __init__(self, config: PRNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PRNetConfig()
        connectivity = config.connectivity or supernet_connectivity()
        self.connectivity = {stage: list(inputs) for stage, inputs in connectivity.items()}
        read = {name for inputs in self.connectivity.values() for name in inputs}
        self.uses_global = GLOBAL in read
        levels = [STAGES.index(stage) for stage in self.connectivity]
        levels += [int(name[1:]) for name in read if name.startswith("E")]
        if self.uses_global:
            levels.append(NUM_ENDPOINTS - 1)
        self.front_end = None if config.front_end is None else OffAxisFrontEnd(config.front_end)
        first = config.in_channels if self.front_end is None else self.front_end.out_channels
        inputs = first + 2 * config.coord_channels
        self.encoder = MobileNetV2(config.width, inputs, num_stages=max(levels) + 1)
        channels = {f"E{i}": c for i, c in enumerate(self.encoder.channels)}
        channels[GLOBAL] = self.encoder.channels[-1]
        channels |= {stage: config.decoder_channels for stage in STAGES}
        self.decoder = nn.ModuleDict(
            {
                stage: DecoderStage(
                    stage,
                    {name: channels[name] for name in self.connectivity[stage]},
                    config.decoder_channels,
                    config.gated,
                    config.stage_refine,
                    config.branch_kernel,
                )
                for stage in reversed(self.connectivity)
            }
        )
        self.output_stage = next(iter(self.connectivity))
        self.head = nn.Sequential(nn.ReLU6(), nn.Conv2d(config.decoder_channels, 1, kernel_size=1))
        init_weights(self.decoder)
        for module in self.decoder.modules():
            if isinstance(module, RefineBlock):
                nn.init.zeros_(module.body[-1].weight)
        init_weights(self.head, nonlinearity="linear", mode="fan_in")
        if config.front_end is not None and config.front_end.residual:
            nn.init.zeros_(self.head[-1].weight)  # starts as the classical method
            nn.init.zeros_(self.head[-1].bias)
        self.native_head = (
            NativeHead(config.decoder_channels, inputs, config.native_head)
            if config.native_head
            else None
        )

    @property
    def stride(self) -> int:
        """Input height and width should be multiples of this (32 for the supernet)."""
        return self.encoder.strides[-1]

    @property
    def connections(self) -> list[tuple[str, str]]:
        """Every (stage, input) connection of the decoder."""
        return [(stage, name) for stage, inputs in self.connectivity.items() for name in inputs]

    def forward(
        self,
        x: Tensor,
        fix_sign: bool | None = None,
        *,
        coords: Tensor | None = None,
        global_feature: Tensor | None = None,
        carrier: Tensor | None = None,
    ) -> Tensor:
        """Phase of a batch of holograms.

        Parameters
        ----------
        x
            (B, in_channels, H, W) normalised holograms (or other inputs the net was trained on).
        fix_sign
            Apply the cells-positive sign rule to each image; default: ``config.cells_positive``.
            Tiles of one image are run with ``False`` and the rule applied to the whole image.
        coords, global_feature
            For a tile of a larger image (``napari_qpi.retrieval.deep``): the whole image's
            coordinate channels cut to the tile, (B, 2, H, W), and the whole image's ``G``
            (B, C, 1, 1; the mean of :meth:`last_endpoint`), so every tile sees the field as
            the whole image does.
        carrier
            With a front end: (B, 2) sideband centres in cycles per pixel (``None`` detects
            them, :func:`~napari_qpi.nn.frontend.detect_carriers`).

        Returns
        -------
        Tensor
            (B, 1, H, W) phase in radians.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(
                f"PRNet expects a (batch, {self.config.in_channels}, height, width) tensor, "
                f"got shape {tuple(x.shape)}"
            )
        size = x.shape[-2:]
        x, coords, native = self._native(x, coords, carrier)
        if self.config.coord_channels:
            x = torch.cat([x, coordinate_grid(x) if coords is None else coords], dim=1)
        endpoints = self.encoder(x)
        features = {f"E{i}": e for i, e in enumerate(endpoints)}
        if self.uses_global:
            mean = endpoints[-1].mean(dim=(-2, -1), keepdim=True)
            features[GLOBAL] = mean if global_feature is None else global_feature
        for stage, block in self.decoder.items():
            features[stage] = block(features, endpoints[STAGES.index(stage)].shape[-2:])
        stage = features[self.output_stage]
        phase = F.interpolate(
            self.head(stage), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        if self.native_head is not None:
            phase = phase + self.native_head(stage, x)
        if native is not None:  # without a front end the input grid is the hologram's
            phase = OffAxisFrontEnd.restore(phase, native, size)
        if self.config.cells_positive if fix_sign is None else fix_sign:
            return make_cells_positive(phase)
        return phase

    def last_endpoint(
        self, x: Tensor, *, coords: Tensor | None = None, carrier: Tensor | None = None
    ) -> Tensor:
        """The last encoder endpoint of a batch (``G`` is its mean over the image)."""
        x, coords, _ = self._native(x, coords, carrier)
        if self.config.coord_channels:
            x = torch.cat([x, coordinate_grid(x) if coords is None else coords], dim=1)
        return self.encoder(x)[-1]

    def _native(
        self, x: Tensor, coords: Tensor | None, carrier: Tensor | None
    ) -> tuple[Tensor, Tensor | None, NativeInput | None]:
        """Without a front end, the input as it is; with one, its features at the native grid
        (padded to the stride), the coordinates subsampled to it, and the grid's description."""
        if self.front_end is None:
            if carrier is not None:
                raise InputError("this PRNet has no front end; it takes no carrier")
            return x, coords, None
        if self.config.coord_channels and coords is None:
            coords = coordinate_grid(x)
        native = self.front_end.prepare(x, carrier, self.stride, coords)
        return native.features, native.coords, native


def coordinate_grid(x: Tensor) -> Tensor:
    """(B, 2, H, W) y and x pixel coordinates in [-1, 1] for a batch x of shape (B, C, H, W)."""
    height, width = x.shape[-2:]
    y = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device)
    x_ = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device)
    grid = torch.stack(torch.meshgrid(y, x_, indexing="ij"))
    return grid.expand(x.shape[0], -1, -1, -1)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (only those with gradients if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _branch(in_channels: int, out_channels: int, norm: bool, kernel: int = 1) -> nn.Sequential:
    """ReLU6 and a ``kernel`` x ``kernel`` convolution (same size out), then a batch norm.

    Without a norm (for 1x1 maps such as G) the convolution is 1x1 with a bias.
    """
    if not norm:
        return nn.Sequential(nn.ReLU6(), nn.Conv2d(in_channels, out_channels, kernel_size=1))
    return nn.Sequential(
        nn.ReLU6(),
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _last_conv(branch: nn.Module) -> nn.Conv2d | None:
    """The convolution a branch ends with (``nn.Identity`` left by a folded norm skipped)."""
    layers = [layer for layer in branch.children() if not isinstance(layer, nn.Identity)]
    return layers[-1] if layers and isinstance(layers[-1], nn.Conv2d) else None


def _add(total: Tensor, y: Tensor, in_place: bool) -> Tensor:
    """``total + y``; into ``total`` when allowed and ``total`` is a tensor of its own (not a
    broadcast view, whose elements share memory) of the sum's shape."""
    if in_place and total.shape == y.shape and 0 not in total.stride():
        return total.add_(y)
    return total + y


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """(B, C, h, w) -> (B, C, *size): broadcast a 1x1 map, upsample bilinearly otherwise."""
    if x.shape[-2:] == size:
        return x
    if x.shape[-2:] == (1, 1):
        return x.expand(*x.shape[:2], *size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
