"""Registry of shipped and user models: find, load, save, export, import and delete them.

A model is a folder named after it holding ``card.json`` (a :class:`~.card.ModelCard`) and
``model.safetensors`` (fp16 weights whose sha256 the card records). Shipped models live in the
package (``napari_qpi/models/shipped/<name>/``) and are read-only; user models (fine-tuned,
imported) live in the user folder, see :func:`user_models_dir`. Loading parses safetensors only,
never pickles, and checks the sha256 first, so a damaged or altered file is refused.

PyTorch is imported only when a model is loaded or saved, so listing models stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import threading
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FileFormatError, InputError, ModelError
from .card import CARD_FILE, MODALITIES, ModelCard, _now, validate_name
from .weights import (
    build_model,
    decode_weights,
    encode_weights,
    read_weights,
    sha256,
    write_model_folder,
)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    import torch
    from torch import nn

#: Environment variable that overrides the per-user data folder.
USER_DIR_ENV = "NAPARI_QPI_USER_DIR"

#: Models kept loaded at once (per device).
CACHE_SIZE = 4

#: Largest file read from an imported ``.zip`` (bytes).
MAX_IMPORT_BYTES = 4 << 30

_CACHE: OrderedDict[tuple[Any, ...], tuple[nn.Module, ModelCard]] = OrderedDict()
_LOCK = threading.RLock()


class ModelWarning(UserWarning):
    """A model folder that was skipped (damaged card, duplicate name)."""


def user_data_dir() -> Path:
    """Per-user napari-qpi data folder.

    ``$NAPARI_QPI_USER_DIR`` if set, else ``~/.local/share/napari-qpi`` on Linux (or
    ``$XDG_DATA_HOME/napari-qpi``), ``~/Library/Application Support/napari-qpi`` on macOS and
    ``%LOCALAPPDATA%\\napari-qpi`` on Windows.
    """
    override = os.environ.get(USER_DIR_ENV)
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(home / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(base) / "napari-qpi"


def user_models_dir() -> Path:
    """Folder of the user's models: ``user_data_dir() / "models"`` (may not exist yet)."""
    return user_data_dir() / "models"


def shipped_models_dir() -> Traversable:
    """Folder of the models shipped inside the package (may not exist)."""
    return files("napari_qpi.models").joinpath("shipped")


def _root(source: str) -> Traversable:
    return shipped_models_dir() if source == "shipped" else user_models_dir()


def _model_folders(root: Traversable) -> list[Traversable]:
    """Candidate model folders under ``root``, sorted by name; temporary folders are skipped."""
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=lambda p: p.name,
    )


def _read_card(folder: Traversable, source: str) -> ModelCard:
    """The card of a registered model folder, checked against the folder's name."""
    try:
        text = folder.joinpath(CARD_FILE).read_bytes()
    except OSError as exc:
        raise ModelError(
            f"The model folder {folder} has no readable {CARD_FILE} ({exc.strerror or exc})."
        ) from None
    try:
        card = ModelCard.from_json(text)
        card.validate(require_sha256=True)
    except ModelError as exc:
        raise ModelError(f"The model in {folder} is damaged: {exc}") from None
    if card.name != folder.name:
        raise ModelError(
            f"The model folder {folder} holds a card named {card.name!r}; a model's folder must "
            "carry its name. Rename the folder or re-import the model."
        )
    card.source = source
    card.path = folder if isinstance(folder, Path) else None
    return card


def _scan(*, warn: bool = True) -> Iterator[ModelCard]:
    """Cards of every usable model, shipped first; damaged or shadowed ones are skipped."""
    seen: set[str] = set()
    for source in ("shipped", "user"):
        for folder in _model_folders(_root(source)):
            try:
                card = _read_card(folder, source)
            except ModelError as exc:
                if warn:
                    warnings.warn(f"Skipping a model: {exc}", ModelWarning, stacklevel=3)
                continue
            if card.name.lower() in seen:
                if warn:
                    warnings.warn(
                        f"Skipping the {source} model in {folder}: a model named {card.name!r} "
                        "is already registered. Rename one of them.",
                        ModelWarning,
                        stacklevel=3,
                    )
                continue
            seen.add(card.name.lower())
            yield card


def list_models(modality: str | None = None) -> list[ModelCard]:
    """Cards of the registered models, shipped ones first, then the user's, each sorted by name.

    A user model whose card is damaged is skipped with a :class:`ModelWarning`.

    Parameters
    ----------
    modality
        Only models for ``"hologram"`` or ``"cdp"`` input; ``None`` lists all.
    """
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"Unknown modality {modality!r}; use 'hologram', 'cdp' or None.")
    return [card for card in _scan() if modality is None or card.modality == modality]


def _find_folder(root: Traversable, name: str) -> Traversable | None:
    """The folder under ``root`` whose name equals ``name`` ignoring case, if any."""
    wanted = name.lower()
    return next((p for p in _model_folders(root) if p.name.lower() == wanted), None)


def _available() -> str:
    names = [card.name for card in _scan(warn=False)]
    return ", ".join(names) if names else "none installed"


def get_card(name: str) -> ModelCard:
    """Card of the registered model ``name`` (shipped models take precedence).

    Raises
    ------
    ModelError
        No model of that name, or its card is damaged.
    """
    validate_name(name)
    for source in ("shipped", "user"):
        folder = _find_folder(_root(source), name)
        if folder is not None and folder.name == name:
            return _read_card(folder, source)
    raise ModelError(f"No model named {name!r}. Available models: {_available()}.")


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on: ``device`` if usable, else CUDA, then MPS, then the CPU.

    Raises
    ------
    InputError
        An unknown device name, or a GPU that this machine or PyTorch build does not have.
    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1' or 'mps', or leave it empty "
            "to choose automatically."
        ) from None
    if dev.type == "cuda" and (
        not torch.cuda.is_available()
        or (dev.index is not None and dev.index >= torch.cuda.device_count())
    ):
        raise InputError(
            f"Device {device!r} was asked for, but this machine or PyTorch build has no such CUDA "
            "GPU. Use 'cpu', or leave the device empty to choose automatically."
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InputError("Device 'mps' was asked for, but Apple's Metal backend is not available.")
    return dev


def _stamp(file: Traversable) -> tuple[int, int] | None:
    if not isinstance(file, Path):
        return None
    try:
        stat = file.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def load_model(
    name: str, *, device: str | torch.device | None = None, cached: bool = True
) -> tuple[nn.Module, ModelCard]:
    """A registered model ready for inference: float32, eval mode, on ``device``.

    The weights are checked against the card's sha256 and parsed as safetensors. Loaded models
    are kept in a small per-process cache (:data:`CACHE_SIZE`), so a model is read once; a cached
    module is shared and made faster for inference
    (:func:`~napari_qpi.nn.inference.for_inference`: batch norms folded into the convolutions,
    the same output), so it cannot be trained or saved: load a private copy for that.

    Parameters
    ----------
    name
        Model name, see :func:`list_models`.
    device
        ``"cpu"``, ``"cuda"``, ``"mps"``, a :class:`torch.device`, or ``None`` for the best
        available (:func:`select_device`).
    cached
        ``False`` returns a private copy as the card describes it (e.g. to fine-tune or save),
        neither taken from nor added to the cache.

    Returns
    -------
    module, card

    Raises
    ------
    ModelError
        Unknown name, damaged card, weights corrupt or changed, or weights that do not fit the
        architecture.
    """
    card = get_card(name)
    dev = select_device(device)
    folder = _root(card.source or "user").joinpath(card.name)
    key = (
        card.source,
        card.name,
        card.sha256,
        _stamp(folder.joinpath(card.weights["file"])),
        str(dev),
    )
    with _LOCK:
        if cached and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key][0], card
        data = read_weights(card, folder)
        module = build_model(card, decode_weights(data, card.name)).to(dev)
        if cached:
            from ..nn.inference import for_inference

            module = for_inference(module)
            _CACHE[key] = (module, card)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return module, card


def clear_cache() -> None:
    """Forget every loaded model."""
    with _LOCK:
        _CACHE.clear()


def _forget(name: str) -> None:
    with _LOCK:
        for key in [k for k in _CACHE if str(k[1]).lower() == name.lower()]:
            del _CACHE[key]


def _check_name_free(name: str, overwrite: bool) -> None:
    if _find_folder(shipped_models_dir(), name) is not None:
        raise ModelError(
            f"{name!r} is a model shipped with napari-qpi; shipped models cannot be replaced. "
            "Choose another name."
        )
    existing = _find_folder(user_models_dir(), name)
    if existing is not None and not overwrite:
        raise ModelError(
            f"A user model named {existing.name!r} already exists. Choose another name, or "
            "replace it (overwrite=True)."
        )


def _install(card: ModelCard, data: bytes, overwrite: bool) -> Path:
    """Put a card and its weights into the user folder; returns the model's folder."""
    _check_name_free(card.name, overwrite)
    root = user_models_dir()
    final = root / card.name
    existing = _find_folder(root, card.name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_model_folder(
            final, card, data, replace=existing if isinstance(existing, Path) else None
        )
    except OSError as exc:
        if final.exists() and not overwrite:
            raise ModelError(
                f"A user model named {card.name!r} appeared while saving; nothing was changed."
            ) from None
        raise ModelError(
            f"Cannot save model {card.name!r} in {root}: {exc.strerror or exc}. Check that the "
            f"folder is writable, or set {USER_DIR_ENV} to another folder."
        ) from None
    finally:
        _forget(card.name)
    return final


def save_user_model(model: nn.Module, card: ModelCard, *, overwrite: bool = False) -> Path:
    """Save a network as a user model: its weights (fp16 safetensors) and card.

    The card's architecture must rebuild ``model`` exactly (checked before writing); its
    ``weights`` entry (file, sha256, dtype), ``created`` and ``napari_qpi_version`` are filled
    in. The folder is written under a temporary name and renamed, so it is complete or absent.

    Parameters
    ----------
    model
        The trained network.
    card
        Its card; ``card.name`` names the model.
    overwrite
        Replace a user model of the same name. Shipped models are never replaced.

    Returns
    -------
    Path
        The new model folder.

    Raises
    ------
    ModelError
        Invalid or taken name, weights beyond the float16 range, or a card whose architecture
        does not match ``model``.
    """
    from .. import __version__

    validate_name(card.name)
    _check_name_free(card.name, overwrite)
    state, data, weights = encode_weights(model, card.name, card.weights.get("dtype", "float16"))
    build_model(card, state)
    saved = card.replace(weights=weights, napari_qpi_version=__version__, created=_now())
    return _install(saved, data, overwrite)


def export_model(name: str, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a registered model to ``path``: a ``.zip`` file, or else a folder, with both files.

    The zip holds ``<name>/card.json`` and ``<name>/model.safetensors``; a folder holds the two
    files directly. The weights are checked before they are exported.

    Raises
    ------
    ModelError
        Unknown model, or weights corrupt or changed.
    FileFormatError
        ``path`` exists (without ``overwrite``) or cannot be written.
    """
    from ..io._atomic import atomic_write

    card = get_card(name)
    data = read_weights(card, _root(card.source or "user").joinpath(card.name))
    path = Path(path)
    if path.suffix.lower() == ".zip":
        with atomic_write(path, overwrite) as tmp, zipfile.ZipFile(tmp, "w") as archive:
            archive.writestr(f"{card.name}/{CARD_FILE}", card.to_json(), zipfile.ZIP_DEFLATED)
            archive.writestr(f"{card.name}/{card.weights['file']}", data, zipfile.ZIP_STORED)
        return path
    if path.exists() and not path.is_dir():
        raise FileFormatError(f"{path} is a file; give a folder name or a .zip file name.")
    existing = path if path.is_dir() and any(path.iterdir()) else None
    if existing is not None and not overwrite:
        raise FileFormatError(
            f"The folder {path} is not empty; choose a new folder, or pass overwrite=True."
        )
    try:
        if path.is_dir() and existing is None:
            path.rmdir()
        write_model_folder(path, card, data, replace=existing)
    except OSError as exc:
        raise FileFormatError(f"Cannot export model {name!r} to {path}: {exc}") from None
    return path


def _read_package(path: Path) -> tuple[ModelCard, bytes]:
    """Card and weights bytes of an exported model (folder or ``.zip``)."""
    if path.is_file() and path.name == CARD_FILE:
        path = path.parent
    if path.is_dir():
        card = ModelCard.load(path)
        try:
            return card, (path / card.weights["file"]).read_bytes()
        except OSError as exc:
            raise ModelError(
                f"The model folder {path} has no readable weights file "
                f"{card.weights['file']!r} ({exc.strerror or exc})."
            ) from None
    if not path.is_file():
        raise ModelError(f"{path} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            cards = [
                info
                for info in archive.infolist()
                if info.filename.rsplit("/", 1)[-1] == CARD_FILE and info.filename.count("/") <= 1
            ]
            if len(cards) != 1:
                raise ModelError(
                    f"{path} must hold exactly one {CARD_FILE} (at the top or in one folder), "
                    f"found {len(cards)}. Export the model again with napari-qpi."
                )
            prefix = cards[0].filename[: -len(CARD_FILE)]
            card = ModelCard.from_json(_read_member(archive, cards[0].filename, path))
            data = _read_member(archive, prefix + card.weights["file"], path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(
            f"{path} is neither a model folder nor a readable .zip exported by napari-qpi ({exc})."
        ) from None
    return card, data


def _read_member(archive: zipfile.ZipFile, member: str, path: Path) -> bytes:
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ModelError(f"{path} lacks {member!r}; export the model again.") from None
    if info.file_size > MAX_IMPORT_BYTES:
        raise ModelError(f"{member!r} in {path} is implausibly large ({info.file_size} bytes).")
    return archive.read(info)


def import_model(
    path: str | os.PathLike[str], *, name: str | None = None, overwrite: bool = False
) -> ModelCard:
    """Install an exported model (``.zip`` or folder) as a user model.

    The card is validated, the weights checked against its sha256, and the network built with
    them before anything is written.

    Parameters
    ----------
    path
        What :func:`export_model` wrote (or a folder with ``card.json`` and the weights).
    name
        Install under this name instead of the card's.
    overwrite
        Replace a user model of the same name. Shipped models are never replaced.

    Returns
    -------
    ModelCard
        The installed model's card.
    """
    card, data = _read_package(Path(path))
    card.validate(require_sha256=True)
    if name is not None:
        card = card.replace(name=validate_name(name))
    if sha256(data) != card.sha256:
        raise ModelError(
            f"The weights in {path} are corrupt or were changed after export (their sha256 does "
            "not match the model card). Export the model again."
        )
    build_model(card, decode_weights(data, card.name))
    _install(card, data, overwrite)
    return get_card(card.name)


def delete_user_model(name: str) -> None:
    """Remove a user model (its folder). Shipped models cannot be deleted.

    Raises
    ------
    ModelError
        A shipped model, or no user model of that name.
    """
    validate_name(name)
    if _find_folder(shipped_models_dir(), name) is not None:
        raise ModelError(f"{name!r} is a model shipped with napari-qpi; it cannot be deleted.")
    folder = _find_folder(user_models_dir(), name)
    if not isinstance(folder, Path) or folder.name != name:
        raise ModelError(f"No user model named {name!r}. User models: {_user_names()}.")
    trash = folder.with_name(f".del-{secrets.token_hex(4)}-{name}")
    try:
        os.rename(folder, trash)
    except OSError as exc:
        raise ModelError(f"Cannot delete model {name!r}: {exc.strerror or exc}.") from None
    finally:
        _forget(name)
    with contextlib.suppress(OSError):
        shutil.rmtree(trash)


def _user_names() -> str:
    names = [p.name for p in _model_folders(user_models_dir())]
    return ", ".join(names) if names else "none"


__all__ = [
    "CACHE_SIZE",
    "USER_DIR_ENV",
    "ModelWarning",
    "clear_cache",
    "delete_user_model",
    "export_model",
    "get_card",
    "import_model",
    "list_models",
    "load_model",
    "save_user_model",
    "select_device",
    "shipped_models_dir",
    "user_data_dir",
    "user_models_dir",
]
