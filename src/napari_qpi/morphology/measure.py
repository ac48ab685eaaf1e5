"""Per-cell shape, phase, optical volume and dry mass; stacks frame by frame.

Physics
-------
Physics
-------
A cell of refractive index ``n_cell`` in a medium ``n_medium`` delays the light that crosses it by
the optical path difference ``OPD = integral (n_cell - n_medium) dz``; the phase image is
``phi = 2 pi OPD / lambda`` (radians). Integrated over a cell's area this gives

* the optical volume ``V_opt = lambda / (2 pi) * sum(phi) * A_px`` (um^3), and
* the dry mass ``m = lambda / (2 pi alpha) * sum(phi) * A_px`` (pg),

with ``lambda`` the vacuum wavelength in um, ``A_px`` the pixel area in um^2 and ``alpha`` the
refractive increment of the cell's dry matter, 0.18 um^3/pg (0.18 mL/g) by default. Both formulas
assume a background-corrected phase (background at 0 rad): a residual offset ``b`` biases the dry
mass by ``lambda b / (2 pi alpha)`` pg per um^2 of cell, so the measured background is recorded in
the table's metadata and a warning is given when it is far from zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..acquisition import is_real_number
from ..errors import InputError
from ._common import (
    DEFAULT_ALPHA_UM3_PER_PG,
    MorphologyWarning,
    _as_phase_image,
    _check_pixel_size,
    _versions,
)
from ._regions import ring_backgrounds
from .segment import SegmentationSettings, segment_cells
from .table import MorphologyTable

__all__ = ["combine_frames", "iter_measure_frames", "measure_cells", "measure_stack"]

_BACKGROUND_BIAS_WARNING = 0.02

#: The one line said when dry mass cannot be computed (the column is there, empty).
NO_WAVELENGTH = (
    "No dry mass: it needs the wavelength (dry mass = wavelength / (2 pi alpha) x integrated "
    "phase); give it with --wavelength NM, in the file's metadata or a FILE.json sidecar "
    '({"qpi": {"wavelength_nm": 633}}), or in the widget\'s wavelength field.'
)
NO_PIXEL_SIZE = (
    "No pixel size: lengths and areas are in pixels and dry mass (which needs the pixel area) is "
    "empty; give it with --pixel-size UM, or in the file's metadata or a FILE.json sidecar "
    '({"qpi": {"pixel_size_um": 0.1}}).'
)


_PHYSICAL = {
    "area": ("area_um2", "um^2", "area_px2", "px^2"),
    "perimeter": ("perimeter_um", "um", "perimeter_px", "px"),
    "equivalent_diameter_area": ("equivalent_diameter_um", "um", "equivalent_diameter_px", "px"),
    "eccentricity": ("eccentricity", "", "eccentricity", ""),
    "solidity": ("solidity", "", "solidity", ""),
    "axis_major_length": ("major_axis_um", "um", "major_axis_px", "px"),
    "axis_minor_length": ("minor_axis_um", "um", "minor_axis_px", "px"),
    "centroid-0": ("centroid_y_um", "um", "centroid_y_px", "px"),
    "centroid-1": ("centroid_x_um", "um", "centroid_x_px", "px"),
}


def _check_labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != shape:
        raise InputError(
            f"Labels of shape {lab.shape} do not match the phase image of shape {shape}: use the "
            "labels made on this image (same height and width)."
        )
    if lab.dtype == bool:
        return lab.astype(np.int32)
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"Labels must be integers (0 = background), got dtype {lab.dtype}.")
    if lab.size and lab.min() < 0:
        raise InputError("Labels must be >= 0 (0 = background); found negative values.")
    return lab


def _integrate(
    image: np.ndarray, lab: np.ndarray, ids: np.ndarray, local_background: bool, margin_px: int
) -> dict[str, np.ndarray]:
    """Phase sums of each cell above its local background (rad, rad px).

    ``phase_sum`` over the grown region, ``mean`` / ``max`` over the label, ``background`` (the
    local level), ``counts`` (label pixels), ``ring_px`` and ``region`` (the grown labels).
    """
    valid = np.isfinite(image)
    if local_background and ids.size:
        cell_bg, region, ring_px = ring_backgrounds(image, lab, ids, margin_px)
    else:
        cell_bg, region, ring_px = np.zeros(ids.size), lab, np.zeros(ids.size, dtype=np.int64)
    lut = np.zeros(int(lab.max()) + 1 if lab.size else 1)
    lut[ids] = cell_bg
    corrected = np.where(valid, image - lut[region], 0.0)
    inside = np.where(lab > 0, corrected, 0.0)
    counts = np.bincount(lab.ravel())[ids].astype(np.float64) if ids.size else np.zeros(0)
    label_sum = np.asarray(ndi.sum_labels(inside, lab, ids), dtype=np.float64).reshape(-1)
    return {
        "phase_sum": np.asarray(ndi.sum_labels(corrected, region, ids), np.float64).reshape(-1),
        "mean": label_sum / np.maximum(counts, 1),
        "max": np.asarray(ndi.maximum(inside, lab, ids), np.float64).reshape(-1)
        if ids.size
        else np.zeros(0),
        "background": cell_bg.astype(np.float64),
        "counts": counts,
        "ring_px": ring_px,
        "region": region,
    }


def _field_background(image: np.ndarray, region: np.ndarray) -> float | None:
    outside = image[(region == 0) & np.isfinite(image)]
    return float(np.median(outside)) if outside.size else None


def _background_notes(
    background: float | None,
    mean_phase: np.ndarray,
    ring_px: np.ndarray,
    local_background: bool,
    margin_px: int,
) -> list[str]:
    """What the table's notes say about the background (and a warning when it biases mass)."""
    if not mean_phase.size:
        return []
    if local_background:
        enclosed = int((ring_px < 12).sum())
        level = background if background is not None else float("nan")
        return [
            f"Dry mass is integrated against each cell's local background (a plane fitted to a "
            f"ring around it, {margin_px} px beyond the outline); the field's background sits at "
            f"{level:.3g} rad."
            + (f" {enclosed} cell(s) inside clusters had too small a ring." if enclosed else "")
        ]
    if background is None:
        return []
    typical = float(np.median(mean_phase))
    bias = abs(background / typical) if typical else math.inf
    if bias <= _BACKGROUND_BIAS_WARNING:
        return []
    message = (
        f"The background phase is {background:.3g} rad, not 0: integrated phase, optical "
        f"volume and dry mass include this offset over each cell's area (about "
        f"{100 * bias:.0f}% of a typical cell's). Correct the background before measuring, "
        "or measure against each cell's local background (the default; --cell-background local)."
    )
    warnings.warn(message, MorphologyWarning, stacklevel=4)
    return [message]


def _check_constants(wavelength_nm: Any, alpha_um3_per_pg: Any) -> None:
    if wavelength_nm is not None and not (
        is_real_number(wavelength_nm) and math.isfinite(wavelength_nm) and wavelength_nm > 0
    ):
        raise InputError(f"wavelength_nm must be a positive number in nm, got {wavelength_nm!r}.")
    if not (math.isfinite(alpha_um3_per_pg) and alpha_um3_per_pg > 0):
        raise InputError(
            f"alpha_um3_per_pg must be a positive number (e.g. 0.18 um^3/pg), got "
            f"{alpha_um3_per_pg!r}."
        )


def _undefined_cells_note(bad_cells: np.ndarray) -> list[str]:
    """A note (and a warning) for labelled cells with NaN/inf phase: measured as NaN."""
    if not bad_cells.size:
        return []
    shown = ", ".join(str(int(v)) for v in bad_cells[:10])
    message = (
        f"Phase is NaN or infinite inside {bad_cells.size} labelled cell(s) ({shown}"
        f"{', ...' if bad_cells.size > 10 else ''}): their phase and dry mass are left empty "
        "(NaN); the other cells are measured. Fix the phase there (unwrap or fill it) to "
        "measure them."
    )
    warnings.warn(message, MorphologyWarning, stacklevel=4)
    return [message]


def measure_cells(
    phase: Any,
    labels: Any,
    *,
    pixel_size_um: float | None = None,
    wavelength_nm: float | None = None,
    alpha_um3_per_pg: float = DEFAULT_ALPHA_UM3_PER_PG,
    frame: int | None = None,
    method: Mapping[str, Any] | str | None = None,
    local_background: bool = True,
    margin_px: int = 2,
) -> MorphologyTable:
    """Shape, phase, optical volume and dry mass of every labelled cell.

    Parameters
    ----------
    phase
        2-D phase image, radians. With ``local_background`` a residual offset or smooth variation
        of the background is removed cell by cell; without it the phase must be corrected.
    labels
        Integer labels of the same shape, 0 = background (from :func:`segment_cells` or painted).
    pixel_size_um
        Pixel pitch in the sample plane, um. Without it lengths and areas are in pixels (columns
        ending in ``_px`` / ``_px2``), optical volume and dry mass are empty (NaN, a note says how
        to give it) and ``metadata["pixel_size_missing"]`` is True.
    wavelength_nm
        Vacuum wavelength, nm. Without it optical volume and dry mass are empty (NaN) and a note
        says why and how to give it.
    alpha_um3_per_pg
        Refractive increment, um^3/pg (0.18 for typical cell content).
    frame
        When given, a ``frame`` column with this value is added (for stacks).
    method
        How the labels were made, recorded in ``metadata["method"]`` (default ``"user labels"``).
    local_background
        Integrate each cell against its local background: a plane fitted to a ring around it
        (see :func:`~napari_qpi.morphology._regions.ring_backgrounds`); the field's median
        background is recorded in ``metadata["background_phase_rad"]``.
    margin_px
        The integration region is the label grown by this many pixels (not into other cells):
        the faint rim below the outline threshold carries mass.

    Returns
    -------
    MorphologyTable
        Columns ``label``, [``frame``], ``area_um2``, ``perimeter_um``, ``equivalent_diameter_um``,
        ``eccentricity``, ``solidity``, ``major_axis_um``, ``minor_axis_um``, ``centroid_y_um``,
        ``centroid_x_um``, ``mean_phase_rad``, ``max_phase_rad`` (above the local background),
        ``background_phase_rad`` (the local background), ``integrated_phase_rad_um2``
        (sum of background-corrected phase x pixel area over the grown region),
        ``optical_volume_um3`` (lambda/(2 pi) x integrated phase),
        ``dry_mass_pg`` (optical volume / alpha), ``dry_mass_density_pg_per_um2`` (dry mass /
        area).

    Raises
    ------
    InputError
        Shapes differ, labels are not non-negative integers, or a parameter is out of range.
        A labelled cell with NaN/inf phase gets NaN phase and mass and a warning (NaN outside the
        cells is ignored).
    """
    image = _as_phase_image(phase)
    lab = _check_labels(labels, image.shape)
    px = _check_pixel_size(pixel_size_um)
    _check_constants(wavelength_nm, alpha_um3_per_pg)
    bad_cells = np.unique(lab[~np.isfinite(image) & (lab > 0)])
    notes = _undefined_cells_note(bad_cells)
    physical = px is not None
    spacing = (px, px) if physical else (1.0, 1.0)
    pixel_area = spacing[0] * spacing[1]
    with_mass = physical and wavelength_nm is not None
    if wavelength_nm is None:
        notes.append(NO_WAVELENGTH)
    if not physical:
        notes.append(NO_PIXEL_SIZE)

    columns, units = _shape_columns(lab, spacing, physical, frame)
    ids = columns["label"]
    sums = _integrate(image, lab, ids, local_background, margin_px)
    _phase_and_mass_columns(
        columns,
        units,
        sums,
        bad_cells,
        physical=physical,
        pixel_area=pixel_area,
        wavelength_nm=wavelength_nm if with_mass else None,
        alpha_um3_per_pg=alpha_um3_per_pg,
    )

    background = _field_background(image, sums["region"])
    notes += _background_notes(
        background, columns["mean_phase_rad"], sums["ring_px"], local_background, margin_px
    )
    if isinstance(method, Mapping):
        method_record: dict[str, Any] | str = dict(method)
    else:
        method_record = method or "user labels"
    metadata: dict[str, Any] = {
        "alpha_um3_per_pg": float(alpha_um3_per_pg),
        "wavelength_nm": None if wavelength_nm is None else float(wavelength_nm),
        "pixel_size_um": px,
        "pixel_size_missing": not physical,
        "dry_mass_available": with_mass,
        "dry_mass_formula": "dry_mass_pg = wavelength_um / (2 pi alpha_um3_per_pg) * "
        "sum(phase_rad) * pixel_area_um2",
        "background_phase_rad": background,
        "cell_background": "local" if local_background else "zero",
        "method": method_record,
        "notes": notes,
        "versions": _versions(),
    }
    return MorphologyTable(columns=columns, units=units, metadata=metadata)


def _shape_columns(
    lab: np.ndarray, spacing: tuple[float, float], physical: bool, frame: int | None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The ``label`` column, [``frame``], and the shape columns of every labelled cell with
    their units: um / um^2 with a pixel size (``spacing`` in um), else px / px^2."""
    from skimage.measure import regionprops_table

    props = regionprops_table(
        lab,
        properties=("label", *dict.fromkeys(key.split("-")[0] for key in _PHYSICAL)),
        spacing=spacing,
    )
    ids = np.asarray(props["label"], dtype=np.int64)
    columns: dict[str, np.ndarray] = {"label": ids}
    units: dict[str, str] = {"label": ""}
    if frame is not None:
        columns["frame"] = np.full(ids.shape, int(frame), dtype=np.int64)
        units["frame"] = ""
    for key, (name_um, unit_um, name_px, unit_px) in _PHYSICAL.items():
        name, unit = (name_um, unit_um) if physical else (name_px, unit_px)
        columns[name] = np.asarray(props[key], dtype=np.float64)
        units[name] = unit
    return columns, units


def _phase_and_mass_columns(
    columns: dict[str, np.ndarray],
    units: dict[str, str],
    sums: dict[str, Any],
    bad_cells: np.ndarray,
    *,
    physical: bool,
    pixel_area: float,
    wavelength_nm: float | None,
    alpha_um3_per_pg: float,
) -> None:
    """Add the phase columns (rad, above the local background), the integrated phase (rad um^2,
    or rad px^2 without a pixel size), optical volume (um^3), dry mass (pg) and its density
    (pg/um^2); mass NaN without ``wavelength_nm``, all NaN for the cells with NaN/inf phase."""
    ids = columns["label"]
    with_mass = wavelength_nm is not None
    phase_sum, counts = sums["phase_sum"], sums["counts"]
    columns["mean_phase_rad"] = sums["mean"]
    columns["max_phase_rad"] = sums["max"]
    columns["background_phase_rad"] = sums["background"]
    units["mean_phase_rad"] = units["max_phase_rad"] = units["background_phase_rad"] = "rad"
    integrated_name = "integrated_phase_rad_um2" if physical else "integrated_phase_rad_px2"
    columns[integrated_name] = phase_sum * pixel_area
    units[integrated_name] = "rad um^2" if physical else "rad px^2"
    if with_mass:
        wavelength_um = float(wavelength_nm) / 1000.0
        optical_volume = wavelength_um / (2 * math.pi) * phase_sum * pixel_area
    else:
        optical_volume = np.full(ids.shape, np.nan)
    dry_mass = optical_volume / alpha_um3_per_pg
    columns["optical_volume_um3"] = optical_volume
    columns["dry_mass_pg"] = dry_mass
    columns["dry_mass_density_pg_per_um2"] = dry_mass / np.maximum(counts * pixel_area, 1e-300)
    units.update(optical_volume_um3="um^3", dry_mass_pg="pg", dry_mass_density_pg_per_um2="pg/um^2")
    undefined = np.isin(ids, bad_cells)
    for name in (
        "mean_phase_rad",
        "max_phase_rad",
        integrated_name,
        "optical_volume_um3",
        "dry_mass_pg",
        "dry_mass_density_pg_per_um2",
    ):
        columns[name][undefined] = np.nan


def _concatenate(tables: list[MorphologyTable]) -> dict[str, np.ndarray]:
    names = tables[0].names
    return {name: np.concatenate([t.columns[name] for t in tables]) for name in names}


def _as_stack(phase_stack: Any) -> Any:
    """A list or tuple of frames as one array, after checking that they share one shape."""
    if not isinstance(phase_stack, (list, tuple)):
        return phase_stack
    if not phase_stack:
        raise InputError("The stack has no frame.")
    first = np.shape(phase_stack[0])
    for k, plane in enumerate(phase_stack):
        if np.shape(plane) != first:
            raise InputError(
                f"frame {k} has shape {np.shape(plane)} but frame 0 has {first}: the frames of a "
                "stack must share one shape (crop or pad them to the same size)."
            )
    return np.stack([np.asarray(p) for p in phase_stack])


def iter_measure_frames(
    phase_stack: Any,
    labels_stack: Any = None,
    *,
    pixel_size_um: float | None = None,
    wavelength_nm: float | None = None,
    alpha_um3_per_pg: float = DEFAULT_ALPHA_UM3_PER_PG,
    settings: SegmentationSettings | None = None,
    local_background: bool = True,
) -> Iterator[tuple[tuple[int, ...], np.ndarray, MorphologyTable]]:
    """Segment (unless labels are given) and measure a stack frame by frame.

    Yields ``(position, labels, table)`` for each frame in C order, so callers can report progress
    and stop between frames. Arguments are those of :func:`measure_stack`.
    """
    phase_stack = _as_stack(phase_stack)
    shape = tuple(np.shape(phase_stack))
    if len(shape) < 2:
        raise InputError(f"phase_stack must have shape (..., H, W), got {shape}.")
    if labels_stack is not None and tuple(np.shape(labels_stack)) != shape:
        raise InputError(
            f"Labels stack of shape {tuple(np.shape(labels_stack))} does not match the phase "
            f"stack of shape {shape}: use labels drawn on this phase image, or none."
        )
    settings = settings or SegmentationSettings()
    method: dict[str, Any] | str = (
        {"segmentation": "napari_qpi.morphology.segment_cells", **settings.to_dict()}
        if labels_stack is None
        else "user labels"
    )
    for index, position in enumerate(np.ndindex(*shape[:-2])):
        plane = np.asarray(phase_stack[position])
        if labels_stack is None:
            plane_labels = segment_cells(plane, pixel_size_um=pixel_size_um, settings=settings)
        else:
            plane_labels = np.asarray(labels_stack[position])
        table = measure_cells(
            plane,
            plane_labels,
            pixel_size_um=pixel_size_um,
            wavelength_nm=wavelength_nm,
            alpha_um3_per_pg=alpha_um3_per_pg,
            frame=index,
            method=method,
            local_background=local_background,
        )
        yield position, plane_labels, table


def combine_frames(tables: list[MorphologyTable], shape: tuple[int, ...]) -> MorphologyTable:
    """One table from the per-frame tables of a stack of ``shape``."""
    metadata = dict(tables[0].metadata)
    backgrounds = [t.metadata["background_phase_rad"] for t in tables]
    metadata["background_phase_rad"] = backgrounds if len(backgrounds) > 1 else backgrounds[0]
    metadata["notes"] = list(dict.fromkeys(n for t in tables for n in t.metadata["notes"]))
    metadata["stack_shape"] = list(shape)
    return MorphologyTable(
        columns=_concatenate(tables), units=dict(tables[0].units), metadata=metadata
    )


def measure_stack(
    phase_stack: Any,
    labels_stack: Any = None,
    *,
    pixel_size_um: float | None = None,
    wavelength_nm: float | None = None,
    alpha_um3_per_pg: float = DEFAULT_ALPHA_UM3_PER_PG,
    settings: SegmentationSettings | None = None,
    local_background: bool = True,
) -> tuple[MorphologyTable, np.ndarray]:
    """Measure every frame of a stack; one table with a ``frame`` column.

    Parameters
    ----------
    phase_stack
        Phase in radians, shape (..., H, W) (numpy or dask; frames are read one at a time). A 2-D
        image is one frame. Leading axes are flattened in C order: ``frame`` is that flat index.
    labels_stack
        Labels of the same shape, or ``None`` to segment each frame with ``settings``.
    pixel_size_um, wavelength_nm, alpha_um3_per_pg, local_background
        As in :func:`measure_cells`.
    settings
        Segmentation settings used when ``labels_stack`` is ``None``.

    Returns
    -------
    (MorphologyTable, numpy.ndarray)
        The table and the int32 labels stack used (the given one, or the segmentation), with the
        shape of ``phase_stack``.
    """
    phase_stack = _as_stack(phase_stack)
    shape = tuple(np.shape(phase_stack))
    out_labels = np.zeros(shape, dtype=np.int32)
    tables: list[MorphologyTable] = []
    for position, labels, table in iter_measure_frames(
        phase_stack,
        labels_stack,
        pixel_size_um=pixel_size_um,
        wavelength_nm=wavelength_nm,
        alpha_um3_per_pg=alpha_um3_per_pg,
        settings=settings,
        local_background=local_background,
    ):
        out_labels[position] = labels
        tables.append(table)
    return combine_frames(tables, shape), out_labels
