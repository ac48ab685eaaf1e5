"""Synthetic cells with known phase, for training data and tests.

A phantom is a field of view with a few cells in a homogeneous medium. Each cell is drawn as an
optical phase delay relative to the medium,

    phi(y, x) = 2 pi * dn * t(y, x) / lambda,

with ``t`` the cell thickness along the optical axis, ``dn`` the difference between the refractive
index of the cell and that of the medium, and ``lambda`` the vacuum wavelength (``t`` and ``lambda``
in the same length unit; see :func:`phase_from_thickness`). Cell shapes come from thickness models
in micrometres, scaled to the requested peak phase, so the field is dimensionless phase in radians
while sizes stay physical through ``pixel_size_um``.

Three kinds of cells are drawn:

``"round"``
    A cell in suspension such as an HL-60 leukocyte: a sphere (thickness ``2 sqrt(R^2 - r^2)``), so
    ``phi ∝ sqrt(1 - r^2 / R^2)``, optionally with a denser spherical nucleus inside.
``"rbc"``
    A biconcave red blood cell with the Evans–Fung thickness profile (:func:`evans_fung_thickness`).
``"adherent"``
    A cell spread on the substrate: a thin, flat-topped body with a tapered edge and an irregular
    smooth outline (a few Fourier modes of the radius), plus a thicker nuclear bump.

Coordinates are array coordinates: ``y`` is the row index (pointing down), ``x`` the column index,
and angles are measured from the ``+x`` axis towards ``+y``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError

CELL_KINDS: tuple[str, ...] = ("round", "rbc", "adherent")

#: Evans–Fung red blood cell model: mean diameter (um) and thickness coefficients C0, C1, C2 (um).
EVANS_FUNG_DIAMETER_UM = 7.82
EVANS_FUNG_COEFFICIENTS_UM = (0.81, 7.83, -4.39)

#: Range of cell diameters (um) that :func:`random_cells` draws for each kind.
DIAMETER_RANGE_UM: dict[str, tuple[float, float]] = {
    "round": (10.0, 14.0),
    "rbc": (7.0, 8.6),
    "adherent": (18.0, 32.0),
}

#: Largest peak phase (rad) drawn for a red blood cell: an Evans–Fung cell (2.6 um thick at most)
#: with dn ~ 0.06 gives ~1.8 rad at 532 nm; thicker, denser values are unphysical and their steep
#: rims exceed any off-axis system's bandwidth.
RBC_MAX_PEAK_PHASE_RAD = 3.5

SeedLike = int | np.random.Generator | None


@dataclass(frozen=True)
class CellSpec:
    """Geometry and optical strength of one synthetic cell.

    Attributes
    ----------
    kind
        ``"round"``, ``"rbc"`` or ``"adherent"``.
    centre_px
        Centre ``(y, x)`` in pixels (array coordinates, may be sub-pixel or outside the field).
    radius_px
        Semi-major axis of the outline in pixels; for ``"adherent"`` the mean outline radius along
        the major axis before the Fourier modes deform it.
    peak_phase_rad
        Maximum phase delay of the cell in radians (the maximum over its sampled pixels).
    aspect
        Semi-minor over semi-major axis, in (0, 1].
    orientation_rad
        Angle of the major axis from ``+x`` towards ``+y``, in radians.
    nucleus_radius_frac
        Nucleus radius as a fraction of ``radius_px``; 0 for no nucleus. Ignored for ``"rbc"``.
    nucleus_phase_frac
        Peak of the nucleus profile relative to the peak of the body profile before normalisation
        (the nucleus adds ``nucleus_phase_frac`` times the body's central phase).
    nucleus_offset
        Offset ``(dy, dx)`` of the nucleus centre from the cell centre, as fractions of
        ``radius_px``.
    outline_modes
        ``(relative amplitude, phase in rad)`` of the Fourier modes k = 2, 3, ... of the outline
        radius: ``R(psi) = R0 (1 + sum_k a_k cos(k psi + p_k))``. Only used for ``"adherent"``.
    absorption
        Ratio ``kappa / dn`` of the imaginary to the real refractive index contrast; the amplitude
        transmission of the cell is ``exp(-absorption * phi)``.
    """

    kind: str
    centre_px: tuple[float, float]
    radius_px: float
    peak_phase_rad: float
    aspect: float = 1.0
    orientation_rad: float = 0.0
    nucleus_radius_frac: float = 0.0
    nucleus_phase_frac: float = 0.0
    nucleus_offset: tuple[float, float] = (0.0, 0.0)
    outline_modes: tuple[tuple[float, float], ...] = ()
    absorption: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CELL_KINDS:
            raise InputError(f"Unknown cell kind {self.kind!r}: expected one of {CELL_KINDS}.")
        if not (math.isfinite(self.radius_px) and self.radius_px >= 1.0):
            raise InputError(f"Cell radius must be at least 1 pixel, got {self.radius_px!r}.")
        if not (math.isfinite(self.peak_phase_rad) and self.peak_phase_rad >= 0.0):
            raise InputError(
                f"Cell peak phase must be a non-negative number of radians, got "
                f"{self.peak_phase_rad!r}."
            )
        if not 0.0 < self.aspect <= 1.0:
            raise InputError(
                f"Cell aspect (minor/major axis) must be in (0, 1], got {self.aspect!r}."
            )
        if sum(abs(a) for a, _ in self.outline_modes) >= 0.9:
            raise InputError(
                "The outline modes' relative amplitudes must sum to less than 0.9, or the outline "
                "folds onto itself."
            )
        if self.absorption < 0.0:
            raise InputError(f"Cell absorption must be non-negative, got {self.absorption!r}.")


@dataclass
class Phantom:
    """A synthetic field of view.

    Attributes
    ----------
    phase
        float32 (H, W) optical phase delay of the cells relative to the medium, radians; 0 in the
        background. Where cells overlap their phases add.
    amplitude
        float32 (H, W) amplitude transmission: 1 in the background, ``exp(-absorption * phi)`` in
        the cells.
    labels
        int32 (H, W): 0 in the background, ``i`` where cell ``cells[i - 1]`` contributes the largest
        phase (its support is where its phase is > 0).
    cells
        The cells, in label order.
    pixel_size_um
        Pixel pitch in the sample plane, micrometres.
    wavelength_nm
        Vacuum wavelength the phase refers to, nanometres.
    """

    phase: np.ndarray
    amplitude: np.ndarray
    labels: np.ndarray
    cells: list[CellSpec] = field(default_factory=list)
    pixel_size_um: float = 0.2
    wavelength_nm: float = 532.0

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)``."""
        return self.phase.shape  # type: ignore[return-value]


def phase_from_thickness(
    thickness_um: np.ndarray | float, delta_n: float, wavelength_nm: float
) -> np.ndarray | float:
    """Optical phase delay ``2 pi dn t / lambda`` in radians.

    ``thickness_um`` in micrometres, ``delta_n`` the refractive index difference between cell and
    medium (dimensionless), ``wavelength_nm`` the vacuum wavelength in nanometres.
    """
    return 2.0 * np.pi * delta_n * np.asarray(thickness_um) / (wavelength_nm * 1e-3)


def evans_fung_thickness(
    r_um: np.ndarray | float, diameter_um: float = EVANS_FUNG_DIAMETER_UM
) -> np.ndarray:
    """Thickness of a biconcave red blood cell in micrometres (Evans and Fung, 1972).

    ``t(x) = sqrt(1 - x^2) (C0 + C1 x^2 + C2 x^4)`` with ``x = 2 r / D``, ``D`` the cell diameter
    and ``(C0, C1, C2) = (0.81, 7.83, -4.39)`` um: about 0.8 um at the centre and 2.6 um at the
    rim (x ≈ 0.7) for the mean cell, D = 7.82 um. The coefficients are kept when ``diameter_um``
    changes, so only the lateral scale changes. ``r_um`` is the distance from the cell axis in um;
    the thickness is 0 outside the cell.
    """
    x2 = (2.0 * np.asarray(r_um, dtype=np.float64) / diameter_um) ** 2
    return _evans_fung_shape(x2)


def _evans_fung_shape(x2: np.ndarray) -> np.ndarray:
    c0, c1, c2 = EVANS_FUNG_COEFFICIENTS_UM
    return np.sqrt(np.clip(1.0 - x2, 0.0, None)) * (c0 + x2 * (c1 + c2 * x2))


def outline_radius_px(spec: CellSpec, direction_rad: float | np.ndarray) -> float | np.ndarray:
    """Distance in pixels from the cell centre to its outline along ``direction_rad``.

    The direction is measured from ``+x`` towards ``+y``. Useful to place cells against each
    other.
    """
    a = spec.radius_px
    b = spec.radius_px * spec.aspect
    rel = np.asarray(direction_rad, dtype=np.float64) - spec.orientation_rad
    cu, sv = np.cos(rel) / a, np.sin(rel) / b
    psi = np.arctan2(sv, cu)
    out = _outline_factor(spec, psi) / np.hypot(cu, sv)
    return float(out) if out.ndim == 0 else out


def _outline_factor(spec: CellSpec, psi: np.ndarray) -> np.ndarray:
    factor = np.ones_like(psi)
    if spec.kind == "adherent":
        for k, (amp, ph) in enumerate(spec.outline_modes, start=2):
            factor = factor + amp * np.cos(k * psi + ph)
    return factor


def _max_extent_px(spec: CellSpec) -> float:
    extent = spec.radius_px
    if spec.kind == "adherent":
        extent *= 1.0 + sum(abs(a) for a, _ in spec.outline_modes)
    if spec.nucleus_radius_frac > 0.0 and spec.kind != "rbc":
        reach = math.hypot(*spec.nucleus_offset) + spec.nucleus_radius_frac
        extent = max(extent, reach * spec.radius_px)
    return extent


def cell_phase_patch(
    spec: CellSpec, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Phase of one cell on the part of the field it covers.

    Returns ``(slices, patch)`` with ``patch`` float32 radians such that
    ``phase[slices] += patch`` draws the cell into an image of ``shape``, or ``None`` when the cell
    lies outside the field. The profile is computed on the cell's whole bounding box, so cells cut
    by the border keep their ``peak_phase_rad``.
    """
    height, width = shape
    cy, cx = spec.centre_px
    extent = _max_extent_px(spec) + 1.0
    y0, y1 = math.floor(cy - extent), math.ceil(cy + extent) + 1
    x0, x1 = math.floor(cx - extent), math.ceil(cx + extent) + 1
    iy0, iy1 = max(y0, 0), min(y1, height)
    ix0, ix1 = max(x0, 0), min(x1, width)
    if iy0 >= iy1 or ix0 >= ix1:
        return None

    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    cos_t, sin_t = (
        np.float32(math.cos(spec.orientation_rad)),
        np.float32(math.sin(spec.orientation_rad)),
    )
    u = (dx * cos_t + dy * sin_t) / np.float32(spec.radius_px)
    v = (dy * cos_t - dx * sin_t) / np.float32(spec.radius_px * spec.aspect)
    q2 = u * u + v * v

    if spec.kind == "round":
        profile = np.sqrt(np.clip(1.0 - q2, 0.0, None))
    elif spec.kind == "rbc":
        profile = _evans_fung_shape(q2).astype(np.float32)
    else:
        rho = np.sqrt(q2) / _outline_factor(spec, np.arctan2(v, u)).astype(np.float32)
        profile = np.clip(1.0 - rho**4, 0.0, None)

    if spec.kind != "rbc" and spec.nucleus_radius_frac > 0.0 and spec.nucleus_phase_frac > 0.0:
        rn = np.float32(spec.nucleus_radius_frac * spec.radius_px)
        ny = dy - np.float32(spec.nucleus_offset[0] * spec.radius_px)
        nx = dx - np.float32(spec.nucleus_offset[1] * spec.radius_px)
        n2 = (ny * ny + nx * nx) / (rn * rn)
        if spec.kind == "round":
            nucleus = np.sqrt(np.clip(1.0 - n2, 0.0, None))
        else:
            nucleus = np.clip(1.0 - n2, 0.0, None) ** 1.5
        profile = profile + np.float32(spec.nucleus_phase_frac) * nucleus

    peak = float(profile.max())
    if peak <= 0.0:
        return None
    patch = profile[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    patch = (patch * np.float32(spec.peak_phase_rad / peak)).astype(np.float32, copy=False)
    return (slice(iy0, iy1), slice(ix0, ix1)), patch


def render_cells(
    cells: Sequence[CellSpec],
    shape: tuple[int, int],
    *,
    pixel_size_um: float = 0.2,
    wavelength_nm: float = 532.0,
) -> Phantom:
    """Draw cells into a :class:`Phantom` of ``shape``.

    Phases of overlapping cells add; an overlapping pixel is labelled with the cell that
    contributes the larger phase there (the earlier cell on ties). A cell hidden completely by
    others, or outside the field, keeps its label number but labels no pixel.
    """
    height, width = _check_shape(shape)
    phase = np.zeros((height, width), np.float32)
    best = np.zeros((height, width), np.float32)
    labels = np.zeros((height, width), np.int32)
    log_amplitude = np.zeros((height, width), np.float32)
    for index, spec in enumerate(cells, start=1):
        drawn = cell_phase_patch(spec, (height, width))
        if drawn is None:
            continue
        region, patch = drawn
        phase[region] += patch
        best_here, labels_here = best[region], labels[region]
        wins = patch > best_here
        best_here[wins] = patch[wins]
        labels_here[wins] = index
        if spec.absorption > 0.0:
            log_amplitude[region] -= np.float32(spec.absorption) * patch
    return Phantom(
        phase=phase,
        amplitude=np.exp(log_amplitude),
        labels=labels,
        cells=list(cells),
        pixel_size_um=float(pixel_size_um),
        wavelength_nm=float(wavelength_nm),
    )


def random_cells(
    shape: tuple[int, int] = (512, 512),
    *,
    pixel_size_um: float = 0.2,
    wavelength_nm: float = 532.0,
    n_cells: int | tuple[int, int] = (3, 8),
    kinds: Sequence[str] = CELL_KINDS,
    peak_phase_rad: float | tuple[float, float] = (1.0, 12.0),
    absorption: float | tuple[float, float] = (0.0, 0.01),
    allow_touching: bool | float = True,
    margin_px: float = 2.0,
    seed: SeedLike = None,
) -> Phantom:
    """A field of randomly placed cells of random kinds, sizes and phases.

    Parameters
    ----------
    shape
        Image shape ``(H, W)`` in pixels.
    pixel_size_um
        Pixel pitch in the sample plane; cell sizes are drawn in micrometres
        (:data:`DIAMETER_RANGE_UM`) and converted with it. A cell larger than the field is shrunk
        to fit.
    wavelength_nm
        Recorded in the phantom (the phases are drawn directly in radians).
    n_cells
        Number of cells, or an inclusive range ``(lo, hi)``. Fewer are returned when they do not
        fit without overlapping.
    kinds
        Kinds to choose from, uniformly.
    peak_phase_rad
        Peak phase per cell in radians, or a range drawn uniformly; peaks above ``pi`` wrap.
    absorption
        ``kappa / dn`` per cell (see :class:`CellSpec`), or a range drawn uniformly.
    allow_touching
        Probability that a cell is placed against an already placed one (overlapping by up to
        15% of the sum of their radii along the line between centres); ``True`` means 0.3,
        ``False`` 0. Other cells keep at least 2 px between outlines along that line.
    margin_px
        Minimum distance between a cell's outline and the image border, pixels; negative values
        let cells be cut by the border.
    seed
        Seed or generator; the same seed gives identical arrays.

    Returns
    -------
    Phantom
        Every cell in ``cells`` labels at least one pixel, and labels are ``1..len(cells)``.
    """
    height, width = _check_shape(shape)
    rng = np.random.default_rng(seed)
    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in CELL_KINDS:
            raise InputError(f"Unknown cell kind {kind!r}: expected one of {CELL_KINDS}.")
    if not kinds:
        raise InputError("Give at least one cell kind.")
    if pixel_size_um <= 0:
        raise InputError(f"pixel_size_um must be positive, got {pixel_size_um!r}.")
    if isinstance(allow_touching, bool):
        touching = 0.3 if allow_touching else 0.0
    else:
        touching = float(allow_touching)
    if isinstance(n_cells, int):
        count = n_cells
    else:
        count = int(rng.integers(n_cells[0], n_cells[1] + 1))

    placed: list[CellSpec] = []
    for _ in range(max(count, 0)):
        spec = _random_spec(
            rng,
            kinds[int(rng.integers(len(kinds)))],
            (height, width),
            pixel_size_um,
            margin_px,
            peak_phase_rad,
            absorption,
        )
        centre = _place(rng, spec, placed, (height, width), margin_px, float(touching))
        if centre is not None:
            placed.append(_with_centre(spec, centre))

    phantom = render_cells(
        placed, (height, width), pixel_size_um=pixel_size_um, wavelength_nm=wavelength_nm
    )
    present = np.zeros(len(placed) + 1, bool)
    present[np.unique(phantom.labels)] = True
    if not present[1:].all():
        kept = [spec for i, spec in enumerate(placed, start=1) if present[i]]
        phantom = render_cells(
            kept, (height, width), pixel_size_um=pixel_size_um, wavelength_nm=wavelength_nm
        )
    return phantom


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"Image shape must be two integers (H, W), got {shape!r}.") from None
    if height < 1 or width < 1:
        raise InputError(f"Image shape must be positive, got {shape!r}.")
    return height, width


def _uniform(rng: np.random.Generator, value: float | tuple[float, float]) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    lo, hi = value
    return float(rng.uniform(lo, hi))


def _random_spec(
    rng: np.random.Generator,
    kind: str,
    shape: tuple[int, int],
    pixel_size_um: float,
    margin_px: float,
    peak_phase_rad: float | tuple[float, float],
    absorption: float | tuple[float, float],
) -> CellSpec:
    diameter_um = rng.uniform(*DIAMETER_RANGE_UM[kind])
    radius = diameter_um / (2.0 * pixel_size_um)
    orientation = float(rng.uniform(0.0, np.pi))
    nucleus_radius = nucleus_phase = 0.0
    nucleus_offset = (0.0, 0.0)
    modes: tuple[tuple[float, float], ...] = ()
    if kind == "round":
        aspect = float(rng.uniform(0.9, 1.0))
        if rng.random() < 0.8:
            nucleus_radius = float(rng.uniform(0.5, 0.75))
            nucleus_phase = float(rng.uniform(0.15, 0.5))
            angle, dist = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.15)
            nucleus_offset = (dist * math.sin(angle), dist * math.cos(angle))
    elif kind == "rbc":
        aspect = float(rng.uniform(0.85, 1.0))
    else:
        aspect = float(rng.uniform(0.6, 1.0))
        n_modes = int(rng.integers(2, 5))
        amps = rng.uniform(0.0, 1.0, n_modes) / np.arange(2, n_modes + 2)
        amps *= rng.uniform(0.1, 0.3) / amps.sum()
        modes = tuple(
            (float(a), float(p))
            for a, p in zip(amps, rng.uniform(0.0, 2 * np.pi, n_modes), strict=True)
        )
        nucleus_radius = float(rng.uniform(0.25, 0.4))
        nucleus_phase = float(rng.uniform(1.5, 3.0))
        angle, dist = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.25)
        nucleus_offset = (dist * math.sin(angle), dist * math.cos(angle))
    peak_phase = _uniform(rng, peak_phase_rad)
    if kind == "rbc":
        peak_phase = min(peak_phase, RBC_MAX_PEAK_PHASE_RAD)
    spec = CellSpec(
        kind=kind,
        centre_px=(0.0, 0.0),
        radius_px=float(radius),
        peak_phase_rad=peak_phase,
        aspect=aspect,
        orientation_rad=orientation,
        nucleus_radius_frac=nucleus_radius,
        nucleus_phase_frac=nucleus_phase,
        nucleus_offset=nucleus_offset,
        outline_modes=modes,
        absorption=_uniform(rng, absorption),
    )
    room = 0.5 * min(shape) - max(margin_px, 0.0) - 1.0
    extent = _max_extent_px(spec)
    if extent > room:
        spec = replace(spec, radius_px=max(spec.radius_px * room / extent, 1.0))
    return spec


def _with_centre(spec: CellSpec, centre: tuple[float, float]) -> CellSpec:
    return replace(spec, centre_px=(float(centre[0]), float(centre[1])))


def _place(
    rng: np.random.Generator,
    spec: CellSpec,
    placed: list[CellSpec],
    shape: tuple[int, int],
    margin_px: float,
    touching: float,
    attempts: int = 60,
) -> tuple[float, float] | None:
    """A centre for ``spec`` that keeps it inside the field and clear of the placed cells."""
    height, width = shape
    extent = _max_extent_px(spec)
    lo_y, hi_y = extent + margin_px, height - 1 - extent - margin_px
    lo_x, hi_x = extent + margin_px, width - 1 - extent - margin_px
    if lo_y > hi_y or lo_x > hi_x:
        return None
    partners = np.array([c.centre_px for c in placed], dtype=np.float64).reshape(-1, 2)
    for _ in range(attempts):
        partner = -1
        if placed and rng.random() < touching:
            partner = int(rng.integers(len(placed)))
            other = placed[partner]
            beta = rng.uniform(0.0, 2 * np.pi)
            reach = outline_radius_px(other, beta) + outline_radius_px(spec, beta + np.pi)
            dist = reach * rng.uniform(0.85, 1.0)
            centre = (
                other.centre_px[0] + dist * math.sin(beta),
                other.centre_px[1] + dist * math.cos(beta),
            )
            if not (lo_y <= centre[0] <= hi_y and lo_x <= centre[1] <= hi_x):
                continue
        else:
            centre = (rng.uniform(lo_y, hi_y), rng.uniform(lo_x, hi_x))
        if _clear(spec, centre, placed, partners, partner):
            return centre
    return None


def _clear(
    spec: CellSpec,
    centre: tuple[float, float],
    placed: list[CellSpec],
    partners: np.ndarray,
    partner: int,
) -> bool:
    if not placed:
        return True
    dy = centre[0] - partners[:, 0]
    dx = centre[1] - partners[:, 1]
    dist = np.hypot(dy, dx)
    beta = np.arctan2(dy, dx)
    own = np.atleast_1d(outline_radius_px(spec, beta + np.pi))
    for k, other in enumerate(placed):
        if k == partner:
            continue
        if dist[k] < own[k] + outline_radius_px(other, beta[k]) + 2.0:
            return False
    return True
