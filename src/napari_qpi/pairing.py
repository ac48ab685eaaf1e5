"""Which file in a folder is the background hologram of which hologram.

Labs save the empty-field (background) hologram next to the holograms of cells. Named by this rule,
it is used as the reference of its hologram(s) and never reconstructed as a sample:

1. ``background.EXT`` or ``bg.EXT`` (any supported image extension, any case): the background of
   every hologram in the same folder.
2. ``NAME_background.EXT``, ``NAME_bg.EXT`` (also ``-background``, ``-bg``): the background of the
   hologram whose name without extension is ``NAME`` in the same folder; failing that, of the one
   hologram whose name starts with ``NAME_``. A background that fits several holograms that way is
   an error for it and for them (which one was meant?). One that fits none is reconstructed as a
   hologram, with a warning (``cells_curved_bg.jpg`` may be a hologram of cells on a curved
   background).
3. A per-hologram background (2.) wins over a folder one (1.); ``--reference`` wins over both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_FOLDER_BACKGROUND = re.compile(r"^(background|bg)$", re.IGNORECASE)
_NAMED_BACKGROUND = re.compile(r"^(?P<name>.+?)[_-](background|bg)$", re.IGNORECASE)


def _stem(path: Path, extensions: Sequence[str]) -> str:
    name = path.name
    for ext in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def background_target(path: Path, extensions: Sequence[str]) -> str | None:
    """``""`` for a folder background, ``NAME`` for ``NAME_background``, ``None`` otherwise."""
    stem = _stem(path, extensions)
    if _FOLDER_BACKGROUND.match(stem):
        return ""
    match = _NAMED_BACKGROUND.match(stem)
    return match.group("name") if match else None


@dataclass
class Pairing:
    """Holograms to reconstruct, the background of each, and the files that could not be paired.

    Attributes
    ----------
    holograms
        The inputs that are not backgrounds, in the given order.
    backgrounds
        Hologram -> its background file.
    problems
        ``(file, reason)`` for backgrounds that fit several holograms, and for those holograms
        (left out of ``holograms``).
    notes
        ``(file, message)`` for files named like a background that fit no hologram: they are
        reconstructed as holograms.
    """

    holograms: list[Path] = field(default_factory=list)
    backgrounds: dict[Path, Path] = field(default_factory=dict)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)


def pair_backgrounds(paths: Sequence[Path], extensions: Sequence[str]) -> Pairing:
    """Split ``paths`` into holograms and backgrounds by the module's rule and pair them."""
    pairing = Pairing()
    folder_backgrounds: dict[Path, list[Path]] = {}
    named: list[tuple[Path, str]] = []
    for path in paths:
        target = background_target(path, extensions)
        if target is None:
            pairing.holograms.append(path)
        elif target == "":
            folder_backgrounds.setdefault(path.parent, []).append(path)
        else:
            named.append((path, target))
    by_folder: dict[Path, list[Path]] = {}
    for hologram in pairing.holograms:
        by_folder.setdefault(hologram.parent, []).append(hologram)
    for folder, candidates in folder_backgrounds.items():
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            for path in candidates:
                pairing.problems.append(
                    (path, f"{folder} has several folder backgrounds ({names}); keep one.")
                )
            continue
        for hologram in by_folder.get(folder, []):
            pairing.backgrounds[hologram] = candidates[0]
    for background, name in named:
        siblings = by_folder.get(background.parent, [])
        exact = [h for h in siblings if _stem(h, extensions) == name]
        fits = exact or [h for h in siblings if _stem(h, extensions).startswith(name + "_")]
        if len(fits) == 1:
            pairing.backgrounds[fits[0]] = background
            continue
        if not fits:
            pairing.holograms.append(background)
            pairing.notes.append(
                (
                    background,
                    f"named like a background but no '{name}.*' hologram is beside it: "
                    "reconstructed as a hologram. To use it as a background, name it after its "
                    f"hologram or call it background{background.suffix} (whole folder).",
                )
            )
            continue
        listed = ", ".join(h.name for h in fits[:4])
        reason = (
            f"background {background.name} fits {len(fits)} holograms ({listed}); name it "
            f"after one (e.g. {_stem(fits[0], extensions)}_bg{background.suffix}), or call it "
            f"background{background.suffix} to use it for the whole folder."
        )
        for hologram in fits:  # which background was meant? not a silent guess
            pairing.backgrounds.pop(hologram, None)
            pairing.holograms.remove(hologram)
            pairing.problems.append((hologram, reason))
        pairing.problems.append((background, reason))
    return pairing


__all__ = ["Pairing", "background_target", "pair_backgrounds"]
