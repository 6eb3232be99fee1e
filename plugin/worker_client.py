"""Client for the backend worker process (``python -m backend.worker``, protocol in docs/protocol.md).

The worker runs in the backend virtual environment (torch, geopandas, ...), never inside QGIS. This
module starts it by the explicit path of that environment's interpreter, with a scrubbed environment,
and talks JSON lines over its stdin/stdout. Two daemon threads read the worker's stdout (protocol
events, queued) and stderr (kept in a bounded buffer and shown when something fails), so no call here
blocks the caller for longer than the timeout it was given.

Typical use (from a QgsTask's ``run``)::

    client = WorkerClient(python, cwd=plugin_root)
    client.start()
    try:
        result = client.run_job("run", config, on_event=..., is_cancelled=task.isCanceled)
    finally:
        client.close()

Pure Python apart from :func:`find_backend_python` (which reads QGIS settings lazily).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess  # nosec B404 # needed to start the backend worker (explicit interpreter, no shell)
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SCRUBBED_ENV_VARS",
    "TEXT_OUTPUT",
    "WorkerClient",
    "WorkerException",
    "WorkerError",
    "WorkerCancelled",
    "WorkerDied",
    "build_worker_env",
    "describe_exit",
    "find_backend_python",
    "venv_python",
]

#: How the plugin reads every child process's output (the worker, installers, probes): text, UTF-8, with
#: undecodable bytes replaced (a tool's odd byte must not end the read).
TEXT_OUTPUT: dict[str, Any] = {"text": True, "encoding": "utf-8", "errors": "replace"}

#: Variables QGIS (or OSGeo4W, or a shell) may set that break the backend venv's own libraries:
#: an old PROJ_LIB makes rasterio/pyproj read the wrong proj.db, PYTHONPATH/PYTHONHOME mix QGIS's
#: site-packages into the venv, VIRTUAL_ENV confuses tools that look at it.
SCRUBBED_ENV_VARS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PROJ_LIB",
    "PROJ_DATA",
    "GDAL_DATA",
    "GDAL_DRIVER_PATH",
    "GDAL_PAM_PROXY_DIR",
    "VIRTUAL_ENV",
)

_EOF = object()  # queued by the stdout reader when the worker's stdout closes
_KILLED_CODES = (-9, 137)  # SIGKILL as Popen reports it, and as a shell reports it (128 + 9)


class WorkerException(Exception):
    """Base class of everything :class:`WorkerClient` raises on purpose."""


class WorkerError(WorkerException):
    """The worker reported an ``error`` event (or could not be started, or went silent).

    Attributes:
        kind: ``input``, ``config``, ``output``, ``busy``, ``protocol``, ``internal`` (from the
            worker), or ``startup`` / ``timeout`` (raised by this client).
        message: Human-readable message, meant for the user.
        traceback: The worker's Python traceback, if any.
        stderr: The last lines the worker wrote to stderr.
    """

    def __init__(self, kind: str, message: str, traceback: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.stderr = stderr


class WorkerCancelled(WorkerException):
    """The job ended because it was cancelled (gracefully, or by killing the worker)."""

    def __init__(self, message: str = "The job was cancelled.") -> None:
        super().__init__(message)
        self.message = message


class WorkerDied(WorkerException):
    """The worker process exited without answering the request.

    Attributes:
        returncode: Exit status (negative: killed by that signal on POSIX; ``None`` if unknown).
        stderr: The last lines the worker wrote to stderr.
    """

    def __init__(self, returncode: int | None, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        self.message = describe_exit(returncode, stderr)
        super().__init__(self.message)


def describe_exit(returncode: int | None, stderr: str = "", max_lines: int = 15) -> str:
    """Explain a worker's exit status in words, with the last lines of its stderr.

    Args:
        returncode: The process's exit status.
        stderr: Its error output (only the last ``max_lines`` lines are quoted).
        max_lines: How many stderr lines to quote.

    Returns:
        e.g. ``"the worker was killed (exit -9), most likely out of memory"``.
    """
    if returncode in _KILLED_CODES:
        text = f"the worker was killed (exit {returncode}), most likely out of memory"
    elif returncode is None:
        text = "the worker stopped answering (its output closed)"
    else:
        text = f"the worker stopped unexpectedly (exit {returncode})"
    tail = [line for line in stderr.splitlines() if line.strip()][-max_lines:]
    if tail:
        text += "\nLast lines of its error output:\n" + "\n".join(tail)
    return text


def build_worker_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the worker: ``base`` (default ``os.environ``) minus :data:`SCRUBBED_ENV_VARS`.

    Also sets ``PYTHONUNBUFFERED=1`` (events must not sit in a buffer) and ``PYTHONIOENCODING=utf-8``
    (the pipes are read as UTF-8 on every platform).
    """
    source = os.environ if base is None else base
    drop = {name.upper() for name in SCRUBBED_ENV_VARS}
    env = {key: value for key, value in source.items() if key.upper() not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def venv_python(venv_dir: str | Path) -> Path:
    """Path of the interpreter inside a virtual environment folder (Windows or POSIX layout)."""
    venv = Path(venv_dir)
    return venv / "Scripts" / "python.exe" if os.name == "nt" else venv / "bin" / "python"


def find_backend_python(plugin_root: str | Path | None = None) -> Path | None:
    """Locate the backend venv's interpreter.

    Looked up in this order, the first that exists wins:

    1. the QgsSettings value ``regionlens/backend_python`` (set by the user or the installer);
    2. ``<plugin root>/.venv/backend`` (a development checkout);
    3. ``<QGIS settings dir>/regionlens/venv`` (the per-user environment the installer creates).

    The path is returned as is, never resolved: a venv's ``bin/python`` is a symlink, and only the
    link makes Python pick up the venv's site-packages.

    Args:
        plugin_root: The plugin folder; defaults to the folder this package lives in.

    Returns:
        The interpreter path, or ``None`` when none of the candidates exists.
    """
    from qgis.core import QgsApplication

    from .settings import Setting

    root = Path(plugin_root) if plugin_root is not None else Path(__file__).resolve().parent.parent
    candidates: list[Path] = []
    configured = str(Setting.BACKEND_PYTHON.get() or "").strip()
    if configured:
        candidates.append(Path(configured).expanduser())
    candidates.append(venv_python(root / ".venv" / "backend"))
    candidates.append(venv_python(Path(QgsApplication.qgisSettingsDirPath()) / "regionlens" / "venv"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


class WorkerClient:
    """Start, drive and stop one backend worker process.

    Args:
        python: The backend venv's interpreter (explicit path; never ``sys.executable``).
        cwd: Working directory of the worker: the plugin root, so that ``-m backend.worker`` imports.
        env: Base environment (default ``os.environ``); it is always scrubbed with
            :func:`build_worker_env`.
        stderr_lines: How many of the worker's last stderr lines to keep.
        on_stderr: Called (from a reader thread) with every stderr line, e.g. to log it.
    """

    def __init__(
        self,
        python: str | Path,
        cwd: str | Path,
        env: Mapping[str, str] | None = None,
        stderr_lines: int = 400,
        on_stderr: Callable[[str], None] | None = None,
    ) -> None:
        self.python = Path(python)
        self.cwd = Path(cwd)
        self.env = build_worker_env(env)
        self.on_stderr = on_stderr
        self.ready: dict[str, Any] | None = None  # the worker's ``ready`` event (version, pid)
        self._proc: subprocess.Popen[str] | None = None
        self._events: queue.Queue[Any] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._threads: list[threading.Thread] = []
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._job_id: str | None = None
        self._job_done = threading.Event()
        self._job_done.set()  # no job running
        self._eof = False
        self._killed = False  # True once this client killed the process

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int | None:
        """Process id of the worker (``None`` before :meth:`start`)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the worker has exited, else ``None``."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the worker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stderr_text(self, max_lines: int | None = None) -> str:
        """The worker's recent stderr (and any non-protocol stdout), last ``max_lines`` lines."""
        lines = list(self._stderr)
        if max_lines is not None:
            lines = lines[-max_lines:]
        return "\n".join(lines)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start the worker and wait for its ``ready`` event.

        Args:
            timeout: Seconds to wait for ``ready`` (the first start imports torch; allow for it).

        Returns:
            The ``ready`` event (``version``, ``pid``).

        Raises:
            WorkerError: kind ``startup`` if the interpreter is missing, cannot be executed, or
                the worker is not ready within ``timeout`` (it is then killed).
            WorkerDied: If the worker exits before it is ready (e.g. an import error).
            RuntimeError: If this client was already started.
        """
        if self._proc is not None:
            raise RuntimeError("This WorkerClient was already started; create a new one.")
        if not self.python.is_file():
            raise WorkerError(
                "startup",
                f"The backend Python interpreter does not exist: {self.python}. "
                "Install the RegionLens backend or set its path in the plugin settings.",
            )
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: a kill takes its children too
        try:
            # Explicit interpreter path and argument list, no shell; the path is the backend venv's
            # interpreter chosen by the user or found by find_backend_python().
            self._proc = subprocess.Popen(  # nosec B603
                [str(self.python), "-m", "backend.worker"],
                cwd=str(self.cwd),
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=1,
                **TEXT_OUTPUT,
                **kwargs,
            )
        except OSError as exc:
            raise WorkerError("startup", f"Cannot start the backend worker ({self.python}): {exc}") from exc
        for name, stream, target in (
            ("stdout", self._proc.stdout, self._read_stdout),
            ("stderr", self._proc.stderr, self._read_stderr),
        ):
            thread = threading.Thread(target=target, args=(stream,), name=f"regionlens-worker-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerError(
                    "startup",
                    f"The backend worker did not report ready within {timeout:g} s; it was stopped.",
                    stderr=self.stderr_text(40),
                )
            event = self.next_event(min(remaining, 0.5))
            if event is not None and event.get("event") == "ready":
                self.ready = event
                return event

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to shut down, wait up to ``timeout`` seconds, then kill it. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(WorkerException):
                self._send({"id": self._new_id("shutdown"), "action": "shutdown"})
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join_readers()

    def kill(self) -> None:
        """Kill the worker (and its process group on POSIX) at once."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._killed = True
        try:
            if os.name != "nt":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except OSError:
            with contextlib.suppress(OSError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests and events

    def request(self, action: str, params: dict[str, Any] | None = None) -> str:
        """Send one request; return its id (the events that answer it carry the same id).

        Raises:
            WorkerDied: If the worker is not running (or its stdin is closed).
        """
        request_id = self._new_id()
        self._send({"id": request_id, "action": action, "params": params if params is not None else {}})
        return request_id

    def next_event(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Next event from the worker, or ``None`` if none arrives within ``timeout`` seconds.

        Raises:
            WorkerDied: Once the worker's stdout has closed and every event before it was read.
        """
        if self._eof:
            raise self._died()
        try:
            event = self._events.get(timeout=max(float(timeout), 0.0))
        except queue.Empty:
            return None
        if event is _EOF:
            self._eof = True
            raise self._died()
        return event

    def events(self, timeout: float = 1.0) -> Iterator[dict[str, Any]]:
        """Yield events as they arrive; stop when none arrives within ``timeout`` seconds.

        Raises:
            WorkerDied: If the worker exits.
        """
        while True:
            event = self.next_event(timeout)
            if event is None:
                return
            yield event

    def cancel(self, grace: float = 5.0) -> bool:
        """Ask the running job to stop; kill the worker if it has not ended within ``grace`` seconds.

        Safe to call from any thread. The job's final ``error`` (kind ``cancelled``) event stays in
        the event queue for whoever reads it (:meth:`run_job` turns it into :class:`WorkerCancelled`).

        Returns:
            True if the job ended by itself (or none was running), False if the worker was killed.
        """
        if not self.is_running:
            return True
        try:
            self._send({"id": self._new_id("cancel"), "action": "cancel"})
        except WorkerException:
            return True
        if self._job_done.wait(max(float(grace), 0.0)):
            return True
        self.kill()
        return False

    def run_job(
        self,
        action: str,
        params: dict[str, Any] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        idle_timeout: float | None = None,
        cancel_grace: float = 5.0,
        poll_interval: float = 0.1,
    ) -> dict[str, Any]:
        """Send a request and follow it to its end.

        Args:
            action: ``run``, ``sleep``, ``ping``, ``info`` (see docs/protocol.md).
            params: The request's parameters.
            on_event: Called with each ``progress`` and ``log`` event (in the calling thread).
            is_cancelled: Polled every ``poll_interval`` seconds; once it returns True the job is
                cancelled (``cancel`` request, then kill after ``cancel_grace`` seconds).
            idle_timeout: Kill the worker if it sends no event for this many seconds (None: never).
            cancel_grace: Seconds a cancelled job gets to stop by itself.
            poll_interval: Seconds between cancellation checks.

        Returns:
            The ``result`` object of the request's ``result`` event.

        Raises:
            WorkerError: On an ``error`` event (other than ``cancelled``), or kind ``timeout``.
            WorkerCancelled: If the job was cancelled (by ``is_cancelled`` or by anyone else).
            WorkerDied: If the worker exits before the job ends.
        """
        request_id = self._new_id()
        self._job_id = request_id
        self._job_done.clear()
        try:
            self._send({"id": request_id, "action": action, "params": params if params is not None else {}})
            cancelled = False
            last_event = time.monotonic()
            while True:
                if not cancelled and is_cancelled is not None and is_cancelled():
                    cancelled = True
                    self.cancel(grace=cancel_grace)
                try:
                    event = self.next_event(poll_interval)
                except WorkerDied as died:
                    if cancelled or self._killed:  # we (or cancel()/close() in another thread) stopped it
                        raise WorkerCancelled("The job was cancelled; the worker was stopped.") from died
                    raise
                now = time.monotonic()
                if event is None:
                    if idle_timeout is not None and not cancelled and now - last_event > idle_timeout:
                        self.kill()
                        raise WorkerError(
                            "timeout",
                            f"The worker sent nothing for {idle_timeout:g} s and was stopped.",
                            stderr=self.stderr_text(40),
                        )
                    continue
                last_event = now
                kind = event.get("event")
                if event.get("id") != request_id:
                    if kind == "log" and on_event is not None:
                        on_event(event)  # unsolicited log lines (id null) are still worth showing
                    continue
                if kind == "result":
                    if cancelled:
                        raise WorkerCancelled()
                    result = event.get("result")
                    return result if isinstance(result, dict) else {"value": result}
                if kind == "error":
                    message = str(event.get("message", ""))
                    if cancelled or event.get("kind") == "cancelled":
                        raise WorkerCancelled(message or "The job was cancelled.")
                    raise WorkerError(
                        str(event.get("kind", "internal")),
                        message,
                        str(event.get("traceback", "") or ""),
                        self.stderr_text(40),
                    )
                if on_event is not None:
                    on_event(event)
        finally:
            self._job_id = None
            self._job_done.set()

    # ------------------------------------------------------------------ internals

    def _new_id(self, prefix: str = "r") -> str:
        return f"{prefix}{next(self._ids)}"

    def _send(self, message: dict[str, Any]) -> None:
        """Write one request as one line, in one write call, and flush."""
        proc = self._proc
        if proc is None:
            raise WorkerError("protocol", "The worker has not been started.")
        line = json.dumps(message, ensure_ascii=False) + "\n"
        with self._write_lock:
            if proc.poll() is not None or proc.stdin is None or proc.stdin.closed:
                raise self._died()
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (OSError, ValueError) as exc:  # BrokenPipeError, or stdin closed meanwhile
                raise self._died() from exc

    def _died(self) -> WorkerDied:
        """Build the WorkerDied for a worker whose stdout closed (waits briefly for its exit)."""
        proc = self._proc
        returncode = None
        if proc is not None:
            try:
                returncode = proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:  # stdout closed but still alive: stop it for good
                self.kill()
                returncode = proc.poll()
        for thread in self._threads[1:]:  # let the stderr reader catch the last lines
            thread.join(timeout=1.0)
        return WorkerDied(returncode, self.stderr_text(40))

    def _note_event(self, event: dict[str, Any]) -> None:
        if event.get("event") in ("result", "error") and event.get("id") == self._job_id:
            self._job_done.set()

    def _read_stdout(self, stream: Any) -> None:
        try:
            for raw in stream:
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or "event" not in event:
                    self._keep_stderr(f"[stdout] {line}")
                    continue
                self._note_event(event)
                self._events.put(event)
        except (OSError, ValueError):  # stream closed under us: treat as end of output
            self._keep_stderr("[regionlens] the worker's stdout closed with an error")
        finally:
            self._job_done.set()
            self._events.put(_EOF)

    def _read_stderr(self, stream: Any) -> None:
        with contextlib.suppress(OSError, ValueError):  # stream closed under us: nothing more to keep
            for raw in stream:
                self._keep_stderr(raw.rstrip("\r\n"))

    def _keep_stderr(self, line: str) -> None:
        self._stderr.append(line)
        if self.on_stderr is not None:
            with contextlib.suppress(Exception):  # a logging callback must never kill the reader
                self.on_stderr(line)

    def _join_readers(self) -> None:
        for thread in self._threads:
            thread.join(timeout=2.0)
        proc = self._proc
        if proc is not None:
            if not any(thread.is_alive() for thread in self._threads):
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
