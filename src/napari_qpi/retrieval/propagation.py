"""Numerical refocusing: band-limited angular-spectrum propagation of a complex field.

A monochromatic field ``U(x, y; 0)`` known in one plane (the plane the camera was focused on,
in sample space) is propagated to a plane a distance ``z`` further along the optical axis by

    U(x, y; z) = IFFT[ FFT[U](fx, fy) * H(fx, fy; z) ],
    H = exp(i 2 pi z (sqrt((n / lambda)^2 - fx^2 - fy^2) - n / lambda)),

with ``lambda`` the vacuum wavelength, ``n`` the medium index and ``(fx, fy)`` spatial frequencies
in cycles per um (sample plane). Evanescent waves (``f > n / lambda``) are dropped. The constant
``- n / lambda`` removes the plane-wave phase ``k z``: the background keeps its phase at every z.

Sign convention (time dependence ``exp(-i omega t)``, field ``exp(+i phi)`` with ``phi`` the phase
delay of a cell, as the sideband carrying ``+phi`` gives it): **positive z moves the plane of focus
downstream, along the direction the light travels** (from the illumination through the sample
towards the objective). ``refocus_um = +10`` means the camera was focused 10 um upstream of the
sample (on the illumination side) and the field is carried 10 um forward to the sample. A field
from the conjugate sideband carries ``-phi``; propagating it by ``z`` is the same as propagating
the true field by ``-z`` (``conj(P_z conj(U)) = P_{-z} U``), so callers pass ``sign=-1`` for it and
the meaning of ``z`` stays that of the sample, whichever sideband was demodulated.

Band limit (Matsushima & Shimobaba, Opt. Express 17, 19662 (2009)): the transfer function is
sampled with frequency step ``df = 1 / (N dx)``; where its local frequency exceeds what that step
resolves it aliases, so ``H`` is set to 0 beyond ``|fx| > 1 / (lambda_m sqrt((2 df z)^2 + 1))``
(and the same along y), ``lambda_m = lambda / n``. Large z then blurs instead of aliasing.

Speed: one forward and one inverse complex FFT (scipy.fft, complex64) and one multiply. The
``kz`` grid of a shape and optics is cached, so are the last few transfer functions; a
:class:`Propagator` keeps a field's spectrum so every further z costs one inverse FFT, and a
search over many z writes each plane into one reused buffer (:meth:`Propagator.at` with ``out``)
or forms several planes in one batched FFT (:meth:`Propagator.at_many`): on this VM a fresh
1.3 MB array costs about as much in page faults (0.26 ms) as the transfer function's cos and sin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from ..errors import InputError, MetadataError
from ..threads import WORKERS_ENV, fft_workers


def check_optics(
    wavelength_nm: float | None, pixel_size_um: float | None, medium_index: float | None = 1.0
) -> tuple[float, float, float]:
    """Validate wavelength (nm), pixel size (um) and medium index; say what is missing.

    Raises
    ------
    MetadataError
        A value missing or not a positive finite number (the message says how to give it).
    """
    missing = [
        text
        for value, text in (
            (wavelength_nm, "the wavelength (--wavelength NM, or wavelength_nm in the metadata)"),
            (pixel_size_um, "the pixel size (--pixel-size UM, or pixel_size_um in the metadata)"),
        )
        if value is None
    ]
    if missing:
        raise MetadataError(
            "Refocusing needs " + " and ".join(missing) + "; give them on the command line, in "
            "a microscope profile or in the image's metadata/sidecar."
        )
    values = (float(wavelength_nm), float(pixel_size_um), float(medium_index or 1.0))
    for name, value in zip(("wavelength_nm", "pixel_size_um", "medium_index"), values, strict=True):
        if not math.isfinite(value) or value <= 0:
            raise MetadataError(f"Refocusing needs a positive {name}, got {value!r}.")
    return values


def _check_z(z_um: float) -> float:
    try:
        z = float(z_um)
    except (TypeError, ValueError):
        raise InputError(f"The refocus distance must be a number of um, got {z_um!r}.") from None
    if not math.isfinite(z):
        raise InputError(f"The refocus distance must be finite, got {z_um!r}.")
    return z


@lru_cache(maxsize=8)
def _kz_grid(
    shape: tuple[int, int], pixel_size_um: float, wavelength_um_medium: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(kz - k, mask)``: axial frequency minus ``n / lambda`` (cycles/um, fft order), float32.

    ``mask`` is False for evanescent waves, ``None`` when the grid has none (its Nyquist corner
    lies inside ``n / lambda``); the band limit depends on z and is applied by
    :func:`transfer_function`.
    """
    h, w = shape
    fy = sfft.fftfreq(h, d=pixel_size_um)[:, None]
    fx = sfft.fftfreq(w, d=pixel_size_um)[None, :]
    k = 1.0 / wavelength_um_medium
    arg = k * k - fy * fy - fx * fx
    propagating = arg > 0
    kz = np.sqrt(np.where(propagating, arg, 0.0)) - k
    kz = kz.astype(np.float32)
    kz.flags.writeable = False
    propagating.flags.writeable = False
    return kz, (None if propagating.all() else propagating)


@lru_cache(maxsize=16)
def _abs_frequencies(n: int, pixel_size_um: float) -> np.ndarray:
    """``|fftfreq(n, pixel)|`` (cycles/um, fft order), read-only."""
    freq = np.abs(sfft.fftfreq(n, d=pixel_size_um))
    freq.flags.writeable = False
    return freq


def band_limit_cycles_per_um(
    z_um: float, size_px: int, pixel_size_um: float, wavelength_um_medium: float
) -> float:
    """Highest frequency (cycles/um) along one axis whose transfer function is not aliased at z."""
    df = 1.0 / (size_px * pixel_size_um)
    return 1.0 / (wavelength_um_medium * math.sqrt((2.0 * df * z_um) ** 2 + 1.0))


@lru_cache(maxsize=6)
def transfer_function(
    shape: tuple[int, int],
    z_um: float,
    *,
    wavelength_nm: float,
    pixel_size_um: float,
    medium_index: float = 1.0,
    band_limit: bool = True,
) -> np.ndarray:
    """Band-limited angular-spectrum transfer function ``H`` for ``z_um`` (complex64, fft order).

    See the module docstring for the formula and the sign of z. Cached (read-only result).
    """
    transfer = np.empty(tuple(shape), dtype=np.complex64)
    fill_transfer(
        transfer,
        z_um,
        wavelength_nm=wavelength_nm,
        pixel_size_um=pixel_size_um,
        medium_index=medium_index,
        band_limit=band_limit,
    )
    transfer.flags.writeable = False
    return transfer


def fill_transfer(
    out: np.ndarray,
    z_um: float,
    *,
    wavelength_nm: float,
    pixel_size_um: float,
    medium_index: float = 1.0,
    band_limit: bool = True,
) -> np.ndarray:
    """:func:`transfer_function` written into ``out`` (complex64, ``(H, W)``), not cached: a
    search over many z reuses one buffer instead of a new array per plane."""
    wavelength_nm, pixel_size_um, medium_index = check_optics(
        wavelength_nm, pixel_size_um, medium_index
    )
    z = _check_z(z_um)
    lam = wavelength_nm * 1e-3 / medium_index
    h, w = out.shape
    kz, propagating = _kz_grid((h, w), pixel_size_um, lam)
    phase = kz * np.float32(2 * np.pi * z)
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    if propagating is not None:
        out *= propagating
    if band_limit and z != 0:  # whole rows and columns beyond the band limit go
        rows = _abs_frequencies(h, pixel_size_um) > band_limit_cycles_per_um(
            z, h, pixel_size_um, lam
        )
        cols = _abs_frequencies(w, pixel_size_um) > band_limit_cycles_per_um(
            z, w, pixel_size_um, lam
        )
        if rows.any():
            out[rows, :] = 0
        if cols.any():
            out[:, cols] = 0
    return out


def _as_field(field: np.ndarray) -> np.ndarray:
    arr = np.asarray(field)
    if arr.ndim < 2 or min(arr.shape[-2:]) < 2:
        raise InputError(
            f"Propagation needs a complex field of shape (..., H, W), got shape {arr.shape}."
        )
    if not np.isfinite(arr.sum()):  # one pass, no temporary; NaN and inf propagate to the sum
        raise InputError("The field to propagate contains NaN or infinite values.")
    return arr.astype(np.complex64, copy=False)


def propagate(
    field: np.ndarray,
    z_um: float,
    *,
    wavelength_nm: float,
    pixel_size_um: float,
    medium_index: float = 1.0,
    sign: int = 1,
    band_limit: bool = True,
    pad: bool = False,
    workers: int | None = None,
) -> np.ndarray:
    """Field ``z_um`` micrometres downstream of the plane of ``field`` (complex64, same shape).

    Parameters
    ----------
    field
        Complex field ``(..., H, W)`` sampled at ``pixel_size_um`` in the sample plane; leading
        axes (a stack) are propagated plane by plane.
    z_um
        Distance in um; positive is downstream (see the module docstring).
    wavelength_nm, medium_index
        Vacuum wavelength (nm) and refractive index of the medium the light travels through.
    pixel_size_um
        Pixel pitch of ``field`` in the sample plane, um.
    sign
        ``+1`` if ``field`` carries ``+phi`` (the sideband of the contract), ``-1`` if it is the
        conjugate one; ``z`` keeps its meaning for the sample either way.
    band_limit
        Drop the frequencies whose transfer function would alias at this z (recommended).
    pad
        Mirror the field by half its size on every side first (four times the FFT work). A
        recorded field is not periodic; without padding what leaves one border comes back in at
        the other. Measured on a real HL-60 hologram (no reference, 100 x 105 native samples):
        the phase of the border tenth differs by 0.23 rad rms with and without padding after
        0.6 um, 0.63 rad after 20 um (inside 0.02 and 0.29 rad).
    workers
        FFT threads; ``None`` uses :func:`fft_workers`.
    """
    arr = _as_field(field)
    z = _check_z(z_um) * (1 if sign >= 0 else -1)
    if z == 0:
        return arr.copy()
    if pad:
        h, w = arr.shape[-2:]
        widths = [(0, 0)] * (arr.ndim - 2) + [(h // 2, h // 2), (w // 2, w // 2)]
        padded = propagate(
            np.pad(arr, widths, mode="reflect"),
            z,
            wavelength_nm=wavelength_nm,
            pixel_size_um=pixel_size_um,
            medium_index=medium_index,
            band_limit=band_limit,
            workers=workers,
        )
        return np.ascontiguousarray(padded[..., h // 2 : h // 2 + h, w // 2 : w // 2 + w])
    transfer = transfer_function(
        arr.shape[-2:],
        z,
        wavelength_nm=wavelength_nm,
        pixel_size_um=pixel_size_um,
        medium_index=medium_index,
        band_limit=band_limit,
    )
    workers = workers or fft_workers()
    spectrum = sfft.fft2(arr, workers=workers)
    spectrum *= transfer
    return sfft.ifft2(spectrum, workers=workers, overwrite_x=True).astype(np.complex64, copy=False)


class Propagator:
    """A field and its spectrum, ready to be propagated to many planes (autofocus, a z slider).

    Each :meth:`at` costs one multiply and one inverse FFT (the forward FFT is done once).
    """

    def __init__(
        self,
        field: np.ndarray,
        *,
        wavelength_nm: float,
        pixel_size_um: float,
        medium_index: float = 1.0,
        sign: int = 1,
        band_limit: bool = True,
        workers: int | None = None,
    ) -> None:
        self.wavelength_nm, self.pixel_size_um, self.medium_index = check_optics(
            wavelength_nm, pixel_size_um, medium_index
        )
        self._field: np.ndarray | None = _as_field(field)
        self.sign = 1 if sign >= 0 else -1
        self.band_limit = band_limit
        self.workers = workers or fft_workers()
        self.spectrum = sfft.fft2(self._field, workers=self.workers)

    @classmethod
    def from_spectrum(
        cls,
        spectrum: np.ndarray,
        *,
        wavelength_nm: float,
        pixel_size_um: float,
        medium_index: float = 1.0,
        sign: int = 1,
        band_limit: bool = True,
        workers: int | None = None,
    ) -> Propagator:
        """A propagator of the field whose ``fft2`` is ``spectrum`` (fft order, ``(..., H, W)``);
        the field itself is transformed only if asked for."""
        self = cls.__new__(cls)
        self.wavelength_nm, self.pixel_size_um, self.medium_index = check_optics(
            wavelength_nm, pixel_size_um, medium_index
        )
        self._field = None
        self.sign = 1 if sign >= 0 else -1
        self.band_limit = band_limit
        self.workers = workers or fft_workers()
        self.spectrum = np.asarray(spectrum, dtype=np.complex64)
        return self

    @property
    def field(self) -> np.ndarray:
        """The field in its own plane (complex64)."""
        if self._field is None:
            out = sfft.ifft2(self.spectrum, workers=self.workers)
            self._field = out.astype(np.complex64, copy=False)
        return self._field

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the field, ``(..., H, W)``."""
        return tuple(self.spectrum.shape)

    def transfer(self, z_um: float) -> np.ndarray:
        """The transfer function to ``z_um`` (already signed for this field's sideband)."""
        return transfer_function(
            self.spectrum.shape[-2:],
            _check_z(z_um) * self.sign,
            wavelength_nm=self.wavelength_nm,
            pixel_size_um=self.pixel_size_um,
            medium_index=self.medium_index,
            band_limit=self.band_limit,
        )

    def transfer_into(self, out: np.ndarray, z_um: float) -> np.ndarray:
        """:meth:`transfer` written into ``out`` (complex64, ``(H, W)``), not cached."""
        return fill_transfer(
            out,
            _check_z(z_um) * self.sign,
            wavelength_nm=self.wavelength_nm,
            pixel_size_um=self.pixel_size_um,
            medium_index=self.medium_index,
            band_limit=self.band_limit,
        )

    def at_many(self, zs_um: Sequence[float]) -> np.ndarray:
        """The field at each of ``zs_um``, ``(len(zs), ...shape)`` complex64: the transfer
        functions formed into one array and one batched inverse FFT (for a few planes of a small
        field, several times faster than :meth:`at` for each)."""
        zs = [_check_z(z) for z in zs_um]
        work = np.empty((len(zs), *self.shape), np.complex64)
        stacked = len(self.shape) > 2
        transfer = np.empty(self.shape[-2:], np.complex64) if stacked else None
        for plane, z in zip(work, zs, strict=True):
            if z == 0:  # the field as it is, as :meth:`at` gives it (evanescent waves kept)
                np.copyto(plane, self.spectrum)
            elif stacked:
                np.multiply(self.spectrum, self.transfer_into(transfer, z), out=plane)
            else:
                np.multiply(self.spectrum, self.transfer_into(plane, z), out=plane)
        fields = sfft.ifft2(work, axes=(-2, -1), workers=self.workers, overwrite_x=True)
        return fields.astype(np.complex64, copy=False)

    def at(self, z_um: float, out: np.ndarray | None = None) -> np.ndarray:
        """The field ``z_um`` downstream (complex64).

        ``out``: a complex64 array of the field's shape to write it into (returned): a search
        over many planes then allocates nothing per plane (fresh pages cost as much as the
        transfer function's arithmetic). Without it the transfer function is the cached one.
        """
        z = _check_z(z_um)
        if out is None:
            if z == 0:
                return self.field.copy()
            spectrum = self.spectrum * self.transfer(z)
        elif z == 0:
            np.copyto(out, self.field)
            return out
        else:
            plane = out if out.ndim == 2 else np.empty(out.shape[-2:], np.complex64)
            spectrum = np.multiply(self.spectrum, self.transfer_into(plane, z), out=out)
        field = sfft.ifft2(spectrum, workers=self.workers, overwrite_x=True)
        return field.astype(np.complex64, copy=False)


__all__ = [
    "WORKERS_ENV",
    "Propagator",
    "band_limit_cycles_per_um",
    "check_optics",
    "fft_workers",
    "fill_transfer",
    "propagate",
    "transfer_function",
]
