"""Morphology outputs: labels as OME-TIFF, per-cell tables as CSV with a JSON sidecar.

Labels
    ``write_labels_tiff`` stores a label image ``(H, W)`` or stack ``(N, H, W)`` as OME-TIFF,
    uint16 when the largest label is below 65536, else uint32, with the pixel size as OME
    ``PhysicalSizeX``/``PhysicalSizeY`` (um) and our JSON record (``"content": "labels"``).
CSV
    One header row of column names, one row per cell, comma-separated, ``.`` as the decimal mark,
    UTF-8. Units are part of the column names (``area_um2``, ``dry_mass_pg``), so the file opens as
    is in pandas (``pandas.read_csv(path)``), Excel or R with no comment lines or skipped rows.
    Floats are written with the shortest text that reads back to the same double; NaN is an empty
    field.
Sidecar ``<name>.json`` (``cells.csv.json``)
    ``{"qpi": acquisition, "format": ..., "columns": [...], "units": {...}, "dtypes": {...},
    "metadata": {alpha, wavelength, pixel size, method, versions, notes, ...}}``: the parameters
    the numbers depend on. The ``"qpi"`` key follows :mod:`napari_qpi.io.metadata`, so the generic
    sidecar reader understands it too.

All writers go through :func:`napari_qpi.io._atomic.atomic_write`: a temporary file in the
destination folder moved into place when complete, and an existing file replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import FileFormatError, InputError, MetadataError
from ..morphology import MorphologyTable
from ._atomic import atomic_write, check_writable

__all__ = [
    "TABLE_FORMAT",
    "read_labels_tiff",
    "read_table_csv",
    "table_sidecar_path",
    "write_labels_tiff",
    "write_table_csv",
]

#: ``"format"`` entry of a table sidecar.
TABLE_FORMAT = "napari-qpi morphology table"
TABLE_FORMAT_VERSION = 1

_INTEGER_COLUMNS = frozenset({"label", "frame"})


def table_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a table: ``<name>.json`` next to it (``cells.csv.json``)."""
    return Path(str(path) + ".json")


def write_labels_tiff(
    path: str | os.PathLike[str],
    labels: Any,
    *,
    pixel_size_um: float | None,
    overwrite: bool = False,
    method: Mapping[str, Any] | str | None = None,
) -> Path:
    """Write a label image (0 = background) as OME-TIFF, atomically; return the path.

    Parameters
    ----------
    path
        Output file ending in ``.tif``/``.tiff`` (``.ome.tif`` recommended).
    labels
        Non-negative integer labels, ``(H, W)`` or ``(N, H, W)``.
    pixel_size_um
        Pixel pitch in um, stored as the OME physical size (``None``: no physical size).
    overwrite
        Replace an existing file; without it an existing file is never touched.
    method
        How the labels were made (JSON-serialisable), stored in the file's record.

    Raises
    ------
    InputError
        Labels are not integers, are negative, or have the wrong number of dimensions.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    from .ome_tiff import write_image

    arr = np.asarray(labels)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"Labels must be integers (0 = background), got dtype {arr.dtype}.")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"Labels must be a non-empty (H, W) or (N, H, W) array, got {arr.shape}.")
    low, high = (int(arr.min()), int(arr.max()))
    if low < 0:
        raise InputError("Labels must be >= 0 (0 = background); found negative values.")
    if high >= 2**32:
        raise InputError(f"Labels up to {high} do not fit in uint32.")
    dtype = np.uint16 if high < 2**16 else np.uint32
    record: dict[str, Any] = {"content": "labels"}
    if method is not None:
        record["method"] = dict(method) if isinstance(method, Mapping) else str(method)
    return write_image(
        path,
        arr.astype(dtype, copy=False),
        acquisition=Acquisition(pixel_size_um=pixel_size_um),
        overwrite=overwrite,
        **record,
    )


def read_labels_tiff(path: str | os.PathLike[str]) -> tuple[np.ndarray, float | None]:
    """Read a label image written by :func:`write_labels_tiff` (or any integer TIFF).

    Returns
    -------
    (labels, pixel_size_um)
        int32 labels (int64 if they do not fit) and the pixel size in um, or ``None`` when the file
        does not say.

    Raises
    ------
    FileFormatError
        Missing, unreadable or not a TIFF, or the data are not integers.
    """
    import tifffile

    from .metadata import read_tiff_metadata

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"No such labels file: {path}.")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            acquisition, _ = read_tiff_metadata(tif, source=str(path))
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        if isinstance(err, MetadataError):
            raise
        raise FileFormatError(f"Cannot read {path} as a labels TIFF: {err}") from None
    if not np.issubdtype(data.dtype, np.integer):
        raise FileFormatError(
            f"{path} holds {data.dtype} data, not integer labels; open it as an image instead."
        )
    fits = data.size == 0 or int(data.max()) < 2**31
    return data.astype(np.int32 if fits else np.int64, copy=False), acquisition.pixel_size_um


def _as_table(table: MorphologyTable | Mapping[str, Any]) -> MorphologyTable:
    if isinstance(table, MorphologyTable):
        return table
    if not isinstance(table, Mapping):
        raise InputError(
            f"Expected a MorphologyTable or a dict of columns, got {type(table).__name__}."
        )
    columns = {str(k): np.asarray(v) for k, v in table.items()}
    return MorphologyTable(columns=columns, units={k: "" for k in columns}, metadata={})


def _format_cell(value: Any, integer: bool) -> str:
    if integer:
        return str(int(value))
    number = float(value)
    return "" if math.isnan(number) else repr(number)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise InputError(
        f"The table metadata holds a {type(value).__name__}, which cannot be stored as JSON."
    )


def write_table_csv(
    path: str | os.PathLike[str],
    table: MorphologyTable | Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a per-cell table as CSV plus its JSON sidecar ``<path>.json``; return the CSV path.

    See the module docstring for the layout. Both files are checked before anything is written
    and each is written atomically; an existing CSV or sidecar is replaced only with
    ``overwrite=True``.

    Raises
    ------
    InputError
        Columns of different lengths, not 1-D, or not numeric; metadata that is not JSON.
    OutputExistsError
        The CSV or its sidecar exists and ``overwrite`` is false.
    FileFormatError
        The folder does not exist.
    """
    table = _as_table(table)
    path = Path(path)
    sidecar = table_sidecar_path(path)
    check_writable(path, overwrite)
    check_writable(sidecar, overwrite)

    names = table.names
    columns = [np.asarray(table.columns[n]) for n in names]
    lengths = {c.shape for c in columns}
    if any(c.ndim != 1 for c in columns) or len(lengths) > 1:
        raise InputError(
            f"Table columns must be 1-D and of equal length, got shapes "
            f"{ {n: c.shape for n, c in zip(names, columns, strict=True)} }."
        )
    for name, col in zip(names, columns, strict=True):
        if col.dtype.kind not in "biuf":
            raise InputError(f"Column {name!r} is not numeric ({col.dtype}).")
    integer = [c.dtype.kind in "biu" for c in columns]

    acquisition = Acquisition(
        wavelength_nm=table.metadata.get("wavelength_nm"),
        pixel_size_um=table.metadata.get("pixel_size_um"),
    )
    record = {
        "qpi": acquisition.to_dict(),
        "format": TABLE_FORMAT,
        "format_version": TABLE_FORMAT_VERSION,
        "columns": names,
        "units": {n: table.units.get(n, "") for n in names},
        "dtypes": {n: ("int64" if i else "float64") for n, i in zip(names, integer, strict=True)},
        "n_rows": len(columns[0]) if columns else 0,
        "metadata": table.metadata,
    }
    try:
        sidecar_text = json.dumps(record, indent=2, default=_jsonable, allow_nan=False)
    except ValueError as err:
        raise InputError(f"The table metadata cannot be stored as JSON: {err}.") from None

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*columns, strict=True):
        writer.writerow(_format_cell(v, i) for v, i in zip(row, integer, strict=True))
    with atomic_write(path, overwrite) as tmp_csv, atomic_write(sidecar, overwrite) as tmp_json:
        tmp_csv.write_text(buffer.getvalue(), encoding="utf-8")
        tmp_json.write_text(sidecar_text + "\n", encoding="utf-8")
    return path


def _parse_column(name: str, texts: list[str], dtype: str, path: Path) -> np.ndarray:
    try:
        if dtype == "int64":
            return np.array([int(t) for t in texts], dtype=np.int64)
        return np.array([float(t) if t.strip() else math.nan for t in texts], dtype=np.float64)
    except ValueError as err:
        raise FileFormatError(
            f"{path}: column {name!r} holds a value that is not a number ({err})."
        ) from None


def read_table_csv(path: str | os.PathLike[str]) -> MorphologyTable:
    """Read a table written by :func:`write_table_csv`, with units and metadata from its sidecar.

    Without a sidecar (a CSV edited elsewhere) ``label`` and ``frame`` are read as integers, the
    other columns as floats, units are empty and ``metadata`` is empty.

    Raises
    ------
    FileFormatError
        The file is missing or malformed, or disagrees with its sidecar.
    MetadataError
        The sidecar is not valid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"No such table: {path}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise FileFormatError(f"Cannot read the table {path}: {err}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise FileFormatError(f"{path} is empty: expected a header row of column names.")
    names, body = rows[0], [r for r in rows[1:] if r]
    for number, row in enumerate(body, start=2):
        if len(row) != len(names):
            raise FileFormatError(
                f"{path}, line {number}: {len(row)} values for {len(names)} columns."
            )

    sidecar = table_sidecar_path(path)
    record: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MetadataError(f"Cannot read the table sidecar {sidecar}: {err}") from None
        if not isinstance(record, dict):
            raise MetadataError(f"The table sidecar {sidecar} must hold a JSON object.")
        if record.get("columns") not in (None, names):
            raise FileFormatError(
                f"{path} has columns {names} but its sidecar {sidecar.name} lists "
                f"{record.get('columns')}: the two files do not belong together."
            )
    dtypes = record.get("dtypes") or {}
    units = record.get("units") or {}
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(names):
        dtype = dtypes.get(name, "int64" if name in _INTEGER_COLUMNS else "float64")
        columns[name] = _parse_column(name, [r[index] for r in body], dtype, path)
    return MorphologyTable(
        columns=columns,
        units={n: str(units.get(n, "")) for n in names},
        metadata=dict(record.get("metadata") or {}),
    )
