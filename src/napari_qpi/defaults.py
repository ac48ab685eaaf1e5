"""Defaults and file-name conventions shared by the engine and the ``napari-qpi`` command line.

Plain Python constants: this module imports nothing (no numpy, scipy or torch), so the command line
builds its parser and prints ``--help`` from these values without loading the retrieval,
morphology or batch modules that use them. Each constant is also importable from the module that
uses it, as before (e.g. :data:`napari_qpi.batch.PHASE_SUFFIX`,
:data:`napari_qpi.retrieval.fourier.DEFAULT_RADIUS_FRACTION`).
"""

from __future__ import annotations

# -- batch outputs (napari_qpi.batch) -------------------------------------------------------------
#: Phase image written per input (radians, OME-TIFF).
PHASE_SUFFIX = "_phase.ome.tif"
#: Cell labels written per input by ``--measure``.
LABELS_SUFFIX = "_cells.ome.tif"
#: Per-cell table written per input by ``--measure``.
TABLE_SUFFIX = "_cells.csv"
#: Seconds to wait for a scheduler (and for its first worker).
CONNECT_TIMEOUT_S = 10.0

# -- morphology (napari_qpi.morphology) -----------------------------------------------------------
#: Default refractive increment of cell dry mass, um^3/pg (= mL/g).
DEFAULT_ALPHA_UM3_PER_PG = 0.18

# -- off-axis retrieval (napari_qpi.retrieval.OffAxisSettings) ------------------------------------
#: Sideband filters: a hard disk, a disk with a raised-cosine edge, a Gaussian.
FILTERS: tuple[str, ...] = ("disk", "smooth_disk", "gaussian")
#: Default sideband filter.
DEFAULT_FILTER = "smooth_disk"
#: Default filter radius as a fraction of the carrier distance |f_c|. Measured on simulated cells
#: up to 12 rad (``benchmarks/offaxis_classical.py``): the steep rims of thick round cells need the
#: band; at 1/3 or 1/2 whole cells come out 2 pi low, 0.7 and 0.8 had none and the lowest error,
#: also with absorbing cells. 0.7 leaves room for a DC term that spreads (real illumination).
DEFAULT_RADIUS_FRACTION = 0.7
#: Default order of the 2-D polynomial fitted to the background phase (rad) and subtracted.
DEFAULT_BACKGROUND_ORDER = 2

# -- autofocus (napari_qpi.retrieval.autofocus) ---------------------------------------------------
#: Names of the focus metrics (:data:`napari_qpi.retrieval.focus_metrics.METRICS` has their
#: functions).
FOCUS_METRICS: tuple[str, ...] = ("tamura", "variance", "gradient")
#: Focus metric of ``--refocus auto`` unless another is asked for.
DEFAULT_FOCUS_METRIC = "tamura"

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_ALPHA_UM3_PER_PG",
    "DEFAULT_BACKGROUND_ORDER",
    "DEFAULT_FILTER",
    "DEFAULT_FOCUS_METRIC",
    "DEFAULT_RADIUS_FRACTION",
    "FILTERS",
    "FOCUS_METRICS",
    "LABELS_SUFFIX",
    "PHASE_SUFFIX",
    "TABLE_SUFFIX",
]
