"""Simulated cell fields with known labels and dry masses, for the segmentation tests.

Independent of :mod:`napari_qpi.physics.phantoms` on purpose: the segmentation must not be tuned
to the generator the rest of the package trains and tests on. Three kinds of field, each drawn at
a physical pixel size and wavelength:

* ``"rbc"``: red blood cells, biconcave discs (Evans-Fung thickness profile: the phase is a ring
  with a dimple in the centre), 7-8.5 um across, some of them in overlapping pairs (phases add
  where they overlap);
* ``"round"``: round cells in suspension (homogeneous spheres, 9-14 um across);
* ``"adherent"``: spread cells, elongated and irregular outlines (an ellipse with random harmonic
  wobble), a flat cytoplasm and a thicker nucleus.

The phase of a cell is ``phi = 2 pi dn T / lambda`` (rad) with ``T`` its thickness (um) and ``dn``
its refractive index above the medium; its dry mass is ``m = lambda / (2 pi alpha) * sum(phi) *
A_px`` (pg), computed from the cell's own phase before noise and background are added. On top come
spatially correlated noise of a given standard deviation and a smooth residual background (an
offset plus a gentle slope and bump, as left by an imperfect background fit).

The truth labels give each pixel to the cell whose own phase there is largest (where two cells
overlap, the split runs along the line where their phases are equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

WAVELENGTH_NM = 633.0
ALPHA = 0.18


@dataclass
class CellField:
    """A simulated phase image with its truth."""

    phase: np.ndarray  # rad, float32, with noise and background
    labels: np.ndarray  # int32, 0 = background, 1..N
    dry_mass_pg: np.ndarray  # (N,) truth mass of cell k at index k - 1
    background: np.ndarray  # rad, the added residual background
    pixel_size_um: float
    wavelength_nm: float
    overlapping: int  # number of overlapping pairs drawn


def mass_pg(phase_sum_rad: float, pixel_size_um: float, wavelength_nm: float) -> float:
    """Dry mass (pg) of a phase integral (rad x pixels)."""
    return wavelength_nm / 1000.0 / (2 * math.pi * ALPHA) * phase_sum_rad * pixel_size_um**2


def _rbc(y: np.ndarray, x: np.ndarray, radius_um: float, dn: float, wl_um: float) -> np.ndarray:
    """Evans-Fung biconcave disc: T = D sqrt(1-s) (c0 + c1 s + c2 s^2), s = (r/R)^2."""
    s = (y**2 + x**2) / radius_um**2
    inside = s < 1
    s = np.clip(s, 0, 1)
    scale = radius_um / 3.91
    thickness = scale * np.sqrt(1 - s) * (0.81 + 7.83 * s - 4.39 * s**2)
    return np.where(inside, 2 * np.pi * dn * thickness / wl_um, 0.0)


def _sphere(y: np.ndarray, x: np.ndarray, radius_um: float, dn: float, wl_um: float) -> np.ndarray:
    chord = 2 * np.sqrt(np.clip(radius_um**2 - y**2 - x**2, 0, None))
    return 2 * np.pi * dn * chord / wl_um


def _adherent(
    y: np.ndarray, x: np.ndarray, size_um: float, rng: np.random.Generator, wl_um: float
) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    elong = rng.uniform(1.4, 2.2)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    theta = np.arctan2(v * elong, u)
    wobble = 1.0
    for k in (2, 3, 5):
        wobble = wobble + rng.uniform(0.03, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rho = np.sqrt(u**2 + (v * elong) ** 2) / (size_um * wobble)
    cytoplasm = np.clip(1 - rho**2, 0, None) ** 0.5 * 2.5  # um
    offset = rng.uniform(-0.2, 0.2, 2) * size_um / elong
    nucleus = (
        np.clip(
            1 - ((u - offset[0]) ** 2 + (v - offset[1]) ** 2) / (0.35 * size_um / elong) ** 2,
            0,
            None,
        )
        ** 0.5
        * 2.5
    )
    thickness = np.where(rho < 1, cytoplasm + nucleus * (rho < 1), 0.0)
    return 2 * np.pi * 0.03 * thickness / wl_um


def _place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    radii_px: list[float],
    pairs: int,
    margin_px: float,
    touching: int = 0,
    round_cells: bool = False,
) -> list[tuple[float, float]]:
    """Centres: ``pairs`` overlapping pairs first, then ``touching`` touching pairs, then the rest.

    A pair is two consecutive radii; overlapping partners sit at 0.6-0.85 of their summed radii
    (0.8-0.92 for round cells), touching ones at 0.93-1.0.
    """
    centres: list[tuple[float, float]] = []
    placed_r: list[float] = []

    def free(cy: float, cx: float, r: float, skip: int = -1) -> bool:
        return all(
            math.hypot(cy - py, cx - px) > r + pr + 2
            for k, ((py, px), pr) in enumerate(zip(centres, placed_r, strict=True))
            if k != skip
        )

    k = 0
    attempts = 0
    while k < len(radii_px) and attempts < 20000:
        attempts += 1
        r = radii_px[k]
        cy = rng.uniform(r + margin_px, shape[0] - r - margin_px)
        cx = rng.uniform(r + margin_px, shape[1] - r - margin_px)
        if k < 2 * (pairs + touching) and k % 2 == 1:
            py, px = centres[-1]
            # round cells are spheres: two in a layer overlap little in projection
            low, high = (0.6, 0.85) if k < 2 * pairs else (0.93, 1.0)
            if k < 2 * pairs and round_cells:
                low, high = 0.8, 0.92
            d = rng.uniform(low, high) * (r + placed_r[-1])
            a = rng.uniform(0, 2 * np.pi)
            cy, cx = py + d * np.sin(a), px + d * np.cos(a)
            inside = r + margin_px <= cy <= shape[0] - r - margin_px
            inside &= r + margin_px <= cx <= shape[1] - r - margin_px
            if not (inside and free(cy, cx, r, skip=len(centres) - 1)):
                if attempts % 50 == 0:  # the first of the pair is in a bad spot: redraw both
                    centres.pop(), placed_r.pop()
                    k -= 1
                continue
        elif not free(cy, cx, r):
            continue
        centres.append((cy, cx))
        placed_r.append(r)
        k += 1
    if len(centres) < len(radii_px):
        raise RuntimeError(f"placed {len(centres)} of {len(radii_px)} cells: field too dense")
    return centres


def residual_background(
    shape: tuple[int, int], rng: np.random.Generator, offset_rad: float, amplitude_rad: float
) -> np.ndarray:
    """Offset plus a slope and a broad bump: what an imperfect background fit leaves."""
    y, x = np.indices(shape, dtype=np.float64)
    yn, xn = y / shape[0] - 0.5, x / shape[1] - 0.5
    slope = rng.uniform(-1, 1, 2)
    cy, cx = rng.uniform(-0.3, 0.3, 2)
    bump = np.exp(-((yn - cy) ** 2 + (xn - cx) ** 2) / (2 * 0.3**2))
    return offset_rad + amplitude_rad * (slope[0] * yn + slope[1] * xn + bump - 0.5)


def correlated_noise(
    shape: tuple[int, int], rng: np.random.Generator, sigma_rad: float, corr_px: float = 0.7
) -> np.ndarray:
    """Gaussian noise smoothed over ``corr_px`` pixels, rescaled to ``sigma_rad``."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape), corr_px)
    return noise * (sigma_rad / noise.std())


def make_field(
    kind: str,
    *,
    shape: tuple[int, int] = (256, 256),
    n_cells: int = 24,
    overlapping_pairs: int = 0,
    touching_pairs: int = 0,
    pixel_size_um: float = 0.3,
    noise_rad: float = 0.08,
    offset_rad: float = -0.35,
    background_rad: float = 0.15,
    noise_corr_px: float = 0.7,
    seed: int = 0,
) -> CellField:
    """A field of ``n_cells`` cells of one ``kind`` (``"rbc"``, ``"round"``, ``"adherent"``).

    ``overlapping_pairs`` of the cells come in overlapping pairs (centre distance 0.6-0.85 of the
    summed radii) and ``touching_pairs`` more touch (0.93-1.0). Cells stay 4 pixels away from
    the border. Noise is spatially correlated over ``noise_corr_px`` (0: white) with standard
    deviation ``noise_rad``; the background is ``offset_rad`` plus a smooth
    variation of about ``background_rad`` peak to peak.
    """
    rng = np.random.default_rng(seed)
    wl_um = WAVELENGTH_NM / 1000.0
    px = pixel_size_um
    if kind == "rbc":
        radii_um = rng.uniform(3.6, 4.2, n_cells)
    elif kind == "round":
        radii_um = rng.uniform(4.5, 7.0, n_cells)
    elif kind == "adherent":
        radii_um = rng.uniform(8.0, 12.0, n_cells)  # long half-axis
    else:
        raise ValueError(kind)
    reach = radii_um / px if kind != "adherent" else radii_um / px * 1.3
    centres = _place(rng, shape, list(reach), overlapping_pairs, 4, touching_pairs, kind == "round")
    y, x = np.indices(shape, dtype=np.float64)
    own = np.zeros((n_cells, *shape))
    for k, ((cy, cx), r_um) in enumerate(zip(centres, radii_um, strict=True)):
        yy, xx = (y - cy) * px, (x - cx) * px
        if kind == "rbc":
            own[k] = _rbc(yy, xx, r_um, rng.uniform(0.055, 0.075), wl_um)
        elif kind == "round":
            own[k] = _sphere(yy, xx, r_um, rng.uniform(0.015, 0.03), wl_um)
        else:
            own[k] = _adherent(yy, xx, r_um, rng, wl_um)
    clean = own.sum(axis=0)
    labels = np.where(clean > 0, np.argmax(own, axis=0) + 1, 0).astype(np.int32)
    masses = np.array([mass_pg(float(o.sum()), px, WAVELENGTH_NM) for o in own])
    background = residual_background(shape, rng, offset_rad, background_rad)
    phase = clean + background + correlated_noise(shape, rng, noise_rad, noise_corr_px)
    return CellField(
        phase=phase.astype(np.float32),
        labels=labels,
        dry_mass_pg=masses,
        background=background,
        pixel_size_um=px,
        wavelength_nm=WAVELENGTH_NM,
        overlapping=overlapping_pairs,
    )


@dataclass
class Matching:
    """How found labels match the truth (IoU >= 0.5 is a match; at most one match each)."""

    pairs: list[tuple[int, int]]  # (truth id, found id)
    n_truth: int
    n_found: int

    @property
    def recall(self) -> float:
        return len(self.pairs) / max(self.n_truth, 1)

    @property
    def extra(self) -> int:
        return self.n_found - len(self.pairs)


def match_labels(truth: np.ndarray, found: np.ndarray, iou_min: float = 0.5) -> Matching:
    """Match labels by intersection over union (an IoU > 0.5 match is unique by construction)."""
    t_ids = np.unique(truth[truth > 0])
    f_ids = np.unique(found[found > 0])
    both = (truth > 0) & (found > 0)
    pair_keys, counts = np.unique(
        truth[both].astype(np.int64) * (int(found.max()) + 1) + found[both], return_counts=True
    )
    t_area = np.bincount(truth.ravel())
    f_area = np.bincount(found.ravel())
    pairs = []
    for key, inter in zip(pair_keys, counts, strict=True):
        t, f = divmod(int(key), int(found.max()) + 1)
        iou = inter / (t_area[t] + f_area[f] - inter)
        if iou >= iou_min:
            pairs.append((t, f))
    return Matching(pairs=pairs, n_truth=t_ids.size, n_found=f_ids.size)


@dataclass
class TimeLapse:
    """A simulated time-lapse of growing, drifting round cells, one of them dividing."""

    phase: np.ndarray  # (T, H, W) rad
    centres: dict[int, np.ndarray]  # truth id -> (T, 2) centre px (NaN where absent)
    mass_pg: dict[int, np.ndarray]  # truth id -> (T,) dry mass (NaN where absent)
    rate_per_frame: dict[int, float]  # truth id -> exponential growth rate
    parent: dict[int, int]  # daughter truth id -> mother truth id
    pixel_size_um: float
    wavelength_nm: float


def make_timelapse(
    *,
    n_frames: int = 8,
    n_cells: int = 10,
    shape: tuple[int, int] = (400, 400),
    pixel_size_um: float = 0.3,
    drift_px: tuple[float, float] = (2.5, -1.5),
    jitter_px: float = 1.0,
    division_frame: int = 4,
    enter_frame: int | None = None,
    leave_frame: int | None = None,
    noise_rad: float = 0.08,
    seed: int = 0,
) -> TimeLapse:
    """Round cells growing exponentially (rate 0.03-0.08 per frame), drifting ``drift_px`` per
    frame plus random motion of ``jitter_px``; cell 1 divides at ``division_frame`` into two
    daughters of half its mass (truth ids ``n_cells + 1`` and ``n_cells + 2``) that move apart.
    With ``enter_frame`` cell ``n_cells - 1`` is there only from that frame on (it enters); with
    ``leave_frame`` cell ``n_cells`` only before it (it leaves).
    """
    rng = np.random.default_rng(seed)
    wl_um = WAVELENGTH_NM / 1000.0
    px = pixel_size_um
    radius0 = rng.uniform(4.0, 5.0, n_cells)  # um
    dn = 0.02
    drift = np.asarray(drift_px, dtype=np.float64)
    travel = np.abs(drift) * n_frames + 2 * jitter_px * np.sqrt(n_frames) + 25
    field = (int(shape[0] - 2 * travel[0]), int(shape[1] - 2 * travel[1]))
    start = travel - drift * n_frames / 2  # the cells drift across the middle of the field
    centres0 = _place(rng, field, list(radius0 / px * 1.6 + 8), 0, 2)
    rates = {k + 1: float(rng.uniform(0.03, 0.08)) for k in range(n_cells)}
    centres: dict[int, np.ndarray] = {}
    masses: dict[int, np.ndarray] = {}
    radii: dict[int, np.ndarray] = {}
    for k in range(n_cells):
        steps = np.asarray(drift_px) + rng.normal(0, jitter_px, (n_frames, 2))
        steps[0] = 0
        path = np.asarray(centres0[k]) + start + np.cumsum(steps, axis=0)
        centres[k + 1] = path
        radii[k + 1] = radius0[k] * np.exp(rates[k + 1] * np.arange(n_frames) / 3)
    mother, d1, d2 = 1, n_cells + 1, n_cells + 2
    axis = rng.normal(size=2)
    axis /= np.linalg.norm(axis)
    for daughter, sign in ((d1, 1), (d2, -1)):
        rates[daughter] = rates[mother]
        r = radii[mother] / 2 ** (1 / 3)
        path = centres[mother].copy()
        t = np.arange(n_frames) - division_frame
        path += sign * axis * (r / px * 1.05 + 1.5 * t)[:, None]
        path[:division_frame] = np.nan
        centres[daughter] = path
        radii[daughter] = np.where(np.arange(n_frames) >= division_frame, r, np.nan)
    radii[mother] = np.where(np.arange(n_frames) < division_frame, radii[mother], np.nan)
    centres[mother][division_frame:] = np.nan
    if enter_frame is not None:
        radii[n_cells - 1][:enter_frame] = np.nan
        centres[n_cells - 1][:enter_frame] = np.nan
    if leave_frame is not None:
        radii[n_cells][leave_frame:] = np.nan
        centres[n_cells][leave_frame:] = np.nan
    y, x = np.indices(shape, dtype=np.float64)
    stack = np.zeros((n_frames, *shape))
    for t in range(n_frames):
        background = residual_background(shape, rng, -0.2, 0.1)
        frame = background + correlated_noise(shape, rng, noise_rad)
        for cell, path in centres.items():
            if np.isnan(radii[cell][t]):
                continue
            own = _sphere((y - path[t, 0]) * px, (x - path[t, 1]) * px, radii[cell][t], dn, wl_um)
            frame += own
            masses.setdefault(cell, np.full(n_frames, np.nan))[t] = mass_pg(
                float(own.sum()), px, WAVELENGTH_NM
            )
        stack[t] = frame
    return TimeLapse(
        phase=stack.astype(np.float32),
        centres=centres,
        mass_pg=masses,
        rate_per_frame=rates,
        parent={d1: mother, d2: mother},
        pixel_size_um=px,
        wavelength_nm=WAVELENGTH_NM,
    )
