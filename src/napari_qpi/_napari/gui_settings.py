"""What the widgets remember between sessions: one small JSON file in the user's napari-qpi folder.

``<user data dir>/gui_settings.json`` (see :func:`napari_qpi.models.user_data_dir`), or the
file named by ``NAPARI_QPI_GUI_SETTINGS`` (the tests give each test its own), holds one section
per widget, e.g. ``{"retrieval": {"filter": "disk", ...}, "reader": {"reconstruct": true}}``. A
plain file rather than QSettings so that the reader, which may run without Qt, reads the same
settings. Values that no longer fit a widget (a deleted model) are skipped when restored.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ..io import atomic_write

SETTINGS_FILE = "gui_settings.json"

#: Environment variable naming another settings file.
SETTINGS_ENV = "NAPARI_QPI_GUI_SETTINGS"

#: Reader section: whether dropping a hologram also retrieves its phase, and with which method.
READER_DEFAULTS: dict[str, Any] = {"reconstruct": True, "method": "classical"}

_LOCK = threading.Lock()


def settings_path() -> Path:
    """The settings file (it may not exist yet)."""
    from ..models import user_data_dir

    if os.environ.get(SETTINGS_ENV):
        return Path(os.environ[SETTINGS_ENV]).expanduser()
    return user_data_dir() / SETTINGS_FILE


def _load_all() -> dict[str, Any]:
    try:
        record = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def load(section: str) -> dict[str, Any]:
    """The saved values of one section (empty when nothing was saved or the file is damaged)."""
    with _LOCK:
        values = _load_all().get(section)
    return dict(values) if isinstance(values, dict) else {}


def save(section: str, values: dict[str, Any]) -> None:
    """Replace one section's values (atomically; other sections are kept)."""
    with _LOCK:
        record = _load_all()
        record[section] = values
        path = settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, True) as tmp:
                tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        except OSError:
            pass  # a read-only home must not break the GUI; the values are simply not kept


def reader_settings() -> dict[str, Any]:
    """The reader section with its defaults filled in."""
    return {**READER_DEFAULTS, **load("reader")}


def remember(section: str, widgets: dict[str, Any]) -> None:
    """Restore ``widgets`` (name -> magicgui value widget) from ``section``, then save on change.

    A saved value the widget no longer accepts (e.g. a method no longer offered) is skipped.
    """
    saved = load(section)
    for name, widget in widgets.items():
        if name not in saved:
            continue
        try:
            widget.value = saved[name]
        except (ValueError, TypeError, KeyError):
            continue

    def store(*_: Any) -> None:
        save(section, {name: _plain(widget.value) for name, widget in widgets.items()})

    for widget in widgets.values():
        widget.changed.connect(store)


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
