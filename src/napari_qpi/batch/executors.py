"""Where a batch job's tasks run: in this process, on a local Dask cluster or on a running one."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from .jobs import CONNECT_TIMEOUT_S, ClusterOptions, SchedulerError

#: With neither ``workers`` nor ``scheduler`` given, jobs with fewer pixels to process than this
#: run in this process: starting worker processes would take longer than the work.
LOCAL_CLUSTER_MIN_PIXELS = 16 * 512 * 512


class Executor(Protocol):
    """Runs tasks and hands back their results as they finish."""

    description: str

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, priority: int = 0) -> None: ...

    def completed(self) -> Iterator[tuple[Any, Any]]: ...

    def cancel(self) -> None: ...


class _SerialExecutor:
    """Runs tasks one after the other in this process, in the order submitted."""

    description = "in this process"

    def __init__(self) -> None:
        self._queue: deque[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = deque()

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, priority: int = 0) -> None:
        if priority > 0:
            self._queue.appendleft((tag, fn, args))
        else:
            self._queue.append((tag, fn, args))

    def completed(self) -> Iterator[tuple[Any, Any]]:
        while self._queue:
            tag, fn, args = self._queue.popleft()
            yield tag, fn(*args)

    def cancel(self) -> None:
        self._queue.clear()


class _DaskExecutor:
    """Runs tasks on a ``distributed`` cluster; results come back in the order they finish."""

    def __init__(self, client: Any, description: str) -> None:
        from distributed import as_completed

        self.client = client
        self.description = description
        self._pending = as_completed(loop=client.loop)
        self._futures: dict[str, tuple[Any, Any]] = {}

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, priority: int = 0) -> None:
        future = self.client.submit(fn, *args, pure=False, priority=priority)
        self._futures[future.key] = (tag, future)
        self._pending.add(future)

    def completed(self) -> Iterator[tuple[Any, Any]]:
        for future in self._pending:
            tag, _ = self._futures.pop(future.key)
            try:
                result = future.result()
            except Exception as error:
                result = error
            future.release()
            yield tag, result

    def cancel(self) -> None:
        futures = [future for _, future in self._futures.values()]
        self._pending.clear()
        self._futures.clear()
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)


def available_cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def connect(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (or its scheduler file).

    Waits up to ``timeout_s`` for the scheduler file to appear, for the scheduler and for its first
    worker, and checks that the workers have napari-qpi installed.

    Raises
    ------
    SchedulerError
        Unreachable or malformed address, missing scheduler file, no workers, napari-qpi
        missing on the workers.
    """
    from distributed import Client

    file = Path(address).expanduser()
    if file.suffix == ".json":
        deadline = time.monotonic() + timeout_s
        while not file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not file.is_file():
            raise SchedulerError(
                f"No scheduler file {file} (waited {timeout_s:g} s): start the scheduler with "
                f"`dask scheduler --scheduler-file {file}` first, or give its address "
                "(tcp://host:8786)."
            )
        kwargs: dict[str, Any] = {"scheduler_file": str(file)}
    else:
        kwargs = {"address": address}
    try:
        client = Client(**kwargs, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise SchedulerError(
            f"Could not reach the Dask scheduler at {address} within {timeout_s:g} s ({error}). "
            "Check the address (the scheduler prints it when it starts: tcp://host:8786), that "
            "the scheduler is running, and that this machine can reach it (firewall, VPN, SSH "
            "tunnel); or leave out --scheduler to run on this machine."
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout_s)
        _check_workers(client, address)
    except TimeoutError:
        client.close()
        raise SchedulerError(
            f"The Dask scheduler at {address} has no workers (none joined within "
            f"{timeout_s:g} s). Start some (`dask worker {address}`, or scale your "
            "dask-jobqueue cluster) and run again."
        ) from None
    except BaseException:
        client.close()
        raise
    return client


def _check_workers(client: Any, address: str) -> None:
    from .. import __version__

    def installed() -> str | None:
        from importlib import metadata

        try:
            return metadata.version("napari-qpi")
        except metadata.PackageNotFoundError:
            return None

    versions = client.run(installed)
    missing = sorted(worker for worker, version in versions.items() if version is None)
    if missing:
        raise SchedulerError(
            f"napari-qpi is not installed on {len(missing)} of the {len(versions)} worker(s) of "
            f"the scheduler at {address} (e.g. {missing[0]}). Install napari-qpi {__version__} in "
            "the workers' Python environment and restart them."
        )
    other = sorted({version for version in versions.values() if version != __version__})
    if other:
        warnings.warn(
            f"The cluster's workers run napari-qpi {', '.join(other)}, this machine "
            f"{__version__}: results may differ from a local run.",
            stacklevel=3,
        )


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Processes started in this block ignore SIGINT: Ctrl-C reaches only this process.

    This process then cancels the job and stops its local workers itself, instead of every
    worker dying mid-task with its own traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_local_cluster(workers: int, threads_per_worker: int = 1) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` processes set up for this work.

    Unlike Dask's default, the workers keep glibc's adaptive ``malloc`` trimming: Dask sets
    ``MALLOC_TRIM_THRESHOLD_``, which makes every large temporary array a fresh ``mmap`` and
    nearly doubled the CPU time of a 512^2 classical retrieval here. The workers ignore Ctrl-C
    (this process stops them), and there is no dashboard. Close it when done.
    """
    import dask
    from distributed import LocalCluster

    with (
        _workers_ignore_ctrl_c(),
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
    ):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=max(1, threads_per_worker),
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


@contextlib.contextmanager
def open_executor(
    options: ClusterOptions | None = None, *, tasks: int = 1, pixels: int = 0, client: Any = None
) -> Iterator[Executor]:
    """Where a job's tasks run, for the duration of the ``with`` block.

    ``client``, if given, is used as is (and not closed). Otherwise ``options.scheduler``
    connects to a running scheduler; else a local cluster of ``options.workers`` processes with
    ``threads_per_worker`` threads each is started (and stopped afterwards), never more workers
    than ``tasks``. ``workers=0``, or ``workers=None`` with fewer than
    :data:`LOCAL_CLUSTER_MIN_PIXELS` ``pixels`` to process or a single core, runs in this process.
    """
    options = options or ClusterOptions()
    if client is not None:
        address = getattr(client.scheduler, "address", "?")
        yield _DaskExecutor(client, f"on the cluster at {address}")
        return
    if options.scheduler:
        if options.workers is not None:
            raise InputError(
                "--workers sets the size of a local cluster; with --scheduler the workers of "
                "that cluster are used. Give one or the other."
            )
        remote = connect(options.scheduler, timeout_s=options.timeout_s)
        try:
            yield _DaskExecutor(remote, f"on the cluster at {options.scheduler}")
        finally:
            remote.close()
        return
    workers = options.workers
    if workers is None:
        cores = available_cores()
        workers = 0 if cores < 2 or pixels < LOCAL_CLUSTER_MIN_PIXELS else cores
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}.")
    workers = min(workers, max(tasks, 1))
    if workers == 0:
        yield _SerialExecutor()
        return
    from distributed import Client

    cluster = start_local_cluster(workers, options.threads_per_worker)
    local = Client(cluster, set_as_default=False)
    try:
        yield _DaskExecutor(local, f"on {workers} local worker(s)")
    finally:
        with contextlib.suppress(Exception):
            local.close()
        with contextlib.suppress(Exception):
            cluster.close()
