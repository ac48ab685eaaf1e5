"""Classical off-axis phase retrieval: hologram in, phase in radians out.

Pipeline: real FFT of the hologram; sideband from the settings, the acquisition metadata or an
automatic search; filtered crop of the sideband, inverse transformed at native resolution (one
sample per ``q`` pixels, ``q = crop_factor``); division by a reference hologram's field if one is
given (the optics' aberrations cancel); least-squares unwrapping; polynomial fit over the
background pixels, subtracted; sign fixed so that cells (denser than the medium) are positive.

Full resolution is the band-limited field at every input pixel, from a zero-padded inverse FFT. Its
wrapped phase is unwrapped by making it congruent to the native unwrapped phase interpolated to the
full grid; the background is interpolated the same way. Only the FFT, one ``angle`` and a few
element-wise passes run at full size.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..acquisition import Acquisition
from ..defaults import DEFAULT_BACKGROUND_ORDER, DEFAULT_FILTER
from ..errors import InputError, QPIWarning
from .background import background_mask as auto_background_mask
from .background import fit_background, noise_sigma
from .fourier import (
    DEFAULT_RADIUS_FRACTION,
    FILTERS,
    Sideband,
    as_image,
    crop_factor,
    demodulate,
    find_sideband,
    half_spectrum,
    subbin_offset,
)
from .refocus import FieldRefocus
from .saturation import fill_clipped
from .unwrap import UnwrapReport, unwrap_phase

_TWO_PI = np.float32(2 * np.pi)


@dataclass(frozen=True)
class OffAxisSettings:
    """Settings of :func:`retrieve_offaxis`.

    Attributes
    ----------
    carrier
        Sideband position ``(fy, fx)`` in cycles per pixel carrying ``+phi`` (see CONTRACTS.md).
        ``None`` takes it from the acquisition metadata, else searches for it.
    filter
        Sideband filter: ``"disk"``, ``"smooth_disk"`` (raised-cosine edge) or ``"gaussian"``.
    radius_fraction
        Filter radius as a fraction of the carrier distance (used unless an NA is known).
    numerical_aperture
        Detection NA; sizes the filter at ``NA / lambda`` (needs wavelength and pixel size in the
        acquisition). ``None`` uses the acquisition's NA if it has one.
    background_order
        Order (0-5) of the 2-D polynomial fitted to the background phase and subtracted.
    resolution
        ``"full"``: one phase value per input pixel. ``"native"``: the sampling the sideband
        supports, ``pixel_size_factor`` times coarser, much faster for large images.
    unwrap
        Unwrap the phase (and then subtract the background and fix the sign). ``False`` returns
        the wrapped phase in ``[-pi, pi)``.
    unwrap_method
        ``"auto"``, ``"ls"`` or ``"quality"``, see :func:`~napari_qpi.retrieval.unwrap_phase`.
    sign_carrier
        The sideband ``(fy, fx)`` that carries ``+phi`` on this microscope (from a profile, or
        decided once on the first planes of a stack or folder): the sideband is still searched,
        and of the two mirror sidebands the one nearer this is taken as ``+phi``. A sideband far
        from both (another microscope) falls back to the cells-positive rule.
    refocus_um
        Propagate the complex field this far (um, positive downstream, see
        :mod:`~napari_qpi.retrieval.propagation`) before unwrapping; needs wavelength and pixel
        size. ``None``: no refocus. Autofocus:
        :func:`~napari_qpi.retrieval.refocus.hologram_autofocus`.
    """

    carrier: tuple[float, float] | None = None
    filter: Literal["disk", "smooth_disk", "gaussian"] = DEFAULT_FILTER  # "smooth_disk"
    radius_fraction: float = DEFAULT_RADIUS_FRACTION
    numerical_aperture: float | None = None
    background_order: int = DEFAULT_BACKGROUND_ORDER  # 2
    resolution: Literal["full", "native"] = "full"
    unwrap: bool = True
    unwrap_method: Literal["auto", "ls", "quality"] = "auto"
    refocus_um: float | None = None
    sign_carrier: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.filter not in FILTERS:
            raise InputError(f"Unknown filter {self.filter!r}; choose one of {', '.join(FILTERS)}.")
        if self.resolution not in ("full", "native"):
            raise InputError(f"resolution must be 'full' or 'native', got {self.resolution!r}.")
        if not 0 < float(self.radius_fraction) < 1:
            raise InputError(
                f"radius_fraction must lie between 0 and 1, got {self.radius_fraction!r}."
            )
        order = self.background_order
        if (
            isinstance(order, bool)
            or not isinstance(order, (int, np.integer))
            or not 0 <= order <= 5
        ):
            raise InputError(f"background_order must be an integer 0-5, got {order!r}.")
        if self.unwrap_method not in ("auto", "ls", "quality"):
            raise InputError(
                f"Unknown unwrap_method {self.unwrap_method!r}; use 'auto', 'ls' or 'quality'."
            )
        if self.sign_carrier is not None:
            try:
                fy, fx = (float(c) for c in self.sign_carrier)
            except (TypeError, ValueError):
                raise InputError(
                    f"sign_carrier must be two numbers (fy, fx), got {self.sign_carrier!r}."
                ) from None
            object.__setattr__(self, "sign_carrier", (fy, fx))
        if self.refocus_um is not None and not np.isfinite(self.refocus_um):
            raise InputError(f"refocus_um must be a finite number of um, got {self.refocus_um!r}.")
        if self.numerical_aperture is not None and not self.numerical_aperture > 0:
            raise InputError(
                f"numerical_aperture must be positive, got {self.numerical_aperture!r}."
            )


@dataclass
class PhaseResult:
    """Output of a phase retrieval.

    Attributes
    ----------
    phase
        Phase in radians (float32), background at 0, cells positive.
    pixel_size_factor
        Output pixel size over input pixel size: 1.0 at full resolution, ``q`` at native.
    sideband
        The sideband that was demodulated.
    info
        How it was done: crop factor, sign and where it came from, unwrapping report, background
        fit, timings in ms.
    """

    phase: np.ndarray
    pixel_size_factor: float
    sideband: Sideband
    info: dict[str, Any] = field(default_factory=dict)


def _upsample(native: np.ndarray, q: int, shape: tuple[int, int]) -> np.ndarray:
    """Linear interpolation from every ``q``-th pixel to the full ``shape`` grid (float32).

    Native sample ``[j, i]`` sits on full pixel ``[q j, q i]``; the last ``q - 1`` rows and columns
    are extrapolated linearly. Columns first on the small grid, then rows straight into the output.
    """
    a = native.astype(np.float32, copy=False)
    if q == 1:
        return a
    m, n = a.shape
    t = np.arange(q, dtype=np.float32) / np.float32(q)
    step = np.diff(a, axis=1, append=2 * a[:, -1:] - a[:, -2:-1])
    rows = (a[:, :, None] + step[:, :, None] * t).reshape(m, n * q)
    step = np.diff(rows, axis=0, append=2 * rows[-1:] - rows[-2:-1])
    out = np.empty((m, q, n * q), dtype=np.float32)
    np.multiply(step[:, None, :], t[None, :, None], out=out)
    out += rows[:, None, :]
    return out.reshape(m * q, n * q)[: shape[0], : shape[1]]


def cells_sign_evidence(corrected: np.ndarray, mask: np.ndarray) -> float:
    """Signed evidence for the sign of the cells in a background-corrected phase (radians * px).

    Cells are denser than the medium, so with the right sign they rise above the background; noise
    is symmetric. The evidence is the mass above ``+3 sigma`` minus the mass below ``-3 sigma``
    (sigma: the background noise, :func:`~napari_qpi.retrieval.background.noise_sigma`), so it
    does not depend on which pixels the background mask let through. Positive: the phase is right;
    negative: flip it; near 0: nothing stands out (an empty field). Stacks add the evidence of
    their planes and decide once.
    """
    sigma = noise_sigma(corrected[mask]) if np.count_nonzero(mask) >= 16 else noise_sigma(corrected)
    limit = np.float32(3 * sigma)
    up = corrected - limit
    down = -corrected - limit
    return float(up[up > 0].sum(dtype=np.float64) - down[down > 0].sum(dtype=np.float64))


#: Below this fraction of the field, the automatic background is too small to trust.
MIN_BACKGROUND_FRACTION = 0.10
#: Fewer pixels than this fraction more than 5 noise sigmas off the background: no cells stand out.
MIN_STANDOUT_FRACTION = 5e-4
#: More pixels than this fraction next to a 2 pi jump after unwrapping gets a warning.
MAX_JUMP_FRACTION = 1e-3


#: A searched sideband this close to ``sign_carrier`` (or its mirror), as a fraction of the carrier
#: distance, is taken as the same microscope's.
SIGN_CARRIER_TOLERANCE = 0.15


def _sign_from_carrier(sideband: Sideband, plus: tuple[float, float] | None) -> int | None:
    """+1 / -1 when ``sideband`` is ``plus`` or its mirror (within the tolerance), else None."""
    if plus is None:
        return None
    (fy, fx), (py, px) = sideband.center_cycles_per_px, plus
    same = float(np.hypot(fy - py, fx - px))
    mirror = float(np.hypot(fy + py, fx + px))
    if min(same, mirror) > SIGN_CARRIER_TOLERANCE * max(sideband.carrier_distance, 1e-6):
        return None
    return 1 if same <= mirror else -1


class RetrievalWarning(QPIWarning):
    """A phase image was made, but part of it may be wrong: the message says what and why."""


def _check_background(fraction: float, standout: float, given: bool) -> str | None:
    """A one-line warning when the background found is implausible, else ``None``.

    ``fraction``: the background's share of the field; ``standout``: the share of pixels, away from
    the image border, more than 5 noise sigmas from the fitted background (Gaussian noise alone
    gives about 6e-7).
    """
    if given:
        return None
    if fraction < MIN_BACKGROUND_FRACTION:
        return (
            f"Only {100 * fraction:.0f}% of the field looks like background: the background fit "
            "may absorb part of the cells. Give a background hologram (--reference), a lower "
            "background order or a background mask."
        )
    if standout < MIN_STANDOUT_FRACTION:
        return (
            f"No cells stand out of the noise ({100 * fraction:.0f}% of the field looks like "
            "background): the phase sign cannot be told from this field. If there are cells, "
            "check the focus; give the sign with a microscope profile (--profile) or a carrier."
        )
    return None


def _unwrap_quality(report: UnwrapReport, shape: tuple[int, int]) -> dict[str, Any]:
    """The unwrapping figures recorded with every phase: residues and 2 pi jumps."""
    pixels = shape[0] * shape[1]
    fraction = min(1.0, 2 * report.jumps / pixels)
    return {
        "method": report.method,
        "residues": report.residues,
        "jumps": report.jumps,
        "jump_fraction": fraction,
        "ok": fraction <= MAX_JUMP_FRACTION,
    }


def retrieve_offaxis(
    hologram: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
    background_mask: np.ndarray | None = None,
) -> PhaseResult:
    """Phase in radians of a single off-axis hologram.

    Parameters
    ----------
    hologram
        2-D intensity image ``|R + O|^2`` (any real dtype).
    reference
        Optional hologram of an empty field taken with the same optics: its field divides the
        object field so fixed aberrations and the carrier's exact position cancel.
    acquisition
        Metadata: the carrier (``carrier_cycles_per_px``), and the NA, wavelength and pixel size
        for an NA-based filter radius.
    settings
        :class:`OffAxisSettings`; defaults if ``None``.
    background_mask
        Background pixels (True), same shape as the hologram; found automatically if ``None``.

    Returns
    -------
    PhaseResult
        Float32 phase; at ``resolution="native"`` sampled on every ``pixel_size_factor``-th pixel.

    Sign: with a carrier from the settings or metadata, that sideband is taken as carrying ``+phi``
    (CONTRACTS.md). With an automatic search the sideband found may be either of the two conjugate
    ones, and the sign is set so that what is not background (the cells) is positive on balance.

    Raises
    ------
    InputError
        Not a single 2-D real finite image, reference or mask of another shape.
    SidebandError
        No fringes found, or a carrier outside the spectrum.
    MetadataError
        NA-based radius without wavelength or pixel size.
    """
    t0 = time.perf_counter()
    settings = settings or OffAxisSettings()
    acq = acquisition or Acquisition()
    img, ref, mask_full = _checked_inputs(hologram, reference, background_mask)
    shape = img.shape

    carrier = settings.carrier if settings.carrier is not None else acq.carrier_cycles_per_px
    na = settings.numerical_aperture or acq.numerical_aperture
    spectrum = half_spectrum(img)
    sideband = find_sideband(
        img,
        carrier=carrier,
        radius_fraction=settings.radius_fraction,
        numerical_aperture=na,
        wavelength_nm=acq.wavelength_nm,
        pixel_size_um=acq.pixel_size_um,
        spectrum=spectrum,
    )
    q = crop_factor(shape, sideband, settings.filter)
    info = _info_record(settings, sideband, q, carrier, ref is not None)
    ref_spectrum = half_spectrum(ref) if ref is not None else None
    if settings.refocus_um is not None:  # clipped pixels would spread through the cells
        img, spectrum, ref, ref_spectrum = fill_clipped(
            img, spectrum, ref, ref_spectrum, sideband, settings.filter, info
        )
    demod = _Demodulation(img, ref, spectrum, ref_spectrum, sideband, q, settings.filter)
    wrapped_n, ref_n = demod.native_phase(settings.refocus_um, acq, carrier is not None, info)
    t_native = time.perf_counter()

    if not settings.unwrap:
        info["sign_from"] = "none"
        if settings.resolution == "native":
            phase = wrapped_n.astype(np.float32)
        else:
            phase = demod.wrapped_phase_full()
        info["time_ms"] = {"total": 1e3 * (time.perf_counter() - t0)}
        return PhaseResult(
            phase, 1.0 if settings.resolution == "full" else float(q), sideband, info
        )

    unwrapped_n, report = unwrap_phase(wrapped_n, method=settings.unwrap_method, return_report=True)
    info["unwrap"] = _unwrap_quality(report, unwrapped_n.shape)
    order = int(settings.background_order)
    mask_n, background_n = _native_background(unwrapped_n, mask_full, q, order)
    corrected_n = unwrapped_n - background_n
    sign = _phase_sign(info, corrected_n, mask_n, sideband, settings.sign_carrier, carrier)
    info["background"] = _background_record(corrected_n, mask_n, order, mask_full is not None)
    warnings_out = _retrieval_warnings(info, report.residues, mask_full is not None)
    info["warnings"] = warnings_out
    for message in warnings_out:
        warnings.warn(message, RetrievalWarning, stacklevel=2)
    t_unwrap = time.perf_counter()

    if settings.resolution == "native":
        phase = corrected_n
        factor = float(q)
    else:
        phase = _full_resolution_phase(
            demod.object_phase_full(),
            unwrapped_n,
            background_n,
            ref_n,
            sideband,
            q,
            settings.unwrap_method,
        )
        factor = 1.0
    if sign < 0:
        np.negative(phase, out=phase)
    info["time_ms"] = {
        "native_field": 1e3 * (t_native - t0),
        "unwrap_background": 1e3 * (t_unwrap - t_native),
        "total": 1e3 * (time.perf_counter() - t0),
    }
    return PhaseResult(phase.astype(np.float32, copy=False), factor, sideband, info)


def _info_record(
    settings: OffAxisSettings,
    sideband: Sideband,
    q: int,
    carrier: tuple[float, float] | None,
    has_reference: bool,
) -> dict[str, Any]:
    """The start of a result's ``info``: the method, crop factor, filter and its radius
    (cycles/pixel), where the carrier came from, whether a reference was used, the resolution."""
    return {
        "method": "offaxis",
        "crop_factor": q,
        "filter": settings.filter,
        "radius_cycles_per_px": sideband.radius_cycles_per_px,
        "carrier_from": "settings"
        if settings.carrier is not None
        else ("metadata" if carrier is not None else "search"),
        "reference": has_reference,
        "resolution": settings.resolution,
    }


@dataclass
class _Demodulation:
    """A hologram (and its reference hologram) with their half spectra, and how they are
    demodulated: the sideband, the crop factor ``q`` (native pixels are ``q`` input pixels), the
    filter and, once set, the refocus applied to the fields."""

    img: np.ndarray
    ref: np.ndarray | None
    spectrum: np.ndarray
    ref_spectrum: np.ndarray | None
    sideband: Sideband
    q: int
    filter: str
    refocus: FieldRefocus | None = None

    def field(self, image: np.ndarray, spec: np.ndarray, resolution: str) -> np.ndarray:
        """The complex field of ``image`` (spectrum ``spec``) at ``resolution``."""
        return demodulate(
            image,
            self.sideband,
            filter=self.filter,
            resolution=resolution,
            spectrum=spec,
            factor=self.q,
        )

    def native_phase(
        self,
        refocus_um: float | None,
        acquisition: Acquisition,
        sign_known: bool,
        info: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Wrapped phase (radians) of ``O / R`` at native resolution, and the reference's native
        field (``None`` without a reference, or once refocusing has divided it in).

        With ``refocus_um`` (um) the field is refocused before unwrapping, which also resolves
        the sign unless ``sign_known``; the refocus is kept in ``self.refocus`` and recorded in
        ``info``.
        """
        obj_n = self.field(self.img, self.spectrum, "native")
        ref_n = self.field(self.ref, self.ref_spectrum, "native") if self.ref is not None else None
        if refocus_um is not None:  # O / R refocused before unwrapping; sign resolved
            self.refocus = FieldRefocus(
                refocus_um,
                acquisition,
                self.sideband,
                self.img.shape,
                self.q,
                self.filter,
                sign_known=sign_known,
            )
            obj_n, ref_n = self.refocus.native(obj_n, ref_n)
            info.update(self.refocus.record())
        return np.angle(obj_n * np.conj(ref_n) if ref_n is not None else obj_n), ref_n

    def wrapped_phase_full(self) -> np.ndarray:
        """Wrapped phase (radians, float32) of ``O / R`` at every input pixel, the sub-bin
        carrier removed: the output when the phase is not unwrapped."""
        if self.refocus is not None:
            obj = self.refocus.full(
                self.img, self.ref, self.spectrum, self.ref_spectrum, keep_subbin=False
            )
            return np.angle(obj).astype(np.float32)
        obj = self.field(self.img, self.spectrum, "full")
        if self.ref is not None:
            obj *= np.conj(self.field(self.ref, self.ref_spectrum, "full"))
        return np.angle(obj).astype(np.float32)

    def object_phase_full(self) -> np.ndarray:
        """Wrapped phase (radians) of the object field at every input pixel with its sub-bin
        carrier kept (refocused ``O / R`` when refocusing), to be unwrapped against the native
        phase; the full-size complex field lives only until its angle is taken."""
        if self.refocus is not None:
            return np.angle(
                self.refocus.full(
                    self.img, self.ref, self.spectrum, self.ref_spectrum, keep_subbin=True
                )
            )
        return np.angle(
            demodulate(
                self.img,
                self.sideband,
                filter=self.filter,
                resolution="full",
                spectrum=self.spectrum,
                factor=self.q,
                remove_subbin=False,
            )
        )


def _native_background(
    unwrapped_n: np.ndarray, mask_full: np.ndarray | None, q: int, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """The background mask at native resolution (the given full-size mask sampled every ``q``
    pixels, else found) and the polynomial of ``order`` fitted over it (radians)."""
    if mask_full is not None:
        mask_n = mask_full[::q, ::q]
    else:
        mask_n = auto_background_mask(unwrapped_n, order=order)
    return mask_n, fit_background(unwrapped_n, order=order, mask=mask_n)


def _checked_inputs(
    hologram: np.ndarray, reference: np.ndarray | None, background_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The hologram as a 2-D real image, and the reference hologram and the background mask
    (boolean) checked to have its shape.

    Raises
    ------
    InputError
        Not a single 2-D real finite image, reference or mask of another shape.
    """
    img = as_image(hologram)
    shape = img.shape
    ref = None
    if reference is not None:
        ref = as_image(reference, "reference hologram")
        if ref.shape != shape:
            raise InputError(
                f"The reference hologram has shape {ref.shape} but the hologram has {shape}; "
                "they must be taken with the same camera region."
            )
    mask_full = None
    if background_mask is not None:
        mask_full = np.asarray(background_mask, dtype=bool)
        if mask_full.shape != shape:
            raise InputError(
                f"The background mask has shape {mask_full.shape} but the hologram has {shape}."
            )
    return img, ref, mask_full


def _phase_sign(
    info: dict[str, Any],
    corrected_n: np.ndarray,
    mask_n: np.ndarray,
    sideband: Sideband,
    sign_carrier: tuple[float, float] | None,
    carrier: tuple[float, float] | None,
) -> int:
    """The sign (+1 or -1) that makes the demodulated phase ``+phi``, recorded in ``info``.

    A carrier that was given (settings, metadata) carries ``+phi`` by contract; else the sideband
    nearer ``sign_carrier``; else the data (cells positive on balance). Also records the evidence
    and the carrier (cycles/pixel) of the sideband that carries ``+phi``.
    """
    evidence = cells_sign_evidence(corrected_n, mask_n)
    hint = _sign_from_carrier(sideband, sign_carrier) if carrier is None else None
    if carrier is not None:
        sign, info["sign_from"] = 1, info["carrier_from"]
    elif hint is not None:
        sign, info["sign_from"] = hint, "sign carrier"
    else:
        sign, info["sign_from"] = (1 if evidence >= 0 else -1), "data"
    info["sign"] = sign
    info["sign_evidence"] = evidence
    # The sideband that carries +phi: the one demodulated, or its mirror when the sign was flipped.
    plus = sideband if sign > 0 else sideband.conjugate()
    info["carrier_cycles_per_px"] = [float(c) for c in plus.center_cycles_per_px]
    return sign


def _background_record(
    corrected_n: np.ndarray, mask_n: np.ndarray, order: int, given: bool
) -> dict[str, Any]:
    """How the background was fitted: polynomial order, mask (given or found) and its fraction,
    noise in radians over it, and the fraction of inner pixels standing out (> 5 sigma)."""
    fraction = float(np.count_nonzero(mask_n) / mask_n.size)
    record: dict[str, Any] = {
        "model": f"polynomial order {order}",
        "order": order,
        "mask": "given" if given else "auto",
        "fraction": fraction,
        "noise_rad": noise_sigma(corrected_n[mask_n]) if mask_n.any() else None,
    }
    sigma = record["noise_rad"] or noise_sigma(corrected_n)
    inner = tuple(slice(round(0.05 * n), n - round(0.05 * n)) for n in corrected_n.shape)
    record["standout_fraction"] = float(np.mean(np.abs(corrected_n[inner]) > 5 * sigma))
    return record


def _retrieval_warnings(info: dict[str, Any], residues: int, given: bool) -> list[str]:
    """What the user should know about a retrieval: a doubtful background (from
    ``info["background"]``, mask ``given`` or not) and 2 pi jumps left by unwrapping."""
    found: list[str] = []
    background = info["background"]
    problem = _check_background(background["fraction"], background["standout_fraction"], given)
    if problem:
        found.append(problem)
    if not info["unwrap"]["ok"]:
        found.append(
            f"Phase unwrapping left {100 * info['unwrap']['jump_fraction']:.2f}% of the pixels "
            f"next to a 2 pi jump ({residues} residues): part of the phase may be off by "
            "2 pi. Is the hologram in focus? Try --refocus auto; retrieval.jump_mask shows where."
        )
    return found


def _full_resolution_phase(
    wrapped: np.ndarray,
    unwrapped_n: np.ndarray,
    background_n: np.ndarray,
    ref_n: np.ndarray | None,
    sideband: Sideband,
    q: int,
    unwrap_method: str,
) -> np.ndarray:
    """Background-corrected phase (radians, float32) at every pixel of the hologram.

    ``wrapped`` is the phase of the object field at full resolution with its sub-bin carrier kept;
    it is made congruent (mod 2 pi) to the native unwrapped phase ``unwrapped_n`` (plus the
    reference's, less the sub-bin ramp) upsampled by ``q``, then the upsampled smooth part
    (background, reference, ramp) is subtracted.
    """
    shape = wrapped.shape
    smooth_n = background_n
    total_n = unwrapped_n
    if ref_n is not None:
        ref_phase_n = unwrap_phase(np.angle(ref_n), method=unwrap_method)
        smooth_n = smooth_n + ref_phase_n
        total_n = total_n + ref_phase_n
    sub_y, sub_x = subbin_offset(sideband, shape)
    if sub_y or sub_x:
        ramp_n = _TWO_PI * (
            np.float32(q * sub_y) * np.arange(total_n.shape[0], dtype=np.float32)[:, None]
            + np.float32(q * sub_x) * np.arange(total_n.shape[1], dtype=np.float32)[None, :]
        )
        total_n = total_n - ramp_n
        smooth_n = smooth_n - ramp_n
    estimate = _upsample(total_n, q, shape)
    estimate -= wrapped
    estimate /= _TWO_PI
    np.round(estimate, out=estimate)
    estimate *= _TWO_PI
    estimate += wrapped
    estimate -= _upsample(smooth_n, q, shape)
    return estimate


__all__ = [
    "OffAxisSettings",
    "PhaseResult",
    "RetrievalWarning",
    "cells_sign_evidence",
    "retrieve_offaxis",
]
