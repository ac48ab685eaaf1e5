"""Off-axis demodulation inside a network: the classical front end, in torch, differentiable.

An off-axis hologram ``I = |R + O|^2`` with a tilted reference ``R = a_r exp(+i 2 pi f_c . r)``
holds the object field ``O`` in a sideband of its spectrum, at ``-f_c`` (it carries ``+phi``) and,
conjugated, at ``+f_c`` (see ``docs/dev/CONTRACTS.md``). :class:`OffAxisFrontEnd` does what
:func:`napari_qpi.retrieval.fourier.demodulate` does, in torch and batched:

1. ``fft2`` of each hologram (mean removed);
2. a crop of the spectrum centred on the nearest bin to the sideband, one size per batch (the
   finest its sidebands need): ``(H/q, W/q)`` bins on the ``"integer"`` grid, ``q`` the crop
   factor of :func:`~napari_qpi.retrieval.fourier.crop_factor` (the largest integer
   downsampling dividing both sides whose grid holds the whole filter, as the classical method),
   or, on the ``"tight"`` grid, the smallest crop that holds the filter
   (:class:`~napari_qpi.nn.native_grid.NativeGrid`);
3. the classical smooth filter (:func:`~napari_qpi.retrieval.fourier.filter_window`, radius
   ``radius_fraction * |f_c|``, built in numpy once per call and converted);
4. the crop shifted to DC by construction and inverse transformed: the band-limited complex field
   at the *native grid*, sample ``[j, i]`` at hologram pixel ``[j H / h', i W / w']``
   (``[q j, q i]`` on the integer grid), with the sub-bin part of the carrier removed as a phase
   ramp (no residual tilt for a carrier known exactly).

The network then sees, per native pixel, ``cos(phi_w)`` and ``sin(phi_w)`` of the wrapped phase
``phi_w = angle(U)`` (dimensionless), ``log(|U| / mean|U|)`` (natural log of the amplitude relative
to its mean over the image, dimensionless, 0 for a uniform field) and optionally the hologram
averaged over the hologram pixels of each native pixel. The fringe period and direction are gone
from the input: they are measured, not learned.

The sideband centre (cycles per pixel, ``(fy, fx)`` in the ``fftfreq`` convention) comes from
outside the graph: :func:`detect_carriers` runs
:func:`~napari_qpi.retrieval.fourier.find_sideband` (numpy) on each hologram, which without
metadata picks the sideband with ``fx >= 0``; its phase is then ``+phi`` or ``-phi`` depending on
the direction of the carrier, exactly as for the classical method before its sign step. Mirroring
the carrier (``f_c -> -f_c``) therefore flips the sign of the ``sin`` channel and leaves the
others unchanged; given the sideband that carries ``+phi`` (the acquisition's
``carrier_cycles_per_px``) the features do not depend on the carrier direction at all. Networks
trained here see detected sidebands and learn the sign (cells positive), as before.

Everything after the carrier is differentiable with respect to the hologram (``fft2``, gathers,
products, ``ifft2``), so a front-end network trains end to end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ModelError, SidebandError
from ..retrieval.fourier import (
    DEFAULT_RADIUS_FRACTION,
    FILTERS,
    MIN_CARRIER_CYCLES_PER_PX,
    Sideband,
    _filter_support,
    as_image,
    crop_factor,
    find_sideband,
    fringe_peak,
    half_spectrum,
    refine_peak,
)
from .native_grid import (
    NativeGrid,
    NativeInput,
    block_mean,
    demodulate_torch,
    pad_to,
    upsample_native,
)

#: Feature channels a front end can give, see :class:`FrontEndConfig`.
CHANNELS: tuple[str, ...] = (
    "cos",
    "sin",
    "log_amplitude",
    "hologram",
    "classical",
    "classical_dy",
    "classical_dx",
    "classical_cos",
    "classical_sin",
)
DEFAULT_CHANNELS: tuple[str, ...] = ("cos", "sin", "log_amplitude")
#: Channels computed from the classical phase (:func:`classical_native`).
CLASSICAL_CHANNELS: tuple[str, ...] = tuple(name for name in CHANNELS if "classical" in name)
#: Amplitude floor relative to the mean amplitude: keeps ``cos``, ``sin`` and the log finite and
#: differentiable where the field vanishes (a phase vortex).
AMPLITUDE_FLOOR = 1e-3
#: Polynomial order of the background the ``classical`` channel removes (the classical default).
CLASSICAL_BACKGROUND_ORDER = 2
#: Most pixels on a side of the subgrid :func:`classical_native` classifies background pixels on
#: (:func:`~napari_qpi.retrieval.background.background_mask` ``grid``; the classical method uses
#: 256). The polynomial is still fitted at the full native grid. At 256^2 (native grid 119^2 at
#: 3 px fringes) the mask takes 7.6 ms instead of 18.5 and the front end 16 instead of 23; the
#: shipped networks' held-out scores and real-corpus agreement do not change (to 0.01 dB / 0.01)
#: and their phase moves by 0.0005 rad RMS (measured 2026-12-07, docs/frontend.md).
CLASSICAL_MASK_GRID = 64
#: Native grids a front end can use, see :class:`FrontEndConfig` ``grid``.
GRIDS: tuple[str, ...] = ("integer", "tight")
#: Sideband of the probe that sizes memory (:func:`probe_arguments`): far enough from DC that the
#: crop factor is 1 at the probe's size, so the estimate covers the finest native grid.
PROBE_CARRIER: tuple[float, float] = (0.0, 0.4)


@dataclass
class FrontEndConfig:
    """Settings of an :class:`OffAxisFrontEnd`; JSON round trip with :meth:`to_dict`.

    Attributes
    ----------
    filter
        Sideband filter, as the classical method: ``"smooth_disk"`` (default), ``"disk"`` or
        ``"gaussian"``.
    radius_fraction
        Filter radius as a fraction of the carrier distance ``|f_c|`` (0.7, the classical
        default: cycles per pixel ``0.7 |f_c|``).
    channels
        Features given to the network, in order, from :data:`CHANNELS`: ``"cos"`` / ``"sin"`` of
        the wrapped phase, ``"log_amplitude"``, ``"hologram"`` (the input averaged over
        ``q x q`` blocks), ``"classical"`` (the classical method's unwrapped, background-corrected
        phase at the native grid, radians, cells positive: :func:`classical_native`), and views of
        that phase which do not depend on its level or size (:func:`classical_views`):
        ``"classical_dy"`` / ``"classical_dx"`` (its forward differences, radians per native
        pixel: the local slope, blind to the offset, with the unwrapping's slips) and
        ``"classical_cos"`` / ``"classical_sin"`` (cos / sin of it: the wrapped phase in the
        classical method's frame, background removed and cells positive, bounded to [-1, 1]).
    residual
        The network predicts a correction: its output (radians) is added to the classical phase
        (:func:`classical_native`), and its last layer starts at zero, so an untrained model *is*
        the classical method (its background pixels classified on a coarser grid: a few mrad).
        The network need not read the ``"classical"`` channel itself: the absolute phase is
        outside the training range on cells thicker than it saw (12.6 rad HL60 cells against
        0.5-7 rad), so a residual network that reads only level-free channels cannot react to
        it.
    grid
        The native grid the network runs at (:class:`NativeGrid`). ``"integer"``: every
        ``q``-th hologram pixel, ``q`` the largest integer dividing both sides whose grid holds
        the filter (:func:`~napari_qpi.retrieval.fourier.crop_factor`, as the classical method),
        so fringes of 2-3.1 px and sides that share no divisor give ``q = 1``: the network runs
        at the hologram's full grid although the field holds no detail finer than twice the
        filter's support. ``"tight"``: the smallest grid that holds the filter, at a pitch of
        ``H / h'`` hologram pixels (not an integer): the same information in fewer pixels
        (3.5x fewer at 3 px fringes), so the network costs less and sees cells at the same size
        in native pixels whatever the fringe period and the field's side.
    background_order
        Total degree (0-5) of the polynomial background :func:`classical_native` fits and
        removes from the classical phase (radians; 2 removes tilt, defocus and astigmatism, 3
        also coma, 4 also spherical aberration), for the ``classical*`` channels and the phase a
        residual network's output is added to. Default :data:`CLASSICAL_BACKGROUND_ORDER`, the
        classical method's; the shipped hologram networks use 3 (``train --background-order``:
        the simulator draws coma); fine-tuning to a microscope with stronger aberrations may
        raise it (:class:`~napari_qpi.training.finetune.FinetuneSettings` ``front_end_order``).
    """

    filter: str = "smooth_disk"
    radius_fraction: float = DEFAULT_RADIUS_FRACTION
    channels: Sequence[str] = DEFAULT_CHANNELS
    residual: bool = False
    grid: str = "integer"
    background_order: int = CLASSICAL_BACKGROUND_ORDER

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ModelError(f"front_end grid must be one of {GRIDS}, got {self.grid!r}")
        if self.filter not in FILTERS:
            raise ModelError(f"front_end filter must be one of {FILTERS}, got {self.filter!r}")
        if not 0 < self.radius_fraction < 1:
            raise ModelError(
                f"front_end radius_fraction must lie in (0, 1), got {self.radius_fraction}"
            )
        if isinstance(self.channels, str):
            raise ModelError(f"front_end channels must be a list of names, got {self.channels!r}")
        self.channels = tuple(self.channels)
        bad = [name for name in self.channels if name not in CHANNELS]
        if bad or not self.channels or len(set(self.channels)) != len(self.channels):
            raise ModelError(
                f"front_end channels must be distinct names from {CHANNELS}, got "
                f"{list(self.channels)}"
            )
        order = self.background_order
        if (
            isinstance(order, bool)
            or not isinstance(order, (int, np.integer))
            or not 0 <= order <= 5
        ):
            raise ModelError(f"front_end background_order must be an integer 0-5, got {order!r}")
        self.background_order = int(order)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (channels as a list; ``residual`` only when set,
        ``background_order`` only when not the default, so older cards stay as they were)."""
        data: dict[str, Any] = {
            "filter": self.filter,
            "radius_fraction": float(self.radius_fraction),
            "channels": list(self.channels),
        }
        if self.residual:
            data["residual"] = True
        if self.grid != "integer":
            data["grid"] = self.grid
        if self.background_order != CLASSICAL_BACKGROUND_ORDER:
            data["background_order"] = self.background_order
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrontEndConfig:
        """Config from :meth:`to_dict` output; missing fields take their defaults."""
        if unknown := sorted(set(data) - {f.name for f in fields(cls)}):
            raise ModelError(f"unknown FrontEndConfig fields {unknown}")
        return cls(**data)


#: The residual front end: the field's features and the classical phase, the network's output
#: added to the latter.
RESIDUAL_FRONT_END = FrontEndConfig(channels=(*DEFAULT_CHANNELS, "classical"), residual=True)
#: Residual front ends whose network reads no absolute classical phase, by the name of the
#: ``--classical-input`` option (``"phase"`` is :data:`RESIDUAL_FRONT_END`).
CLASSICAL_INPUTS: dict[str, tuple[str, ...]] = {
    "phase": ("classical",),
    "none": (),
    "gradient": ("classical_dy", "classical_dx"),
    "wrapped": ("classical_cos", "classical_sin"),
    "both": ("classical_dy", "classical_dx", "classical_cos", "classical_sin"),
}


def residual_front_end(classical_input: str = "phase") -> FrontEndConfig:
    """The residual front end whose network reads the classical phase as ``classical_input``
    (a key of :data:`CLASSICAL_INPUTS`) besides the field's features."""
    if classical_input not in CLASSICAL_INPUTS:
        raise ModelError(
            f"classical input must be one of {list(CLASSICAL_INPUTS)}, got {classical_input!r}"
        )
    return FrontEndConfig(
        channels=(*DEFAULT_CHANNELS, *CLASSICAL_INPUTS[classical_input]), residual=True
    )


def reads_classical(config: FrontEndConfig | None) -> bool:
    """Whether a front end with ``config`` computes the classical phase (:func:`classical_native`):
    a residual one, or one with a ``classical*`` channel; its ``background_order`` matters then."""
    return config is not None and bool(
        config.residual or set(config.channels) & set(CLASSICAL_CHANNELS)
    )


def as_front_end_config(value: FrontEndConfig | Mapping[str, Any] | None) -> FrontEndConfig | None:
    """A network config's ``front_end`` field as a :class:`FrontEndConfig` (or None)."""
    if value is None or isinstance(value, FrontEndConfig):
        return value
    if isinstance(value, Mapping):
        return FrontEndConfig.from_dict(value)
    raise ModelError(f"front_end must be a mapping of FrontEndConfig fields, got {value!r}")


def strongest_peak(image: np.ndarray) -> tuple[float, float]:
    """Centre ``(fy, fx)`` (cycles/px, ``fx >= 0``) of the strongest compact off-DC spectral
    peak, refined to sub-bin precision, as :func:`~napari_qpi.retrieval.fourier.find_sideband`
    finds it, but without its test that the peak stands out as fringes do (which small crops
    of holograms with large cells can fail: a broad sideband in few frequency bins)."""
    img = as_image(image)
    (fy, fx), _, _, shape = fringe_peak(img)
    magnitude = np.abs(half_spectrum(img))
    return refine_peak(magnitude, img.shape, (fy, fx), search=2.0 / min(shape))


def detect_carriers(
    holograms: np.ndarray | Tensor,
    carrier: tuple[float, float] | None = None,
    *,
    strict: bool = True,
) -> np.ndarray:
    """Sideband centre of each hologram, ``(N, 2)`` float64 ``(fy, fx)`` in cycles per pixel.

    ``holograms`` is (N, H, W) or (N, 1, H, W) (raw or normalised: the search is scale-free).
    Each runs :func:`~napari_qpi.retrieval.fourier.find_sideband`, with ``carrier`` (the sideband
    carrying ``+phi``, e.g. from the acquisition metadata) when given. ``strict=False`` (what a
    network does when called without carriers, e.g. in training) takes the strongest peak of a
    hologram that fails the fringe test (:func:`strongest_peak`) instead of raising.

    Raises
    ------
    SidebandError
        With ``strict``, a hologram without off-axis fringes.
    """
    if isinstance(holograms, Tensor):
        holograms = holograms.detach().float().cpu().numpy()
    arr = np.asarray(holograms)
    arr = arr.reshape(-1, *arr.shape[-2:])
    centres = []
    for plane in arr:
        try:
            centres.append(find_sideband(plane, carrier=carrier).center_cycles_per_px)
        except SidebandError:
            if strict or carrier is not None:
                raise
            centres.append(strongest_peak(plane))
    return np.array(centres, dtype=np.float64).reshape(-1, 2)


def _check_carriers(carrier: Tensor | np.ndarray, batch: int) -> np.ndarray:
    """``(batch, 2)`` float64 sideband centres, validated like the classical carrier."""
    if isinstance(carrier, Tensor):
        carrier = carrier.detach().cpu().double().numpy()
    arr = np.asarray(carrier, dtype=np.float64).reshape(-1, 2)
    if arr.shape[0] == 1 and batch > 1:
        arr = np.repeat(arr, batch, axis=0)
    if arr.shape[0] != batch:
        raise SidebandError(f"got {arr.shape[0]} sideband centres for {batch} holograms")
    distance = np.hypot(arr[:, 0], arr[:, 1])
    if not np.isfinite(arr).all() or np.abs(arr).max() > 0.5:
        raise SidebandError(
            f"sideband centres must lie within [-0.5, 0.5] cycles per pixel, got {arr.tolist()}"
        )
    if distance.min() < MIN_CARRIER_CYCLES_PER_PX:
        raise SidebandError(
            f"a sideband centre lies within {MIN_CARRIER_CYCLES_PER_PX} cycles per pixel of DC: "
            f"{arr.tolist()}"
        )
    return arr


def classical_native(field: Tensor, order: int = CLASSICAL_BACKGROUND_ORDER) -> Tensor:
    """The classical method's phase of native-grid fields (B, h, w) -> (B, h, w), radians.

    What :func:`~napari_qpi.retrieval.offaxis.retrieve_offaxis` does after demodulation, in numpy
    outside the graph (no gradient): unwrap the wrapped phase ``angle(field)``
    (:func:`~napari_qpi.retrieval.unwrap.unwrap_phase`), find the background
    (:func:`~napari_qpi.retrieval.background.background_mask` on a subgrid of at most
    :data:`CLASSICAL_MASK_GRID` pixels a side, robust to a cell filling half the field), fit a
    polynomial of ``order`` to it at the full grid, subtract it, and choose the sign that makes the
    cells positive on balance (:func:`~napari_qpi.retrieval.offaxis.cells_sign_evidence`; a
    detected sideband may be either of the two conjugate ones).
    """
    from ..retrieval.background import background_mask, fit_background
    from ..retrieval.offaxis import cells_sign_evidence
    from ..retrieval.unwrap import unwrap_phase

    wrapped = torch.angle(field.detach()).cpu().numpy()
    planes = []
    for plane in wrapped:
        unwrapped = unwrap_phase(plane)
        mask = background_mask(unwrapped, order=order, grid=CLASSICAL_MASK_GRID)
        corrected = unwrapped - fit_background(unwrapped, order=order, mask=mask)
        sign = 1.0 if cells_sign_evidence(corrected, mask) >= 0 else -1.0
        planes.append(sign * corrected)
    return torch.from_numpy(np.stack(planes).astype(np.float32)).to(field.device)


def classical_views(classical: Tensor) -> dict[str, Tensor]:
    """Level-free views of a classical phase (B, h, w), radians, each (B, h, w).

    ``classical_dy`` / ``classical_dx``: forward differences along y / x (radians per native
    pixel; the last row / column repeats the one before, so the map keeps its size): unchanged
    by any constant added to the phase, and a ``2 pi`` step where the unwrapping slipped stays
    visible. ``classical_cos`` / ``classical_sin``: cos / sin of the phase (dimensionless),
    unchanged by any multiple of ``2 pi``.
    """

    def difference(dim: int) -> Tensor:
        step = torch.diff(classical, dim=dim)
        return torch.cat([step, step.narrow(dim, step.shape[dim] - 1, 1)], dim=dim)

    return {
        "classical": classical,
        "classical_dy": difference(-2),
        "classical_dx": difference(-1),
        "classical_cos": torch.cos(classical),
        "classical_sin": torch.sin(classical),
    }


class OffAxisFrontEnd(nn.Module):
    """Demodulate off-axis holograms to field features at the native grid (see the module).

    No parameters: the carrier is detected (or given), the filter fixed.
    """

    def __init__(self, config: FrontEndConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontEndConfig()

    @property
    def out_channels(self) -> int:
        """Feature channels the network body reads."""
        return len(self.config.channels)

    def grid(self, shape: tuple[int, int], centres: np.ndarray) -> NativeGrid:
        """Native grid of a batch (one for all its holograms: the finest its sidebands need).

        ``"integer"``: every q-th pixel, q the smallest :func:`crop_factor` of the sidebands;
        ``"tight"``: :meth:`NativeGrid.tight` for the widest filter support of the batch.
        """
        sidebands = [
            Sideband((float(fy), float(fx)), self.config.radius_fraction * math.hypot(fy, fx), 0.0)
            for fy, fx in centres.tolist()
        ]
        if self.config.grid == "tight":
            support = max(
                _filter_support(s.radius_cycles_per_px, self.config.filter) for s in sidebands
            )
            return NativeGrid.tight(shape, support)
        q = min(crop_factor(shape, s, self.config.filter) for s in sidebands)  # type: ignore[arg-type]
        return NativeGrid.integer(shape, q)

    def carriers(self, hologram: Tensor, carrier: Tensor | np.ndarray | None) -> np.ndarray:
        """(B, 2) sideband centres of (B, 1, H, W) holograms, cycles per pixel: ``carrier``
        ((B, 2) or (2,)) checked, or, when ``None``, detected (:func:`detect_carriers`, not
        strict: the strongest peak of an image without clear fringes;
        :func:`~napari_qpi.retrieval.deep.retrieve_deep` is strict)."""
        if hologram.ndim != 4 or hologram.shape[1] != 1:
            raise ModelError(
                f"the off-axis front end takes (batch, 1, height, width) holograms, got "
                f"{tuple(hologram.shape)}"
            )
        found = detect_carriers(hologram, strict=False) if carrier is None else carrier
        return _check_carriers(found, hologram.shape[0])

    def field(
        self, hologram: Tensor, carrier: Tensor | np.ndarray | None = None
    ) -> tuple[Tensor, NativeGrid]:
        """Complex native-grid field (B, h', w') of (B, 1, H, W) holograms, and its grid
        (``carrier`` as for :meth:`carriers`)."""
        return self._field(hologram, self.carriers(hologram, carrier))

    def _field(self, hologram: Tensor, centres: np.ndarray) -> tuple[Tensor, NativeGrid]:
        grid = self.grid(tuple(hologram.shape[-2:]), centres)
        images = hologram[:, 0].float()
        field = demodulate_torch(
            images, centres, grid, self.config.radius_fraction, self.config.filter
        )
        return field, grid

    def forward(
        self, hologram: Tensor, carrier: Tensor | np.ndarray | None = None
    ) -> tuple[Tensor, NativeGrid]:
        """(B, 1, H, W) holograms -> (B, C, h', w') features (see :class:`FrontEndConfig`) and
        their native grid."""
        features, grid, _ = self._features(hologram, carrier)
        return features, grid

    def _features(
        self, hologram: Tensor, carrier: Tensor | np.ndarray | None
    ) -> tuple[Tensor, NativeGrid, Tensor | None]:
        """Features, their grid and the classical phase (B, 1, h', w') when a channel uses it."""
        centres = self.carriers(hologram, carrier)
        field, grid = self._field(hologram, centres)
        classical = None
        views: dict[str, Tensor] = {}
        if self.config.residual or set(self.config.channels) & set(CLASSICAL_CHANNELS):
            classical = classical_native(field, self.config.background_order)[:, None]
            views = classical_views(classical[:, 0])
        power = field.real.square() + field.imag.square()
        scale = power.sqrt().mean(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        amplitude = (power + (AMPLITUDE_FLOOR * scale) ** 2).sqrt()
        maps = {
            "cos": lambda: field.real / amplitude,
            "sin": lambda: field.imag / amplitude,
            "log_amplitude": lambda: torch.log(amplitude / scale),
            "hologram": lambda: block_mean(hologram.float(), grid)[:, 0],
        }
        maps.update({name: (lambda name=name: views[name]) for name in CLASSICAL_CHANNELS})
        features = torch.stack([maps[name]() for name in self.config.channels], dim=1)
        return features.to(hologram.dtype), grid, classical

    def prepare(
        self,
        hologram: Tensor,
        carrier: Tensor | np.ndarray | None,
        stride: int,
        coords: Tensor | None = None,
    ) -> NativeInput:
        """Features padded to ``stride`` (reflection) and ``coords`` (B, 2, H, W, at the
        hologram grid) sampled at the native grid's nearest hologram pixels and padded alike
        (replication)."""
        features, grid, classical = self._features(hologram, carrier)
        if coords is not None:
            rows, cols = (
                torch.from_numpy(np.rint(grid.positions(d)).astype(np.int64)).to(coords.device)
                for d in (0, 1)
            )
            coords = coords.index_select(-2, rows).index_select(-1, cols)
            coords = pad_to(coords, stride, mode="replicate")
        base = None
        if self.config.residual and classical is not None:
            base = pad_to(classical.to(features.dtype), stride)
        return NativeInput(pad_to(features, stride), coords, grid, base)

    @staticmethod
    def restore(phase: Tensor, native: NativeInput, size: Sequence[int]) -> Tensor:
        """Network output at the padded native grid (plus the classical phase of a residual
        front end) -> (B, 1, H, W) at the hologram grid."""
        if native.base is not None:
            phase = phase + native.base
        height, width = native.grid.crop
        return upsample_native(phase[..., :height, :width], native.grid.pitch, size)


def probe_arguments(module: nn.Module, probe: Tensor) -> dict[str, Tensor]:
    """Keyword arguments for a memory probe of ``module`` (zeros have no sideband to detect)."""
    if getattr(module, "front_end", None) is None:
        return {}
    carrier = torch.tensor([PROBE_CARRIER], dtype=torch.float64).expand(probe.shape[0], 2)
    return {"carrier": carrier}


def carriers_for(
    module: nn.Module, holograms: np.ndarray, carrier: tuple[float, float] | None = None
) -> np.ndarray | None:
    """Sideband centres (N, 2) of raw (N, H, W) holograms for a front-end ``module``, else None.

    ``carrier`` (the acquisition's ``carrier_cycles_per_px``) is used when known.
    """
    if getattr(module, "front_end", None) is None:
        return None
    return detect_carriers(holograms, carrier)


__all__ = [
    "CHANNELS",
    "CLASSICAL_CHANNELS",
    "CLASSICAL_INPUTS",
    "DEFAULT_CHANNELS",
    "GRIDS",
    "RESIDUAL_FRONT_END",
    "FrontEndConfig",
    "NativeGrid",
    "NativeInput",
    "OffAxisFrontEnd",
    "as_front_end_config",
    "carriers_for",
    "classical_native",
    "classical_views",
    "demodulate_torch",
    "detect_carriers",
    "probe_arguments",
    "reads_classical",
    "residual_front_end",
    "strongest_peak",
    "upsample_native",
]
