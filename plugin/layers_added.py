"""Following the layers of the current QGIS project: those there now and those added later."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsMapLayer, QgsProject

__all__ = ["LayersAdded"]


class LayersAdded:
    """Calls ``slot`` with the current project's layers when :meth:`follow` starts, then with the layers added to
    that project, until :meth:`follow` stops.

    Args:
        slot: Called with a list of layers.
    """

    def __init__(self, slot: Callable[[list[QgsMapLayer]], object]) -> None:
        self._slot = slot
        self.project: QgsProject | None = None  # the project followed

    def follow(self, on: bool) -> None:
        """Start (``on``) or stop following; starting again, or stopping again, changes nothing."""
        if on and self.project is None:
            self.project = QgsProject.instance()
            self.project.layersAdded.connect(self._slot)
            self._slot(list(self.project.mapLayers().values()))
        elif not on and self.project is not None:
            try:
                self.project.layersAdded.disconnect(self._slot)
            except (RuntimeError, TypeError):  # already disconnected, or the project is gone
                pass
            self.project = None
