"""Ask the backend which methods it offers (``info``, docs/protocol.md) without blocking the GUI.

The first ``info`` imports torch in the worker (seconds), so it runs in a QgsTask; ``finished`` (main
thread) updates :data:`plugin.parameters.METHODS` and hands the answer, or the error, to a callback.
With ``params={"model": <folder>}`` the same request describes a saved model instead (what it is and
which inputs it needs); the registry is then left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsTask

from ..parameters import METHODS
from ..tasks import RunSucceeded, run_info

__all__ = ["BackendInfoTask"]


class BackendInfoTask(QgsTask):
    """Start the worker, ask ``info``, stop the worker.

    Args:
        python: The backend venv's interpreter.
        params: The request's parameters (``{"model": folder}`` to describe a saved model).
        on_finished: Called on the main thread with ``(info, error)``: the ``info`` answer (or
            ``None``) and an error message ("" on success).
        timeout: Seconds the worker gets to start and answer.
    """

    def __init__(
        self,
        python: Path,
        on_finished: Callable[[dict[str, Any] | None, str], None] | None = None,
        timeout: float = 120.0,
        params: dict[str, Any] | None = None,
    ) -> None:
        what = "a saved model" if params and params.get("model") else "its methods"
        super().__init__(f"RegionLens: asking the backend about {what}", QgsTask.Flag.CanCancel)
        self.python = Path(python)
        self.params = dict(params or {})
        self.on_finished = on_finished
        self.timeout = timeout
        self.info: dict[str, Any] | None = None
        self.error = ""

    def run(self) -> bool:
        """Task thread: one ``info`` request."""
        outcome = run_info(self.python, self.params, timeout=self.timeout, is_cancelled=self.isCanceled)
        if isinstance(outcome, RunSucceeded):
            self.info = outcome.result
            return True
        self.error = outcome.message
        return False

    def finished(self, result: bool) -> None:
        """Main thread: update the method registry, then call back."""
        if result and self.info is not None and "methods" in self.info:
            METHODS.update_from_info(self.info, self.python)  # (also cached for the Processing toolbox)
        elif not self.error:
            self.error = "cancelled" if self.isCanceled() else "no answer"
        if self.on_finished is not None:
            self.on_finished(self.info if result else None, self.error)
