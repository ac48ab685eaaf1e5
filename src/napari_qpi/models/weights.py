"""The weights format of napari-qpi: one way to write a model folder, one way to read it.

A model folder holds ``card.json`` (:class:`~napari_qpi.models.card.ModelCard`) and
``model.safetensors``: every floating tensor of the network's ``state_dict`` in float16 (or the
card's ``weights.dtype``), with the file's sha256 in the card. Search, distillation, fine-tuning,
the registry and the benchmarks all go through :func:`encode_weights` / :func:`write_model_folder`
(or :func:`save_model_folder`, both at once) and :func:`load_model_folder`:

- writing is atomic: the files go into a temporary sibling folder that is renamed into place (an
  existing folder is swapped out only once the new one is complete), so a crash leaves the old
  model or the new one, never a mixture;
- reading checks the sha256 before parsing, and parses safetensors only (nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .card import CARD_FILE, WEIGHTS_FILE, ModelCard

if TYPE_CHECKING:
    import torch
    from torch import nn


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data`` (what a card's ``weights.sha256`` records)."""
    return hashlib.sha256(data).hexdigest()


def encode_weights(
    model: nn.Module, name: str, dtype: str = "float16"
) -> tuple[dict[str, torch.Tensor], bytes, dict[str, Any]]:
    """The stored form of ``model``'s weights: tensors, safetensors bytes and the card entry.

    Floating tensors are cast to ``dtype`` (float16 by default; integer buffers are kept).

    Raises
    ------
    ModelError
        A weight is not finite in ``dtype`` (too large, or NaN from training).
    """
    import safetensors.torch
    import torch

    target = getattr(torch, dtype)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(target)
            if not bool(torch.isfinite(tensor).all()):
                raise ModelError(
                    f"Cannot save model {name!r}: {key} has values that are not finite in "
                    f"{dtype} (too large, or NaN from training)."
                )
        state[key] = tensor.contiguous().clone()
    data = safetensors.torch.save(state, metadata={"format": "pt", "napari_qpi_model": name})
    return state, data, {"file": WEIGHTS_FILE, "sha256": sha256(data), "dtype": dtype}


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_model_folder(
    final: str | os.PathLike[str],
    card: ModelCard,
    data: bytes,
    *,
    replace: Path | None = None,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``card.json`` and the weights ``data`` as the folder ``final``, atomically.

    The files are written into a temporary sibling folder (``extras(folder)`` may add more, e.g.
    ``masks.tif``) that is then renamed to ``final``. ``replace`` is an existing folder to swap
    out (removed only once ``final`` is in place); without it an existing ``final`` is never
    touched (the rename fails with :class:`OSError`).
    """
    final = Path(final)
    token = secrets.token_hex(4)
    tmp = final.with_name(f".tmp-{token}-{final.name}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        _write_file(tmp / card.weights["file"], data)
        _write_file(tmp / CARD_FILE, card.to_json().encode("utf-8"))
        if extras is not None:
            extras(tmp)
        if replace is None:
            os.rename(tmp, final)
            return final
        old = final.with_name(f".old-{token}-{replace.name}")
        os.rename(replace, old)
        try:
            os.rename(tmp, final)
        except OSError:
            os.rename(old, replace)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def save_model_folder(
    folder: str | os.PathLike[str],
    model: nn.Module,
    card: ModelCard,
    *,
    overwrite: bool = False,
    extras: Callable[[Path], None] | None = None,
) -> tuple[Path, ModelCard]:
    """Encode ``model`` (:func:`encode_weights`, the card's dtype) and write its folder
    atomically (:func:`write_model_folder`); returns the folder and the card as written.

    Raises
    ------
    ModelError
        The folder already holds a model (without ``overwrite``), or a weight is not finite.
    """
    folder = Path(folder)
    if (folder / CARD_FILE).exists() and not overwrite:
        raise ModelError(f"{folder} already holds a model; choose another folder or overwrite")
    _, data, weights = encode_weights(model, card.name, card.weights.get("dtype", "float16"))
    card = card.replace(weights=weights)
    replace = folder if overwrite and folder.exists() else None
    return write_model_folder(folder, card, data, replace=replace, extras=extras), card


def read_weights(card: ModelCard, folder: Traversable | Path) -> bytes:
    """The weights file of the model in ``folder``, after checking its sha256 against the card.

    Raises
    ------
    ModelError
        The file cannot be read, or its sha256 differs from the card's.
    """
    try:
        data = folder.joinpath(card.weights["file"]).read_bytes()
    except OSError as exc:
        raise ModelError(
            f"Cannot read the weights of model {card.name!r} ({exc.strerror or exc}). Re-install "
            "or re-import the model."
        ) from None
    if sha256(data) != card.sha256:
        raise ModelError(
            f"The weights file of model {card.name!r} is corrupt or was changed after it was "
            "saved (its sha256 does not match the model card). Re-install the model, or export "
            "it again from where it was made."
        )
    return data


def decode_weights(data: bytes, label: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (never unpickles)."""
    import safetensors.torch

    try:
        return safetensors.torch.load(data)
    except Exception as exc:
        raise ModelError(
            f"The weights of model {label!r} are not a valid safetensors file ({exc})."
        ) from None


def build_model(card: ModelCard, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The card's network with ``state`` loaded, float32, in eval mode, on the CPU."""
    from ..nn import build_network

    try:
        network = build_network(card.network, card.config)
    except ModelError as exc:
        raise ModelError(f"Cannot build the network of model {card.name!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"The architecture in the card of model {card.name!r} is invalid: {exc}"
        ) from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"The weights of model {card.name!r} do not fit the architecture its card describes: "
            f"{exc}"
        ) from None
    return network.float().eval()


def load_model_folder(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelCard]:
    """The network of a model folder (or of its ``card.json``), registered or not.

    The weights' sha256 is checked against the card before they are parsed; nothing is unpickled.
    """
    folder = Path(path)
    if folder.name == CARD_FILE:
        folder = folder.parent
    card = ModelCard.load(folder)
    return build_model(card, decode_weights(read_weights(card, folder), card.name)), card


__all__ = [
    "build_model",
    "decode_weights",
    "encode_weights",
    "load_model_folder",
    "read_weights",
    "save_model_folder",
    "sha256",
    "write_model_folder",
]
