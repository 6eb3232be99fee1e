"""Run one short blocking call (nvidia-smi, probing an interpreter, the worker's ``info``) off the GUI thread.

A QgsTask would show every such call in QGIS's task bar (QGIS 3.22 has no hidden tasks), so this is a
plain daemon thread whose result comes back through a Qt signal. Connect :attr:`BackgroundCall.done` to
a method of a QObject that lives in the GUI thread (a widget): Qt then delivers it there, queued.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from qgis.PyQt.QtCore import QObject, pyqtSignal

__all__ = ["BackgroundCall"]


class BackgroundCall(QObject):
    """Call ``fn()`` in a daemon thread; emit :attr:`done` with ``(result, None)`` or ``(None, exception)``.

    Keep a reference to the object until :attr:`done` arrives.

    Args:
        fn: The blocking call.
        name: Thread name (for debugging).
        parent: Qt parent.
    """

    done = pyqtSignal(object, object)

    def __init__(self, fn: Callable[[], Any], name: str = "regionlens-background", parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.running = False

    def start(self) -> BackgroundCall:
        """Start the thread; returns ``self``."""
        self.running = True
        self._thread.start()
        return self

    def _run(self) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = self._fn()
        except Exception as exc:  # handed to the GUI thread, which shows it
            error = exc
        self.running = False
        with contextlib.suppress(RuntimeError):  # the receiver was deleted meanwhile
            self.done.emit(result, error)
