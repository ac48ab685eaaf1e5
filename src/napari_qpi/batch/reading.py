"""Lazy reading for the batch tasks: images opened once per process, planes read on demand."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..io import read_image
from ..io.images import ImageData

_OPEN_LOCK = threading.Lock()
_OPEN: OrderedDict[tuple[str, int, int], ImageData] = OrderedDict()
_OPEN_SIZE = 4


def _open(path: Path) -> ImageData:
    """An image opened lazily (every TIFF/NPY plane read on demand), kept for the next task."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _OPEN_LOCK:
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key]
    image = read_image(path, lazy_threshold_bytes=0)
    with _OPEN_LOCK:
        _OPEN[key] = image
        while len(_OPEN) > _OPEN_SIZE:
            _OPEN.popitem(last=False)
    return image


def _read_plane(path: Path, index: tuple[int, ...]) -> tuple[np.ndarray, ImageData]:
    import dask
    from dask.local import get_sync

    image = _open(path)
    # the synchronous scheduler as a function: its name makes dask import distributed
    with dask.config.set(scheduler=get_sync):
        return np.asarray(image.data[index]), image
