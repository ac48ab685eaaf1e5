"""Acquisition metadata in files: TIFF tags, ImageJ, OME-XML, our JSON record and sidecars.

Our JSON record is a JSON object whose ``"qpi"`` key holds :meth:`Acquisition.to_dict`; other
top-level keys (``"method"``, ``"units"``, ...) are kept and handed back as *extra*::

    {"qpi": {"wavelength_nm": 633.0, "pixel_size_um": 0.345, "modality": "hologram"}}

Sources, from lowest to highest priority (a field set by a later source wins):

1. TIFF resolution tags (centimetre, millimetre, micrometre; inch only above 1270 dpi) and
   ImageJ's ``unit`` for the X/Y pixel size;
2. OME-XML ``PhysicalSizeX``/``PhysicalSizeY`` with their units;
3. our JSON record embedded in the file: in an OME ``MapAnnotation`` (key ``napari_qpi``), the OME
   image ``Description``, the TIFF ImageDescription (plain JSON or tifffile's shaped metadata), or
   the ``metadata`` entry of an NPZ file;
4. a JSON sidecar next to the image: ``<name>.json`` (``cells.tif.json``), else ``<stem>.json``
   (``cells.json``, also for ``cells.ome.tif``).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..acquisition import METADATA_KEY, Acquisition
from ..errors import MetadataError

#: Key of our JSON record in an OME-XML ``MapAnnotation``.
OME_ANNOTATION_KEY = "napari_qpi"

_ACQUISITION_FIELDS = frozenset(Acquisition.__dataclass_fields__)

_SHAPED_KEYS = frozenset({"shape", "axes"})

_UNIT_TO_UM: dict[str, float] = {
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "in": 25400.0,
    "inch": 25400.0,
}

#: Inch-based resolution tags below this many dots per inch are image-editor defaults (72, 96,
#: 300, 600, 1200 dpi), not a physical pixel size, and are ignored.
_MIN_PHYSICAL_DPI = 1270.0


def unit_to_um(unit: str | None) -> float | None:
    """Micrometres per ``unit`` (``"nm"``, ``"µm"``, ``"micron"``, ``"mm"``, ...), or ``None``."""
    if unit is None:
        return None
    key = unit.strip().lower().replace("\\u00b5", "µ").replace("\\u03bc", "μ")
    return _UNIT_TO_UM.get(key)


def acquisition_to_json(acquisition: Acquisition, **extra: Any) -> str:
    """Our JSON record as an ASCII string: ``{"qpi": acquisition.to_dict(), **extra}``.

    Raises
    ------
    MetadataError
        An ``extra`` value cannot be written as JSON.
    """
    record = {METADATA_KEY: acquisition.to_dict(), **extra}
    try:
        return json.dumps(record, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise MetadataError(
            f"Metadata cannot be stored as JSON ({err}); use numbers, strings, lists and dicts."
        ) from None


def record_from_json(
    record: str | bytes | Mapping[str, Any], *, source: str = "metadata"
) -> tuple[Acquisition, dict[str, Any]]:
    """Parse our JSON record (text or an already decoded mapping).

    ``source`` (a file name) is put in error messages. A mapping without a ``"qpi"`` key whose
    top-level keys include acquisition fields is read as a flat record (handy for hand-written
    sidecars).

    Returns
    -------
    The acquisition and the record's other top-level keys.

    Raises
    ------
    MetadataError
        Invalid JSON, a record that is not an object, or a field of the wrong type or range.
    """
    if isinstance(record, (str, bytes)):
        try:
            record = json.loads(record)
        except ValueError as err:
            raise MetadataError(
                f"{source}: the metadata is not valid JSON ({err}). Fix or remove it."
            ) from None
    if not isinstance(record, Mapping):
        raise MetadataError(
            f"{source}: the metadata must be a JSON object like "
            f'{{"qpi": {{"wavelength_nm": 633}}}}, got {type(record).__name__}.'
        )
    extra = {k: v for k, v in record.items() if k != METADATA_KEY}
    if METADATA_KEY in record:
        fields = record[METADATA_KEY]
        if fields is not None and not isinstance(fields, Mapping):
            raise MetadataError(
                f"{source}: key '{METADATA_KEY}' must be an object of acquisition fields, "
                f"got {fields!r}."
            )
    else:
        fields = {k: v for k, v in record.items() if k in _ACQUISITION_FIELDS}
        extra = {k: v for k, v in record.items() if k not in _ACQUISITION_FIELDS}
    try:
        acquisition = Acquisition.from_dict(dict(fields) if fields else None)
    except MetadataError as err:
        raise MetadataError(f"{source}: {err}") from None
    except TypeError as err:
        raise MetadataError(f"{source}: invalid acquisition metadata ({err}).") from None
    return acquisition, extra


def acquisition_from_json(
    record: str | bytes | Mapping[str, Any], *, source: str = "metadata"
) -> Acquisition:
    """The acquisition in our JSON record; see :func:`record_from_json`."""
    return record_from_json(record, source=source)[0]


def sidecar_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Candidate sidecars of ``path`` in lookup order: ``<name>.json``, then ``<stem>.json``."""
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith((".ome.tif", ".ome.tiff")):
        stem = path.name[: lower.rindex(".ome.")]
    else:
        stem = path.stem
    candidates = [path.with_name(path.name + ".json")]
    if stem and stem != path.name:
        candidates.append(path.with_name(stem + ".json"))
    return [c for c in candidates if c != path]


def read_sidecar(path: str | os.PathLike[str]) -> tuple[Acquisition, dict[str, Any], Path] | None:
    """The first existing sidecar of the image ``path``, parsed, or ``None`` if there is none.

    Returns
    -------
    (acquisition, extra, sidecar_path)

    Raises
    ------
    MetadataError
        The sidecar exists but cannot be read or holds invalid metadata.
    """
    for candidate in sidecar_paths(path):
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise MetadataError(f"Cannot read the sidecar {candidate}: {err}") from None
            acquisition, extra = record_from_json(text, source=str(candidate))
            return acquisition, extra, candidate
    return None


def write_sidecar(
    path: str | os.PathLike[str], acquisition: Acquisition, *, overwrite: bool = False, **extra: Any
) -> Path:
    """Write ``<name>.json`` next to the image ``path`` and return its path."""
    from ._atomic import atomic_write

    target = Path(str(path) + ".json")
    text = json.dumps(json.loads(acquisition_to_json(acquisition, **extra)), indent=2)
    with atomic_write(target, overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return target


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_pixel_size_um(pixels: ET.Element, source: str) -> tuple[float | None, float | None]:
    sizes: list[float | None] = []
    for axis in ("X", "Y"):
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            sizes.append(None)
            continue
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        factor = unit_to_um(unit)
        try:
            size = float(value)
        except ValueError:
            raise MetadataError(
                f"{source}: OME PhysicalSize{axis}={value!r} is not a number."
            ) from None
        if factor is None:
            raise MetadataError(
                f"{source}: unknown unit {unit!r} of OME PhysicalSize{axis}; expected a length "
                "such as 'nm', 'µm' or 'mm'."
            )
        sizes.append(size * factor if size > 0 and math.isfinite(size) else None)
    return sizes[0], sizes[1]


def parse_ome_xml(
    xml: str, *, source: str = "OME-XML", image: int = 0
) -> tuple[Acquisition, dict[str, Any], list[str]]:
    """Acquisition fields from OME-XML: physical pixel size, then our embedded JSON record.

    Returns
    -------
    (acquisition, extra, sources): ``sources`` names where fields were found.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise MetadataError(f"{source}: the OME-XML metadata is malformed ({err}).") from None
    images = [el for el in root if _local(el.tag) == "Image"]
    if not images:
        return Acquisition(), {}, []
    element = images[min(image, len(images) - 1)]
    acquisition = Acquisition()
    extra: dict[str, Any] = {}
    sources: list[str] = []
    pixels = next((el for el in element if _local(el.tag) == "Pixels"), None)
    if pixels is not None:
        size_x, size_y = _ome_pixel_size_um(pixels, source)
        if size_x or size_y:
            acquisition = Acquisition(pixel_size_um=size_x or size_y)
            sources.append("ome:PhysicalSize")
            if size_x and size_y and not math.isclose(size_x, size_y, rel_tol=1e-3):
                extra["pixel_size_yx_um"] = [size_y, size_x]
    refs = {el.get("ID") for el in element if _local(el.tag) == "AnnotationRef"}
    record: str | None = None
    for annotation in root.iter():
        if _local(annotation.tag) != "MapAnnotation":
            continue
        if refs and annotation.get("ID") not in refs:
            continue
        for entry in annotation.iter():
            if _local(entry.tag) == "M" and entry.get("K") == OME_ANNOTATION_KEY:
                record = entry.text
                sources.append("ome:MapAnnotation")
                break
        if record is not None:
            break
    if record is None:
        description = next((el for el in element if _local(el.tag) == "Description"), None)
        text = (description.text or "").strip() if description is not None else ""
        if text.startswith("{") and f'"{METADATA_KEY}"' in text:
            record = text
            sources.append("ome:Description")
    if record is not None:
        embedded, record_extra = record_from_json(record, source=source)
        acquisition = acquisition.merged(embedded)
        extra.update(record_extra)
    return acquisition, extra, sources


def _resolution_pixel_size_um(tif: Any) -> tuple[float | None, float | None, str | None]:
    """Pixel size (x, y) in um from the first page's resolution tags (and ImageJ's unit)."""
    import tifffile

    page = tif.pages.first
    try:
        xres, yres = page.resolution
        unit_tag = page.resolutionunit
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None, None, None
    per_unit: float | None = None
    source = "tiff:resolution"
    if unit_tag == tifffile.RESUNIT.CENTIMETER:
        per_unit = 1e4
    elif unit_tag == tifffile.RESUNIT.MILLIMETER:
        per_unit = 1e3
    elif unit_tag == tifffile.RESUNIT.MICROMETER:
        per_unit = 1.0
    elif unit_tag == tifffile.RESUNIT.INCH:
        if min(xres, yres) >= _MIN_PHYSICAL_DPI:
            per_unit = 25400.0
    elif tif.is_imagej:
        per_unit = unit_to_um((tif.imagej_metadata or {}).get("unit"))
        source = "imagej:unit"
    if per_unit is None or not (xres > 0 and yres > 0):
        return None, None, None
    return per_unit / xres, per_unit / yres, source


def _description_record(tif: Any) -> tuple[str | Mapping[str, Any] | None, str | None]:
    if tif.is_shaped:
        shaped = tif.shaped_metadata
        if shaped and METADATA_KEY in shaped[0]:
            return shaped[0], "tiff:shaped-metadata"
    description = (tif.pages.first.description or "").strip()
    if description.startswith("{") and f'"{METADATA_KEY}"' in description:
        return description, "tiff:ImageDescription"
    return None, None


def read_tiff_metadata(tif: Any, *, source: str) -> tuple[Acquisition, dict[str, Any]]:
    """Acquisition and extra metadata embedded in an open :class:`tifffile.TiffFile`.

    ``extra["metadata_sources"]`` lists where fields came from, lowest priority first. ImageJ's
    ``spacing`` (the Z step) is reported as ``extra["z_spacing_um"]``, not as the pixel size.
    """
    acquisition = Acquisition()
    extra: dict[str, Any] = {}
    sources: list[str] = []

    size_x, size_y, res_source = _resolution_pixel_size_um(tif)
    if size_x and size_y and res_source:
        acquisition = Acquisition(pixel_size_um=size_x)
        sources.append(res_source)
        if not math.isclose(size_x, size_y, rel_tol=1e-3):
            extra["pixel_size_yx_um"] = [size_y, size_x]
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        factor = unit_to_um(ij.get("unit"))
        spacing = ij.get("spacing")
        if factor and isinstance(spacing, (int, float)) and spacing > 0:
            extra["z_spacing_um"] = float(spacing) * factor

    if tif.is_ome and tif.ome_metadata:
        ome_acq, ome_extra, ome_sources = parse_ome_xml(tif.ome_metadata, source=source, image=0)
        acquisition = acquisition.merged(ome_acq)
        extra.update(ome_extra)
        sources.extend(ome_sources)
    else:
        record, record_source = _description_record(tif)
        if record is not None and record_source is not None:
            embedded, record_extra = record_from_json(record, source=source)
            acquisition = acquisition.merged(embedded)
            if record_source == "tiff:shaped-metadata":
                record_extra = {k: v for k, v in record_extra.items() if k not in _SHAPED_KEYS}
            extra.update(record_extra)
            sources.append(record_source)
    extra["metadata_sources"] = sources
    return acquisition, extra


def apply_sidecar(
    path: str | os.PathLike[str], acquisition: Acquisition, extra: dict[str, Any]
) -> Acquisition:
    """Merge the sidecar of ``path`` (if any) over ``acquisition``; update ``extra`` in place."""
    found = read_sidecar(path)
    if found is None:
        return acquisition
    sidecar_acq, sidecar_extra, sidecar_path = found
    extra.update(sidecar_extra)
    extra.setdefault("metadata_sources", []).append(f"sidecar:{sidecar_path.name}")
    return acquisition.merged(sidecar_acq)
