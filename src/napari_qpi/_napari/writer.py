"""napari writers: phase images, labels with their per-cell table, and whole analyses.

napari asks before replacing a file, so these writers are called only for paths the user chose;
every file is still written atomically (a crash never leaves half a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import write_phase
from ..io.tables import write_labels_tiff, write_table_csv
from ..morphology import MorphologyTable
from .layers import METHOD_KEY, MORPHOLOGY_KEY, acquisition_of


def _pixel_size(attributes: dict[str, Any]) -> float | None:
    acquisition = acquisition_of(attributes.get("metadata"))
    scale = attributes.get("scale")
    if acquisition.pixel_size_um is None and scale is not None and float(scale[-1]) != 1.0:
        return float(scale[-1])
    return acquisition.pixel_size_um


def write_phase_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one image layer as a phase OME-TIFF (float32 radians, physical pixel size)."""
    metadata = attributes.get("metadata") or {}
    acquisition = acquisition_of(metadata).replace(
        modality="phase", pixel_size_um=_pixel_size(attributes)
    )
    method = metadata.get(METHOD_KEY) or {"name": "unknown", "layer": attributes.get("name")}
    written = write_phase(
        path,
        np.asarray(data, dtype=np.float32),
        acquisition=acquisition,
        method=method,
        overwrite=True,
    )
    return [str(written)]


def _table_of(attributes: dict[str, Any]) -> MorphologyTable | None:
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


def write_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Labels as OME-TIFF and, when the layer carries a cell table, that table as CSV beside it."""
    target = Path(path)
    written = [
        write_labels_tiff(
            target, np.asarray(data), pixel_size_um=_pixel_size(attributes), overwrite=True
        )
    ]
    table = _table_of(attributes)
    if table is not None:
        written.append(write_table_csv(_csv_path(target), table, overwrite=True))
    return [str(p) for p in written]


def write_analysis_folder(path: str, layer_data: list[tuple[Any, dict, str]]) -> list[str]:
    """Phase images, labels and cell tables together in one folder (created if needed)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; choose a folder name to save the analysis in.")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for data, attributes, layer_type in layer_data:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in attributes["name"])
        if layer_type == "image":
            written += write_phase_layer(str(folder / f"{stem}.ome.tif"), data, attributes)
        elif layer_type == "labels":
            written += write_labels_layer(str(folder / f"{stem}.ome.tif"), data, attributes)
    return written
