"""Plugin settings: one enum of keys with their defaults, stored in QgsSettings (per user)."""

from __future__ import annotations

import enum
from typing import Any

from qgis.core import QgsSettings

__all__ = ["Setting"]


class Setting(enum.Enum):
    """A user setting: ``value`` is the QgsSettings key, :attr:`default` its default."""

    BACKEND_PYTHON = "regionlens/backend_python"  # interpreter of the backend venv ("" = find it)
    LAST_RESULTS_DIR = "regionlens/last_results_dir"  # folder the "Open run results" dialog starts in
    SETUP_BASE_PYTHON = "regionlens/setup_base_python"  # interpreter the setup dialog last built the backend from

    @property
    def default(self) -> Any:
        """Default value when the key is not set."""
        return _DEFAULTS[self]

    def get(self) -> Any:
        """Current value (the default when unset)."""
        return QgsSettings().value(self.value, self.default)

    def set(self, value: Any) -> None:
        """Store a value."""
        QgsSettings().setValue(self.value, value)

    def clear(self) -> None:
        """Remove the stored value so that the default applies again."""
        QgsSettings().remove(self.value)


_DEFAULTS: dict[Setting, Any] = {
    Setting.BACKEND_PYTHON: "",
    Setting.LAST_RESULTS_DIR: "",
    Setting.SETUP_BASE_PYTHON: "",
}
