"""Training data: synthetic hologram / phase pairs made on the fly, held-out sets, user pairs.

Every synthetic field is drawn from :mod:`napari_qpi.physics`: random cells
(:func:`~napari_qpi.physics.random_cells`: round cells, red blood cells, adherent cells, peak phases
beyond 2 pi) seen through a random off-axis system
(:class:`~napari_qpi.physics.OffAxisSystem`: carrier period and direction, both sidebands'
orientations, tilt / defocus / astigmatism / coma aberrations, shot and read noise, illumination
drift), recorded by :func:`~napari_qpi.physics.simulate_hologram` as camera counts.

Pairs
    input
        The hologram normalised per image, :data:`NORMALISATION`: ``(h - mean(h)) / std(h)``
        (the model card's ``"mean_std"``, computed by :func:`napari_qpi.models.card.normalise`, so
        training and inference agree); float32, dimensionless.
    target
        The phantom's phase in radians: the object phase alone, i.e. aberration-compensated and
        unwrapped, exactly 0 in the background (the medium).

Whole fields: the aberrations span the field (Zernike terms on the disk circumscribing it), so a
network must see whole fields to remove them; the searched networks are retrained and scored on
256^2 fields (the held-out size) and read coordinate channels (see :mod:`.search`).

Batches are ``(x, y)`` float32 tensors of shape (B, 1, H, W), or ``(x, y, ignore)`` for user pairs
with an ignore mask. Batch ``k`` of a stream is a pure function of ``(seed, k)``, so a training
run resumed at step ``k`` sees the same data as an uninterrupted one, and data-loader workers can
split the steps between them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..acquisition import Acquisition
from ..errors import InputError
from ..models.card import normalise
from ..physics import OffAxisSystem, random_cells, random_system, simulate_hologram

#: Input normalisation of every hologram network trained here (a model card ``normalisation``).
NORMALISATION: dict[str, Any] = {"method": "mean_std", "eps": 1e-6}

#: Held-out splits, see :func:`split_config`.
SPLITS: tuple[str, ...] = ("standard", "hard", "transfer")

#: Training distributions that are not held-out splits, see :func:`split_config`.
TRAINING_SPLITS: tuple[str, ...] = ("wide", "large-cells")

#: Fraction of close-up batches of the ``"large-cells"`` distribution.
LARGE_CELLS_CLOSE_UP = 0.3

#: Seed key of the draw that makes a batch a close-up (kept apart from the fields' seeds).
CLOSE_UP_KEY = 7_919

#: Base seed of the held-out sets; training streams use small seeds, far from it.
HELD_OUT_SEED = 1_000_003

Range = tuple[float, float]
Batch = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class DataConfig:
    """Distribution of synthetic fields; ranges ``(low, high)`` are drawn uniformly per field.

    Attributes
    ----------
    size
        Side of the square fields, pixels.
    batch_size
        Fields per batch.
    pixel_size_um
        Pixel pitch in the sample plane, micrometres (sets the cell sizes in pixels).
    n_cells
        Number of cells per field (inclusive range).
    peak_phase_rad
        Peak phase of each cell, radians (above 2 pi the fringes wrap several times).
    carrier_period_px
        Fringe period of the off-axis carrier, pixels.
    carrier_angle_deg
        Direction of the carrier from +x towards +y, degrees; a full circle covers both sideband
        orientations (cells come out positive either way).
    aberration_rad
        Scale of the aberrations of the object arm, radians at the edge of the disk that
        circumscribes the field: tilt and defocus in ``[-a, a]``, astigmatism in ``[-a/2, a/2]``,
        coma in ``[-a/4, a/4]`` (:func:`napari_qpi.physics.random_system`).
    fringe_visibility
        Contrast of the fringes in the background, in (0, 1].
    full_well_electrons
        Electrons at full scale; the background holds 40% of it, which sets the shot-noise SNR.
    read_noise_electrons
        Standard deviation of the camera's read noise, electrons.
    drift
        Relative illumination change across the field (a linear ramp in a random direction).
    close_up
        Fraction of batches that are close-ups (each batch is one or the other, a function of
        ``(seed, step)``; held-out and validation fields, drawn one by one, never are): a few
        cells seen through a high-magnification system, so that one cell spans a large part of
        the field, as real microscopes give (HL60 cells ~200 px across). A close-up batch draws
        from :func:`close_up_config`: ``close_up_cells`` cells, pixel pitch
        ``close_up_pixel_size_um`` and fringe period ``close_up_period_px`` (fine fringes keep
        the demodulated field at the hologram's grid, crop factor 1, so the cell stays large on
        the network's native grid); every other setting as above.
    close_up_pixel_size_um
        Pixel pitch of close-up fields, micrometres (a round cell of 10-14 um then spans
        ``12 / (pitch * size)`` of the field side).
    close_up_period_px
        Fringe period of close-up fields, pixels.
    close_up_cells
        Number of cells per close-up field (inclusive range).
    """

    size: int = 128
    batch_size: int = 8
    pixel_size_um: Range = (0.2, 0.45)
    n_cells: tuple[int, int] = (1, 6)
    peak_phase_rad: Range = (0.5, 7.0)
    carrier_period_px: Range = (3.0, 6.0)
    carrier_angle_deg: Range = (0.0, 360.0)
    aberration_rad: float = 4.0
    fringe_visibility: Range = (0.3, 0.95)
    full_well_electrons: Range = (3000.0, 20000.0)
    read_noise_electrons: Range = (2.0, 10.0)
    drift: Range = (0.0, 0.3)
    close_up: float = 0.0
    close_up_pixel_size_um: Range = (0.1, 0.25)
    close_up_period_px: Range = (2.5, 3.0)
    close_up_cells: tuple[int, int] = (1, 2)

    def __post_init__(self) -> None:
        if self.size < 16 or self.batch_size < 1:
            raise InputError(
                f"fields must be at least 16 px and batches at least 1, got size {self.size} and "
                f"batch size {self.batch_size}"
            )
        if not 0.0 <= self.close_up <= 1.0:
            raise InputError(f"close_up is a fraction of batches in [0, 1], got {self.close_up}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)


def split_config(split: str, size: int = 256) -> DataConfig:
    """Distribution of a held-out split.

    ``"standard"``
        The training distribution.
    ``"hard"``
        Strong aberrations (2.5x), low SNR (full well 300-1500 electrons, read noise 10-20),
        low fringe contrast (0.15-0.4), steep, many-times-wrapped cells (peak phase 5-12 rad on
        larger pixels, 0.3-0.5 um).
    ``"transfer"``
        A second system: carrier periods of 6-8 px (outside training) within 20 degrees of the
        x axis, smaller pixels.
    ``"wide"``
        A training distribution (not a held-out split) that covers what real cameras give:
        fringe periods of 2.5-8 px at any angle, pixels of 0.12-0.45 um (cells from a quarter of
        the field to most of it), peak phases up to 9 rad, fringe contrast down to 0.15 and
        full wells down to 1000 electrons.
    ``"large-cells"``
        A training distribution (not a held-out split): the standard one, with
        :data:`LARGE_CELLS_CLOSE_UP` of the batches close-ups (``DataConfig.close_up``) of one or
        two cells at 0.1-0.25 um pixels for 128^2 fields (scaled by ``128 / size``, so a round
        cell spans 0.4-0.9 of the field side at any size) and 2.5-3 px fringes.
    """
    base = DataConfig(size=size, batch_size=1)
    if split == "standard":
        return base
    if split == "hard":
        return replace(
            base,
            peak_phase_rad=(5.0, 12.0),
            pixel_size_um=(0.3, 0.5),
            aberration_rad=2.5 * base.aberration_rad,
            full_well_electrons=(300.0, 1500.0),
            read_noise_electrons=(10.0, 20.0),
            fringe_visibility=(0.15, 0.4),
        )
    if split == "transfer":
        return replace(
            base,
            carrier_period_px=(6.0, 8.0),
            carrier_angle_deg=(-20.0, 20.0),
            pixel_size_um=(0.15, 0.3),
        )
    if split == "wide":
        return replace(
            base,
            carrier_period_px=(2.5, 8.0),
            pixel_size_um=(0.12, 0.45),
            peak_phase_rad=(0.5, 9.0),
            fringe_visibility=(0.15, 0.95),
            full_well_electrons=(1000.0, 20000.0),
            read_noise_electrons=(2.0, 15.0),
        )
    if split == "large-cells":
        scale = 128.0 / size
        return replace(
            base,
            close_up=LARGE_CELLS_CLOSE_UP,
            close_up_pixel_size_um=(0.1 * scale, 0.25 * scale),
        )
    raise InputError(
        f"unknown data split {split!r}; choose one of {', '.join((*SPLITS, *TRAINING_SPLITS))}"
    )


@dataclass
class Field:
    """One synthetic field of view.

    Attributes
    ----------
    hologram
        (H, W) uint16 camera counts.
    phase
        (H, W) float32 true object phase, radians; 0 in the background.
    labels
        (H, W) int32 cell labels, 0 in the background.
    system
        The off-axis system that recorded it.
    """

    hologram: np.ndarray
    phase: np.ndarray
    labels: np.ndarray
    system: OffAxisSystem


def normalise_hologram(hologram: np.ndarray) -> np.ndarray:
    """Network input of a hologram (..., H, W): ``(h - mean) / std`` per image, float32."""
    return normalise(hologram, NORMALISATION)


def draw_system(config: DataConfig, rng: np.random.Generator) -> OffAxisSystem:
    """An off-axis system drawn from ``config`` (carrier, aberrations, noise, drift)."""
    return random_system(
        rng,
        period_px=config.carrier_period_px,
        angle_deg=config.carrier_angle_deg,
        aberration_scale_rad=config.aberration_rad,
        visibility=config.fringe_visibility,
        full_well_electrons=config.full_well_electrons,
        read_noise_electrons=config.read_noise_electrons,
        drift=config.drift,
        pixel_size_um=float(rng.uniform(*config.pixel_size_um)),
    )


def synthetic_field(config: DataConfig, seed: int | Sequence[int]) -> Field:
    """One field drawn from ``config``; the same seed gives the same arrays."""
    rng = np.random.default_rng(seed)
    system = draw_system(config, rng)
    phantom = random_cells(
        (config.size, config.size),
        pixel_size_um=system.pixel_size_um,
        wavelength_nm=system.wavelength_nm,
        n_cells=config.n_cells,
        peak_phase_rad=config.peak_phase_rad,
        margin_px=-8.0,
        seed=rng,
    )
    hologram = simulate_hologram(phantom.phase, phantom.amplitude, system, seed=rng)
    return Field(hologram, phantom.phase.astype(np.float32), phantom.labels, system)


def close_up_config(config: DataConfig) -> DataConfig:
    """The distribution of ``config``'s close-up fields (see ``DataConfig.close_up``)."""
    return replace(
        config,
        pixel_size_um=config.close_up_pixel_size_um,
        carrier_period_px=config.close_up_period_px,
        n_cells=config.close_up_cells,
        close_up=0.0,
    )


def is_close_up(config: DataConfig, seed: int, step: int) -> bool:
    """Whether batch ``step`` of the stream ``seed`` is a close-up batch (``config.close_up``)."""
    if config.close_up <= 0.0:
        return False
    return bool(np.random.default_rng((seed, step, CLOSE_UP_KEY)).random() < config.close_up)


def synthetic_batch(config: DataConfig, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the stream ``seed``: normalised holograms and phases, (B, 1, H, W).

    A close-up batch (``config.close_up``) draws every field from :func:`close_up_config`: the
    whole batch then shares one native grid (crop factor), as a network's front end needs.
    """
    if is_close_up(config, seed, step):
        config = close_up_config(config)
    fields = [synthetic_field(config, (seed, step, i)) for i in range(config.batch_size)]
    x = normalise_hologram(np.stack([f.hologram for f in fields]))
    y = np.stack([f.phase for f in fields])
    return torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None]


class SyntheticHolograms(IterableDataset):
    """Endless stream of synthetic batches from step ``first_step`` on.

    With a :class:`~torch.utils.data.DataLoader` (``batch_size=None``) of W workers, worker w makes
    steps ``first_step + w, first_step + w + W, ...``; the loader takes them in turn, so the order
    is that of a single process.
    """

    def __init__(self, config: DataConfig, seed: int = 0, first_step: int = 0) -> None:
        super().__init__()
        self.config, self.seed, self.first_step = config, seed, first_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.first_step + worker
        while True:
            yield synthetic_batch(self.config, self.seed, step)
            step += workers


def synthetic_batches(
    config: DataConfig, seed: int = 0, num_workers: int = 0
) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Batch source for :func:`~napari_qpi.training.loop.fit`: ``source(first_step)``."""

    def source(first_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dataset = SyntheticHolograms(config, seed, first_step)
        if num_workers <= 0:
            return iter(dataset)
        return iter(DataLoader(dataset, batch_size=None, num_workers=num_workers))

    return source


@dataclass(frozen=True)
class HeldOutSet:
    """A fixed set of synthetic fields for scoring (arrays are read-only).

    Attributes
    ----------
    split, seed
        How it was made: ``held_out_set(split, n, size, seed)`` makes it again.
    holograms
        (N, H, W) uint16 raw holograms (not normalised).
    phases
        (N, H, W) float32 true phase, radians, 0 in the background.
    labels
        (N, H, W) int32 cell labels.
    acquisitions
        Per field, what a user's file would say (carrier sideband, pixel size, wavelength).
    """

    split: str
    seed: int
    holograms: np.ndarray
    phases: np.ndarray
    labels: np.ndarray
    acquisitions: tuple[Acquisition, ...]

    def __len__(self) -> int:
        return len(self.holograms)


@functools.lru_cache(maxsize=16)
def held_out_set(
    split: str = "standard", n: int = 32, size: int = 256, seed: int | None = None
) -> HeldOutSet:
    """The fixed held-out set of a split (see :func:`split_config`); cached.

    Field i of a split is the same whatever ``n``, so a smaller set is a prefix of a larger one.
    The default seed is :data:`HELD_OUT_SEED` plus the split's index, never used for training.
    """
    config = split_config(split, size)
    if seed is None:
        seed = HELD_OUT_SEED + SPLITS.index(split)
    fields = [synthetic_field(config, (seed, i)) for i in range(n)]
    arrays = [
        np.stack([getattr(f, key) for f in fields]) for key in ("hologram", "phase", "labels")
    ]
    for array in arrays:
        array.setflags(write=False)
    return HeldOutSet(
        split, seed, *arrays, acquisitions=tuple(f.system.acquisition() for f in fields)
    )


def pairs_from_arrays(
    holograms: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray | Sequence[np.ndarray],
    ignore_mask: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    size: int = 256,
    batch_size: int = 4,
    seed: int = 0,
    augment: bool = True,
) -> Callable[[int], Iterator[Batch]]:
    """Batch source of random crops from user images, e.g. for fine-tuning.

    Parameters
    ----------
    holograms
        Raw holograms, one (H, W) array each or an (N, H, W) stack; each is normalised as a whole
        (:data:`NORMALISATION`) before cropping, as at inference.
    targets
        Target phase (radians) of each hologram, same shapes (e.g. the classical method's result,
        corrected by hand). Its offset does not matter: losses are offset-free.
    ignore_mask
        Optional, same shapes; True (nonzero) marks pixels the loss ignores.
    size
        Crop side in pixels, best a multiple of the network's stride; crops are cut to the
        smallest image's height and width when an image is smaller.
    batch_size
        Crops per batch.
    seed
        Batch ``k`` is a function of ``(seed, k)``.
    augment
        Random flips and transposition, applied to hologram, target and mask alike (a mirrored
        hologram is the hologram of the mirrored object with a mirrored carrier).

    Returns
    -------
    callable
        ``source(first_step)`` yielding ``(x, y, ignore)`` (B, 1, h, w) tensors: float32 input,
        float32 target, bool mask (all False without ``ignore_mask``).
    """
    xs = [normalise_hologram(np.asarray(h)) for h in holograms]
    ys = [np.asarray(t, np.float32) for t in targets]
    masks = (
        [np.asarray(m).astype(bool) for m in ignore_mask]
        if ignore_mask is not None
        else [np.zeros(x.shape, bool) for x in xs]
    )
    if not xs or not (len(xs) == len(ys) == len(masks)):
        raise InputError(
            f"give as many targets and masks as holograms (at least one), got {len(xs)} "
            f"holograms, {len(ys)} targets and {len(masks)} masks"
        )
    for i, (x, y, m) in enumerate(zip(xs, ys, masks, strict=True)):
        if x.ndim != 2 or x.shape != y.shape or x.shape != m.shape:
            raise InputError(
                f"pair {i}: hologram {x.shape}, target {y.shape} and mask {m.shape} must be "
                "2-D images of one shape"
            )
        if not np.isfinite(y).all():
            raise InputError(f"pair {i}: the target phase has NaN or infinite values; mask them")
    crop_h = min(size, *(x.shape[0] for x in xs))
    crop_w = min(size, *(x.shape[1] for x in xs))

    def crop(k: int, step: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng((seed, step, k))
        i = int(rng.integers(len(xs)))
        height, width = xs[i].shape
        top = int(rng.integers(height - crop_h + 1))
        left = int(rng.integers(width - crop_w + 1))
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        arrays = [a[window] for a in (xs[i], ys[i], masks[i])]
        if augment:
            flip_y, flip_x, transpose = rng.integers(2, size=3)
            if transpose and crop_h == crop_w:
                arrays = [a.T for a in arrays]
            if flip_y:
                arrays = [a[::-1] for a in arrays]
            if flip_x:
                arrays = [a[:, ::-1] for a in arrays]
        return tuple(np.ascontiguousarray(a) for a in arrays)

    def source(first_step: int) -> Iterator[Batch]:
        step = first_step
        while True:
            crops = [crop(k, step) for k in range(batch_size)]
            yield tuple(
                torch.from_numpy(np.stack([c[j] for c in crops]))[:, None] for j in range(3)
            )
            step += 1

    return source
