"""Model cards: the JSON description that travels with every model's weights.

A card says what a model is (``family``: how it was made; ``modality``: what it reconstructs),
how to build its network (``architecture``), how to prepare its input (``normalisation``), how it
was trained and scored (``training``, ``metrics`` with the commands that produced them) and which
weights file belongs to it (``weights``, with its sha256). Cards are plain JSON so they can be read
and diffed without napari-qpi; :class:`ModelCard` validates them with messages for people.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError

#: How a model was made.
MODEL_FAMILIES: tuple[str, ...] = (
    "searched",
    "baseline",
    "supernet",
    "distilled",
    "teacher",
    "finetuned",
)

#: What a model reconstructs: off-axis holograms or coded diffraction patterns.
MODALITIES: tuple[str, ...] = ("hologram", "cdp")

#: Input normalisations a card may ask for, see :func:`normalise`.
NORMALISATIONS: tuple[str, ...] = ("none", "mean_std", "mean", "min_max", "fixed")

#: Newest card layout this version reads.
SCHEMA_VERSION = 1

#: File names inside a model folder.
CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"

#: Weight dtypes a model may be stored in.
WEIGHT_DTYPES: tuple[str, ...] = ("float16", "float32")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)]
)
_REQUIRED = ("name", "family", "modality", "architecture", "normalisation", "weights")


def validate_name(name: object) -> str:
    """Return ``name`` if it can name a model (and its folder) on every platform.

    Raises
    ------
    ModelError
        For anything but 1-80 letters, digits, ``.``, ``_`` and ``-`` starting with a letter or
        digit, a trailing dot, or a name Windows reserves (``con``, ``nul``, ``com1``, ...).
    """
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ModelError(
            f"Invalid model name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (e.g. 'prnet-my-scope-v2')."
        )
    if name.endswith(".") or name.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise ModelError(
            f"Invalid model name {name!r}: it cannot end with '.' or be a name Windows reserves "
            "for devices (con, nul, com1, ...). Choose another name."
        )
    return name


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _package_version() -> str:
    from .. import __version__

    return __version__


def _default_weights() -> dict[str, Any]:
    return {"file": WEIGHTS_FILE, "sha256": None, "dtype": "float16"}


@dataclass
class ModelCard:
    """Description of one model; JSON round trip with :meth:`to_dict` / :meth:`from_dict`.

    Attributes
    ----------
    name
        Unique model name, also its folder name (see :func:`validate_name`).
    family
        How it was made: one of :data:`MODEL_FAMILIES`.
    modality
        What it reconstructs: ``"hologram"`` or ``"cdp"``.
    architecture
        ``{"network": <napari_qpi.nn family, e.g. "prnet">, "config": {...}}``, optionally
        ``"stride"`` (for networks without a ``stride`` attribute) and ``"input_channels"``
        (channels of one measurement, e.g. the number of CDP patterns; default: the config's
        ``in_channels``, else 1).
    normalisation
        How a measurement is scaled before it enters the network, see :func:`normalise`.
    training
        ``{"recipe", "seed", "data", "command", ...}``: enough to train it again.
    metrics
        ``{split: {"psnr_db", "ssim", "rmse_rad", ..., "command"}}``, each with the command that
        measured it.
    base_model
        Name of the model a fine-tuned model started from (required for ``"finetuned"``).
    description
        One or two sentences for people choosing a model.
    created
        ISO 8601 UTC time the card was made.
    napari_qpi_version
        Version of napari-qpi that wrote the weights.
    weights
        ``{"file": "model.safetensors", "sha256": <hex digest>, "dtype": "float16"}``; the sha256
        is filled in when the model is saved.
    extra
        Anything else worth keeping; unknown top-level keys of a card file end up here.
    schema_version
        Layout version of the card.
    source
        ``"shipped"`` or ``"user"`` for a registered model (not stored in the JSON).
    path
        Folder of a registered model when it is a real folder (not stored in the JSON).
    """

    name: str
    family: str
    modality: str
    architecture: dict[str, Any]
    normalisation: dict[str, Any] = field(default_factory=lambda: {"method": "mean_std"})
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_model: str | None = None
    description: str = ""
    created: str = field(default_factory=_now)
    napari_qpi_version: str = field(default_factory=_package_version)
    weights: dict[str, Any] = field(default_factory=_default_weights)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    source: str | None = field(default=None, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def network(self) -> str:
        """The :mod:`napari_qpi.nn` family that builds the network (``"prnet"``, ``"unet"``)."""
        return str(self.architecture["network"])

    @property
    def config(self) -> dict[str, Any]:
        """The network's config dictionary."""
        return dict(self.architecture.get("config") or {})

    @property
    def input_channels(self) -> int:
        """Channels of one measurement as the network reads it (1 for a hologram)."""
        value = self.architecture.get("input_channels", self.config.get("in_channels", 1))
        return int(value)

    @property
    def sha256(self) -> str | None:
        """Hex digest of the weights file, once saved."""
        return self.weights.get("sha256")

    def validate(self, *, require_sha256: bool = False) -> None:
        """Check every field; raise :class:`ModelError` naming the first problem found."""
        where = f"model card {self.name!r}"
        validate_name(self.name)
        if self.family not in MODEL_FAMILIES:
            raise ModelError(
                f"{where}: unknown family {self.family!r}; expected one of "
                f"{', '.join(MODEL_FAMILIES)}."
            )
        if self.modality not in MODALITIES:
            raise ModelError(
                f"{where}: unknown modality {self.modality!r}; expected 'hologram' (off-axis "
                "holograms) or 'cdp' (coded diffraction patterns)."
            )
        for key in ("architecture", "normalisation", "training", "metrics", "weights", "extra"):
            if not isinstance(getattr(self, key), Mapping):
                raise ModelError(
                    f"{where}: '{key}' must be a JSON object, got {getattr(self, key)!r}."
                )
        arch = self.architecture
        if not isinstance(arch.get("network"), str) or not arch["network"]:
            raise ModelError(
                f"{where}: 'architecture' needs a 'network' (e.g. \"prnet\" or \"unet\")."
            )
        if not isinstance(arch.get("config", {}), Mapping):
            raise ModelError(f"{where}: 'architecture.config' must be a JSON object.")
        for key in ("stride", "input_channels"):
            value = arch.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ModelError(
                    f"{where}: 'architecture.{key}' must be a positive integer, got {value!r}."
                )
        check_normalisation(self.normalisation, where)
        for split, scores in self.metrics.items():
            if not isinstance(scores, Mapping):
                raise ModelError(
                    f"{where}: metrics for split {split!r} must be a JSON object of scores."
                )
        if self.family == "finetuned" and not self.base_model:
            raise ModelError(f"{where}: a fine-tuned model must name its 'base_model'.")
        if self.base_model is not None and not isinstance(self.base_model, str):
            raise ModelError(f"{where}: 'base_model' must be a model name or null.")
        self._validate_weights(where, require_sha256)
        if not isinstance(self.schema_version, int) or self.schema_version > SCHEMA_VERSION:
            raise ModelError(
                f"{where} has layout version {self.schema_version!r}, newer than this napari-qpi "
                f"reads ({SCHEMA_VERSION}). Update napari-qpi to use this model."
            )

    def _validate_weights(self, where: str, require_sha256: bool) -> None:
        file = self.weights.get("file")
        if (
            not isinstance(file, str)
            or not file.endswith(".safetensors")
            or os.path.basename(file) != file
            or "\\" in file
            or file.startswith(".")
        ):
            raise ModelError(
                f"{where}: 'weights.file' must be a plain .safetensors file name in the model "
                f"folder, got {file!r}."
            )
        dtype = self.weights.get("dtype", "float16")
        if dtype not in WEIGHT_DTYPES:
            raise ModelError(
                f"{where}: 'weights.dtype' must be one of {', '.join(WEIGHT_DTYPES)}, "
                f"got {dtype!r}."
            )
        sha = self.weights.get("sha256")
        if sha is None and not require_sha256:
            return
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ModelError(
                f"{where}: 'weights.sha256' must be the 64-digit hex digest of the weights file, "
                f"got {sha!r}. The card is damaged: re-install or re-export the model."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (without ``source`` and ``path``)."""
        skip = {"source", "path"}
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        try:
            return json.loads(json.dumps(data, default=_to_json))
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model card {self.name!r} cannot be written as JSON: {exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Card from a dictionary; unknown top-level keys are kept in ``extra``.

        Raises
        ------
        ModelError
            Not a mapping, a required key missing, or any value :meth:`validate` rejects.
        """
        if not isinstance(data, Mapping):
            raise ModelError(f"A model card must be a JSON object, got {type(data).__name__}.")
        label = data.get("name", "<unnamed>")
        if missing := [key for key in _REQUIRED if key not in data]:
            raise ModelError(
                f"model card {label!r} lacks required keys: {', '.join(missing)}. The card is "
                "incomplete or damaged: re-install or re-export the model."
            )
        known = {f.name for f in fields(cls)} - {"source", "path"}
        values = {key: value for key, value in data.items() if key in known}
        extra = dict(values.get("extra") or {})
        for key, value in data.items():
            if key not in known:
                extra.setdefault(key, value)
        values["extra"] = extra
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError(f"model card {label!r} is malformed: {exc}") from None

    def to_json(self) -> str:
        """Indented JSON text with a final newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        """Card from JSON text; invalid JSON raises :class:`ModelError`."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"The model card is not valid JSON ({exc}).") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a card from ``card.json`` or from the model folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"Cannot read the model card {path}: {exc.strerror or exc}.") from None
        return cls.from_json(text)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the card as JSON to ``path`` (a file, or a folder to hold ``card.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def replace(self, **changes: Any) -> ModelCard:
        """A validated copy with some fields changed."""
        return replace(self, **changes)


def _to_json(value: Any) -> Any:
    """JSON form of the numpy values and paths that metrics and configs tend to hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} cannot be stored in a model card")


def check_normalisation(spec: Mapping[str, Any], where: str = "model card") -> None:
    """Raise :class:`ModelError` unless ``spec`` is a normalisation :func:`normalise` knows."""
    method = spec.get("method")
    if method not in NORMALISATIONS:
        raise ModelError(
            f"{where}: unknown input normalisation {method!r}; expected one of "
            f"{', '.join(NORMALISATIONS)}."
        )
    numbers = {"eps": spec.get("eps", 1e-6)}
    if method == "fixed":
        numbers |= {"offset": spec.get("offset"), "scale": spec.get("scale")}
    for key, value in numbers.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ModelError(
                f"{where}: normalisation '{key}' must be a finite number, got {value!r}."
            )
    if method == "fixed" and spec["scale"] == 0:
        raise ModelError(f"{where}: normalisation 'scale' must not be 0.")
    if not isinstance(spec.get("per_channel", False), bool):
        raise ModelError(f"{where}: normalisation 'per_channel' must be true or false.")


def normalise(
    x: np.ndarray, spec: Mapping[str, Any], axes: tuple[int, ...] = (-2, -1)
) -> np.ndarray:
    """Scale a measurement the way a model card's ``normalisation`` says (float32 result).

    Statistics are taken over ``axes`` separately for every other index, so each image of a
    stack is normalised on its own. Methods:

    - ``"none"``: unchanged;
    - ``"mean_std"``: ``(x - mean) / (std + eps)``;
    - ``"mean"``: ``x / mean - 1`` (fringe contrast around the mean intensity);
    - ``"min_max"``: ``(x - min) / (max - min + eps)``;
    - ``"fixed"``: ``(x - offset) / scale`` with the card's numbers.

    ``eps`` defaults to 1e-6. Training and inference both call this so they agree.

    Raises
    ------
    InputError
        For ``"mean"`` on an image whose mean intensity is not positive.
    """
    check_normalisation(spec)
    method = spec["method"]
    eps = float(spec.get("eps", 1e-6))
    x = np.asarray(x, dtype=np.float32)
    if method == "none":
        return x
    if method == "fixed":
        return ((x - np.float32(spec["offset"])) / np.float32(spec["scale"])).astype(np.float32)
    if method == "mean_std":
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
        std = x.std(axis=axes, keepdims=True, dtype=np.float64)
        return ((x - mean) / (std + eps)).astype(np.float32)
    if method == "mean":
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
        if np.any(mean <= 0):
            raise InputError(
                "The model divides the image by its mean intensity, but the mean is not "
                "positive: give the raw hologram (intensities), not a background-subtracted one."
            )
        return (x / mean - 1).astype(np.float32)
    low = x.min(axis=axes, keepdims=True).astype(np.float64)
    high = x.max(axis=axes, keepdims=True).astype(np.float64)
    return ((x - low) / (high - low + eps)).astype(np.float32)


__all__ = [
    "CARD_FILE",
    "MODALITIES",
    "MODEL_FAMILIES",
    "NORMALISATIONS",
    "SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "WEIGHT_DTYPES",
    "ModelCard",
    "check_normalisation",
    "normalise",
    "validate_name",
]
