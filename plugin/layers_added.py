"""Following the layers of the current QGIS project: those there now and those added later."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from qgis.core import QgsMapLayer, QgsProject

__all__ = ["LayersAdded"]


class LayersAdded:
    """Calls ``slot`` with the current project's layers when :meth:`follow` starts, then with the layers added to
    that project, until :meth:`follow` stops.

    Args:
        slot: A method of the object that holds this follower, called with a list of layers. It is held weakly:
            a strong reference would make a cycle that keeps the object (a dock widget, the plugin) alive until
            the garbage collector runs, possibly after QGIS has exited, where deleting it crashes.
    """

    def __init__(self, slot: Callable[[list[QgsMapLayer]], object]) -> None:
        self._slot = weakref.WeakMethod(slot)
        self.project: QgsProject | None = None  # the project followed

    def follow(self, on: bool) -> None:
        """Start (``on``) or stop following; starting again, or stopping again, changes nothing."""
        slot = self._slot()
        if slot is None:  # its object is gone (and with it Qt's connection)
            self.project = None
        elif on and self.project is None:
            self.project = QgsProject.instance()
            self.project.layersAdded.connect(slot)
            slot(list(self.project.mapLayers().values()))
        elif not on and self.project is not None:
            try:
                self.project.layersAdded.disconnect(slot)
            except (RuntimeError, TypeError):  # already disconnected, or the project is gone
                pass
            self.project = None
