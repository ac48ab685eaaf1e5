"""Refocusing of off-axis holograms: the demodulated field, autofocus, the retrieval hook, z-stacks.

The field that is refocused is the object field divided by the reference hologram's field when
one is given (``O / R``: the fixed aberrations of the optics and the illumination pattern live
in the camera plane and must go before the field is carried to another plane), else the object
field as demodulated. Propagation (:mod:`.propagation`) uses the wavelength, the pixel size in
the sample plane and the medium index of the acquisition (index 1.0 when it is not known; z then
counts as in air).

Sign: the sideband from the settings or the metadata carries ``+phi`` (CONTRACTS.md), so z means
what :mod:`.propagation` says. A sideband found by search may be the conjugate one; its sign is
then read from the data *in focus*: for a requested z the field is taken to ``+z`` and ``-z``,
the sharper of the two (focus metric) is the in-focus one, and the sign of its phase in the cells
says which sideband it was. Autofocus finds the plane first and reads the sign there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.fft as sfft

from ..acquisition import Acquisition
from ..errors import InputError
from .autofocus import DEFAULT_METRIC, METRICS, FocusResult, drain, iter_autofocus, phase_sign
from .fourier import (
    Sideband,
    _filter_support,
    _gather,
    as_image,
    crop_factor,
    crop_window,
    demodulate,
    find_sideband,
    half_spectrum,
    subbin_offset,
)
from .propagation import Propagator, check_optics, fft_workers, propagate
from .saturation import fill_saturated

if TYPE_CHECKING:
    from .offaxis import OffAxisSettings

#: Smallest |R| relative to its median that the reference division uses (avoids 0 / 0).
REFERENCE_FLOOR = 1e-3


#: Most pixels of ``|ref|`` whose median sets the floor of :func:`divide_reference` (an evenly
#: strided sample of larger fields: the floor only guards against ``0 / 0``).
REFERENCE_MEDIAN_SAMPLES = 1 << 14


def divide_reference(obj: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``obj / ref`` of complex fields (complex64); ``|ref|`` floored at 1e-3 of its median (of
    at most :data:`REFERENCE_MEDIAN_SAMPLES` pixels)."""
    power = (ref.real * ref.real + ref.imag * ref.imag).astype(np.float32)
    sample = power.reshape(-1)[:: max(1, power.size // REFERENCE_MEDIAN_SAMPLES)]
    floor = np.float32((REFERENCE_FLOOR * float(np.median(np.sqrt(sample)))) ** 2 + 1e-30)
    out = obj * np.conj(ref)
    out /= np.maximum(power, floor)
    return out.astype(np.complex64, copy=False)


def optics(acquisition: Acquisition | None) -> tuple[float, float, float]:
    """``(wavelength_nm, pixel_size_um, medium_index)`` of an acquisition, checked."""
    acq = acquisition or Acquisition()
    return check_optics(acq.wavelength_nm, acq.pixel_size_um, acq.medium_index or 1.0)


@dataclass
class HologramField:
    """The complex field of a hologram, ready to refocus.

    Attributes
    ----------
    field
        Complex64 field ``(h, w)`` (``O / R`` with a reference), sub-bin carrier ramp removed.
    pixel_size_um
        Its pixel size in the sample plane (``crop_factor`` times the camera's at native).
    sign
        +1: the sideband carries ``+phi``; 0: found by search, sign not known yet.
    sideband, crop_factor
        The sideband demodulated and the native downsampling ``q``.
    scale, band_cycles_per_um
        Input pixels per field pixel, and the band of the field (the filter's support), cycles
        per um in the sample plane.
    filter, hologram_shape
        The sideband filter's name and the hologram's shape (for :meth:`band_window`).
    """

    field: np.ndarray
    pixel_size_um: float
    sign: int
    sideband: Sideband
    crop_factor: int
    wavelength_nm: float
    medium_index: float
    scale: float = 1.0
    band_cycles_per_um: float | None = None
    filter: str = "smooth_disk"
    hologram_shape: tuple[int, int] | None = None

    def band_window(self) -> np.ndarray:
        """The sideband filter on this field's FFT grid, centred (fft order, float32): the band
        the field holds (the sub-bin offset, under one bin, is left out)."""
        shape = self.hologram_shape or self.field.shape[-2:]
        return crop_window(
            tuple(self.field.shape[-2:]),
            (0.0, 0.0),
            tuple(shape),
            self.sideband.radius_cycles_per_px,
            self.filter,
        )

    def propagator(self, sign: int = 1) -> Propagator:
        """A :class:`Propagator` of this field with the given sideband sign."""
        return Propagator(
            self.field,
            wavelength_nm=self.wavelength_nm,
            pixel_size_um=self.pixel_size_um,
            medium_index=self.medium_index,
            sign=sign,
        )


def hologram_field(
    hologram: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
    resolution: str = "native",
    fill_clipped: bool = True,
) -> HologramField:
    """Demodulate a hologram (and divide by its reference) for refocusing or autofocus.

    The sideband and filter follow ``settings`` and the acquisition as :func:`retrieve_offaxis`
    does. ``"native"`` (default) gives the field on every ``q``-th pixel: the same information in
    ``q^2`` times fewer pixels; ``"compact"`` on the smallest fast FFT grid that holds the filter
    (a step of ``H / my`` input pixels, not always an integer; ``"native"`` where no such grid is
    smaller), which makes autofocus fast; ``"full"`` at every input pixel. Clipped pixels are
    filled first (:mod:`.saturation`) unless ``fill_clipped`` is False.

    Raises
    ------
    MetadataError
        No wavelength or pixel size in the acquisition.
    """
    from .offaxis import OffAxisSettings

    settings = settings or OffAxisSettings()
    acq = acquisition or Acquisition()
    wavelength, pixel, index = optics(acq)
    img = as_image(hologram)
    carrier = settings.carrier if settings.carrier is not None else acq.carrier_cycles_per_px
    spectrum = half_spectrum(img, single=True)
    sideband = find_sideband(
        img,
        spectrum=spectrum,
        carrier=carrier,
        radius_fraction=settings.radius_fraction,
        numerical_aperture=settings.numerical_aperture or acq.numerical_aperture,
        wavelength_nm=acq.wavelength_nm,
        pixel_size_um=acq.pixel_size_um,
    )
    q = crop_factor(img.shape, sideband, settings.filter)
    compact = (
        _compact_size(img.shape, sideband, settings.filter) if resolution == "compact" else None
    )
    if compact is not None and compact[0] * q >= img.shape[0]:
        compact = None  # the native grid is as small
    if fill_clipped:
        img, spectrum, _ = fill_saturated(img, spectrum, sideband, settings.filter)

    def demod(image: np.ndarray, spec: np.ndarray) -> np.ndarray:
        if compact is not None:
            return demodulate_compact(spec, img.shape, sideband, settings.filter, compact)
        res = "native" if resolution == "compact" else resolution
        return demodulate(
            image, sideband, filter=settings.filter, resolution=res, factor=q, spectrum=spec
        )

    field = demod(img, spectrum)
    if reference is not None:
        ref = as_image(reference, "reference hologram")
        if ref.shape != img.shape:
            raise InputError(
                f"The reference hologram has shape {ref.shape} but the hologram has {img.shape}."
            )
        ref_spectrum = half_spectrum(ref, single=True)
        if fill_clipped:
            ref, ref_spectrum, _ = fill_saturated(ref, ref_spectrum, sideband, settings.filter)
        field = divide_reference(field, demod(ref, ref_spectrum))
    scale = img.shape[0] / field.shape[0]
    band = _filter_support(sideband.radius_cycles_per_px, settings.filter) / pixel
    return HologramField(
        field,
        pixel * scale,
        1 if carrier is not None else 0,
        sideband,
        q,
        wavelength,
        index,
        scale,
        band,
        settings.filter,
        img.shape,
    )


def _compact_size(
    shape: tuple[int, int], sideband: Sideband, filter: str
) -> tuple[int, int] | None:
    """Smallest fast FFT grid ``(my, mx)`` that holds the sideband filter and samples both axes
    with the same step ``H / my == W / mx``; ``None`` if there is none smaller than the image."""
    h, w = shape
    support = _filter_support(sideband.radius_cycles_per_px, filter)
    my = sfft.next_fast_len(math.ceil(2 * support * max(h, w)) + 2)
    while my < h:
        if (w * my) % h == 0 and sfft.next_fast_len(w * my // h) == w * my // h:
            mx = w * my // h
            if mx >= 2 * support * w + 2:
                return my, mx
        my = sfft.next_fast_len(my + 1)
    return None


def demodulate_compact(
    spectrum: np.ndarray,
    shape: tuple[int, int],
    sideband: Sideband,
    filter: str,
    size: tuple[int, int],
) -> np.ndarray:
    """The filtered sideband on a grid of ``size`` bins (complex64): the field sampled every
    ``H / my`` input pixels, sub-bin carrier ramp removed, amplitude as :func:`demodulate`."""
    h, w = shape
    my, mx = size
    fy, fx = sideband.center_cycles_per_px
    oy = sfft.fftfreq(my, 1.0 / my).astype(np.intp)
    ox = sfft.fftfreq(mx, 1.0 / mx).astype(np.intp)
    crop = _gather(spectrum, round(fy * h) + oy, round(fx * w) + ox, w)
    sub_y, sub_x = subbin_offset(sideband, shape)
    crop *= crop_window((my, mx), (sub_y, sub_x), shape, sideband.radius_cycles_per_px, filter)
    field = sfft.ifft2(crop, workers=fft_workers(), overwrite_x=True)
    field *= np.float32(my * mx / (h * w))
    if sub_y or sub_x:
        field *= np.exp(2j * np.pi * sub_y * h / my * np.arange(my)).astype(np.complex64)[:, None]
        field *= np.exp(2j * np.pi * sub_x * w / mx * np.arange(mx)).astype(np.complex64)[None, :]
    return field.astype(np.complex64, copy=False)


def native_region(region: Any, q: float) -> tuple[slice, slice] | None:
    """A region in hologram pixels (two slices or a box ``(y0, y1, x0, x1)``) on a grid sampled
    every ``q`` input pixels."""
    if region is None:
        return None
    if len(region) == 2 and all(isinstance(r, slice) for r in region):
        region = (region[0].start or 0, region[0].stop, region[1].start or 0, region[1].stop)
    y0, y1, x0, x1 = region
    scale = [None if v is None else int(int(v) // q) for v in (y0, y1, x0, x1)]
    return slice(scale[0], scale[1]), slice(scale[2], scale[3])


def iter_hologram_autofocus(
    hologram: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
    z_range: Sequence[float] | None = None,
    metric: str = DEFAULT_METRIC,
    region: Any = None,
    fill_clipped: bool = False,
) -> Generator[tuple[int, int], None, tuple[float, FocusResult]]:
    """Best refocus distance (um, sample convention) of one hologram or a stack held at one z.

    ``hologram`` is ``(H, W)`` or ``(N, H, W)``; a stack is scored plane by plane at each z and
    the sum minimised (one z for the stack; for a z per plane call this per plane). ``region`` is
    in hologram pixels. The field is demodulated on the compact grid (:func:`hologram_field`).
    ``fill_clipped`` fills clipped pixels first (:mod:`.saturation`; the retrieval always does
    when refocusing): off by default because it costs two more FFTs of the hologram, about a
    third of a 1024^2 autofocus (104 of 298 ms, load 8 on 2 cores), for a small gain in z
    (0.25 um pixels, -60 um, 868 pixels clipped: -59.50 um without, -59.74 um with). Returns the
    z to pass as
    ``OffAxisSettings(refocus_um=...)`` and the search record (whose z is in the demodulated
    field's own convention). Yields
    ``(planes done, planes in all)`` as it goes; :func:`hologram_autofocus` runs it to the end.
    """
    planes = np.asarray(hologram)
    planes = planes[None] if planes.ndim == 2 else planes
    if reference is not None and np.ndim(reference) == planes.ndim and planes.ndim == 3:
        refs = list(np.asarray(reference))
    else:
        refs = [reference] * len(planes)
    fields = [
        hologram_field(
            p,
            reference=r,
            acquisition=acquisition,
            settings=settings,
            resolution="compact",
            fill_clipped=fill_clipped,
        )
        for p, r in zip(planes, refs, strict=True)
    ]
    first = fields[0]
    stack = np.stack([f.field for f in fields]) if len(fields) > 1 else first.field
    prop = Propagator(
        stack,
        wavelength_nm=first.wavelength_nm,
        pixel_size_um=first.pixel_size_um,
        medium_index=first.medium_index,
    )
    result = yield from iter_autofocus(
        prop,
        z_range=z_range,
        metric=metric,
        region=native_region(region, first.scale),
        band_cycles_per_um=first.band_cycles_per_um,
        band_window=first.band_window(),
    )
    sign = first.sign or phase_sign(propagate_like(first, result.z_um))
    return sign * result.z_um, result


def hologram_autofocus(
    hologram: np.ndarray,
    *,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> tuple[float, FocusResult]:
    """Best refocus distance (um) and the search; arguments of :func:`iter_hologram_autofocus`.

    ``progress(done, total)`` is called after each plane.
    """
    return drain(iter_hologram_autofocus(hologram, **kwargs), progress)


def propagate_like(hfield: HologramField, z_um: float, sign: int = 1) -> np.ndarray:
    """``hfield.field`` propagated by ``z_um`` with its optics (mirror-padded)."""
    return propagate(
        hfield.field,
        z_um,
        wavelength_nm=hfield.wavelength_nm,
        pixel_size_um=hfield.pixel_size_um,
        medium_index=hfield.medium_index,
        sign=sign,
        pad=True,
    )


class FieldRefocus:
    """The refocus step of :func:`~napari_qpi.retrieval.offaxis.retrieve_offaxis`.

    Built from the settings once the sideband is known; :meth:`native` refocuses the native
    field (dividing the reference in first) and resolves the sideband sign, :meth:`full` gives the
    refocused full-resolution field; :meth:`record` is what goes into the result's info.
    """

    def __init__(
        self,
        z_um: float,
        acquisition: Acquisition | None,
        sideband: Sideband,
        shape: tuple[int, int],
        q: int,
        filter: str,
        *,
        sign_known: bool,
    ) -> None:
        self.z_um = float(z_um)
        self.wavelength_nm, self.pixel_size_um, self.medium_index = optics(acquisition)
        self.sideband, self.shape, self.q, self.filter = sideband, shape, q, filter
        self.sign = 1 if sign_known else 0
        self.sign_from = "metadata" if sign_known else "data"

    def _propagate(self, field: np.ndarray, pixel_um: float, sign: int) -> np.ndarray:
        return propagate(
            field,
            self.z_um,
            wavelength_nm=self.wavelength_nm,
            pixel_size_um=pixel_um,
            medium_index=self.medium_index,
            sign=sign,
            pad=True,
        )

    def native(self, obj_n: np.ndarray, ref_n: np.ndarray | None) -> tuple[np.ndarray, None]:
        """``(refocused O / R at native resolution, None)``: the reference is divided in."""
        field = divide_reference(obj_n, ref_n) if ref_n is not None else obj_n
        pixel = self.pixel_size_um * self.q
        if self.sign:
            return self._propagate(field, pixel, self.sign), None
        plus, minus = self._propagate(field, pixel, 1), self._propagate(field, pixel, -1)
        metric = METRICS[DEFAULT_METRIC]
        sharp = plus if metric(plus) <= metric(minus) else minus
        # the sharper plane is the focus: its phase is positive in cells iff the field is O
        self.sign = phase_sign(sharp)
        return (plus if self.sign > 0 else minus), None

    def full(
        self,
        hologram: np.ndarray,
        reference: np.ndarray | None,
        spectrum: np.ndarray,
        ref_spectrum: np.ndarray | None,
        *,
        keep_subbin: bool,
    ) -> np.ndarray:
        """Refocused ``O / R`` at every input pixel; with ``keep_subbin`` the sub-bin carrier ramp
        stays on it as on ``demodulate(..., remove_subbin=False)``."""

        def field(image: np.ndarray, spec: np.ndarray) -> np.ndarray:
            return demodulate(
                image,
                self.sideband,
                filter=self.filter,
                resolution="full",
                spectrum=spec,
                factor=self.q,
            )

        obj = field(hologram, spectrum)
        if reference is not None:
            obj = divide_reference(obj, field(reference, ref_spectrum))
        out = self._propagate(obj, self.pixel_size_um, self.sign or 1)
        sub_y, sub_x = subbin_offset(self.sideband, self.shape)
        if keep_subbin and (sub_y or sub_x):
            out *= np.exp(-2j * np.pi * sub_y * np.arange(out.shape[0])).astype(np.complex64)[
                :, None
            ]
            out *= np.exp(-2j * np.pi * sub_x * np.arange(out.shape[1])).astype(np.complex64)
        return out

    def record(self) -> dict[str, Any]:
        """What the result's info says about the refocus."""
        return {
            "refocus_um": self.z_um,
            "medium_index": self.medium_index,
            "sign": self.sign,
            "sign_from": self.sign_from,
        }


def iter_zstack(
    hologram: np.ndarray,
    zs: Sequence[float],
    *,
    reference: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray]]:
    """Phase (unwrapped, rad) and amplitude (relative) of a hologram refocused to each z (um).

    Returns two float32 stacks ``(Z, H, W)`` at the resolution of ``settings``. The sideband sign
    is resolved once (at the sharpest plane) so every plane uses the same convention. Yields
    ``(planes done, planes in all)``; :func:`zstack` runs it to the end.
    """
    from dataclasses import replace

    from .offaxis import OffAxisSettings, retrieve_offaxis

    zs = [float(z) for z in zs]
    if not zs or not all(math.isfinite(z) for z in zs):
        raise InputError("A z-stack needs at least one finite z (um).")
    settings = settings or OffAxisSettings()
    full = settings.resolution == "full"
    hfield = hologram_field(
        hologram,
        reference=reference,
        acquisition=acquisition,
        settings=settings,
        resolution="full" if full else "native",
    )
    sign = hfield.sign
    if not sign:
        scores = [METRICS[DEFAULT_METRIC](propagate_like(hfield, z)) for z in zs]
        best = zs[int(np.argmin(scores))]
        sign = phase_sign(propagate_like(hfield, best))
    sideband = hfield.sideband if sign > 0 else hfield.sideband.conjugate()
    fixed = replace(settings, carrier=sideband.center_cycles_per_px)
    if sign < 0:
        hfield.field = np.conj(hfield.field)
    phases, amplitudes = [], []
    for i, z in enumerate(zs):
        result = retrieve_offaxis(
            hologram,
            reference=reference,
            acquisition=acquisition,
            settings=replace(fixed, refocus_um=z),
        )
        phases.append(result.phase)
        amp = np.abs(propagate_like(hfield, z))
        amplitudes.append(amp / np.float32(np.median(amp) or 1.0))
        yield i + 1, len(zs)
    return np.stack(phases).astype(np.float32), np.stack(amplitudes).astype(np.float32)


def zstack(
    hologram: np.ndarray,
    zs: Sequence[float],
    *,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Phase and amplitude stacks refocused to each z; arguments of :func:`iter_zstack`."""
    return drain(iter_zstack(hologram, zs, **kwargs), progress)


__all__ = [
    "FieldRefocus",
    "HologramField",
    "divide_reference",
    "hologram_autofocus",
    "hologram_field",
    "iter_hologram_autofocus",
    "iter_zstack",
    "optics",
    "propagate_like",
    "zstack",
]
