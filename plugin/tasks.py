"""Background runs: parameters dataclass -> ``RunTask`` (a QgsTask) -> one of three result classes.

One function drives the worker for every job the plugin sends, :func:`run_worker_job`: it starts the
worker, sends one request, hands its events to a callback, cancels it when asked and always stops it,
and returns a :data:`RunOutcome`. It blocks; :class:`RunTask` calls it in a QGIS task thread (the run
dock's ``run``, the Apply dialog's ``apply``), the Processing algorithms call it in their own thread
(plugin/processing/_base.py ``run_backend``), and ``info`` requests use it too.

``RunTask.run`` executes in a QGIS task thread: it runs the parameters' action (``run`` by default),
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
    "run_info",
    "run_worker_job",
]

#: Message-log tab of the plugin.
LOG_TAG = "RegionLens"
#: The plugin folder (working directory of the worker, so that ``-m backend.worker`` imports).
PLUGIN_ROOT = Path(__file__).resolve().parent.parent
#: What a cancelled run says.
RUN_CANCELLED = "The run was cancelled; nothing was written."


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
    action: str = "run"  # the worker action (docs/protocol.md)
    cancelled_message: str = RUN_CANCELLED  # what a cancelled job says

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
    traceback: str = ""  # the worker's traceback alone
    stderr: str = ""  # the worker's error output alone


@dataclass
class RunCancelled:
    """The user cancelled the run; nothing was written."""

    message: str = RUN_CANCELLED


RunOutcome = Union[RunSucceeded, RunFailed, RunCancelled]


def run_worker_job(
    python: Path,
    action: str,
    params: dict[str, Any],
    *,
    plugin_root: Path = PLUGIN_ROOT,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    on_stderr: Callable[[str], None] | None = None,
    on_client: Callable[[WorkerClient], None] | None = None,
    start_timeout: float = 120.0,
    cancel_grace: float = 5.0,
    idle_timeout: float | None = None,
    cancelled_message: str = RUN_CANCELLED,
) -> RunOutcome:
    """Start the worker, run one job to its end, stop the worker (blocking; never raises).

    Args:
        python: The backend venv's interpreter.
        action: ``run``, ``apply``, ``cluster``, ``predict`` or ``info`` (docs/protocol.md).
        params: The request's parameters (absolute paths).
        plugin_root: The worker's working directory.
        on_event: Called (in this thread) with every ``progress`` and ``log`` event.
        is_cancelled: Polled while the job runs; True cancels it (killed after ``cancel_grace`` seconds).
        on_stderr: Called with each line of the worker's error output.
        on_client: Called with the started worker's client (its pid, for the caller's bookkeeping).
        start_timeout: Seconds the worker gets to start (the first torch import is slow).
        cancel_grace: Seconds a cancelled job gets to stop before the worker is killed.
        idle_timeout: Kill the worker after this many seconds without an event (None: never).
        cancelled_message: The :class:`RunCancelled` message.

    Returns:
        :class:`RunSucceeded` with the worker's result, :class:`RunCancelled`, or :class:`RunFailed`
        (the worker's error, its death, or an unexpected exception, with traceback and error output).
    """
    if is_cancelled is not None and is_cancelled():
        return RunCancelled(cancelled_message)
    started = time.monotonic()
    client = WorkerClient(python, plugin_root, on_stderr=on_stderr)
    try:
        if on_client is not None:
            on_client(client)
        client.start(timeout=start_timeout)
        if is_cancelled is not None and is_cancelled():
            return RunCancelled(cancelled_message)
        result = client.run_job(action, params, on_event=on_event, is_cancelled=is_cancelled,
                                idle_timeout=idle_timeout, cancel_grace=cancel_grace)  # fmt: skip
        seconds = result.get("seconds") if isinstance(result, dict) else None
        return RunSucceeded(
            result=result,
            device=str(result.get("device", "unknown")) if isinstance(result, dict) else "unknown",
            seconds=float(seconds) if isinstance(seconds, (int, float)) else time.monotonic() - started,
        )
    except WorkerCancelled:
        return RunCancelled(cancelled_message)
    except WorkerError as exc:
        return RunFailed(exc.kind, exc.message, _join(exc.traceback, exc.stderr), exc.traceback, exc.stderr)
    except WorkerDied as exc:
        return RunFailed("died", exc.message, exc.stderr, "", exc.stderr)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome, never an exception
        return RunFailed("internal", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    finally:
        client.close(timeout=cancel_grace)


def run_info(python: Path, params: dict[str, Any] | None = None, *, plugin_root: Path = PLUGIN_ROOT,
             timeout: float = 120.0, is_cancelled: Callable[[], bool] | None = None) -> RunOutcome:  # fmt: skip
    """Ask the worker ``info`` (docs/protocol.md) with :func:`run_worker_job`: its versions, device and methods,
    or with ``params={"model": <folder>}`` what a saved model is and needs. Blocking; never raises.

    Args:
        timeout: Seconds the worker gets to start, and then to answer (the first torch import is slow).
    """
    return run_worker_job(Path(python), "info", dict(params or {}), plugin_root=Path(plugin_root),
                          is_cancelled=is_cancelled, start_timeout=timeout, idle_timeout=timeout,
                          cancelled_message="cancelled")  # fmt: skip


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
        """Task thread: run the parameters' action with :func:`run_worker_job`; never touches the GUI."""
        params = self.params
        outcome = run_worker_job(
            params.backend_python, params.action, params.worker_config(), plugin_root=params.plugin_root,
            on_event=self._on_event, is_cancelled=self.isCanceled, on_stderr=self._log_stderr,
            on_client=self._set_client, start_timeout=params.start_timeout, cancel_grace=params.cancel_grace,
            idle_timeout=params.idle_timeout, cancelled_message=params.cancelled_message,
        )  # fmt: skip
        if isinstance(outcome, RunCancelled):
            return self._cancelled(outcome)
        self.outcome = outcome
        return isinstance(outcome, RunSucceeded)

    def _set_client(self, client: WorkerClient) -> None:
        self.client = client

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
