"""The backend worker the QGIS plugin talks to: JSON lines on stdin and stdout.

Start it as ``<backend venv python> -m backend.worker``; see ``docs/protocol.md`` for the requests and
events. The protocol owns file descriptor 1: everything else that Python or a C library prints goes to
stderr, which the plugin keeps and shows on failure. Jobs run in a thread so that ``cancel`` is read
while a job runs; a cancelled job stops at its next progress point and writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from backend import __version__
from backend.errors import Cancelled, RegionLensError
from backend.progress import Progress

__all__ = ["Worker", "main"]

#: Seconds a job gets to stop by itself after SIGTERM before its unfinished output is removed for it.
TERM_GRACE = 5.0


class Worker:
    """Reads requests, runs one job at a time in a thread, writes events."""

    def __init__(self, out_fd: int) -> None:
        self._fd = out_fd
        self._lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._progress: Progress | None = None

    # ------------------------------------------------------------------------------------- events
    def emit(self, event: dict[str, Any]) -> None:
        """Write one event as one line, atomically with respect to other threads."""
        data = (json.dumps(event, default=str) + "\n").encode("utf-8")
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
            self.emit({"id": req_id, "event": "result", "result": result})
        except Cancelled as exc:
            self.emit({"id": req_id, "event": "error", "kind": "cancelled", "message": str(exc), "traceback": ""})
        except RegionLensError as exc:
            self.emit({"id": req_id, "event": "error", "kind": exc.kind, "message": str(exc),
                       "traceback": traceback.format_exc()})
        except MemoryError:
            self.emit({"id": req_id, "event": "error", "kind": "memory",
                       "message": "The backend ran out of memory; use fewer regions, smaller chips or a smaller model.",
                       "traceback": traceback.format_exc()})
        except Exception as exc:  # noqa: BLE001 - every failure must reach the plugin as an event
            self.emit({"id": req_id, "event": "error", "kind": "internal",
                       "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})

    def _dispatch(self, action: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        if action == "run":
            from backend.config import config_from_dict
            from backend.pipeline import run_pipeline

            cfg = config_from_dict(params)
            return run_pipeline(cfg, progress).to_dict()
        if action == "apply":
            from backend.jobs import run_apply_job

            return run_apply_job(params, progress)
        if action in {"cluster", "predict"}:
            from backend.jobs import run_cluster_job, run_predict_job

            return (run_cluster_job if action == "cluster" else run_predict_job)(params, progress)
        if action == "sleep":
            seconds = float(params.get("seconds", 1.0))
            progress.stage("sleep", 0.0, 1.0)
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                progress.update(elapsed / seconds, f"{elapsed:.1f} s")
                time.sleep(0.1)
            progress.update(1.0, "done")
            return {"slept": seconds}
        if action == "info":
            return info(params.get("model"))
        raise RegionLensError(f"Unknown action '{action}'.")

    # ---------------------------------------------------------------------------------- main loop
    def handle(self, line: str) -> bool:
        """Handle one request line; returns False when the worker should exit."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("a request must be a JSON object")
        except ValueError as exc:
            self.emit({"id": None, "event": "error", "kind": "protocol", "message": f"Bad request: {exc}",
                       "traceback": ""})
            return True
        req_id, action = req.get("id"), req.get("action")
        if action == "ping":
            self.emit({"id": req_id, "event": "result", "result": {"pong": True, "version": __version__}})
        elif action == "cancel":
            if self._progress is not None:
                self._progress.cancel()
        elif action == "shutdown":
            return False
        elif action in {"run", "cluster", "predict", "apply", "sleep", "info"}:
            if self._job is not None and self._job.is_alive():
                self.emit({"id": req_id, "event": "error", "kind": "busy",
                           "message": "A job is already running; cancel it or wait.", "traceback": ""})
                return True
            progress = self._progress_for(req_id)
            self._progress = progress
            self._job = threading.Thread(target=self._run_job, args=(req_id, action, req.get("params") or {}, progress),
                                         daemon=True)
            self._job.start()
        else:
            self.emit({"id": req_id, "event": "error", "kind": "protocol", "message": f"Unknown action '{action}'.",
                       "traceback": ""})
        return True

    def serve(self, stdin: Any) -> None:
        """Read requests until ``shutdown`` or end of input, then cancel and join any job."""
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

    from backend.device import resolve_device
    from backend.models import EMBEDDERS

    return {
        "version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "device": resolve_device("auto"),
        "cuda": bool(torch.cuda.is_available()),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "methods": {name: cls.describe() for name, cls in EMBEDDERS.items()},
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
        Worker(out_fd).serve(sys.stdin)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the worker like ``shutdown``: the job is cancelled and leaves nothing behind."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
