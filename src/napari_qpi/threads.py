"""How many threads the FFTs of this process use: one setting for the whole package.

Every ``scipy.fft`` call of napari-qpi passes ``workers=fft_workers()``. The default is the number
of CPUs this process may run on (its affinity, which a container or ``taskset`` narrows; not the
machine's count), overridden by the environment variable ``NAPARI_QPI_FFT_WORKERS`` (or
``OMP_NUM_THREADS``) or, process-wide, by :func:`set_fft_workers`. A batch worker process sets it
to its own thread count (1), so a cluster with one process per core runs one FFT thread per core
instead of cores^2.
"""

from __future__ import annotations

import os

#: Environment variable that sets the number of FFT threads.
WORKERS_ENV = "NAPARI_QPI_FFT_WORKERS"

_SETTING: dict[str, int | None] = {"workers": None}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the system tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def fft_workers() -> int:
    """Threads for one FFT: :func:`set_fft_workers`'s value, else ``NAPARI_QPI_FFT_WORKERS``,
    else ``OMP_NUM_THREADS``, else :func:`available_cpus`."""
    if _SETTING["workers"] is not None:
        return _SETTING["workers"]
    for name in (WORKERS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return available_cpus()


def set_fft_workers(workers: int | None) -> None:
    """Set the FFT threads of this process (``None``: back to the default of :func:`fft_workers`).

    Raises
    ------
    ValueError
        ``workers`` is not a positive integer.
    """
    if workers is not None and (
        isinstance(workers, bool) or int(workers) != workers or workers < 1
    ):
        raise ValueError(f"FFT workers must be a positive integer or None, got {workers!r}")
    _SETTING["workers"] = None if workers is None else int(workers)


__all__ = ["WORKERS_ENV", "available_cpus", "fft_workers", "set_fft_workers"]
