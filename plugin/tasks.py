"""Background runs: parameters dataclass -> ``RunTask`` (a QgsTask) -> one of three result classes.

``RunTask.run`` executes in a QGIS task thread: it starts the backend worker, sends the ``run`` request,
turns progress events into ``setProgress`` and cancels the worker when the user cancels the task.
``RunTask.finished`` executes on the main thread and hands the result object to a callback; all GUI
work (loading layers, message bar) belongs there, never in ``run``.

A cancelled run is not a failure: ``run`` then returns ``True`` and the task's description says
"cancelled", so QGIS's own end-of-task notice (shown for tasks longer than a few seconds) does not
read "Task failed". The callback runs once QGIS has posted that notice (on the next event-loop
pass), so RegionLens's own message is the one on top of the message bar.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QTimer

from .worker_client import WorkerCancelled, WorkerClient, WorkerDied, WorkerError

__all__ = [
    "LOG_TAG",
    "PLUGIN_ROOT",
    "RunCancelled",
    "RunFailed",
    "RunOutcome",
    "RunParameters",
    "RunSucceeded",
    "RunTask",
]

#: Message-log tab of the plugin.
LOG_TAG = "RegionLens"
#: The plugin folder (working directory of the worker, so that ``-m backend.worker`` imports).
PLUGIN_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunParameters:
    """Everything a background run needs."""

    backend_python: Path  # interpreter of the backend venv (see worker_client.find_backend_python)
    config: dict[str, Any]  # run configuration as in backend/config.py, with absolute paths
    output_dir: Path  # folder the run writes to; replaces config["output_dir"]
    plugin_root: Path = PLUGIN_ROOT  # working directory of the worker
    start_timeout: float = 120.0  # seconds for the worker to start (first torch import is slow)
    cancel_grace: float = 5.0  # seconds a cancelled run gets to stop before the worker is killed
    idle_timeout: float | None = None  # kill the worker after this many seconds without an event

    def worker_config(self) -> dict[str, Any]:
        """The configuration sent to the worker."""
        return {**self.config, "output_dir": str(Path(self.output_dir).resolve())}


@dataclass
class RunSucceeded:
    """The run finished; ``result`` is the worker's result (docs/protocol.md)."""

    result: dict[str, Any]  # output_dir, gpkg, run_json, figures, metrics, device, seconds, ...
    device: str  # device that actually ran (cpu, cuda, mps)
    seconds: float  # wall time of the run

    @property
    def gpkg(self) -> Path:
        """The run's GeoPackage."""
        return Path(self.result["gpkg"])


@dataclass
class RunFailed:
    """The run failed; ``message`` is for the user, ``details`` for the log."""

    kind: str  # input, config, output, memory, internal, died, startup, timeout, ...
    message: str
    details: str = ""  # traceback and the worker's last stderr lines


@dataclass
class RunCancelled:
    """The user cancelled the run; nothing was written."""

    message: str = "The run was cancelled; nothing was written."


RunOutcome = Union[RunSucceeded, RunFailed, RunCancelled]


@dataclass
class _Status:
    """Latest progress, readable from the main thread."""

    stage: str = ""
    message: str = ""
    log: list[str] = field(default_factory=list)


class RunTask(QgsTask):
    """Run the backend on one configuration in the background.

    Args:
        params: What to run.
        on_finished: Called on the main thread with the :data:`RunOutcome`.
        description: Shown in QGIS's task manager.
    """

    def __init__(
        self,
        params: RunParameters,
        on_finished: Callable[[RunOutcome], None] | None = None,
        description: str = "RegionLens run",
    ) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.params = params
        self.on_finished = on_finished
        self.outcome: RunOutcome | None = None
        self.status = _Status()
        self.client: WorkerClient | None = None  # the running worker's client (set in run())

    @property
    def worker_pid(self) -> int | None:
        """Process id of the backend worker while the task runs (``None`` before it starts)."""
        client = self.client
        return client.pid if client is not None else None

    def run(self) -> bool:
        """Task thread: start the worker, run, map events; never touches the GUI."""
        if self.isCanceled():
            return self._cancelled(RunCancelled())
        started = time.monotonic()
        client = WorkerClient(self.params.backend_python, self.params.plugin_root, on_stderr=self._log_stderr)
        self.client = client
        try:
            client.start(timeout=self.params.start_timeout)
            result = client.run_job(
                "run",
                self.params.worker_config(),
                on_event=self._on_event,
                is_cancelled=self.isCanceled,
                idle_timeout=self.params.idle_timeout,
                cancel_grace=self.params.cancel_grace,
            )
            seconds = result.get("seconds")
            self.outcome = RunSucceeded(
                result=result,
                device=str(result.get("device", "unknown")),
                seconds=float(seconds) if isinstance(seconds, (int, float)) else time.monotonic() - started,
            )
            return True
        except WorkerCancelled:
            return self._cancelled(RunCancelled())
        except WorkerError as exc:
            self.outcome = RunFailed(exc.kind, exc.message, _join(exc.traceback, exc.stderr))
        except WorkerDied as exc:
            self.outcome = RunFailed("died", exc.message, exc.stderr)
        except Exception as exc:  # a task must report every failure, not raise it
            self.outcome = RunFailed("internal", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            client.close(timeout=self.params.cancel_grace)
        return False

    def _cancelled(self, outcome: RunCancelled) -> bool:
        """Record a cancelled run; ``True`` for ``run`` to return (QGIS must not call it a failure)."""
        self.outcome = outcome
        if "cancelled" not in self.description():
            self.setDescription(f"{self.description()} (cancelled)")
        return True

    def finished(self, result: bool) -> None:
        """Main thread: log a failure; hand the outcome to the callback on the next event-loop pass."""
        if self.outcome is None:  # cancelled before it started, or run() never ran
            self.outcome = (
                RunCancelled() if self.isCanceled() else RunFailed("internal", "The task ended without a result.")
            )
        if isinstance(self.outcome, RunFailed):
            details = f"\n{self.outcome.details}" if self.outcome.details else ""
            QgsMessageLog.logMessage(f"{self.outcome.message}{details}", LOG_TAG, Qgis.MessageLevel.Critical)
        callback, outcome = self.on_finished, self.outcome
        if callback is not None:
            # QGIS posts its "Task complete"/"Task failed" notice right after finished(); report after it.
            QTimer.singleShot(0, lambda: callback(outcome))

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.status.stage = str(event.get("stage", ""))  # before setProgress: its listeners read it
            self.status.message = str(event.get("message", ""))
            fraction = event.get("fraction")
            if isinstance(fraction, (int, float)):
                self.setProgress(100.0 * min(max(float(fraction), 0.0), 1.0))
        elif kind == "log":
            message = str(event.get("message", ""))
            self.status.log.append(message)
            level = Qgis.MessageLevel.Warning if event.get("level") == "warning" else Qgis.MessageLevel.Info
            QgsMessageLog.logMessage(message, LOG_TAG, level)

    @staticmethod
    def _log_stderr(line: str) -> None:
        if line.strip():
            QgsMessageLog.logMessage(line, f"{LOG_TAG} worker", Qgis.MessageLevel.Info)


def _join(*parts: str) -> str:
    return "\n".join(part for part in parts if part)
