"""The phase sign, decided once for a stack or a folder from one microscope.

A hologram cannot tell the sign of its phase: the two mirror sidebands carry ``+phi`` and ``-phi``.
Each plane can guess it from its cells (they rise above the medium), but a plane with no cell, or a
cell that fills the field, guesses badly, and a time-lapse whose sign flips between planes is
useless. So the evidence of a few planes (:func:`~napari_qpi.retrieval.offaxis.cells_sign_evidence`,
the first, middle and last of the first file) is added up once, and the result, the sideband that
carries ``+phi`` on this camera, is handed to every plane as ``OffAxisSettings.sign_carrier``.
A microscope profile that knows the carrier makes this step unnecessary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .acquisition import Acquisition
from .retrieval import OffAxisSettings, retrieve_offaxis

#: Planes of the first file that vote on the sign.
VOTING_PLANES = 3


def voting_indices(shape: tuple[int, ...], count: int = VOTING_PLANES) -> list[tuple[int, ...]]:
    """The first, middle and last plane indices of a stack of ``shape`` (``[()]`` for 2-D)."""
    lead = shape[:-2]
    if not lead:
        return [()]
    total = int(np.prod(lead))
    flat = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
    return [tuple(int(i) for i in np.unravel_index(f, lead)) for f in flat]


def decide_sign_carrier(
    planes: Sequence[tuple[np.ndarray, np.ndarray | None]],
    *,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> tuple[tuple[float, float] | None, dict[str, Any]]:
    """The ``+phi`` sideband voted by ``planes`` (hologram, background-or-None pairs).

    Each plane is retrieved at native resolution; its sign evidence is counted for the sideband
    of the first plane (with the opposite sign when a plane found the mirror sideband). Returns
    ``(carrier, record)``; ``carrier`` is ``None`` when no plane could be retrieved or the votes
    cancel out (nothing stands out), and then each plane decides for itself.
    """
    base = settings or OffAxisSettings()
    native = OffAxisSettings(
        filter=base.filter,
        radius_fraction=base.radius_fraction,
        numerical_aperture=base.numerical_aperture,
        background_order=base.background_order,
        resolution="native",
    )
    first: tuple[float, float] | None = None
    total = 0.0
    used = 0
    for hologram, background in planes:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = retrieve_offaxis(
                    hologram, reference=background, acquisition=acquisition, settings=native
                )
        except Exception:  # a bad plane votes not; it fails later with its own message
            continue
        found = result.sideband.center_cycles_per_px
        evidence = float(result.info["sign_evidence"])
        if first is None:
            first = found
        elif np.dot(found, first) < 0:
            evidence = -evidence
        total += evidence
        used += 1
    record: dict[str, Any] = {"planes_voting": used, "evidence": total}
    if first is None or total == 0:
        return None, record
    carrier = first if total > 0 else (-first[0], -first[1])
    record["carrier_cycles_per_px"] = [float(c) for c in carrier]
    return (float(carrier[0]), float(carrier[1])), record


def with_stack_sign(
    data: Any,
    *,
    method: str = "classical",
    reference: Any = None,
    acquisition: Acquisition | None = None,
    settings: OffAxisSettings | None = None,
) -> OffAxisSettings | None:
    """``settings`` with the sign voted once over a stack's first, middle and last planes.

    For a 2-D image, a network, or when the carrier or the sign is already known (settings,
    acquisition metadata, profile), ``settings`` come back unchanged: each plane then decides as
    before. ``data`` and ``reference`` are indexable plane by plane (numpy, dask, ...).
    """
    shape = tuple(data.shape)
    known = settings is not None and (settings.carrier or settings.sign_carrier)
    if (
        method != "classical"
        or len(shape) < 3
        or known
        or (acquisition is not None and acquisition.carrier_cycles_per_px)
    ):
        return settings
    per_plane = reference is not None and tuple(reference.shape) == shape
    planes = [
        (
            np.asarray(data[index]),
            None if reference is None else np.asarray(reference[index] if per_plane else reference),
        )
        for index in voting_indices(shape)
    ]
    carrier, _ = decide_sign_carrier(planes, acquisition=acquisition, settings=settings)
    if carrier is None:
        return settings
    return replace(settings or OffAxisSettings(), sign_carrier=carrier)


def planes_of(
    read: Callable[[tuple[int, ...]], np.ndarray], shape: tuple[int, ...]
) -> list[np.ndarray]:
    """The voting planes of a stack, read with ``read(index)``."""
    return [np.asarray(read(index)) for index in voting_indices(shape)]


__all__ = [
    "VOTING_PLANES",
    "decide_sign_carrier",
    "planes_of",
    "voting_indices",
    "with_stack_sign",
]
