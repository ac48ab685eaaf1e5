"""The per-cell table that :func:`~napari_qpi.morphology.measure_cells` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MorphologyTable"]


@dataclass
class MorphologyTable:
    """One row per cell: ``columns`` maps a column name (units in the name) to a 1-D array.

    Attributes
    ----------
    columns
        Column name -> 1-D numpy array, all of the same length, in display order.
    units
        Column name -> unit (``"um^2"``, ``"pg"``, ``"rad"``, ``""`` for counts and ratios).
    metadata
        How the table was made: ``alpha_um3_per_pg``, ``wavelength_nm``, ``pixel_size_um``,
        ``pixel_size_missing`` (lengths are in pixels: the GUI should warn), ``dry_mass_available``,
        ``background_phase_rad``, ``method`` (segmentation settings or ``"user labels"``),
        ``notes`` (sentences for people) and ``versions``.
    """

    columns: dict[str, np.ndarray]
    units: dict[str, str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return list(self.columns)

    def to_dataframe(self) -> Any:
        """The table as a :class:`pandas.DataFrame` (pandas is optional), metadata in ``.attrs``."""
        import pandas as pd

        frame = pd.DataFrame(self.columns)
        frame.attrs.update(units=dict(self.units), metadata=dict(self.metadata))
        return frame
