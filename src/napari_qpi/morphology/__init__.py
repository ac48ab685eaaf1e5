"""Cell segmentation and per-cell measurements on quantitative phase images.

The package has one module per job; everything public is importable from here:

* :mod:`.segment`: :func:`segment_cells` and its :class:`SegmentationSettings`;
* :mod:`.measure`: :func:`measure_cells`, :func:`measure_stack` (dry mass, optical volume, shape);
* :mod:`.table`: :class:`MorphologyTable`, the per-cell table with units and provenance.

Physics
-------
Physics
-------
A cell of refractive index ``n_cell`` in a medium ``n_medium`` delays the light that crosses it by
the optical path difference ``OPD = integral (n_cell - n_medium) dz``; the phase image is
``phi = 2 pi OPD / lambda`` (radians). Integrated over a cell's area this gives

* the optical volume ``V_opt = lambda / (2 pi) * sum(phi) * A_px`` (um^3), and
* the dry mass ``m = lambda / (2 pi alpha) * sum(phi) * A_px`` (pg),

with ``lambda`` the vacuum wavelength in um, ``A_px`` the pixel area in um^2 and ``alpha`` the
refractive increment of the cell's dry matter, 0.18 um^3/pg (0.18 mL/g) by default. Both formulas
assume a background-corrected phase (background at 0 rad): a residual offset ``b`` biases the dry
mass by ``lambda b / (2 pi alpha)`` pg per um^2 of cell, so the measured background is recorded in
the table's metadata and a warning is given when it is far from zero.
"""

from __future__ import annotations

from ._common import DEFAULT_ALPHA_UM3_PER_PG, MorphologyWarning
from .measure import combine_frames, iter_measure_frames, measure_cells, measure_stack
from .segment import SegmentationSettings, segment_cells
from .table import MorphologyTable

__all__ = [
    "DEFAULT_ALPHA_UM3_PER_PG",
    "MorphologyTable",
    "MorphologyWarning",
    "SegmentationSettings",
    "combine_frames",
    "iter_measure_frames",
    "measure_cells",
    "measure_stack",
    "segment_cells",
]
