"""Fourier-domain steps of off-axis holography: find the sideband, filter it, demodulate it.

An off-axis hologram ``I = |R + O|^2`` with a tilted reference ``R = a_r exp(+i 2 pi f_c . r)`` has
three spectral terms: the autocorrelation (DC) term at the origin and two conjugate sidebands at
``-f_c`` and ``+f_c``. The sideband at ``-f_c`` is ``conj(R) O``, whose phase is the object
phase with a positive sign (see ``docs/dev/CONTRACTS.md``). Cutting it out with a low-pass filter
of radius ``rho`` (cycles per pixel), shifting it to the origin and transforming back gives the
complex object field, band-limited to ``rho``.

All frequencies are in cycles per pixel in numpy's ``fftfreq`` convention, ordered ``(fy, fx)``.
Only the real-input half spectrum (``scipy.fft.rfft2``) is ever computed; positions in the other
half are read from their conjugate-symmetric partners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..defaults import DEFAULT_RADIUS_FRACTION as DEFAULT_RADIUS_FRACTION
from ..defaults import FILTERS as FILTERS
from ..errors import InputError, MetadataError, SidebandError
from ..threads import fft_workers

FilterName = Literal["disk", "smooth_disk", "gaussian"]
#: Width of the raised-cosine edge of ``"smooth_disk"``, as a fraction of the radius.
SMOOTH_EDGE_FRACTION = 0.2
#: Whitened peak height (peak / median magnitude at the same spatial frequency) above which a
#: sideband counts as present. Measured: flat and noise images 1-2.5, the scikit-image sample
#: photographs 2-20 (textures and clock faces highest), simulated holograms with visibility down
#: to 0.2 and 1000 e- full well 52-900 (median 310).
PEAK_RATIO_THRESHOLD = 30.0
#: A broad sideband (steep cells and strong aberrations spread it over many bins, lifting the
#: spectrum of its own ring) can stand out less than ``PEAK_RATIO_THRESHOLD``: it still counts as
#: fringes when it stands out at least this much over the whole crop and at least
#: ``QUADRANT_PEAK_RATIO`` at the same frequency in each quadrant of the crop, because off-axis
#: fringes fill the field while the peaks of photographs come from local structures. Measured
#: (256^2 crops): the one broad sideband of 128 "transfer" held-out fields 22.8 (quadrants >= 16.6);
#: photographs and their corner crops up to 28 overall, but each with a quadrant at 0.1-12.6
#: (bricks, a texture that fills the image, 12.6); noise and flat images below 2.5.
AMBIGUOUS_PEAK_RATIO = 15.0
#: Smallest peak ratio of every quadrant confirming an ambiguous peak (see above).
QUADRANT_PEAK_RATIO = 15.0
#: Smallest quadrant side (px) for that confirmation; smaller crops need the full threshold.
MIN_QUADRANT_SIZE = 32
#: Lower bar when the carrier is known (metadata or user): only "are there fringes at all", which
#: small crops (128^2, fewer frequency bins, peak ratios ~25) must pass too. Flat/noise images
#: stay below 2.5.
KNOWN_CARRIER_PEAK_RATIO = 6.0
#: Frequencies below this (cycles per pixel) are the DC term's and never searched for a carrier.
MIN_CARRIER_CYCLES_PER_PX = 0.03
#: Side of the central crop used by the quick spectrum in :func:`looks_like_hologram`.
QUICK_SIZE = 256


@dataclass(frozen=True)
class Sideband:
    """Position and size of the sideband used for demodulation.

    Attributes
    ----------
    center_cycles_per_px
        Sideband centre ``(fy, fx)`` in cycles per pixel (``fftfreq`` convention).
    radius_cycles_per_px
        Filter radius in cycles per pixel: the half-maximum radius for the smooth filters, the
        edge for ``"disk"``. It sets the lateral resolution of the retrieved phase (finest period
        ``1 / radius`` pixels).
    peak_ratio
        Height of the sideband peak over the median spectral magnitude at the same spatial
        frequency: how clearly the fringes stand out of the noise (below about 20 without fringes).
    """

    center_cycles_per_px: tuple[float, float]
    radius_cycles_per_px: float
    peak_ratio: float

    @property
    def carrier_distance(self) -> float:
        """Distance of the sideband from the DC term, in cycles per pixel."""
        return math.hypot(*self.center_cycles_per_px)

    def conjugate(self) -> Sideband:
        """The mirror sideband at ``-center``, which carries the conjugate field (negated phase)."""
        fy, fx = self.center_cycles_per_px
        return Sideband((-fy, -fx), self.radius_cycles_per_px, self.peak_ratio)


def as_image(image: np.ndarray, name: str = "hologram") -> np.ndarray:
    """Validate a single real 2-D image and return it as C-contiguous float32.

    Raises
    ------
    InputError
        Not 2-D, too small, complex, not numeric, or containing NaN or infinity.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(
            f"The {name} must be a single 2-D image (height, width), got an array of shape "
            f"{arr.shape}. Process stacks one frame at a time."
        )
    if min(arr.shape) < 16:
        raise InputError(f"The {name} is too small ({arr.shape}); it needs at least 16x16 pixels.")
    if np.iscomplexobj(arr):
        raise InputError(f"The {name} must be a real intensity image, got complex values.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"The {name} must be numeric, got dtype {arr.dtype}.")
    integer = arr.dtype.kind in "biu"  # integers are finite in float32 too (< 3.4e38)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not integer and not np.isfinite(arr).all():
        raise InputError(
            f"The {name} contains NaN or infinite values; replace or crop them before retrieval."
        )
    return arr


def half_spectrum(image: np.ndarray, *, single: bool = False) -> np.ndarray:
    """Real-input 2-D spectrum ``rfft2(image - mean)``, shape ``(H, W//2 + 1)``.

    complex128 by default (the mean, taken in float64, promotes the difference). ``single=True``
    transforms the float32 image itself and takes the mean off the DC bin (the same spectrum
    without a pass over the image) and returns complex64: half the time and memory, rounding
    errors near 1e-7 of the image's norm (far under a 12-bit camera's shot noise).
    """
    img = np.asarray(image, dtype=np.float32)
    mean = img.mean(dtype=np.float64)
    if not single:
        return sfft.rfft2(img - mean, workers=fft_workers())
    spectrum = sfft.rfft2(img, workers=fft_workers())
    spectrum[0, 0] -= np.float32(mean * img.shape[0] * img.shape[1])
    return spectrum


def _whitened_peak(
    magnitude: np.ndarray, shape: tuple[int, int], min_freq: float
) -> tuple[tuple[int, int], float]:
    """Strongest off-DC peak of a half spectrum relative to the median at its spatial frequency.

    ``magnitude`` is ``|rfft2|`` of an image of ``shape``. Each ring of equal ``|f|`` (one frequency
    bin wide) is normalised by its geometric mean, which follows the 1/f fall-off of ordinary image
    spectra and the flat floor of noise, so only compact peaks (fringes) stand out. Returns the
    integer bin ``(ky, kx)`` of the peak (``ky`` in ``[0, H)``) and its ratio over the ring median.
    """
    whitened = _whitened(magnitude, shape, min_freq)
    idx = int(np.argmax(whitened))
    ky, kx = divmod(idx, whitened.shape[1])
    # geometric ring mean of a Rayleigh floor is ~0.9 x its median
    return (ky, kx), float(np.exp(whitened[ky, kx]) * 0.9)


@lru_cache(maxsize=8)
def _rings(shape: tuple[int, int], min_freq: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring of each half-spectrum bin (its radius in bins of the longer side), the number of bins
    per ring, and the bins not searched (within ``min_freq`` of DC, beyond Nyquist, the mirrored
    half of the ``fx = 0`` column); read-only, shared by every image of a shape."""
    h, w = shape
    fy = sfft.fftfreq(h).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(w).astype(np.float32)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    ring = np.minimum((radius * max(h, w)).astype(np.intp), max(h, w)).ravel()
    counts = np.maximum(np.bincount(ring), 1)
    excluded = (radius < min_freq) | (radius > 0.5)
    excluded[h // 2 + 1 :, 0] = True
    for array in (ring, counts, excluded):
        array.setflags(write=False)
    return ring, counts, excluded


def _whitened(magnitude: np.ndarray, shape: tuple[int, int], min_freq: float) -> np.ndarray:
    """Log of the 3x3-smoothed half spectrum minus its ring mean; ``-inf`` where not searched."""
    ring, counts, excluded = _rings(shape, min_freq)
    smooth = ndimage.uniform_filter(magnitude, size=3, mode=("wrap", "reflect"))
    log_mag = np.log(smooth + np.float32(1e-12 * (smooth.max() + 1e-30)))
    sums = np.bincount(ring, weights=log_mag.ravel())
    ring_mean = sums / counts
    whitened = log_mag - ring_mean[ring].astype(np.float32).reshape(log_mag.shape)
    whitened[excluded] = -np.inf
    return whitened


def _quadrant_ratio(image: np.ndarray, freq: tuple[float, float]) -> float:
    """Smallest peak ratio near ``freq`` (cycles/px) over the four quadrants of the quick crop.

    Each quadrant's spectrum (:func:`_quick_spectrum`) is whitened like the whole crop's and
    searched within 1.5 of its bins of ``freq`` or its mirror ``-freq``. Fringes that fill the
    field give every quadrant a peak there; a local structure gives one quadrant at most.
    Returns 0 when the quadrants would be smaller than :data:`MIN_QUADRANT_SIZE`.
    """
    h, w = image.shape
    ch, cw = min(h, QUICK_SIZE), min(w, QUICK_SIZE)
    if min(ch, cw) < 2 * MIN_QUADRANT_SIZE:
        return 0.0
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    fy0, fx0 = freq
    ratios = []
    for rows in (slice(0, ch // 2), slice(ch // 2, 2 * (ch // 2))):
        for cols in (slice(0, cw // 2), slice(cw // 2, 2 * (cw // 2))):
            magnitude, shape = _quick_spectrum(crop[rows, cols])
            whitened = _whitened(magnitude, shape, MIN_CARRIER_CYCLES_PER_PX)
            fy = sfft.fftfreq(shape[0])[:, None]
            fx = sfft.rfftfreq(shape[1])[None, :]
            distance = np.minimum(np.hypot(fy - fy0, fx - fx0), np.hypot(fy + fy0, fx + fx0))
            near = whitened[distance <= 1.5 / min(shape)]
            ratios.append(float(np.exp(near.max()) * 0.9) if near.size else 0.0)
    return min(ratios)


def fringe_peak(image: np.ndarray) -> tuple[tuple[float, float], float, bool, tuple[int, int]]:
    """The strongest off-DC peak of the quick spectrum and whether it counts as fringes.

    Returns the peak ``(fy, fx)`` in cycles per pixel, its ratio over the ring (see
    :func:`_whitened_peak`), whether that makes it a sideband (over
    :data:`PEAK_RATIO_THRESHOLD`, or over :data:`AMBIGUOUS_PEAK_RATIO` with every quadrant over
    :data:`QUADRANT_PEAK_RATIO`), and the shape of the crop whose spectrum was searched.
    """
    magnitude, shape = _quick_spectrum(image)
    if not np.isfinite(magnitude).all() or magnitude.max() <= 0:
        return (0.0, 0.0), 0.0, False, shape
    (qy, qx), ratio = _whitened_peak(magnitude, shape, MIN_CARRIER_CYCLES_PER_PX)
    freq = _bin_to_freq(qy, qx, shape)
    found = ratio >= PEAK_RATIO_THRESHOLD or (
        ratio >= AMBIGUOUS_PEAK_RATIO and _quadrant_ratio(image, freq) >= QUADRANT_PEAK_RATIO
    )
    return freq, ratio, found, shape


def _quick_spectrum(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """|rfft2| of a Hann-windowed central crop of at most ``QUICK_SIZE`` squared pixels."""
    h, w = image.shape
    ch, cw = min(h, QUICK_SIZE), min(w, QUICK_SIZE)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = np.asarray(image[y0 : y0 + ch, x0 : x0 + cw], dtype=np.float32)
    crop = crop - crop.mean(dtype=np.float64)
    return np.abs(sfft.rfft2(crop * _hann(ch, cw), workers=fft_workers())), (ch, cw)


@lru_cache(maxsize=8)
def _hann(height: int, width: int) -> np.ndarray:
    """2-D Hann window (float32, read-only)."""
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    window.setflags(write=False)
    return window


def _bin_to_freq(ky: float, kx: float, shape: tuple[int, int]) -> tuple[float, float]:
    h, w = shape
    fy = ky / h
    if fy >= 0.5:
        fy -= 1.0
    return float(fy), float(kx / w)


def looks_like_hologram(image: np.ndarray) -> bool:
    """Whether an image shows a clear off-axis sideband (a few ms, even for 2048^2).

    The test runs on the spectrum of a Hann-windowed central crop of at most 256^2 pixels: off-axis
    fringes make a compact spectral peak at the carrier, far above the spectrum at the same spatial
    frequency elsewhere; flat images, noise and ordinary photographs do not. For stacks the first
    plane is tested. Never raises: anything that is not a real image gives ``False``.
    """
    try:
        arr = np.asarray(image)
        while arr.ndim > 2:
            arr = arr[0]
        if arr.ndim != 2 or min(arr.shape) < 16 or np.iscomplexobj(arr):
            return False
        if not np.issubdtype(arr.dtype, np.number):
            return False
        _, _, found, _ = fringe_peak(arr)
    except (TypeError, ValueError, MemoryError):
        return False
    return found


def filter_radius(
    carrier_distance: float,
    *,
    radius_fraction: float = DEFAULT_RADIUS_FRACTION,
    numerical_aperture: float | None = None,
    wavelength_nm: float | None = None,
    pixel_size_um: float | None = None,
) -> float:
    """Filter radius in cycles per pixel.

    From the objective when ``numerical_aperture`` is given: the coherent transfer function passes
    spatial frequencies up to ``NA / lambda``, i.e. ``NA / lambda * pixel_size`` cycles per pixel
    (wavelength in vacuum and pixel size in the sample plane). Otherwise ``radius_fraction`` times
    the carrier distance.
    """
    if numerical_aperture is not None:
        if wavelength_nm is None or pixel_size_um is None:
            raise MetadataError(
                "An NA-based filter radius needs the wavelength (nm) and the pixel size in the "
                "sample plane (um); set them in the acquisition metadata or use radius_fraction "
                "instead."
            )
        if numerical_aperture <= 0:
            raise InputError(f"The numerical aperture must be positive, got {numerical_aperture}.")
        radius = numerical_aperture / (wavelength_nm * 1e-3) * pixel_size_um
        if radius >= carrier_distance:
            raise SidebandError(
                f"The NA-based filter radius ({radius:.3f} cycles/px for NA {numerical_aperture}) "
                f"reaches the DC term at the carrier distance ({carrier_distance:.3f} cycles/px): "
                "the fringes are too coarse for this NA. Check NA, wavelength and pixel size, or "
                "use radius_fraction."
            )
        return float(radius)
    if not 0 < radius_fraction < 1:
        raise InputError(
            f"radius_fraction must lie between 0 and 1 (of the carrier distance), got "
            f"{radius_fraction}."
        )
    return float(radius_fraction * carrier_distance)


def _check_carrier(carrier: tuple[float, float]) -> tuple[float, float]:
    try:
        fy, fx = (float(c) for c in carrier)
    except (TypeError, ValueError):
        raise SidebandError(
            f"The carrier must be two numbers (fy, fx) in cycles per pixel, got {carrier!r}."
        ) from None
    if not (math.isfinite(fy) and math.isfinite(fx)) or max(abs(fy), abs(fx)) > 0.5:
        raise SidebandError(
            f"Carrier {carrier!r} lies outside the spectrum: each component must be within "
            "[-0.5, 0.5] cycles per pixel (the Nyquist limit)."
        )
    if math.hypot(fy, fx) < MIN_CARRIER_CYCLES_PER_PX:
        raise SidebandError(
            f"Carrier {carrier!r} is too close to the DC term (|f| < "
            f"{MIN_CARRIER_CYCLES_PER_PX} cycles per pixel); it cannot be separated from it."
        )
    return fy, fx


def find_sideband(
    hologram: np.ndarray,
    *,
    carrier: tuple[float, float] | None = None,
    radius_fraction: float = DEFAULT_RADIUS_FRACTION,
    numerical_aperture: float | None = None,
    wavelength_nm: float | None = None,
    pixel_size_um: float | None = None,
    spectrum: np.ndarray | None = None,
) -> Sideband:
    """Locate the sideband of an off-axis hologram and size its filter.

    Parameters
    ----------
    hologram
        Single 2-D intensity image.
    carrier
        Known sideband position ``(fy, fx)`` in cycles per pixel (the one carrying ``+phi``); it is
        used as given after checking that it lies inside the spectrum and that fringes are present.
        ``None`` searches for the strongest compact off-DC peak: one of the two conjugate
        sidebands, always the one with ``fx >= 0``, so the phase sign is then unknown.
    radius_fraction, numerical_aperture, wavelength_nm, pixel_size_um
        Filter radius, see :func:`filter_radius`.
    spectrum
        ``half_spectrum(hologram)`` if already computed.

    Raises
    ------
    SidebandError
        The carrier lies outside the spectrum or next to DC, or no fringes stand out of the noise.
    """
    img = as_image(hologram)
    shape = img.shape
    h, w = shape
    if carrier is not None:
        carrier = _check_carrier(carrier)
    (fy0, fx0), ratio, found, qshape = fringe_peak(img)
    if carrier is not None:
        found, threshold = ratio >= KNOWN_CARRIER_PEAK_RATIO, KNOWN_CARRIER_PEAK_RATIO
    else:
        threshold = PEAK_RATIO_THRESHOLD
    if not found:
        raise SidebandError(
            f"No off-axis fringes found: the strongest spectral peak is only {ratio:.1f}x the "
            f"background spectrum (a hologram gives > {threshold:.0f}x, or fringes in every "
            "quadrant of the image). Is this an off-axis hologram, in focus, with the reference "
            "beam on?"
        )
    if carrier is not None:
        center = carrier
    else:
        if spectrum is None:
            spectrum = half_spectrum(img)
        center = refine_peak(np.abs(spectrum), shape, (fy0, fx0), search=2.0 / min(qshape))
    radius = filter_radius(
        math.hypot(*center),
        radius_fraction=radius_fraction,
        numerical_aperture=numerical_aperture,
        wavelength_nm=wavelength_nm,
        pixel_size_um=pixel_size_um,
    )
    if radius * max(h, w) < 2:
        raise SidebandError(
            f"The sideband filter would be only {radius * max(h, w):.1f} frequency bins wide for "
            f"a {h}x{w} image: the carrier is too low or the image too small."
        )
    return Sideband((float(center[0]), float(center[1])), radius, ratio)


def refine_peak(
    magnitude: np.ndarray, shape: tuple[int, int], guess: tuple[float, float], search: float
) -> tuple[float, float]:
    """Peak of the full half spectrum near ``guess`` (cycles/px), refined to sub-bin precision."""
    h, w = shape
    ry, rx = max(2, math.ceil(search * h)), max(2, math.ceil(search * w))
    ky0, kx0 = round(guess[0] * h), round(guess[1] * w)
    rows = np.arange(ky0 - ry, ky0 + ry + 1)
    cols = np.arange(kx0 - rx, kx0 + rx + 1)
    patch = np.abs(_gather(magnitude, rows, cols, w)).astype(np.float64)
    iy, ix = np.unravel_index(int(np.argmax(patch)), patch.shape)
    offsets = []
    for line, i in ((patch[:, ix], iy), (patch[iy, :], ix)):
        if 0 < i < len(line) - 1:
            a, b, c = np.log(line[i - 1 : i + 2] + 1e-30)
            den = a - 2 * b + c
            offsets.append(0.5 * (a - c) / den if den < 0 else 0.0)
        else:
            offsets.append(0.0)
    ky = rows[iy] + float(np.clip(offsets[0], -0.5, 0.5))
    kx = cols[ix] + float(np.clip(offsets[1], -0.5, 0.5))
    return ky / h, kx / w


def _gather(half: np.ndarray, rows: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    """Values of the full 2-D spectrum at integer bins ``rows x cols`` from a half spectrum.

    ``cols`` must be consecutive integers in any order. Bins are taken modulo the image size; those
    in the missing half (``kx > width // 2``) come from the conjugate-symmetric partner
    ``F(-k) = conj(F(k))`` of a real image. Works for real inputs (magnitudes) too.
    """
    h = half.shape[0]
    c_lo, c_hi = int(cols.min()), int(cols.max())
    if 0 <= c_lo and c_hi <= width // 2 and c_hi - c_lo + 1 == len(cols):
        block = np.take(half[:, c_lo : c_hi + 1], np.mod(rows, h), axis=0)
        return np.take(block, cols - c_lo, axis=1)
    r = np.mod(rows, h)[:, None]
    c = np.mod(cols, width)[None, :]
    mirrored = c > width // 2
    rr = np.where(mirrored, np.mod(-r, h), r)
    cc = np.where(mirrored, width - c, c)
    out = half[rr, cc]
    if np.iscomplexobj(out):
        np.conjugate(out, out=out, where=mirrored)
    return out


def _filter_support(radius: float, filter: str) -> float:
    """Radius (cycles/px) beyond which the filter is zero (or below 1e-3 for the Gaussian)."""
    if filter == "disk":
        return radius
    if filter == "smooth_disk":
        return radius * (1 + SMOOTH_EDGE_FRACTION / 2)
    if filter == "gaussian":
        return radius * math.sqrt(math.log2(1e3))
    raise InputError(f"Unknown filter {filter!r}; choose one of {', '.join(FILTERS)}.")


def filter_window(distance: np.ndarray, radius: float, filter: str) -> np.ndarray:
    """Filter value at frequency distances ``distance`` (cycles/px) from the sideband centre.

    ``"disk"``: 1 inside ``radius``. ``"smooth_disk"``: 1 inside, raised-cosine edge of width
    ``SMOOTH_EDGE_FRACTION * radius`` centred on ``radius``. ``"gaussian"``: ``exp(-d^2 / 2 s^2)``
    with half maximum at ``radius``. All three are 1/2 (or the disk edge) at ``radius``.
    """
    d = np.asarray(distance, dtype=np.float32)
    if filter == "disk":
        return (d <= radius).astype(np.float32)
    if filter == "smooth_disk":
        width = SMOOTH_EDGE_FRACTION * radius
        t = np.clip((d - (radius - width / 2)) / width, 0.0, 1.0)
        return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)
    if filter == "gaussian":
        return np.exp2(-((d / radius) ** 2)).astype(np.float32)
    raise InputError(f"Unknown filter {filter!r}; choose one of {', '.join(FILTERS)}.")


@lru_cache(maxsize=8)
def crop_window(
    crop: tuple[int, int],
    offset: tuple[float, float],
    shape: tuple[int, int],
    radius: float,
    filter: str,
) -> np.ndarray:
    """Filter over an fft-ordered crop whose bin 0 lies ``offset`` (cycles/px) from the centre."""
    (my, mx), (h, w) = crop, shape
    fy = (sfft.fftfreq(my, 1.0 / my) / h + offset[0]).astype(np.float32)[:, None]
    fx = (sfft.fftfreq(mx, 1.0 / mx) / w + offset[1]).astype(np.float32)[None, :]
    window = filter_window(np.sqrt(fy * fy + fx * fx), radius, filter)
    window.flags.writeable = False
    return window


def subbin_offset(sideband: Sideband, shape: tuple[int, int]) -> tuple[float, float]:
    """``(dy, dx)``: nearest frequency bin minus the sideband centre, cycles per pixel.

    Demodulating at the nearest bin leaves the phase ramp ``2 pi (dy y + dx x)`` on the field
    (pixel coordinates of the input grid), which :func:`demodulate` removes unless told not to.
    """
    h, w = shape
    fy, fx = sideband.center_cycles_per_px
    return round(fy * h) / h - fy, round(fx * w) / w - fx


def crop_factor(
    shape: tuple[int, int], sideband: Sideband, filter: FilterName = "smooth_disk"
) -> int:
    """Largest integer downsampling ``q`` whose ``(H/q, W/q)`` grid still holds the whole filter.

    The native-resolution field is sampled on every ``q``-th pixel of the input grid (pixel size
    ``q`` times larger); ``q`` divides both image dimensions so the grids align exactly.
    """
    h, w = shape
    support = _filter_support(sideband.radius_cycles_per_px, filter)
    best = 1
    for q in range(2, min(h, w) // 8 + 1):
        if h % q or w % q:
            continue
        if h // q >= 2 * support * h + 2 and w // q >= 2 * support * w + 2:
            best = q
    return best


def demodulate(
    hologram: np.ndarray,
    sideband: Sideband,
    *,
    filter: FilterName = "smooth_disk",
    resolution: Literal["native", "full"] = "native",
    spectrum: np.ndarray | None = None,
    factor: int | None = None,
    remove_subbin: bool = True,
) -> np.ndarray:
    """Complex object field from the sideband (complex64).

    The filtered sideband is shifted to the origin by an integer number of bins and inverse
    transformed. ``"native"`` transforms only a crop of ``(H/q, W/q)`` bins around it
    (``q = crop_factor(...)`` unless ``factor`` is given): the field on every ``q``-th pixel,
    sample ``[j, i]`` at input pixel ``[q j, q i]``. ``"full"`` zero-pads to ``(H, W)``: the same
    band-limited field at every input pixel. The sub-bin part of the sideband centre is removed as
    a phase ramp (see :func:`subbin_offset`; ``remove_subbin=False`` keeps it), so a carrier known
    exactly leaves no tilt. The field amplitude is that of the cross term ``a_r * |O|`` in
    hologram units.
    """
    img = as_image(hologram)
    h, w = img.shape
    if spectrum is None:
        spectrum = half_spectrum(img)
    q = crop_factor((h, w), sideband, filter) if factor is None else int(factor)
    if q < 1 or h % q or w % q:
        raise InputError(f"Crop factor {q} must be a positive divisor of both sides of {h}x{w}.")
    my, mx = h // q, w // q
    fy, fx = sideband.center_cycles_per_px
    ky0, kx0 = round(fy * h), round(fx * w)
    oy = sfft.fftfreq(my, 1.0 / my).astype(np.intp)
    ox = sfft.fftfreq(mx, 1.0 / mx).astype(np.intp)
    if resolution not in ("native", "full"):
        raise InputError(f"resolution must be 'native' or 'full', got {resolution!r}.")
    crop = _gather(spectrum, ky0 + oy, kx0 + ox, w)
    sub_y, sub_x = subbin_offset(sideband, (h, w))
    crop *= crop_window((my, mx), (sub_y, sub_x), (h, w), sideband.radius_cycles_per_px, filter)
    if resolution == "native":
        field = sfft.ifft2(crop, workers=fft_workers(), overwrite_x=True)
        field *= np.float32(1.0 / (q * q))
        sub_y, sub_x = q * sub_y, q * sub_x
    else:
        field = _ifft2_padded(crop, (h, w))
    if remove_subbin and (sub_y or sub_x):
        ramp_y = np.exp(2j * np.pi * sub_y * np.arange(field.shape[0])).astype(np.complex64)
        ramp_x = np.exp(2j * np.pi * sub_x * np.arange(field.shape[1])).astype(np.complex64)
        field *= ramp_y[:, None]
        field *= ramp_x[None, :]
    return field.astype(np.complex64, copy=False)


def _ifft2_padded(crop: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse FFT of a centred (fft-ordered) crop zero-padded to ``shape``, done axis by axis.

    Padding one axis at a time skips the transforms of all-zero columns: about ``(1 + 1/q) / 2``
    of the cost of a full padded ``ifft2``.
    """
    my, mx = crop.shape
    h, w = shape
    tall = np.zeros((h, mx), dtype=np.complex64)
    hy = (my + 1) // 2
    tall[:hy] = crop[:hy]
    tall[h - (my - hy) :] = crop[hy:]
    tall = sfft.ifft(tall, axis=0, workers=fft_workers(), overwrite_x=True)
    full = np.zeros((h, w), dtype=np.complex64)
    hx = (mx + 1) // 2
    full[:, :hx] = tall[:, :hx]
    full[:, w - (mx - hx) :] = tall[:, hx:]
    return sfft.ifft(full, axis=1, workers=fft_workers(), overwrite_x=True)
