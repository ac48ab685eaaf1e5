"""HDF5 files of the QPI Python tools: qpformat raw off-axis holograms and qpimage phase images.

Two layouts are read directly with h5py (no qpformat/qpimage needed):

* **qpformat raw off-axis holography** (root attributes ``file_format = "qpformat"`` and
  ``imaging_modality = "off-axis holography"``): one 2-D dataset per plane named ``"0"``, ``"1"``,
  ..., each with the acquisition as attributes in SI units (``"wavelength"`` in m,
  ``"pixel size"`` in m, ``"medium index"``, ``"numerical aperture"``); an optional dataset
  ``"reference"`` is the background hologram.
* **qpimage** (root attribute ``"qpimage version"``): a retrieved phase in ``phase/raw`` with its
  background corrections in ``phase/bg_data`` (subtracted here) and the same acquisition attributes
  on the root; a series stores one such group per plane (``qpi_0``, ``qpi_1``, ... at the root or
  under ``qpseries``).

Any other HDF5 file is refused with a message that says what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import FileFormatError

#: qpimage / qpformat attribute name -> (Acquisition field, factor from SI to our unit).
_SI_ATTRIBUTES = {
    "wavelength": ("wavelength_nm", 1e9),
    "pixel size": ("pixel_size_um", 1e6),
    "medium index": ("medium_index", 1.0),
    "numerical aperture": ("numerical_aperture", 1.0),
}


def _acquisition(attrs: Any, modality: str, path: Path) -> Acquisition:
    values: dict[str, Any] = {"modality": modality}
    for name, (field, factor) in _SI_ATTRIBUTES.items():
        if name in attrs:
            value = float(np.asarray(attrs[name]))
            if np.isfinite(value) and value > 0:
                values[field] = value * factor
    try:
        return Acquisition(**values)
    except Exception as err:
        raise FileFormatError(f"{path}: unusable acquisition attributes ({err}).") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _plane_names(group: Any) -> list[str]:
    """Names ``"0"``, ``"1"``, ... of the planes, in numerical order (gaps end the series)."""
    names = []
    while str(len(names)) in group:
        names.append(str(len(names)))
    return names


def _read_qpformat(h5: Any, path: Path) -> tuple[np.ndarray, str, Acquisition, dict[str, Any]]:
    names = _plane_names(h5)
    if not names:
        raise FileFormatError(
            f"{path} is a qpformat HDF5 file without a plane named '0': nothing to read."
        )
    planes = [np.asarray(h5[name][()]) for name in names]
    shapes = {p.shape for p in planes}
    if len(shapes) > 1 or planes[0].ndim != 2:
        raise FileFormatError(
            f"{path}: the planes of this qpformat file have shapes {sorted(shapes)}; napari-qpi "
            "reads series of 2-D planes of one shape."
        )
    acquisition = _acquisition(h5[names[0]].attrs, "hologram", path)
    extra: dict[str, Any] = {"format": "qpformat-hdf5", "metadata_sources": ["hdf5 attributes"]}
    times = [h5[name].attrs.get("time") for name in names]
    if all(t is not None for t in times) and len(times) > 1:
        extra["time_s"] = [float(t) for t in times]
    if "reference" in h5:
        extra["background_hologram"] = np.asarray(h5["reference"][()])
    data = planes[0] if len(planes) == 1 else np.stack(planes)
    return data, "YX" if len(planes) == 1 else "TYX", acquisition, extra


def _qpimage_phase(group: Any, path: Path) -> np.ndarray:
    if "phase" not in group or "raw" not in group["phase"]:
        raise FileFormatError(f"{path}: a qpimage group without 'phase/raw'.")
    phase = np.asarray(group["phase"]["raw"][()], dtype=np.float64)
    corrections = group["phase"].get("bg_data")
    if corrections is not None:
        for name in corrections:
            item = corrections[name]
            if hasattr(item, "shape") and item.shape == phase.shape:
                phase = phase - np.asarray(item[()], dtype=np.float64)
    return phase.astype(np.float32)


def _read_qpimage(h5: Any, path: Path) -> tuple[np.ndarray, str, Acquisition, dict[str, Any]]:
    root = h5["qpseries"] if "qpseries" in h5 else h5
    series = []
    while f"qpi_{len(series)}" in root:
        series.append(root[f"qpi_{len(series)}"])
    groups = series or [root]
    planes = [_qpimage_phase(group, path) for group in groups]
    if len({p.shape for p in planes}) > 1:
        raise FileFormatError(f"{path}: the qpimage series holds phase images of several shapes.")
    attrs = groups[0].attrs if series else h5.attrs
    acquisition = _acquisition(attrs, "phase", path)
    extra: dict[str, Any] = {
        "format": "qpimage-hdf5",
        "metadata_sources": ["hdf5 attributes"],
        "units": "rad",
        "method": {"name": "qpimage", "source": "phase/raw minus phase/bg_data"},
    }
    data = planes[0] if len(planes) == 1 else np.stack(planes)
    return data, "YX" if len(planes) == 1 else "TYX", acquisition, extra


def read_hdf5(path: Path) -> tuple[np.ndarray, str, Acquisition, dict[str, Any]]:
    """Data, axes, acquisition and extra of a qpformat or qpimage HDF5 file (module docstring).

    Raises
    ------
    FileFormatError
        Not an HDF5 file of either layout (the message lists what the file holds), or damaged.
    """
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except Exception as err:
        raise FileFormatError(
            f"{path} could not be opened as HDF5 ({type(err).__name__}: {err}); it is probably "
            "truncated or corrupt: copy or export it again."
        ) from None
    with h5:
        fmt = _text(h5.attrs.get("file_format", ""))
        modality = _text(h5.attrs.get("imaging_modality", ""))
        if fmt == "qpformat" and modality == "off-axis holography":
            return _read_qpformat(h5, path)
        if "qpimage version" in h5.attrs or "qpseries" in h5:
            return _read_qpimage(h5, path)
        found = ", ".join(sorted(h5.keys())[:8]) or "nothing"
        kind = f"a qpformat file of '{modality}'" if fmt == "qpformat" else "not a qpimage file"
        raise FileFormatError(
            f"{path.name} is an HDF5 file but {kind} (it holds: {found}). napari-qpi reads "
            "qpformat raw off-axis holograms and qpimage phase images; export other data as TIFF "
            "(one hologram per plane) or convert it with qpformat."
        )


__all__ = ["read_hdf5"]
