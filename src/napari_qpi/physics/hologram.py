"""Off-axis hologram formation: a tilted reference wave interferes with the object wave.

The camera records

    I(y, x) = |R + O|^2,   R = a_r exp(+i 2 pi (fy y + fx x)),   O = a_o A exp(i (phi + W)),

with ``(fy, fx)`` the carrier frequency in cycles per pixel (fringe period ``1 / |f|`` pixels at
angle ``atan2(fy, fx)`` from the ``+x`` axis towards ``+y``), ``A`` and ``phi`` the amplitude and
phase of the sample (radians), and ``W`` the aberrations of the object arm (Zernike terms, radians).
The cross term ``conj(R) O`` sits at frequency ``(-fy, -fx)`` and carries ``+phi``: that is the
sideband whose phase is positive inside cells (see ``docs/dev/CONTRACTS.md``).

Intensities become camera counts through shot noise (Poisson, in electrons), Gaussian read noise,
an analogue-to-digital gain that maps the full well to the full digital range, and quantisation to
``bit_depth`` bits. Everything is seeded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ..acquisition import Acquisition
from ..errors import InputError

SeedLike = int | np.random.Generator | None

#: Zernike terms known to :func:`aberration_phase`, in the order of their Noll-like index.
ZERNIKE_TERMS: tuple[str, ...] = (
    "piston",
    "tilt_y",
    "tilt_x",
    "defocus",
    "astig_0",
    "astig_45",
    "coma_y",
    "coma_x",
    "spherical",
)


def _unit_disk_coordinates(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(v, u)``; the disk circumscribing the field has radius 1."""
    h, w = shape
    radius = 0.5 * math.hypot(h - 1, w - 1) or 1.0
    v = (np.arange(h, dtype=np.float64) - (h - 1) / 2) / radius
    u = (np.arange(w, dtype=np.float64) - (w - 1) / 2) / radius
    return v[:, None], u[None, :]


def zernike_term(name: str, shape: tuple[int, int]) -> np.ndarray:
    """One Zernike polynomial (unnormalised, peak value 1 on the unit circle) on the field.

    The unit disk circumscribes the field (its corners lie on the circle), ``u`` runs along x and
    ``v`` along y, and ``rho^2 = u^2 + v^2``: tilt_x = u, tilt_y = v, defocus = 2 rho^2 - 1,
    astig_0 = u^2 - v^2, astig_45 = 2 u v, coma_x = (3 rho^2 - 2) u, coma_y = (3 rho^2 - 2) v,
    spherical = 6 rho^4 - 6 rho^2 + 1.
    """
    v, u = _unit_disk_coordinates(shape)
    rho2 = u**2 + v**2
    terms = {
        "piston": lambda: np.ones_like(rho2),
        "tilt_x": lambda: np.broadcast_to(u, rho2.shape),
        "tilt_y": lambda: np.broadcast_to(v, rho2.shape),
        "defocus": lambda: 2 * rho2 - 1,
        "astig_0": lambda: u**2 - v**2,
        "astig_45": lambda: 2 * u * v,
        "coma_x": lambda: (3 * rho2 - 2) * u,
        "coma_y": lambda: (3 * rho2 - 2) * v,
        "spherical": lambda: 6 * rho2**2 - 6 * rho2 + 1,
    }
    if name not in terms:
        raise InputError(f"Unknown aberration {name!r}; known terms: {', '.join(ZERNIKE_TERMS)}.")
    return np.asarray(terms[name](), dtype=np.float64)


def aberration_phase(shape: tuple[int, int], coefficients_rad: Mapping[str, float]) -> np.ndarray:
    """Wavefront error ``W = sum_k c_k Z_k`` (float32, rad) for Zernike coefficients in rad."""
    phase = np.zeros(shape, dtype=np.float64)
    for name, coefficient in coefficients_rad.items():
        if coefficient:
            phase += float(coefficient) * zernike_term(name, shape)
    return phase.astype(np.float32)


@dataclass(frozen=True)
class OffAxisSystem:
    """An off-axis holographic microscope and its camera.

    Attributes
    ----------
    wavelength_nm
        Vacuum wavelength, nm.
    pixel_size_um
        Pixel pitch in the sample plane, um.
    carrier_period_px
        Fringe period on the camera, pixels (> 2, the Nyquist limit).
    carrier_angle_deg
        Direction of the fringe wave vector, degrees from ``+x`` towards ``+y``; any value in
        [0, 360), so both sidebands can be the positive one.
    fringe_visibility
        Contrast ``2 a_r a_o / (a_r^2 + a_o^2)`` of the fringes in the background, in (0, 1]; the
        reference is the stronger beam.
    aberrations_rad
        Zernike coefficients of the object arm (names in :data:`ZERNIKE_TERMS`), radians.
    illumination_drift
        Relative change of intensity across the field (linear ramp along ``drift_angle_deg``
        from ``1 - drift`` to ``1 + drift`` at the edges of the unit disk).
    drift_angle_deg
        Direction of that ramp.
    full_well_electrons
        Electrons at full scale; sets the shot noise.
    read_noise_electrons
        Standard deviation of the Gaussian read noise, electrons.
    bit_depth
        Bits of the analogue-to-digital converter; counts lie in [0, 2**bit_depth - 1].
    exposure_fill
        Mean background intensity as a fraction of half the full scale (fringe maxima at about
        ``exposure_fill`` of full scale for full visibility).
    medium_index
        Refractive index of the medium (recorded in the acquisition record).
    """

    wavelength_nm: float = 532.0
    pixel_size_um: float = 0.2
    carrier_period_px: float = 4.0
    carrier_angle_deg: float = 45.0
    fringe_visibility: float = 0.9
    aberrations_rad: Mapping[str, float] = field(default_factory=dict)
    illumination_drift: float = 0.0
    drift_angle_deg: float = 0.0
    full_well_electrons: float = 10000.0
    read_noise_electrons: float = 5.0
    bit_depth: int = 12
    exposure_fill: float = 0.8
    medium_index: float = 1.335

    def __post_init__(self) -> None:
        if not self.carrier_period_px > 2.0:
            raise InputError(
                f"Carrier period {self.carrier_period_px} px is at or below the Nyquist limit "
                "(2 px): the camera cannot resolve such fringes."
            )
        if not 0.0 < self.fringe_visibility <= 1.0:
            raise InputError(f"Fringe visibility must be in (0, 1], got {self.fringe_visibility}.")
        for name in self.aberrations_rad:
            if name not in ZERNIKE_TERMS:
                raise InputError(
                    f"Unknown aberration {name!r}; known terms: {', '.join(ZERNIKE_TERMS)}."
                )
        if not 1 <= int(self.bit_depth) <= 16:
            raise InputError(f"Bit depth must be 1-16 bits, got {self.bit_depth}.")

    @property
    def carrier_cycles_per_px(self) -> tuple[float, float]:
        """Frequency ``(fy, fx)`` of the reference wave, cycles per pixel."""
        angle = math.radians(self.carrier_angle_deg)
        k = 1.0 / self.carrier_period_px
        return (k * math.sin(angle), k * math.cos(angle))

    @property
    def sideband_cycles_per_px(self) -> tuple[float, float]:
        """Position ``(-fy, -fx)`` of the sideband that carries ``+phi`` (cells positive)."""
        fy, fx = self.carrier_cycles_per_px
        return (-fy, -fx)

    def acquisition(self) -> Acquisition:
        """The acquisition record a camera file of this system would carry."""
        return Acquisition(
            modality="hologram",
            wavelength_nm=self.wavelength_nm,
            pixel_size_um=self.pixel_size_um,
            medium_index=self.medium_index,
            carrier_cycles_per_px=self.sideband_cycles_per_px,
        )

    def replace(self, **changes: object) -> OffAxisSystem:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _beam_amplitudes(visibility: float) -> tuple[float, float]:
    """``(a_r, a_o)`` with ``a_r >= a_o`` giving the visibility, normalised to a_r^2 + a_o^2 = 1."""
    ratio = (1.0 + math.sqrt(1.0 - visibility**2)) / visibility
    norm = math.sqrt(ratio**2 + 1.0)
    return ratio / norm, 1.0 / norm


def hologram_intensity(
    phase: np.ndarray, amplitude: np.ndarray | None, system: OffAxisSystem
) -> np.ndarray:
    """Noiseless intensity ``|R + O|^2`` (float64), 1 on average in an empty, drift-free field."""
    phase = np.asarray(phase, dtype=np.float64)
    if phase.ndim != 2:
        raise InputError(f"Expected a 2-D phase image, got shape {phase.shape}.")
    shape = phase.shape
    a_r, a_o = _beam_amplitudes(system.fringe_visibility)
    fy, fx = system.carrier_cycles_per_px
    y = np.arange(shape[0], dtype=np.float64)[:, None]
    x = np.arange(shape[1], dtype=np.float64)[None, :]
    carrier = 2 * np.pi * (fy * y + fx * x)
    object_phase = phase + aberration_phase(shape, system.aberrations_rad)
    obj_amp = a_o * (1.0 if amplitude is None else np.asarray(amplitude, dtype=np.float64))
    intensity = a_r**2 + obj_amp**2 + 2 * a_r * obj_amp * np.cos(object_phase - carrier)
    if system.illumination_drift:
        v, u = _unit_disk_coordinates(shape)
        angle = math.radians(system.drift_angle_deg)
        intensity = intensity * (
            1.0 + system.illumination_drift * (u * math.cos(angle) + v * math.sin(angle))
        )
    return intensity


def simulate_hologram(
    phase: np.ndarray,
    amplitude: np.ndarray | None = None,
    system: OffAxisSystem | None = None,
    *,
    seed: SeedLike = None,
    noise: bool = True,
) -> np.ndarray:
    """Camera image of an off-axis hologram of a sample with ``phase`` (rad) and ``amplitude``.

    Returns uint16 counts in ``[0, 2**bit_depth - 1]`` with shot and read noise, or, with
    ``noise=False``, the noiseless expected counts as float64 (not quantised, not clipped).
    """
    system = system or OffAxisSystem()
    full_scale = 2 ** int(system.bit_depth) - 1
    mean_electrons = 0.5 * system.exposure_fill * system.full_well_electrons
    electrons = hologram_intensity(phase, amplitude, system) * mean_electrons
    gain = full_scale / system.full_well_electrons
    if not noise:
        return electrons * gain
    rng = np.random.default_rng(seed)
    detected = rng.poisson(np.clip(electrons, 0, None)).astype(np.float64)
    detected += rng.normal(0.0, system.read_noise_electrons, size=detected.shape)
    counts = np.clip(np.rint(detected * gain), 0, full_scale)
    return counts.astype(np.uint16)


def simulate_background(
    shape: tuple[int, int],
    system: OffAxisSystem | None = None,
    *,
    seed: SeedLike = None,
    noise: bool = True,
) -> np.ndarray:
    """Hologram of the same system with no sample: a reference for background division."""
    return simulate_hologram(
        np.zeros(shape, dtype=np.float32), None, system, seed=seed, noise=noise
    )


def random_system(
    seed: SeedLike = None,
    *,
    period_px: tuple[float, float] = (3.0, 6.0),
    angle_deg: tuple[float, float] = (0.0, 360.0),
    aberration_scale_rad: float = 4.0,
    visibility: tuple[float, float] = (0.5, 0.95),
    full_well_electrons: tuple[float, float] = (3000.0, 20000.0),
    read_noise_electrons: tuple[float, float] = (2.0, 10.0),
    drift: tuple[float, float] = (0.0, 0.2),
    wavelength_nm: float = 532.0,
    pixel_size_um: float = 0.2,
) -> OffAxisSystem:
    """A randomly drawn microscope, for training-data generation.

    Carrier period and direction, fringe visibility, tilt / defocus / astigmatism / coma
    (each uniform in ``±aberration_scale_rad``, coma and astigmatism at half that), noise and
    illumination drift are drawn independently from the given ranges.
    """
    rng = np.random.default_rng(seed)
    s = aberration_scale_rad
    aberrations = {
        "tilt_x": rng.uniform(-s, s),
        "tilt_y": rng.uniform(-s, s),
        "defocus": rng.uniform(-s, s),
        "astig_0": rng.uniform(-s / 2, s / 2),
        "astig_45": rng.uniform(-s / 2, s / 2),
        "coma_x": rng.uniform(-s / 4, s / 4),
        "coma_y": rng.uniform(-s / 4, s / 4),
    }
    return OffAxisSystem(
        wavelength_nm=wavelength_nm,
        pixel_size_um=pixel_size_um,
        carrier_period_px=rng.uniform(*period_px),
        carrier_angle_deg=rng.uniform(*angle_deg),
        fringe_visibility=rng.uniform(*visibility),
        aberrations_rad={k: float(v) for k, v in aberrations.items()},
        illumination_drift=rng.uniform(*drift),
        drift_angle_deg=rng.uniform(0.0, 360.0),
        full_well_electrons=rng.uniform(*full_well_electrons),
        read_noise_electrons=rng.uniform(*read_noise_electrons),
    )
