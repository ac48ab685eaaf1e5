"""napari writers: phase images, labels with their per-cell table, and whole analyses.

napari asks before replacing a file, so these writers are called only for paths the user chose;
every file is still written atomically (a crash never leaves half a file). What they write, our
reader opens again as it was: a phase image with its acquisition and method records, a hologram
with its dtype and modality, labels with their cell table (``layer.features``, units, parameters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import write_image, write_phase
from ..io.tables import write_labels_tiff, write_table_csv
from ..morphology import MorphologyTable
from .layers import METHOD_KEY, MORPHOLOGY_KEY, acquisition_of


def _pixel_size(attributes: dict[str, Any]) -> float | None:
    acquisition = acquisition_of(attributes.get("metadata"))
    scale = attributes.get("scale")
    if acquisition.pixel_size_um is None and scale is not None and float(scale[-1]) != 1.0:
        return float(scale[-1])
    return acquisition.pixel_size_um


def _axes(attributes: dict[str, Any], ndim: int) -> str | None:
    labels = attributes.get("axis_labels") or ()
    axes = "".join(str(label).upper() for label in labels)
    if len(axes) == ndim and axes.endswith("YX") and (ndim == 2 or axes[0] in "TZC"):
        return axes
    return None


def write_phase_layer(
    path: str, data: Any, attributes: dict[str, Any], *, overwrite: bool = True
) -> list[str]:
    """Write one image layer as OME-TIFF with its acquisition record and physical pixel size.

    A phase layer (or any image of unknown content) is written as float32 radians with its
    method record; a layer whose metadata says it is a hologram or CDP measurement keeps its
    dtype and modality, so it opens again as a hologram.
    """
    metadata = attributes.get("metadata") or {}
    acquisition = acquisition_of(metadata).replace(pixel_size_um=_pixel_size(attributes))
    axes = _axes(attributes, np.ndim(data))
    if acquisition.modality in ("hologram", "cdp"):
        written = write_image(path, data, acquisition=acquisition, overwrite=overwrite, axes=axes)
        return [str(written)]
    method = metadata.get(METHOD_KEY) or {"name": "unknown", "layer": attributes.get("name")}
    written = write_phase(
        path,
        data if hasattr(data, "ndim") else np.asarray(data, dtype=np.float32),
        acquisition=acquisition.replace(modality="phase"),
        method=method,
        overwrite=overwrite,
        axes=axes,
    )
    return [str(written)]


def table_of(attributes: dict[str, Any]) -> MorphologyTable | None:
    features = attributes.get("features")
    if features is None or len(features) == 0:
        return None
    record = (attributes.get("metadata") or {}).get(MORPHOLOGY_KEY, {})
    columns = {str(name): np.asarray(features[name]) for name in features.columns}
    units = record.get("units") or {name: "" for name in columns}
    return MorphologyTable(columns=columns, units=dict(units), metadata=record.get("metadata", {}))


def _csv_path(labels_path: Path) -> Path:
    name = labels_path.name
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(ext):
            return labels_path.with_name(name[: -len(ext)] + ".csv")
    return labels_path.with_suffix(".csv")


def write_labels_layer(
    path: str, data: Any, attributes: dict[str, Any], *, overwrite: bool = True
) -> list[str]:
    """Labels as OME-TIFF and, when the layer carries a cell table, that table as CSV beside it.

    The CSV (``<name>.csv`` with its ``.csv.json`` sidecar of units and parameters) is what our
    reader attaches to the labels again as ``layer.features``.
    """
    target = Path(path)
    table = table_of(attributes)
    csv = _csv_path(target)
    if table is not None and not overwrite:
        from ..io._atomic import check_writable
        from ..io.tables import table_sidecar_path

        check_writable(csv, False)
        check_writable(table_sidecar_path(csv), False)
    written = [
        write_labels_tiff(
            target, np.asarray(data), pixel_size_um=_pixel_size(attributes), overwrite=overwrite
        )
    ]
    if table is not None:
        written.append(write_table_csv(csv, table, overwrite=overwrite))
    return [str(p) for p in written]


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "layer"


def analysis_targets(path: str | Path, layer_data: list[tuple[Any, dict, str]]) -> list[Path]:
    """The files :func:`write_analysis_folder` would write for ``layer_data`` into ``path``."""
    folder = Path(path)
    targets: list[Path] = []
    for _, attributes, layer_type in layer_data:
        image = folder / f"{_stem(attributes['name'])}.ome.tif"
        if layer_type == "image":
            targets.append(image)
        elif layer_type == "labels":
            csv = _csv_path(image)
            targets += [image, csv, csv.with_name(csv.name + ".json")]
    return targets


def write_analysis_folder(
    path: str, layer_data: list[tuple[Any, dict, str]], *, overwrite: bool = True
) -> list[str]:
    """Phase images, labels and cell tables together in one folder (created if needed).

    napari's own save dialog has asked about replacing, so ``overwrite`` defaults to true there;
    the *Save analysis* button passes false unless the user agreed to replace files.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; choose a folder name to save the analysis in.")
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        from ..io._atomic import check_writable

        for target in analysis_targets(folder, layer_data):
            check_writable(target, False)
    written: list[str] = []
    for data, attributes, layer_type in layer_data:
        target = str(folder / f"{_stem(attributes['name'])}.ome.tif")
        if layer_type == "image":
            written += write_phase_layer(target, data, attributes, overwrite=overwrite)
        elif layer_type == "labels":
            written += write_labels_layer(target, data, attributes, overwrite=overwrite)
    return written
