"""Flags that remember themselves, so a training run can record the command that reproduces it.

Every training command (``search``, ``train``, ``distill``, ``finetune``) adds its flags through a
:class:`Flags`; :func:`command_line` then spells out every recorded flag with its value, in the
order the flags were defined. Paths are written relative to the working directory when they lie
inside it; an output folder outside it (a temporary folder, say) is written by its name only, so a
model card never carries a path that exists on one machine for one afternoon.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any, Literal

#: ``dest`` of the namespace entry that holds ``(subcommand, [(action, path kind), ...])``.
FLAGS_DEST = "training_flags"

PathKind = Literal["input", "output"] | None


class Flags:
    """Adds flags to a parser and remembers the ones a command record should show.

    ``record=False`` keeps a flag out of the record (flags about where and how fast a run goes:
    progress bars, devices, work folders). ``path="input"`` or ``"output"`` marks a path flag, see
    :func:`command_line`.
    """

    def __init__(self, parser: argparse.ArgumentParser, subcommand: str) -> None:
        self.parser = parser
        self.recorded: list[tuple[argparse.Action, PathKind]] = []
        parser.set_defaults(**{FLAGS_DEST: (subcommand, self.recorded)})

    def add(
        self, *names: str, record: bool = True, path: PathKind = None, **kwargs: Any
    ) -> argparse.Action:
        action = self.parser.add_argument(*names, **kwargs)
        if record:
            self.recorded.append((action, path))
        return action


def portable_path(value: str | os.PathLike, kind: PathKind, cwd: Path | None = None) -> str:
    """``value`` as a command record writes it.

    Inside the working directory: relative to it. Outside it: an input as given (it is needed to
    rerun), an output by its name only (where a run wrote is not part of what it did).
    """
    path = Path(value)
    cwd = Path.cwd() if cwd is None else cwd
    if path.is_absolute():
        try:
            return str(path.resolve().relative_to(cwd.resolve()))
        except ValueError:
            return path.name if kind == "output" else str(path)
    return str(path)


def _words(flag: str, action: argparse.Action, value: Any, kind: PathKind) -> list[str]:
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag if value else "--no-" + flag.removeprefix("--")]
    if isinstance(value, bool):
        return [flag] if value else []
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if kind is not None:
        values = [portable_path(v, kind) for v in values]
    return [flag, *(str(v) for v in values)]


def command_line(args: argparse.Namespace) -> str:
    """The command line that reproduces ``args``: every recorded flag spelled out."""
    subcommand, recorded = getattr(args, FLAGS_DEST)
    words = ["napari-qpi", subcommand]
    for action, kind in recorded:
        value = getattr(args, action.dest)
        if value is None:
            continue
        if not action.option_strings:  # a positional argument
            words += [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        words += _words(action.option_strings[0], action, value, kind)
    return shlex.join(words)


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` to torch (the command that calls this imports torch anyway)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


__all__ = ["FLAGS_DEST", "Flags", "command_line", "portable_path", "set_threads"]
