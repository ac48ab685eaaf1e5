"""What a hologram network was trained on, and whether a measurement lies inside it.

A network trained on synthetic holograms has only seen some fringe periods (pixels per fringe),
some pixel sizes in the sample plane and some phases; outside them its output is a guess. The
model card says what it saw, in ``extra["training_range"]``::

    {"fringe_period_px": [3.0, 6.0], "fringe_angle_deg": [0.0, 360.0],
     "pixel_size_um": [0.2, 0.45], "peak_phase_rad": [0.5, 7.0], "field_px": 128,
     "from": "..."}

(``fringe_angle_deg``: direction of the carrier from +x towards +y, either sideband;
``peak_phase_rad``: the peak phase of each training cell, compensated, i.e. above the medium).
A card without it is read from its recorded training data settings (``training["data"]``: the
``DataConfig`` of :mod:`napari_qpi.training.data`), and a fine-tuned model without either takes
its base model's.

Before a network runs on a hologram, :func:`check_hologram` finds the sideband as the classical
method does: no fringes (noise, a photograph, a phase image) is refused with the classical
method's :class:`~napari_qpi.errors.SidebandError`; a fringe period (``1 / |f_c|`` px), a carrier
direction or a pixel size (from the metadata) outside the card's range gives a one-line
:class:`~napari_qpi.errors.OutOfRangeWarning`.
After it ran, :func:`check_phase` warns when the phase spans more than the card's peak phase.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import OutOfRangeWarning, SidebandError
from ..models.card import ModelCard
from .fourier import Sideband, find_sideband

Range = tuple[float, float]

#: Share of a phase image's pixels taken as its peak (the 99.9th percentile above the median).
PEAK_PERCENTILE = 99.9


@dataclass(frozen=True)
class TrainingRange:
    """The conditions a network was trained on; ``None`` where the card does not say."""

    fringe_period_px: Range | None = None
    fringe_angle_deg: Range | None = None
    pixel_size_um: Range | None = None
    peak_phase_rad: Range | None = None
    field_px: int | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The card's ``extra["training_range"]`` form."""
        out: dict[str, Any] = {
            "fringe_period_px": _listed(self.fringe_period_px),
            "fringe_angle_deg": _listed(self.fringe_angle_deg),
            "pixel_size_um": _listed(self.pixel_size_um),
            "peak_phase_rad": _listed(self.peak_phase_rad),
            "field_px": self.field_px,
            "from": self.source,
        }
        return {key: value for key, value in out.items() if value is not None}


def _listed(value: Range | None) -> list[float] | None:
    return None if value is None else [float(value[0]), float(value[1])]


def _range(value: Any) -> Range | None:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and low <= high else None


def _from_mapping(values: dict[str, Any], source: str) -> TrainingRange:
    size = values.get("field_px", values.get("size"))
    return TrainingRange(
        fringe_period_px=_range(values.get("fringe_period_px", values.get("carrier_period_px"))),
        fringe_angle_deg=_range(values.get("fringe_angle_deg", values.get("carrier_angle_deg"))),
        pixel_size_um=_range(values.get("pixel_size_um")),
        peak_phase_rad=_range(values.get("peak_phase_rad")),
        field_px=int(size) if isinstance(size, (int, float)) and size > 0 else None,
        source=source,
    )


def range_of_data(data: Any, source: str) -> TrainingRange | None:
    """The range of a training run's data settings (``DataConfig.to_dict()``), or ``None``.

    With close-up batches (``close_up`` > 0) the fringe periods and pixel sizes span both the
    plain and the close-up fields' ranges.
    """
    if not (isinstance(data, dict) and "carrier_period_px" in data):
        return None
    found = _from_mapping(data, source)
    if float(data.get("close_up") or 0.0) <= 0.0:
        return found
    return replace(
        found,
        fringe_period_px=_union(found.fringe_period_px, _range(data.get("close_up_period_px"))),
        pixel_size_um=_union(found.pixel_size_um, _range(data.get("close_up_pixel_size_um"))),
    )


def _union(a: Range | None, b: Range | None) -> Range | None:
    """The smallest range holding both (``None`` if either is unknown)."""
    if a is None or b is None:
        return None
    return (min(a[0], b[0]), max(a[1], b[1]))


def training_range(card: ModelCard) -> TrainingRange | None:
    """The card's training range (see the module docstring), or ``None`` if it cannot say."""
    explicit = card.extra.get("training_range")
    if isinstance(explicit, dict):
        return _from_mapping(explicit, "the model card")
    data = card.training.get("data") if isinstance(card.training, dict) else None
    if (found := range_of_data(data, "the card's training data settings")) is not None:
        return found
    if card.base_model:
        from ..models import get_card

        try:
            base = get_card(card.base_model)
        except Exception:  # an unknown or damaged base says nothing about the range
            return None
        if base.name != card.name:
            found = training_range(base)
            if found is not None:
                return replace(found, source=f"its base model {base.name!r}")
    return None


def _outside(value: float, bounds: Range | None) -> bool:
    return bounds is not None and not bounds[0] <= value <= bounds[1]


def _angle_outside(angle: float, bounds: Range | None) -> bool:
    """Whether neither sideband's direction (``angle`` or ``angle + 180``) lies in ``bounds``."""
    if bounds is None or bounds[1] - bounds[0] >= 360:
        return False
    return not any(bounds[0] <= angle + turn <= bounds[1] for turn in (-360, -180, 0, 180, 360))


def check_hologram(
    card: ModelCard, hologram: np.ndarray, acquisition: Acquisition | None = None
) -> tuple[Sideband, dict[str, Any]]:
    """Find the sideband of ``hologram`` (2-D) and warn where it lies outside the card's range.

    Returns the sideband and a record for ``info["training_range"]``: the measured fringe period
    (px) and pixel size (um), the card's range and the warnings given.

    Raises
    ------
    SidebandError
        No off-axis fringes (noise, a photograph, a phase image): refused as by the classical
        method.
    """
    acq = acquisition or Acquisition()
    try:
        sideband = find_sideband(hologram, carrier=acq.carrier_cycles_per_px)
    except SidebandError as error:
        raise SidebandError(f"Model {card.name!r} needs an off-axis hologram. {error}") from None
    period = 1.0 / sideband.carrier_distance
    angle = math.degrees(math.atan2(*sideband.center_cycles_per_px))
    trained = training_range(card)
    messages: list[str] = []
    if trained is None:
        messages.append(
            f"Model {card.name!r} does not say which fringe periods and pixel sizes it was "
            "trained on; check its result against the classical method."
        )
    else:
        if _outside(period, trained.fringe_period_px):
            low, high = trained.fringe_period_px or (0, 0)
            messages.append(
                f"This hologram's fringes are {period:.1f} px apart, but model {card.name!r} "
                f"was trained on {low:g}-{high:g} px: its phase may be wrong; compare with the "
                "classical method."
            )
        if _angle_outside(angle, trained.fringe_angle_deg):
            low, high = trained.fringe_angle_deg or (0, 0)
            messages.append(
                f"This hologram's carrier points at {angle:.0f} deg, but model {card.name!r} was "
                f"trained on {low:g} to {high:g} deg: its phase may be wrong; compare with the "
                "classical method."
            )
        pixel = acq.pixel_size_um
        if pixel is not None and _outside(pixel, trained.pixel_size_um):
            low, high = trained.pixel_size_um or (0, 0)
            messages.append(
                f"This hologram's pixels are {pixel:.3g} um in the sample, but model "
                f"{card.name!r} was trained on {low:g}-{high:g} um: cells look larger or "
                "smaller than it knows; compare with the classical method."
            )
    for message in messages:
        warnings.warn(message, OutOfRangeWarning, stacklevel=3)
    record: dict[str, Any] = {
        "fringe_period_px": round(period, 3),
        "fringe_angle_deg": round(angle, 1),
        "pixel_size_um": acq.pixel_size_um,
        "trained": None if trained is None else trained.to_dict(),
        "warnings": messages,
    }
    return sideband, record


def peak_phase(phase: np.ndarray) -> float:
    """Robust peak of a phase image above its medium: 99.9th percentile minus median, rad."""
    values = np.asarray(phase, dtype=np.float32)[:: max(1, phase.shape[0] // 512)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    return float(np.percentile(values, PEAK_PERCENTILE) - np.median(values))


def check_phase(card: ModelCard, phase: np.ndarray, record: dict[str, Any]) -> None:
    """Warn when a network's phase peaks beyond the card's peak phase; note it in ``record``."""
    trained = training_range(card)
    peak = peak_phase(phase)
    record["peak_phase_rad"] = round(peak, 3)
    if trained is None or trained.peak_phase_rad is None:
        return
    high = trained.peak_phase_rad[1]
    if peak > high:
        message = (
            f"Model {card.name!r} gives phases up to {peak:.1f} rad above the medium, more than "
            f"the {high:g} rad it was trained on: thick or steep cells may be wrong; compare "
            "with the classical method."
        )
        record.setdefault("warnings", []).append(message)
        warnings.warn(message, OutOfRangeWarning, stacklevel=3)


__all__ = [
    "PEAK_PERCENTILE",
    "TrainingRange",
    "check_hologram",
    "check_phase",
    "peak_phase",
    "range_of_data",
    "training_range",
]
