"""Coded diffraction patterns (CDP): y_k = |F(M_k x)|^2.

An object x (complex transmission, e.g. ``amplitude * exp(1j * phase)``) is multiplied by a phase
mask M_k = exp(i phi_k) (a spatial light modulator or a fabricated plate), zero-padded by the
oversampling factor and propagated to the far field, where a camera records the intensity of its
Fourier transform. The FFT is orthonormal, so ``sum(y_k) == sum(|x|^2)`` (energy is conserved) and
intensities are in units of the object's squared amplitude per pixel. Patterns are stored
``fftshift``-ed (zero frequency in the centre), as a camera sees them. The object sits in the
top-left corner of the padded field, as ``numpy.fft.fft2(..., s=(s H, s W))`` puts it.

Written as a linear operator A: C^(H W) -> C^(K s^2 H W), ``A x = (F pad(M_k x))_k``, with adjoint
``A^H z = sum_k conj(M_k) crop(F^H z_k)``. Phase masks have unit modulus and the FFT is unitary, so
``A^H A = K I``: the solvers in :mod:`napari_qpi.retrieval.cdp_solvers` and the unrolled first
estimate of :mod:`napari_qpi.nn.cdpnet` rely on this.

The module has two halves with the same conventions:

- numpy: :class:`CDPOperator` (``A`` and ``A^H``, used by the classical solvers of
  :mod:`napari_qpi.retrieval.cdp_solvers`), :func:`coded_diffraction_patterns`, random and
  quantised masks, shot and read noise;
- torch (differentiable, batched, used for training): :func:`cdp_forward_torch`, the far field and
  adjoint operators, a straight-through mask quantiser and noise whose gradient passes through.
  torch is imported when one of these is first called, so the numpy half stays light.

Training objects are complex fields of shape (H, W): phase-only cells drawn by
:func:`napari_qpi.physics.phantoms.random_cells` (:func:`cell_objects`) and complex fields made
from the grey-scale images bundled with scikit-image (:func:`image_objects`, nothing downloaded),
and sharp-edged piecewise-constant objects (:mod:`napari_qpi.physics.shapes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft

from ..errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

SeedLike = int | np.random.Generator | None

#: scikit-image sample images shipped inside the package (no download); all of them are needed.
BUNDLED_IMAGES: tuple[str, ...] = (
    "camera",
    "astronaut",
    "coins",
    "moon",
    "text",
    "clock",
    "coffee",
    "chelsea",
    "rocket",
    "page",
    "immunohistochemistry",
    "hubble_deep_field",
    "grass",
    "gravel",
    "brick",
    "cell",
)


def random_phase_masks(
    n_masks: int,
    shape: tuple[int, int],
    *,
    levels: int | None = None,
    seed: SeedLike = None,
) -> np.ndarray:
    """Uniformly random mask phases in radians, shape ``(n_masks, *shape)``, float32.

    With ``levels``, phases are quantised to ``levels`` equally spaced values in [-pi, pi), as a
    binary or few-level fabricated mask would be.
    """
    rng = np.random.default_rng(seed)
    phases = rng.uniform(-np.pi, np.pi, size=(n_masks, *shape))
    if levels is not None:
        phases = quantise_phase(phases, levels)
    return phases.astype(np.float32)


def _check_levels(levels: int) -> None:
    if levels < 2:
        raise InputError(f"A quantised mask needs at least 2 phase levels, got {levels}.")


def quantise_phase(phases: np.ndarray, levels: int) -> np.ndarray:
    """Round phases (radians) to the nearest of ``levels`` values ``-pi + 2 pi k / levels``."""
    _check_levels(levels)
    step = 2 * np.pi / levels
    k = np.round((np.mod(phases + np.pi, 2 * np.pi)) / step) % levels
    return (-np.pi + k * step).astype(np.float32)


def _check_object_and_masks(
    obj_shape: tuple[int, ...], mask_shape: tuple[int, ...], oversampling: int
) -> None:
    if len(obj_shape) < 2 or len(mask_shape) not in (2, 3) or mask_shape[-2:] != obj_shape[-2:]:
        raise InputError(
            f"Object of shape {obj_shape} and masks of shape {mask_shape} do not match: each mask "
            "must have the object's shape (H, W)."
        )
    if int(oversampling) != oversampling or oversampling < 1:
        raise InputError(f"Oversampling must be an integer >= 1, got {oversampling}.")


def coded_diffraction_patterns(
    obj: np.ndarray, mask_phases: np.ndarray, *, oversampling: int = 2
) -> np.ndarray:
    """Noiseless far-field intensities ``|F(pad(exp(i phi_k) * obj))|^2``, shape (K, sH, sW).

    ``obj`` is a complex (or real) 2-D field of shape (H, W); ``mask_phases`` has shape (K, H, W)
    or (H, W) for a single mask; ``oversampling`` s >= 1 zero-pads the field to (sH, sW).
    """
    obj = np.asarray(obj)
    masks = np.asarray(mask_phases, dtype=np.float64)
    if masks.ndim == 2:
        masks = masks[None]
    if obj.ndim != 2:
        raise InputError(f"The object must be a 2-D field (H, W), got shape {obj.shape}.")
    _check_object_and_masks(obj.shape, masks.shape, oversampling)
    h, w = obj.shape
    coded = np.exp(1j * masks) * obj[None]
    field = np.fft.fft2(coded, s=(oversampling * h, oversampling * w), norm="ortho")
    return np.fft.fftshift(np.abs(field) ** 2, axes=(-2, -1)).astype(np.float32)


class CDPOperator:
    """``A x = (F pad(M_k x))_k`` and its adjoint, vectorised over the K masks, complex64.

    ``mask_phases`` (K, H, W) or (H, W) in radians; far fields are (K, sH, sW), zero frequency at
    ``[0, 0]`` (not shifted).
    """

    def __init__(self, mask_phases: np.ndarray, oversampling: int) -> None:
        phases = np.asarray(mask_phases, np.float64)
        if phases.ndim == 2:
            phases = phases[None]
        if phases.ndim != 3 or phases.size == 0:
            raise InputError(f"Mask phases must have shape (K, H, W), got {phases.shape}.")
        if int(oversampling) != oversampling or oversampling < 1:
            raise InputError(f"Oversampling must be an integer >= 1, got {oversampling}.")
        self.masks = np.exp(1j * phases).astype(np.complex64)
        self.n_masks, self.height, self.width = phases.shape
        self.oversampling = int(oversampling)
        self.padded_shape = (self.oversampling * self.height, self.oversampling * self.width)

    @property
    def shape(self) -> tuple[int, int]:
        """Object shape (H, W)."""
        return self.height, self.width

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Far fields (K, sH, sW) of the object x (H, W)."""
        return scipy.fft.fft2(self.masks * x, s=self.padded_shape, norm="ortho")

    def pad(self, x: np.ndarray) -> np.ndarray:
        """Coded fields ``pad(M_k x)``, (K, sH, sW), in the object plane."""
        out = np.zeros((self.n_masks, *self.padded_shape), np.complex64)
        out[:, : self.height, : self.width] = self.masks * x
        return out

    def unpad(self, g: np.ndarray) -> np.ndarray:
        """Least-squares object from coded fields: ``(1/K) sum_k conj(M_k) crop(g_k)``."""
        window = g[:, : self.height, : self.width]
        return (np.conj(self.masks) * window).mean(axis=0)

    def adjoint(self, z: np.ndarray) -> np.ndarray:
        """``A^H z = sum_k conj(M_k) crop(F^H z_k)``, (H, W)."""
        back = scipy.fft.ifft2(z, norm="ortho")[:, : self.height, : self.width]
        return (np.conj(self.masks) * back).sum(axis=0)


def add_poisson_noise(
    patterns: np.ndarray,
    photons_per_pixel: float,
    *,
    read_noise_photons: float = 0.0,
    seed: SeedLike = None,
) -> np.ndarray:
    """Shot noise at a mean of ``photons_per_pixel`` photons; returned in the input's units.

    The patterns are scaled so that their mean is ``photons_per_pixel`` photons, Poisson counts are
    drawn, Gaussian read noise of standard deviation ``read_noise_photons`` (photons, i.e.
    electrons at unit quantum efficiency) is added, and the result is scaled back. The relative
    noise of a pixel with ``n`` photons is about ``sqrt(n + read_noise^2) / n``.
    """
    rng = np.random.default_rng(seed)
    mean = float(np.mean(patterns))
    if mean <= 0:
        raise InputError("Cannot add shot noise to patterns with no light (mean intensity <= 0).")
    if photons_per_pixel <= 0 or read_noise_photons < 0:
        raise InputError(
            f"Photon level must be positive and read noise non-negative, got "
            f"{photons_per_pixel} and {read_noise_photons}."
        )
    gain = photons_per_pixel / mean
    counts = rng.poisson(np.asarray(patterns, np.float64) * gain).astype(np.float64)
    if read_noise_photons > 0:
        counts += rng.normal(0.0, read_noise_photons, size=counts.shape)
    return (counts / gain).astype(np.float32)


def remove_global_phase(field: np.ndarray, bins: int = 90) -> np.ndarray:
    """Rotate a complex field so that its most common phase (amplitude-weighted) becomes 0.

    For cells in a medium the most common phase is the background, which then reads 0 rad, the
    convention of every phase image in napari-qpi. The mode is located with a ``bins``-bin
    histogram of the wrapped phase (smoothed over 3 bins) and refined by the amplitude-weighted
    median of the phases in those 3 bins (a median, so that the cells' edges do not pull it).
    """
    field = np.asarray(field)
    weight = np.abs(field).ravel().astype(np.float64)
    if not weight.any():
        return field.astype(np.complex64)
    phase = np.angle(field).ravel()
    counts, edges = np.histogram(phase, bins=bins, range=(-np.pi, np.pi), weights=weight)
    peak = np.argmax(np.convolve(np.r_[counts[-1], counts, counts[0]], np.ones(3), "valid"))
    centre = 0.5 * (edges[peak] + edges[peak + 1])
    offset = np.angle(np.exp(1j * (phase - centre)))
    near = np.abs(offset) <= 3 * np.pi / bins
    order = np.argsort(offset[near])
    cumulative = np.cumsum(weight[near][order])
    median = offset[near][order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
    return (field * np.exp(-1j * (centre + median))).astype(np.complex64)


def _as_mask_field(masks: Tensor, dtype: torch.dtype) -> Tensor:
    """Unit-modulus mask transmissions (K, H, W) from phases (radians) or from exp(i phi)."""
    import torch

    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if not masks.is_complex():
        masks = torch.polar(torch.ones_like(masks), masks)
    return masks.to(dtype)


def cdp_farfield_torch(x: Tensor, masks: Tensor, oversampling: int = 2) -> Tensor:
    """Complex far fields ``F pad(M_k x)`` (orthonormal FFT), zero frequency at ``[0, 0]``.

    Parameters
    ----------
    x
        Complex object, shape (..., H, W); a real tensor is taken as a real field.
    masks
        Mask phases in radians, real (K, H, W) or (H, W); or the transmissions ``exp(i phi)`` as
        a complex tensor (saves recomputing them in iterative use).
    oversampling
        Zero-padding factor s: the far field has shape (s H, s W).

    Returns
    -------
    Tensor
        Complex, shape (..., K, sH, sW), not shifted.
    """
    import torch

    _check_object_and_masks(tuple(x.shape), tuple(masks.shape), oversampling)
    if not x.is_complex():
        x = x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
    coded = x.unsqueeze(-3) * _as_mask_field(masks, x.dtype)
    h, w = x.shape[-2:]
    return torch.fft.fft2(coded, s=(oversampling * h, oversampling * w), norm="ortho")


def cdp_adjoint_torch(z: Tensor, masks: Tensor) -> Tensor:
    """Adjoint of :func:`cdp_farfield_torch`: ``sum_k conj(M_k) crop(F^H z_k)``.

    ``z`` is complex (..., K, sH, sW), not shifted; ``masks`` as for :func:`cdp_farfield_torch`.
    Returns the complex (..., H, W) object-plane field, H and W taken from the masks;
    ``A^H A x == K x`` for phase masks.
    """
    import torch

    h, w = masks.shape[-2:]
    back = torch.fft.ifft2(z, norm="ortho")[..., :h, :w]
    return (back * _as_mask_field(masks, back.dtype).conj()).sum(dim=-3)


def cdp_forward_torch(x: Tensor, mask_phases: Tensor, oversampling: int = 2) -> Tensor:
    """Differentiable coded diffraction patterns ``|F(pad(exp(i phi_k) x))|^2``, fftshift-ed.

    The torch twin of :func:`coded_diffraction_patterns`: ``x`` complex (..., H, W),
    ``mask_phases`` real (K, H, W) or (H, W) radians; returns real (..., K, sH, sW) intensities in
    units of ``|x|^2`` per pixel, zero frequency at ``(sH // 2, sW // 2)``. Gradients flow to both
    the object and the mask phases.
    """
    import torch

    field = cdp_farfield_torch(x, mask_phases, oversampling)
    return torch.fft.fftshift(field.real.square() + field.imag.square(), dim=(-2, -1))


def quantise_phase_ste(phases: Tensor, levels: int | None) -> Tensor:
    """Phases rounded as :func:`quantise_phase` in the forward pass, identity in the backward pass.

    The straight-through estimator lets a few-level (e.g. binary or 4-level) mask be learnt: the
    loss sees the quantised mask that a fabricated plate or an SLM would realise, the gradient
    updates the continuous latent phases. ``levels=None`` returns ``phases`` unchanged.
    """
    import torch

    if levels is None:
        return phases
    _check_levels(levels)
    step = 2 * math.pi / levels
    k = torch.remainder(torch.round(torch.remainder(phases + math.pi, 2 * math.pi) / step), levels)
    quantised = k * step - math.pi
    return phases + (quantised - phases).detach()


def add_noise_torch(
    patterns: Tensor,
    photons_per_pixel: float | None,
    *,
    read_noise_photons: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shot and read noise on a batch of patterns, (..., K, sH, sW), in the input's units.

    Each object (all its K patterns together, so the masks share the photon budget as in a
    sequential acquisition) is scaled to a mean of ``photons_per_pixel`` photons; Poisson counts
    plus Gaussian read noise of ``read_noise_photons`` photons are drawn and scaled back. The
    noise is added as a constant: gradients pass through to the noiseless patterns (and on to the
    masks) unchanged. ``photons_per_pixel=None`` returns the patterns as they are.
    """
    import torch

    if photons_per_pixel is None:
        return patterns
    if photons_per_pixel <= 0 or read_noise_photons < 0:
        raise InputError(
            f"Photon level must be positive and read noise non-negative, got "
            f"{photons_per_pixel} and {read_noise_photons}."
        )
    with torch.no_grad():
        mean = patterns.mean(dim=(-3, -2, -1), keepdim=True).clamp_min(
            torch.finfo(patterns.dtype).tiny
        )
        gain = photons_per_pixel / mean
        counts = torch.poisson(patterns.clamp_min(0) * gain, generator=generator)
        if read_noise_photons > 0:
            counts = counts + read_noise_photons * torch.randn(
                counts.shape, generator=generator, dtype=counts.dtype, device=counts.device
            )
        noise = counts / gain - patterns
    return patterns + noise


def cell_objects(
    n: int,
    shape: tuple[int, int],
    *,
    peak_phase_rad: float | tuple[float, float] = (0.5, 3.0),
    n_cells: int | tuple[int, int] = (1, 4),
    cell_diameter_px: float = 20.0,
    seed: SeedLike = None,
) -> np.ndarray:
    """Phase-only cell objects ``exp(i phi)``, complex64 (n, H, W).

    ``phi`` comes from :func:`~napari_qpi.physics.phantoms.random_cells` with no absorption (unit
    amplitude), background phase 0 and peaks drawn from ``peak_phase_rad`` (radians; keep them
    below pi to avoid wrapping). Where touching cells add up to more than the largest peak, the
    field is scaled down to it. The pixel size is chosen so that a round cell is about
    ``cell_diameter_px`` pixels across (12 um diameter), which keeps a few cells in a small field.
    """
    from .phantoms import random_cells

    rng = np.random.default_rng(seed)
    pixel_size_um = 12.0 / cell_diameter_px
    highest = float(np.max(peak_phase_rad))
    phases = np.stack(
        [
            random_cells(
                shape,
                pixel_size_um=pixel_size_um,
                n_cells=n_cells,
                peak_phase_rad=peak_phase_rad,
                absorption=0.0,
                margin_px=-2.0,
                seed=rng,
            ).phase
            for _ in range(n)
        ]
    )
    peaks = phases.max(axis=(-2, -1), keepdims=True)
    phases *= np.minimum(1.0, highest / np.maximum(peaks, 1e-12))
    return np.exp(1j * phases).astype(np.complex64)


@lru_cache(maxsize=1)
def _bundled_images() -> tuple[np.ndarray, ...]:
    """Every image of :data:`BUNDLED_IMAGES`, grey, float32 in [0, 1].

    Raises
    ------
    InputError
        One of them could not be loaded: the training objects would then depend on the
        installation, so this is an error, not a skip.
    """
    import skimage.data
    from skimage.color import rgb2gray

    images, failed = [], []
    for name in BUNDLED_IMAGES:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception as error:  # a missing file, a download refused, an old scikit-image
            failed.append(f"{name} ({type(error).__name__}: {error})")
            continue
        if image.ndim == 3:
            image = rgb2gray(image[..., :3])
        image = image.astype(np.float32)
        span = float(image.max() - image.min())
        images.append((image - image.min()) / max(span, 1e-12))
    if failed:
        raise InputError(
            f"scikit-image {skimage.__version__} could not load its sample image(s) "
            f"{'; '.join(failed)}; the training objects would differ from the recorded ones. "
            "Reinstall scikit-image (>= 0.21, with its bundled data), or train on cell objects "
            "only (--sources cells)."
        )
    return tuple(images)


def _random_crop(rng: np.random.Generator, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    h, w = shape
    scale = rng.uniform(1.0, 4.0)
    ch, cw = min(image.shape[0], round(h * scale)), min(image.shape[1], round(w * scale))
    y0 = int(rng.integers(0, image.shape[0] - ch + 1))
    x0 = int(rng.integers(0, image.shape[1] - cw + 1))
    crop = resize(image[y0 : y0 + ch, x0 : x0 + cw], shape, anti_aliasing=True, preserve_range=True)
    crop = np.rot90(crop, int(rng.integers(4)) if h == w else 2 * int(rng.integers(2)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = crop - crop.min()
    return crop / max(float(crop.max()), 1e-6)


def image_objects(
    n: int,
    shape: tuple[int, int],
    *,
    max_phase_rad: float | tuple[float, float] = (0.5, 3.0),
    amplitude_range: tuple[float, float] = (0.5, 1.0),
    phase_only_fraction: float = 0.5,
    seed: SeedLike = None,
) -> np.ndarray:
    """Complex objects made from scikit-image's bundled images, complex64 (n, H, W).

    Random crops (random zoom, rotation by multiples of 90 degrees, 180 for non-square shapes,
    and flips) of two different
    images give a phase ``phi = p * I1`` in [0, p] radians, with ``p`` drawn from
    ``max_phase_rad``, and an amplitude ``a0 + (a1 - a0) * I2`` in ``amplitude_range``. A
    ``phase_only_fraction`` of the objects has unit amplitude.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"Image objects need a 2-D shape (H, W), got {shape}.")
    rng = np.random.default_rng(seed)
    images = _bundled_images()
    lo, hi = amplitude_range
    if not 0 <= lo <= hi:
        raise InputError(f"amplitude_range must satisfy 0 <= low <= high, got {amplitude_range}.")
    out = np.empty((n, *shape), np.complex64)
    for i in range(n):
        first, second = rng.choice(len(images), size=2, replace=len(images) < 2)
        peak = (
            float(max_phase_rad)
            if isinstance(max_phase_rad, (int, float))
            else rng.uniform(*max_phase_rad)
        )
        phase = peak * _random_crop(rng, images[first], shape)
        if rng.random() < phase_only_fraction:
            amplitude = np.ones(shape)
        else:
            amplitude = lo + (hi - lo) * _random_crop(rng, images[second], shape)
        out[i] = amplitude * np.exp(1j * phase)
    return out


def random_objects(
    n: int,
    shape: tuple[int, int],
    *,
    sources: Sequence[str] = ("cells", "images"),
    seed: SeedLike = None,
) -> np.ndarray:
    """A batch of training objects, complex64 (n, H, W), each drawn from one of ``sources``.

    ``"cells"`` gives :func:`cell_objects`, ``"images"`` gives :func:`image_objects`,
    ``"shapes"`` the piecewise-constant objects of
    :func:`napari_qpi.physics.shapes.shape_objects`; the source of every object is drawn
    uniformly.
    """
    from .shapes import shape_objects

    makers = {"cells": cell_objects, "images": image_objects, "shapes": shape_objects}
    if not sources or set(sources) - set(makers):
        raise InputError(f"Unknown object sources {list(sources)}: choose from {sorted(makers)}.")
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(sources), size=n)
    out = np.empty((n, *shape), np.complex64)
    for index, source in enumerate(sources):
        chosen = np.flatnonzero(picks == index)
        if chosen.size:
            out[chosen] = makers[source](chosen.size, shape, seed=rng)
    return out
