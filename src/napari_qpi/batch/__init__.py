"""Batch reconstruction and measurement, one task per plane, on Dask or in this process.

The engine behind ``napari-qpi reconstruct`` and ``napari-qpi measure``:

* Work is split into one task per plane (a single hologram is one plane). Tasks run on a
  ``distributed`` cluster: a :class:`~distributed.LocalCluster` of worker processes sized to the
  machine by default, or an existing scheduler by address (``ClusterOptions.scheduler``). Small
  jobs, or ``workers=0``, run in this process with no Dask at all.
* Each worker retrieves phase with a retriever built once per process
  (:func:`napari_qpi.lazy.plane_retriever`), so a network is loaded once per worker, and limits
  torch to one thread per task.
* Workers write their outputs themselves, atomically (:func:`napari_qpi.io.atomic_write`), as each
  plane finishes: ``<stem>_phase.ome.tif`` for a single hologram; for a stack, one file per plane in
  ``<stem>.planes/`` and, once every plane is done, the stack ``<stem>_phase.ome.tif`` (and labels
  and table), after which the plane folder is removed. A crash, a kill or Ctrl-C loses at most the
  planes in flight; the next run skips every plane and file whose outputs exist.
* Files that cannot be read and planes that fail are reported with their reasons; the others go
  on. A full disk stops the job with a clear message and keeps everything finished.
* ``napari-qpi-<command>.json`` in the output folder records the job: its recipe, and per input
  file its status, planes done, outputs and the reason of a failure.

The package, one job a module: :mod:`.jobs` (output names, options, errors, the per-file job and
its records), :mod:`.reading` (images opened lazily, once per process), :mod:`.worker` (one plane,
one stack assembled), :mod:`.executors` (in this process or on Dask), :mod:`.plan` (jobs, resume,
plane folders, the manifest, the sign decided once), :mod:`.report` (outcomes accounted, the
combined table) and :mod:`.engine` (running a job; :func:`reconstruct_batch`,
:func:`measure_batch`).

Nothing here imports napari or Qt.
"""

from .engine import measure_batch, reconstruct_batch
from .executors import (
    LOCAL_CLUSTER_MIN_PIXELS,
    Executor,
    available_cores,
    connect,
    open_executor,
    start_local_cluster,
)
from .jobs import (
    COMBINED_TABLE,
    CONNECT_TIMEOUT_S,
    LABELS_SUFFIX,
    PHASE_SUFFIX,
    PLANES_RECORD,
    PLANES_SUFFIX,
    TABLE_SUFFIX,
    BatchReport,
    ClusterOptions,
    DiskFullError,
    MeasureOptions,
    PlaneOutcome,
    SchedulerError,
    collect_inputs,
    output_stem,
)
from .plan import MANIFEST_INTERVAL_S
from .report import gather_tables
from .worker import RECORDED_INFO, assemble_file, retrieval_record, run_plane
from .worker import _limit_worker_threads as _limit_worker_threads

__all__ = [
    "COMBINED_TABLE",
    "CONNECT_TIMEOUT_S",
    "LABELS_SUFFIX",
    "LOCAL_CLUSTER_MIN_PIXELS",
    "MANIFEST_INTERVAL_S",
    "PHASE_SUFFIX",
    "PLANES_RECORD",
    "PLANES_SUFFIX",
    "RECORDED_INFO",
    "TABLE_SUFFIX",
    "BatchReport",
    "ClusterOptions",
    "DiskFullError",
    "Executor",
    "MeasureOptions",
    "PlaneOutcome",
    "SchedulerError",
    "assemble_file",
    "available_cores",
    "collect_inputs",
    "connect",
    "gather_tables",
    "measure_batch",
    "open_executor",
    "output_stem",
    "reconstruct_batch",
    "retrieval_record",
    "run_plane",
    "start_local_cluster",
]
