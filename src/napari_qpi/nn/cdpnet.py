"""CDPNet: learnable phase masks and a recovery network for coded diffraction patterns.

The optical system and the reconstruction are one differentiable model (end-to-end design):

1. **Masks** (:class:`LearnedMasks`): K phase masks ``phi_k`` (radians), free or quantised to a
   few levels with a straight-through estimator, so the loss sees what a fabricated plate or an
   SLM would realise.
2. **Measurements**: in training the model simulates ``y_k = |F pad(exp(i phi_k) x)|^2``
   (:func:`~napari_qpi.physics.cdp.cdp_forward_torch`, orthonormal FFT, oversampling s, patterns
   ``fftshift``-ed) with optional shot and read noise; at inference it takes measured patterns
   made with the same masks.
3. **First estimate** (:class:`PhysicsEstimate`, no free parameters but the step sizes): a
   truncated spectral initialisation (power iterations on ``A^H diag(y) A``, started from the
   backprojection ``A^H sqrt(y)`` so it is deterministic, scaled to the measured energy
   ``||x||^2 = sum(y) / K``), then a few unrolled amplitude-flow steps
   ``z <- z - mu_t / K * A^H(Az - sqrt(y) Az / |Az|)`` with learnt step sizes ``mu_t`` (``mu = 1``
   is one Gerchberg–Saxton iteration, since ``A^H A = K I``). The global phase, which the
   measurements cannot fix, is set so that ``sum(z)`` is real and positive.
   With ``first_estimate="flat-modulus"`` (phase objects) the start is instead the flat field at
   the measured RMS amplitude and every unrolled step is followed by the projection onto that
   modulus: with ``mu = 1`` these are the iterations of the classical phase-object solver
   (:func:`~napari_qpi.retrieval.cdp_solvers.solve_phase_object`), so the refiner corrects the
   best classical estimate instead of a spectral one.
4. **Refiner** (:class:`Refiner`): a small U-Net on the first estimate as two channels (real and
   imaginary parts, divided by the object's RMS amplitude ``sqrt(sum(y) / (K H W))``, known from
   the measurement), predicting a residual correction. The output is the complex object:
   ``model(x)`` returns a complex (B, H, W) tensor in the object's amplitude units, whose phase
   in radians is ``torch.angle``; :meth:`CDPNet.predict_phase` gives the phase with the
   background at 0 rad. Real and imaginary channels avoid phase-wrapping discontinuities and
   carry the amplitude of absorbing objects.

``forward(..., return_features=True)`` also returns the refiner's features by name:
``"bottleneck"`` (at 1/2^(depth-1) of the input size), then the decoder outputs ``"dec<l>"`` at
1/2^l, l = depth - 2 ... 0; these are the taps of feature distillation
(:mod:`napari_qpi.training.distill`).

The teacher (:meth:`CDPNetConfig.teacher`: K = 4 masks, 32 base channels) and the single-snapshot
student (:meth:`CDPNetConfig.student`: 1 mask, 16 base channels) are the same class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError
from ..physics.cdp import (
    add_noise_torch,
    cdp_adjoint_torch,
    cdp_farfield_torch,
    cdp_forward_torch,
    quantise_phase_ste,
    remove_global_phase,
)

_EPS = 1e-8


#: Physics first estimates of :class:`PhysicsEstimate`.
FIRST_ESTIMATES = ("spectral", "flat-modulus")


@dataclass
class CDPNetConfig:
    """Architecture of a :class:`CDPNet`; JSON round trip with :meth:`to_dict` / :meth:`from_dict`.

    Attributes
    ----------
    n_masks
        Number of masks (snapshots) K.
    shape
        Object (and mask) shape (H, W) in pixels; H and W must be multiples of ``2**(depth-1)``.
    oversampling
        Zero-padding factor s: patterns are (K, s H, s W).
    mask_levels
        Quantise mask phases to this many levels (straight-through); ``None`` for free phases.
    mask_seed
        Seed of the random initial mask phases.
    power_iterations
        Power iterations of the spectral initialisation.
    unrolled_steps
        Unrolled amplitude-flow steps after it, each with a learnt step size.
    first_estimate
        ``"spectral"`` (the spectral start above) or ``"flat-modulus"`` (flat start, each step
        projected onto the measured modulus: for phase objects; ``power_iterations`` unused).
    base_channels
        Channels of the refiner's first level; level l has ``base_channels * 2**l``.
    depth
        Resolution levels of the refiner (``depth - 1`` downsamplings).
    photons_per_pixel
        Mean photons per pattern pixel of the simulated measurements (``None``: noiseless).
    read_noise_photons
        Gaussian read noise of the simulated camera, photons.
    """

    n_masks: int = 1
    shape: tuple[int, int] = (64, 64)
    oversampling: int = 2
    mask_levels: int | None = None
    mask_seed: int = 0
    power_iterations: int = 8
    unrolled_steps: int = 3
    first_estimate: str = "spectral"
    base_channels: int = 16
    depth: int = 3
    photons_per_pixel: float | None = None
    read_noise_photons: float = 0.0

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ModelError(f"shape must be (H, W) with positive sizes, got {self.shape}")
        if min(self.n_masks, self.oversampling, self.base_channels, self.depth) < 1:
            raise ModelError(
                "n_masks, oversampling, base_channels and depth must be at least 1, got "
                f"{self.n_masks}, {self.oversampling}, {self.base_channels}, {self.depth}"
            )
        stride = 2 ** (self.depth - 1)
        if self.shape[0] % stride or self.shape[1] % stride:
            raise ModelError(
                f"shape {self.shape} must be a multiple of {stride} for a refiner of depth "
                f"{self.depth}"
            )
        if self.mask_levels is not None and self.mask_levels < 2:
            raise ModelError(f"mask_levels must be None or >= 2, got {self.mask_levels}")
        if self.power_iterations < 0 or self.unrolled_steps < 0:
            raise ModelError("power_iterations and unrolled_steps must be >= 0")
        if self.first_estimate not in FIRST_ESTIMATES:
            raise ModelError(
                f"first_estimate must be one of {', '.join(FIRST_ESTIMATES)}, "
                f"got {self.first_estimate!r}"
            )
        if self.photons_per_pixel is not None and self.photons_per_pixel <= 0:
            raise ModelError(f"photons_per_pixel must be positive, got {self.photons_per_pixel}")

    @classmethod
    def teacher(cls, **overrides: Any) -> CDPNetConfig:
        """Multi-snapshot teacher: 4 masks, a wider refiner (32 base channels)."""
        return cls(**{"n_masks": 4, "base_channels": 32, **overrides})

    @classmethod
    def student(cls, **overrides: Any) -> CDPNetConfig:
        """Single-snapshot student: 1 mask, a smaller refiner (16 base channels)."""
        return cls(**{"n_masks": 1, "base_channels": 16, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CDPNetConfig:
        """Config from :meth:`to_dict` output; missing fields take their defaults."""
        if unknown := sorted(set(data) - {f.name for f in fields(cls)}):
            raise ModelError(f"unknown CDPNetConfig fields {unknown}")
        return cls(**data)


class LearnedMasks(nn.Module):
    """K learnable phase masks, (K, H, W) radians, optionally quantised.

    The parameter ``latent`` holds continuous phases, initialised uniformly in [-pi, pi) from
    ``seed``. :meth:`forward` returns them as the optics realise them: with ``levels`` rounded to
    ``-pi + 2 pi j / levels`` in the forward pass while the gradient passes straight through
    (:func:`~napari_qpi.physics.cdp.quantise_phase_ste`).
    """

    def __init__(
        self, n_masks: int, shape: tuple[int, int], levels: int | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        initial = (torch.rand((n_masks, *shape), generator=generator) * 2 - 1) * math.pi
        self.latent = nn.Parameter(initial)
        self.levels = levels

    @property
    def n_masks(self) -> int:
        """Number of masks K."""
        return int(self.latent.shape[0])

    def forward(self) -> Tensor:
        """Mask phases (K, H, W) in radians, quantised if the masks have levels."""
        return quantise_phase_ste(self.latent, self.levels)

    def export(self) -> np.ndarray:
        """Phases as fabricated: float32 (K, H, W) in [-pi, pi), quantised if levelled."""
        with torch.no_grad():
            wrapped = torch.remainder(self.latent + math.pi, 2 * math.pi)
            if self.levels is not None:
                step = 2 * math.pi / self.levels
                wrapped = torch.remainder(torch.round(wrapped / step), self.levels) * step
        return (wrapped.cpu().numpy() - np.pi).astype(np.float32)

    def extra_repr(self) -> str:
        shape = tuple(self.latent.shape)
        return f"n_masks={shape[0]}, shape={shape[1:]}, levels={self.levels}"


def _canonical_global_phase(z: Tensor) -> Tensor:
    """Rotate each field of a batch (B, H, W) so that its sum is real and positive."""
    total = z.sum(dim=(-2, -1), keepdim=True)
    return z * (total.conj() / (total.abs() + _EPS))


class PhysicsEstimate(nn.Module):
    """Spectral initialisation plus unrolled amplitude-flow steps (see the module docstring).

    Input: patterns (B, K, sH, sW), ``fftshift``-ed, and mask phases (K, H, W). Output: the
    estimate (B, H, W) complex and the object's RMS amplitude (B,) from Parseval.
    """

    def __init__(
        self,
        oversampling: int,
        power_iterations: int,
        unrolled_steps: int,
        first_estimate: str = "spectral",
    ) -> None:
        super().__init__()
        self.oversampling = oversampling
        self.power_iterations = power_iterations
        self.first_estimate = first_estimate
        self.step_sizes = nn.Parameter(torch.ones(unrolled_steps))

    def forward(self, patterns: Tensor, phases: Tensor) -> tuple[Tensor, Tensor]:
        n_masks = phases.shape[0]
        h, w = phases.shape[-2:]
        masks = torch.polar(torch.ones_like(phases), phases)
        s = self.oversampling
        y = torch.fft.ifftshift(patterns, dim=(-2, -1)).clamp_min(0)
        energy = y.sum(dim=(-3, -2, -1))
        rms = torch.sqrt(energy / (n_masks * h * w) + _EPS)
        amplitudes = torch.sqrt(y + _EPS)
        if self.first_estimate == "flat-modulus":
            return self._flat_modulus(amplitudes, masks, rms), rms
        weights = torch.minimum(y, 9.0 * y.mean(dim=(-3, -2, -1), keepdim=True))
        z = cdp_adjoint_torch(amplitudes.to(masks.dtype), masks)
        for _ in range(self.power_iterations):
            z = cdp_adjoint_torch(weights * cdp_farfield_torch(z, masks, s), masks)
            z = z / (torch.linalg.vector_norm(z, dim=(-2, -1), keepdim=True) + _EPS)
        norm = torch.linalg.vector_norm(z, dim=(-2, -1), keepdim=True) + _EPS
        z = _canonical_global_phase(z / norm * torch.sqrt(energy / n_masks)[:, None, None])
        for mu in self.step_sizes:
            far = cdp_farfield_torch(z, masks, s)
            modulus = torch.sqrt(far.real.square() + far.imag.square() + _EPS)
            z = z - (mu / n_masks) * cdp_adjoint_torch(far - amplitudes * far / modulus, masks)
        return _canonical_global_phase(z), rms

    def _flat_modulus(self, amplitudes: Tensor, masks: Tensor, rms: Tensor) -> Tensor:
        """Flat start at the RMS amplitude; amplitude-flow steps, each projected onto it."""
        n_masks, h, w = masks.shape
        modulus = rms[:, None, None]
        z = modulus.to(masks.dtype).expand(-1, h, w)
        for mu in self.step_sizes:
            far = cdp_farfield_torch(z, masks, self.oversampling)
            far_modulus = torch.sqrt(far.real.square() + far.imag.square() + _EPS)
            z = z - (mu / n_masks) * cdp_adjoint_torch(far - amplitudes * far / far_modulus, masks)
            z = z * (modulus / torch.sqrt(z.real.square() + z.imag.square() + _EPS))
        return _canonical_global_phase(z)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 convolution, group norm, ReLU) layers; the spatial size is kept."""
    groups = math.gcd(out_channels, 8)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


class Refiner(nn.Module):
    """Small U-Net: (B, 2, H, W) -> (B, 2, H, W) residual, plus named decoder features.

    Group normalisation (not batch norm) keeps training and inference identical at any batch
    size; the head is initialised to zero, so an untrained refiner passes the first estimate
    through unchanged.
    """

    def __init__(self, base_channels: int, depth: int) -> None:
        super().__init__()
        channels = [base_channels * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList(
            _block(c_in, c_out) for c_in, c_out in zip([2, *channels[:-1]], channels, strict=True)
        )
        self.decoder = nn.ModuleList(
            _block(channels[level + 1] + channels[level], channels[level])
            for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(channels[0], 2, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.depth = depth
        self.channels = channels

    def feature_channels(self) -> dict[str, int]:
        """Channels of every named feature of :meth:`forward`."""
        names = {"bottleneck": self.channels[-1]}
        names.update(
            {f"dec{level}": self.channels[level] for level in reversed(range(self.depth - 1))}
        )
        return names

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, kernel_size=2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        features = {"bottleneck": x}
        for level, block in zip(reversed(range(self.depth - 1)), self.decoder, strict=True):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
            features[f"dec{level}"] = x
        return self.head(x), features


class CDPNet(nn.Module):
    """Masks, simulated (or given) measurements, physics-based first estimate and refiner."""

    def __init__(self, config: CDPNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CDPNetConfig()
        self.masks = LearnedMasks(
            config.n_masks, config.shape, levels=config.mask_levels, seed=config.mask_seed
        )
        self.estimate = PhysicsEstimate(
            config.oversampling,
            config.power_iterations,
            config.unrolled_steps,
            config.first_estimate,
        )
        self.refiner = Refiner(config.base_channels, config.depth)

    @property
    def patterns_shape(self) -> tuple[int, int, int]:
        """Shape (K, sH, sW) of the measurements the model reads."""
        s = self.config.oversampling
        return self.config.n_masks, s * self.config.shape[0], s * self.config.shape[1]

    def measure(self, x: Tensor) -> Tensor:
        """Simulated patterns (B, K, sH, sW) of objects x (B, H, W) through the model's masks.

        Noise as configured (``photons_per_pixel``, ``read_noise_photons``) is drawn from torch's
        global generator; gradients reach the masks.
        """
        if x.ndim != 3 or tuple(x.shape[-2:]) != self.config.shape:
            raise InputError(
                f"CDPNet expects objects of shape (batch, {self.config.shape[0]}, "
                f"{self.config.shape[1]}), got {tuple(x.shape)}"
            )
        patterns = cdp_forward_torch(x, self.masks(), self.config.oversampling)
        return add_noise_torch(
            patterns,
            self.config.photons_per_pixel,
            read_noise_photons=self.config.read_noise_photons,
        )

    @property
    def stride(self) -> int:
        """Patterns are read whole, at the size the model was trained for (no tiling)."""
        return 1

    def forward(
        self, data: Tensor, *, return_features: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Reconstruct objects from simulated or measured coded diffraction patterns.

        Parameters
        ----------
        data
            Either complex objects (B, H, W), measured through the model's masks (training and
            simulation), or real measured patterns (B, K, sH, sW) or (K, sH, sW),
            ``fftshift``-ed, made with this model's masks (:meth:`LearnedMasks.export`).
        return_features
            Also return the refiner's decoder features by name.

        Returns
        -------
        Tensor or (Tensor, dict)
            Complex (B, H, W) estimate in the object's amplitude units, global phase such that
            the first estimate's sum is real; with ``return_features`` also the features.
        """
        if data.is_complex():
            patterns = self.measure(data)
        else:
            patterns = data.unsqueeze(0) if data.ndim == 3 else data
            if patterns.ndim != 4 or tuple(patterns.shape[1:]) != self.patterns_shape:
                raise InputError(
                    f"This CDP model reads patterns of shape {self.patterns_shape} (K, sH, sW), "
                    f"got {tuple(data.shape)}; it was trained for {self.config.n_masks} mask(s) "
                    f"of shape {self.config.shape} at oversampling {self.config.oversampling}."
                )
        first, rms = self.estimate(patterns.float(), self.masks())
        scale = rms[:, None, None, None]
        channels = torch.view_as_real(first).permute(0, 3, 1, 2) / scale
        residual, features = self.refiner(channels)
        out = (channels + residual) * scale
        estimate = torch.complex(out[:, 0], out[:, 1])
        return (estimate, features) if return_features else estimate

    def predict_phase(self, patterns: Tensor) -> Tensor:
        """Phase in radians, (B, 1, H, W) float32, from measured patterns (B, K, sH, sW).

        The global phase is set so that the most common phase (the background medium) is 0
        (:func:`~napari_qpi.physics.cdp.remove_global_phase`). No gradients.
        """
        with torch.no_grad():
            estimate = self(patterns).cpu().numpy()
        phase = np.stack([np.angle(remove_global_phase(field)) for field in estimate])
        return torch.from_numpy(phase.astype(np.float32)).unsqueeze(1).to(patterns.device)

    def reconstruct(self, patterns: np.ndarray) -> np.ndarray:
        """Complex estimate (H, W) or (B, H, W), complex64, from numpy patterns; no gradients.

        Like :meth:`predict_phase`, the most common phase is set to 0.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(torch.as_tensor(np.asarray(patterns, np.float32))).numpy()
        finally:
            self.train(was_training)
        out = np.stack([remove_global_phase(field) for field in out])
        return out[0] if np.ndim(patterns) == 3 else out


def build(config: Mapping[str, Any] | CDPNetConfig) -> CDPNet:
    """A freshly initialised :class:`CDPNet` from a config or its dictionary (model cards)."""
    if not isinstance(config, CDPNetConfig):
        config = CDPNetConfig.from_dict(config)
    return CDPNet(config)


def complex_mse(estimate: Tensor, truth: Tensor) -> Tensor:
    """Mean ``|exp(i theta) estimate - truth|^2`` with theta the best global phase per image.

    The measurements cannot fix the global phase, so the loss does not either:
    ``theta = angle(sum(conj(estimate) truth))`` over each (H, W) image; units are the object's
    squared amplitude.
    """
    inner = (estimate.conj() * truth).sum(dim=(-2, -1), keepdim=True)
    aligned = estimate * (inner / (inner.abs() + _EPS))
    difference = aligned - truth
    return (difference.real.square() + difference.imag.square()).mean()


__all__ = [
    "CDPNet",
    "CDPNetConfig",
    "LearnedMasks",
    "PhysicsEstimate",
    "Refiner",
    "build",
    "complex_mse",
]
