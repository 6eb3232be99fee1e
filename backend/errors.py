"""Errors the backend raises on purpose.

Every error a user can cause carries a ``kind`` (sent to the plugin in the worker's ``error`` event)
and a message that names the layer or field at fault and says what to do about it.
"""

from __future__ import annotations

__all__ = ["RegionLensError", "InputError", "OutputError", "ConfigError", "Cancelled"]


class RegionLensError(Exception):
    """Base class of all deliberate backend errors."""

    kind = "error"


class InputError(RegionLensError):
    """An input layer, field, raster or table cannot be used as given."""

    kind = "input"


class ConfigError(RegionLensError):
    """The run configuration is incomplete or contradictory."""

    kind = "config"


class OutputError(RegionLensError):
    """The output folder cannot be written, or would overwrite existing results."""

    kind = "output"


class Cancelled(RegionLensError):
    """The user cancelled the run; nothing was written."""

    kind = "cancelled"
