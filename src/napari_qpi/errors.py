"""Errors meant for people.

Every failure the user can cause (a wrong file, a bad parameter, a model of the wrong kind) raises a
subclass of :class:`QPIError` whose message says what was wrong and what to do about it. The napari
widgets show these messages as notifications; the command line prints them without a traceback.
"""

from __future__ import annotations


class QPIError(Exception):
    """Base class of all errors napari-qpi raises on purpose."""


class InputError(QPIError, ValueError):
    """An array, image or parameter that cannot be processed as given."""


class FileFormatError(QPIError, OSError):
    """A file that cannot be read or written in the expected format."""


class MetadataError(QPIError, ValueError):
    """Acquisition metadata of the wrong type or out of range."""


class SidebandError(QPIError, ValueError):
    """No usable off-axis sideband: no fringes, or a carrier outside the spectrum."""


class ModelError(QPIError, ValueError):
    """A model that is missing, corrupt or of the wrong modality."""


class CancelledError(QPIError):
    """Work stopped because the user asked for it."""


class QPIWarning(UserWarning):
    """Base class of the warnings napari-qpi gives on purpose: one line, for people.

    The command line prints them as ``warning: <message>`` (no source path), the widgets as napari
    notifications.
    """


class OutOfRangeWarning(QPIWarning):
    """A measurement outside what a network was trained on (fringe period, pixel size, phase)."""


class ConsistencyWarning(QPIWarning):
    """A network's phase does not explain the hologram it came from (see retrieval.consistency)."""
