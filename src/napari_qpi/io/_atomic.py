"""Atomic, non-clobbering file writes.

Every writer in :mod:`napari_qpi.io` writes to a temporary file in the destination folder and moves
it into place only once it is complete, so a crash or an error never leaves a half-written output
or destroys an existing one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ..errors import FileFormatError


class OutputExistsError(FileFormatError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


def _refuse_existing(path: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{path} already exists; napari-qpi does not overwrite files unless asked. Choose another "
        "name, delete the file, or pass overwrite=True."
    )


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early, before any work, if ``path`` cannot be written.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    FileFormatError
        The destination folder does not exist, or ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder; give a file name to write to.")
    if path.exists() and not overwrite:
        raise _refuse_existing(path)
    if not path.parent.is_dir():
        raise FileFormatError(
            f"Cannot write {path}: the folder {path.parent} does not exist. Create it first."
        )
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it to ``path`` when the block succeeds.

    The temporary name ends with the final file name, so writers that look at the extension
    (``.ome.tif``, ``.npz``) behave as they would for ``path``. If the block raises, the temporary
    file is removed and ``path`` is left untouched. Without ``overwrite`` an existing ``path`` is
    never replaced, even if it appears while the block runs.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false (checked before and after writing).
    FileFormatError
        The destination folder does not exist, or the block wrote nothing.
    """
    path = check_writable(path, overwrite)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileFormatError(f"Writing {path} produced no file.")
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_without_clobbering(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _move_without_clobbering(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _refuse_existing(path) from None
    except OSError:
        if path.exists():
            raise _refuse_existing(path) from None
        os.replace(tmp, path)
