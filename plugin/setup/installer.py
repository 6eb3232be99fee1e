"""``BackendInstallTask``: build the backend environment in a QgsTask, one subprocess per step.

The flow: :func:`.environment.install_plan` -> :class:`BackendInstallTask` (``run`` in a task thread,
never touching the GUI) -> one of three result classes -> ``finished`` on the main thread, which stores
the new interpreter in ``Setting.BACKEND_PYTHON`` and hands the result to a callback.

Output lines of every step go to the :attr:`BackendInstallTask.logLine` signal (queued to the main
thread, so a dialog can append them to its log). Cancel terminates the running step at once (its whole
process group on POSIX, its process tree on Windows) and removes the half-built environment, but only
what this task created: a folder that existed before (an empty one, or an environment being updated)
is never deleted.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import shutil
import signal
import subprocess  # nosec B404 # runs the install steps: explicit argv lists, no shell
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..settings import Setting
from ..worker_client import TEXT_OUTPUT, build_worker_env, venv_python
from .environment import InstallStep, check_target_dir

__all__ = [
    "BackendInstallTask",
    "InstallCancelled",
    "InstallFailed",
    "InstallOutcome",
    "InstallSucceeded",
]

LOG_TAG = "RegionLens"
_TAIL_LINES = 30  # output lines quoted when a step fails
_EOF = object()


@dataclass
class InstallSucceeded:
    """Every step ran; ``python`` is the new backend interpreter."""

    python: Path
    seconds: float


@dataclass
class InstallFailed:
    """A step failed; ``message`` names it, ``output`` holds its last lines."""

    step: str  # title of the step that failed
    message: str  # for the user
    returncode: int | None = None  # the step's exit status (None: it did not start)
    output: str = ""  # the step's last output lines


@dataclass
class InstallCancelled:
    """The user cancelled; what the task had created is removed."""

    message: str = "The backend setup was cancelled."


InstallOutcome = Union[InstallSucceeded, InstallFailed, InstallCancelled]


class BackendInstallTask(QgsTask):
    """Run the installation steps one after the other in the background.

    Args:
        venv_dir: The environment's folder (must pass :func:`.environment.check_target_dir`).
        steps: The commands (:func:`.environment.install_plan`, or cheap ones in tests); plain argv
            lists are accepted too.
        on_finished: Called on the main thread with the :data:`InstallOutcome`.
        store_setting: On success, store the new interpreter in ``Setting.BACKEND_PYTHON``.
        python: The interpreter to store (default: the venv's ``bin/python``).
        env: Base environment of the steps (default ``os.environ``), always scrubbed of PYTHONPATH,
            PROJ_LIB, VIRTUAL_ENV and the like.
        terminate_grace: Seconds a cancelled step gets after SIGTERM before it is killed.
        description: Shown in QGIS's task manager.

    Signals:
        logLine(str): one output line (or a note from the task), in order.
        stepStarted(int, int, str): 0-based index, number of steps, title.
    """

    logLine = pyqtSignal(str)  # noqa: N815 - Qt signal naming
    stepStarted = pyqtSignal(int, int, str)  # noqa: N815 - Qt signal naming

    def __init__(
        self,
        venv_dir: str | Path,
        steps: Sequence[InstallStep | Sequence[str]],
        on_finished: Callable[[InstallOutcome], None] | None = None,
        store_setting: bool = True,
        python: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        terminate_grace: float = 3.0,
        description: str = "Set up the RegionLens backend",
    ) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.venv_dir = Path(venv_dir).expanduser()
        self.steps = [_as_step(step) for step in steps]
        self.on_finished = on_finished
        self.store_setting = store_setting
        self.python = Path(python) if python is not None else venv_python(self.venv_dir)
        self.env = build_worker_env(env)
        self.terminate_grace = terminate_grace
        self.outcome: InstallOutcome | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=5000)  # everything logLine emitted
        self.current_step = ""  # title of the running step
        self._proc: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------------ QgsTask

    def run(self) -> bool:
        """Task thread: run the steps; on failure or cancel remove what this task created."""
        started = time.monotonic()
        problem = check_target_dir(self.venv_dir)
        if problem:
            self.outcome = InstallFailed("Check the target folder", problem)
            return False
        created_root = _topmost_missing(self.venv_dir)  # None: the folder exists already
        was_empty = created_root is None and not any(self.venv_dir.iterdir())
        try:
            self.outcome = self._run_steps()
        except Exception as exc:  # a task must report every failure, not raise it
            self.outcome = InstallFailed(self.current_step or "setup", f"{type(exc).__name__}: {exc}",
                                         output=traceback.format_exc())  # fmt: skip
        if isinstance(self.outcome, InstallSucceeded):
            self.outcome.seconds = time.monotonic() - started
            self.setProgress(100.0)
            return True
        self._clean_up(created_root, was_empty)
        return False

    def finished(self, result: bool) -> None:
        """Main thread: store the interpreter on success, log failures, call the callback."""
        if self.outcome is None:  # cancelled before it started
            self.outcome = InstallCancelled() if self.isCanceled() else InstallFailed("setup", "The task did not run.")
        if isinstance(self.outcome, InstallSucceeded):
            if self.store_setting:
                Setting.BACKEND_PYTHON.set(str(self.outcome.python))
            QgsMessageLog.logMessage(f"Backend ready: {self.outcome.python}", LOG_TAG, Qgis.MessageLevel.Success)
        elif isinstance(self.outcome, InstallFailed):
            output = f"\n{self.outcome.output}" if self.outcome.output else ""
            QgsMessageLog.logMessage(f"{self.outcome.message}{output}", LOG_TAG, Qgis.MessageLevel.Critical)
        if self.on_finished is not None:
            self.on_finished(self.outcome)

    # ------------------------------------------------------------------ steps

    def _run_steps(self) -> InstallOutcome:
        count = len(self.steps)
        for index, step in enumerate(self.steps):
            if self.isCanceled():
                return InstallCancelled()
            self.current_step = step.title
            self.setProgress(100.0 * index / max(count, 1))
            self.stepStarted.emit(index, count, step.title)
            self._emit(f"[{index + 1}/{count}] {step.title}")
            self._emit("$ " + " ".join(step.argv))
            returncode, tail = self._run_one(step)
            if returncode is None:
                return InstallCancelled()
            if returncode != 0:
                message = f"Step {index + 1} of {count}, \u201c{step.title}\u201d, failed (exit {returncode})."
                if tail:
                    message += "\nLast output lines:\n" + "\n".join(tail)
                return InstallFailed(step.title, message, returncode, "\n".join(tail))
        self._emit(f"Done: the backend interpreter is {self.python}")
        return InstallSucceeded(self.python, 0.0)

    def _run_one(self, step: InstallStep) -> tuple[int | None, list[str]]:
        """Run one step; return (exit status or None when cancelled, last output lines)."""
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(
                subprocess, "CREATE_NEW_PROCESS_GROUP", 0
            )
        else:
            kwargs["start_new_session"] = True  # own process group: cancel stops pip's children too
        try:
            # Explicit argv, no shell: the interpreters and arguments come from install_plan().
            proc = subprocess.Popen(  # nosec B603
                step.argv,
                cwd=str(step.cwd) if step.cwd is not None else None,
                env={**self.env, **step.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                bufsize=1,
                **TEXT_OUTPUT,
                **kwargs,
            )
        except OSError as exc:
            line = f"Cannot start {step.argv[0] if step.argv else 'the step'}: {exc}"
            self._emit(line)
            return 127, [line]
        self._proc = proc
        lines: queue.Queue[Any] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), name="regionlens-setup", daemon=True)
        reader.start()
        try:
            while True:
                if self.isCanceled():
                    self._emit(f"Cancelling \u201c{step.title}\u201d\u2026")
                    self._stop(proc)
                    return None, list(tail)
                try:
                    item = lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _EOF:
                    break
                tail.append(item)
                self._emit(item)
            while proc.poll() is None:  # output closed; the process ends right after
                if self.isCanceled():
                    self._stop(proc)
                    return None, list(tail)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
            return proc.returncode, list(tail)
        finally:
            reader.join(timeout=2.0)
            with contextlib.suppress(OSError):
                if proc.stdout is not None:
                    proc.stdout.close()
            self._proc = None

    def _stop(self, proc: subprocess.Popen[str]) -> None:
        """Terminate the step (its process group / tree); kill it after ``terminate_grace`` seconds."""
        if proc.poll() is not None:
            return
        try:
            if os.name == "nt":
                # Explicit argv, no shell: taskkill ends the step and the processes it started.
                subprocess.run(  # nosec B603 B607
                    ["taskkill", "/T", "/F", "/PID", str(proc.pid)],
                    capture_output=True, timeout=10, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                )  # fmt: skip
            else:
                os.killpg(proc.pid, signal.SIGTERM)
        except (OSError, subprocess.SubprocessError):
            with contextlib.suppress(OSError):
                proc.terminate()
        try:
            proc.wait(timeout=self.terminate_grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                if os.name != "nt":
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)

    def _clean_up(self, created_root: Path | None, was_empty: bool) -> None:
        """Remove what this task created: the new folder (and new empty parents), or the contents of
        a folder that was empty; an environment that existed before is left as it is."""
        target = self.venv_dir
        if created_root is not None:
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            parent = target.parent
            while parent != created_root.parent and parent.is_dir() and not any(parent.iterdir()):
                with contextlib.suppress(OSError):
                    parent.rmdir()
                parent = parent.parent
            self._emit(f"Removed the unfinished environment {target}.")
        elif was_empty and target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()
            self._emit(f"Emptied {target} again (the folder existed before, so it is kept).")
        else:
            self._emit(f"{target} existed before the setup and was left as it is.")

    def _emit(self, line: str) -> None:
        self.log.append(line)
        with contextlib.suppress(RuntimeError):  # the receiver (a closed dialog) may be gone
            self.logLine.emit(line)


def _as_step(step: InstallStep | Sequence[str]) -> InstallStep:
    """An InstallStep with every argument a string (paths allowed in what is passed in)."""
    if isinstance(step, InstallStep):
        return InstallStep(step.title, [str(arg) for arg in step.argv], step.cwd, dict(step.env))
    argv = [str(arg) for arg in step]
    return InstallStep(" ".join(argv), argv)


def _read_lines(stream: Any, lines: queue.Queue[Any]) -> None:
    try:
        with contextlib.suppress(OSError, ValueError):  # stream closed under us: no more output
            for raw in stream:
                lines.put(raw.rstrip("\r\n"))
    finally:
        lines.put(_EOF)


def _topmost_missing(path: Path) -> Path | None:
    """The highest ancestor of ``path`` (or ``path`` itself) that does not exist; None if it exists."""
    if path.exists():
        return None
    missing = path
    for parent in path.parents:
        if parent.exists():
            break
        missing = parent
    return missing
