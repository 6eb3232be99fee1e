"""The backend worker the QGIS plugin talks to: JSON lines on stdin and stdout.

Start it as ``<backend venv python> -m backend.worker``; see ``docs/protocol.md`` for the requests and
events. The protocol owns file descriptor 1: everything else that Python or a C library prints goes to
stderr, which the plugin keeps and shows on failure. Jobs run in a thread so that ``cancel`` is read
while a job runs; a cancelled job stops at its next progress point and writes nothing.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from backend import __version__
from backend.errors import Cancelled, ConfigError, RegionLensError
from backend.progress import Progress

__all__ = ["Worker", "jsonable", "main", "parse_request"]


#: Actions that start a job (one at a time, in a thread).
JOB_ACTIONS = ("run", "cluster", "predict", "apply", "similar", "report", "sleep", "info")
#: Actions answered at once.
CONTROL_ACTIONS = ("ping", "cancel", "shutdown")


#: The modules each heavy job imports (torch, GDAL, scikit-learn: seconds on a first import), imported up
#: front while progress is reported and a cancel is watched.
_RUN_MODULES = ("torch", "backend.pipeline", "backend.io.city", "backend.models", "backend.views.build",
                "backend.tasks.clustering", "backend.tasks.prediction", "backend.tasks.targets")
_JOB_MODULES = {"run": _RUN_MODULES, "apply": (*_RUN_MODULES, "backend.jobs"),
                "cluster": ("backend.jobs", "backend.io.vectors", "backend.tasks.clustering"),
                "predict": ("backend.jobs", "backend.io.vectors", "backend.io.labels", "backend.tasks.prediction",
                            "backend.tasks.targets"),
                "similar": ("backend.jobs", "backend.io.vectors", "backend.tasks.similar"),
                "report": ("backend.jobs", "backend.viz.report")}


class ProtocolError(ValueError):
    """A request line that is not a valid request; answered with an ``error`` of kind ``protocol``."""


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become ``None`` (JSON has no NaN or Infinity),
    numpy scalars and arrays become numbers and lists, mapping keys strings, anything else its ``str``."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array, without importing numpy
        return jsonable(value.tolist())
    return str(value)


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON")


def parse_request(line: bytes | str) -> tuple[Any, str, dict[str, Any]]:
    """Parse one request line into ``(id, action, params)``.

    Raises:
        ProtocolError: Whatever is wrong with the line: not UTF-8, not JSON (NaN and Infinity
            included), nested too deeply, not an object, a missing or non-text action, an unknown
            action, an ``id`` that is not a string or an integer (or missing where a reply is due), or
            ``params`` that are not an object. ``args[1]`` holds the request's id when it is usable.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"the line is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        req = json.loads(line, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ProtocolError("the JSON is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity constant
        raise ProtocolError(f"not JSON ({exc})") from exc
    if not isinstance(req, dict):
        raise ProtocolError(f"a request must be a JSON object, not {type(req).__name__}")
    req_id = req.get("id")
    id_ok = req_id is None or (isinstance(req_id, str | int) and not isinstance(req_id, bool))
    action = req.get("action")
    reply_id = req_id if id_ok else None
    if not id_ok:
        raise ProtocolError(f"'id' must be a string or an integer, not {type(req_id).__name__}", reply_id)
    if not isinstance(action, str):
        got = "missing" if action is None else f"a {type(action).__name__}"
        raise ProtocolError(f"'action' must be one of {[*CONTROL_ACTIONS, *JOB_ACTIONS]}, got {got}", reply_id)
    if action not in JOB_ACTIONS and action not in CONTROL_ACTIONS:
        raise ProtocolError(f"Unknown action '{action}'; use one of {[*CONTROL_ACTIONS, *JOB_ACTIONS]}", reply_id)
    if req_id is None and action not in ("cancel", "shutdown"):
        raise ProtocolError(f"'{action}' needs an 'id' (a string or an integer) to answer to", None)
    params = req.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(f"'params' must be a JSON object, not {type(params).__name__}", reply_id)
    return req_id, action, params

#: Seconds a job gets to stop by itself after SIGTERM before its unfinished output is removed for it.
TERM_GRACE = 5.0


class Worker:
    """Reads requests, runs one job at a time in a thread, writes events."""

    def __init__(self, out_fd: int) -> None:
        self._fd = out_fd
        self._lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._progress: Progress | None = None
        self._state = threading.Lock()  # guards _busy
        self._busy = False  # a job runs and has not written its final event yet

    # ------------------------------------------------------------------------------------- events
    def emit(self, event: dict[str, Any]) -> None:
        """Write one event as one line of strict JSON, atomically with respect to other threads.

        Non-finite numbers are written as ``null``; an event that still cannot be written becomes an
        ``error`` event of kind ``internal`` for the same id, so no job ends without a final event.
        """
        try:
            text = json.dumps(jsonable(event), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            text = json.dumps({"id": jsonable(event.get("id")), "event": "error", "kind": "internal",
                               "message": f"The backend could not write its '{event.get('event')}' event: {exc}",
                               "traceback": ""})
        data = (text + "\n").encode("utf-8", errors="backslashreplace")
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def _progress_for(self, req_id: Any) -> Progress:
        last = {"t": 0.0, "stage": None}

        def on_progress(stage: str, fraction: float, message: str) -> None:
            now = time.monotonic()
            if stage != last["stage"] or message or now - last["t"] >= 0.1:
                last.update(t=now, stage=stage)
                self.emit({"id": req_id, "event": "progress", "stage": stage,
                           "fraction": round(fraction, 4), "message": message})

        def on_log(message: str) -> None:
            self.emit({"id": req_id, "event": "log", "level": "info", "message": message})

        return Progress(callback=on_progress, log_callback=on_log)

    # --------------------------------------------------------------------------------------- jobs
    def _run_job(self, req_id: Any, action: str, params: dict[str, Any], progress: Progress) -> None:
        try:
            result = self._dispatch(action, params, progress)
            final = {"id": req_id, "event": "result", "result": result}
        except Cancelled as exc:
            final = {"id": req_id, "event": "error", "kind": "cancelled", "message": str(exc), "traceback": ""}
        except RegionLensError as exc:
            final = {"id": req_id, "event": "error", "kind": exc.kind, "message": str(exc),
                     "traceback": traceback.format_exc()}
        except MemoryError:
            final = {"id": req_id, "event": "error", "kind": "memory",
                     "message": "The backend ran out of memory; use fewer regions, smaller chips or a smaller model.",
                     "traceback": traceback.format_exc()}
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the plugin as an event
            final = {"id": req_id, "event": "error", "kind": "internal", "message": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        with self._state:  # a request read after the final event finds the worker idle
            self.emit(final)
            self._busy = False

    def _dispatch(self, action: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        if action in _JOB_MODULES:  # the first import of torch and GDAL takes seconds
            progress.stage("start", 0.0, 0.0)
            for module in _JOB_MODULES[action]:
                progress.wait(lambda module=module: importlib.import_module(module), "loading the backend")
        if action == "run":
            from backend.config import config_from_dict
            from backend.pipeline import run_pipeline

            cfg = config_from_dict(params)
            return run_pipeline(cfg, progress).to_dict()
        if action == "apply":
            from backend.jobs import run_apply_job

            return run_apply_job(params, progress)
        if action in {"cluster", "predict", "similar", "report"}:
            from backend.jobs import run_cluster_job, run_predict_job, run_report_job, run_similar_job

            job = {"cluster": run_cluster_job, "predict": run_predict_job, "similar": run_similar_job,
                   "report": run_report_job}[action]
            return job(params, progress)
        if action == "sleep":
            return _sleep(params, progress)
        if action == "info":
            return info(params.get("model"))
        raise RegionLensError(f"Unknown action '{action}'.")

    # ---------------------------------------------------------------------------------- main loop
    def handle(self, line: bytes | str) -> bool:
        """Handle one request line; returns False when the worker should exit. Never raises."""
        try:
            return self._handle(line)
        except ProtocolError as exc:
            req_id = exc.args[1] if len(exc.args) > 1 else None
            self.emit({"id": req_id, "event": "error", "kind": "protocol", "message": f"Bad request: {exc.args[0]}",
                       "traceback": ""})
        except Exception as exc:  # noqa: BLE001 - the worker keeps serving whatever a line does
            self.emit({"id": None, "event": "error", "kind": "internal",
                       "message": f"The request could not be handled: {type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()})
        return True

    def _handle(self, line: bytes | str) -> bool:
        req_id, action, params = parse_request(line)
        with self._state:
            running = self._busy
        if action == "ping":
            self.emit({"id": req_id, "event": "result", "result": {"pong": True, "version": __version__}})
        elif action == "cancel":
            if running and self._progress is not None:
                self._progress.cancel()
                message = "Cancelling the running job; it ends with an error of kind 'cancelled'."
            else:
                message = "No job is running; there was nothing to cancel."
            self.emit({"id": req_id, "event": "result", "result": {"cancelling": running, "message": message}})
        elif action == "shutdown":
            return False
        else:
            if running:
                self.emit({"id": req_id, "event": "error", "kind": "busy",
                           "message": "A job is already running; cancel it or wait.", "traceback": ""})
                return True
            progress = self._progress_for(req_id)
            self._progress = progress
            self._busy = True
            self._job = threading.Thread(target=self._run_job, args=(req_id, action, params, progress), daemon=True)
            self._job.start()
        return True

    def serve(self, stdin: Any) -> None:
        """Read requests (bytes, one per line) until ``shutdown`` or end of input, then cancel and join any job.

        Lines are read as bytes and decoded here, so input that is not UTF-8 is answered like any
        other bad request instead of breaking the reader.
        """
        self.emit({"id": None, "event": "ready", "version": __version__, "pid": os.getpid()})
        try:
            for line in stdin:
                if line.strip() and not self.handle(line):
                    break
        except SystemExit:  # SIGTERM (see main): stop the job, and remove its output if it cannot
            self.stop(TERM_GRACE)
            raise
        self.stop(30.0)

    def stop(self, timeout: float) -> None:
        """Cancel any job and wait up to ``timeout`` s; a job still running then loses its unfinished output."""
        if self._progress is not None:
            self._progress.cancel()
        if self._job is not None:
            self._job.join(timeout=timeout)
            if self._job.is_alive():
                outputs = sys.modules.get("backend.io.outputs")
                if outputs is not None:
                    outputs.remove_active_staging()


def _sleep(params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The ``sleep`` job: ``params["seconds"]`` (a number, 0 to 86,400) of cancellable progress."""
    seconds = params.get("seconds", 1.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 86_400:
        raise ConfigError(f"sleep: 'seconds' must be a number from 0 to 86400, got {seconds!r}.")
    unknown = sorted(set(params) - {"seconds"})
    if unknown:
        raise ConfigError(f"sleep: unknown parameters {unknown}; allowed: ['seconds'].")
    progress.stage("sleep", 0.0, 1.0)
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        progress.update(elapsed / seconds, f"{elapsed:.1f} s")
        time.sleep(0.1)
    progress.update(1.0, "done")
    return {"slept": seconds}


def info(model: str | None = None) -> dict[str, Any]:
    """Versions, the device ``auto`` resolves to, and the available methods with their defaults.

    With ``model`` (a saved model's folder): only ``{"model": ...}``, what that model is and which
    inputs it needs (``backend.models.describe_saved_model``), without importing torch for new models.
    """
    if model:
        from backend.models import describe_saved_model

        return {"model": describe_saved_model(str(model))}
    import platform

    import torch

    from backend.config import LIMITS
    from backend.device import resolve_device
    from backend.models import EMBEDDERS
    from backend.tasks.context import CONTEXT_PRESETS

    return {
        "version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "device": resolve_device("auto"),
        "cuda": bool(torch.cuda.is_available()),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "methods": {name: cls.describe() for name, cls in EMBEDDERS.items()},
        "context_presets": CONTEXT_PRESETS,  # values of the run setting ``context`` besides {rings, distances_m}
        "limits": {name: list(bounds) for name, bounds in LIMITS.items()},  # inclusive ranges of numeric settings
    }


def main() -> int:
    """Entry point of ``python -m backend.worker``."""
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints (ours or a C library's) go to stderr, never into the protocol
    sys.stdout = sys.stderr
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        Worker(out_fd).serve(sys.stdin.buffer)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the worker like ``shutdown``: the job is cancelled and leaves nothing behind."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
