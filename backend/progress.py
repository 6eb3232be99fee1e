"""Progress reporting and cooperative cancellation.

A :class:`Progress` is handed down from the CLI or the worker to every stage. Long loops call
:meth:`Progress.update` (which also checks for cancellation) so a cancel request stops the run
within one iteration. Loops whose iterations are short call :meth:`Progress.poll` instead: it checks
for cancellation every time and reports progress at most every :data:`HEARTBEAT_S` seconds. Work that
cannot be split (loading a model) runs through :meth:`Progress.wait`, and a torch network's forward and
backward passes check for cancellation between layers inside :meth:`Progress.watch`.

The promise to the plugin (docs/protocol.md): a cancelled run ends within 3 s and a running job reports
progress at least every 2 s; ``bench/cancel.py`` measures both.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from backend.errors import Cancelled

__all__ = ["HEARTBEAT_S", "Progress", "ProgressCallback"]

#: ``callback(stage, fraction, message)``; fraction is the overall fraction of the run in [0, 1].
ProgressCallback = Callable[[str, float, str], None]

#: :meth:`Progress.poll` and :meth:`Progress.wait` report progress at least this often (seconds).
HEARTBEAT_S = 0.5
#: How often :meth:`Progress.wait` looks at the cancel request (seconds).
_WAIT_TICK_S = 0.05

T = TypeVar("T")


@dataclass
class Progress:
    """Reports progress of named stages and raises :class:`Cancelled` when asked to stop.

    Args:
        callback: Receives ``(stage, overall_fraction, message)``; ``None`` reports nothing.
        cancel_event: Set from another thread to request cancellation.
    """

    callback: ProgressCallback | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _stage: str = "start"
    _lo: float = 0.0
    _hi: float = 1.0
    log_messages: list[str] = field(default_factory=list)
    log_callback: Callable[[str], None] | None = None
    #: Monotonic time of the last report, shared with every :meth:`sub` progress of the run.
    _last_report: list[float] = field(default_factory=lambda: [time.monotonic()])
    _fraction: float = 0.0

    def stage(self, name: str, start: float, end: float) -> Progress:
        """Enter a stage that covers ``[start, end]`` of the whole run and report its start."""
        self._stage, self._lo, self._hi = name, float(start), float(end)
        self.update(0.0, "")
        return self

    def update(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) of the current stage; raise :class:`Cancelled` if cancelled."""
        self.check_cancel()
        self._fraction = min(max(float(fraction), 0.0), 1.0)
        self._last_report[0] = time.monotonic()
        if self.callback is not None:
            self.callback(self._stage, self._lo + (self._hi - self._lo) * self._fraction, message)

    def poll(self, fraction: float | None = None, message: str = "") -> None:
        """Check for cancellation; report progress if none was reported for :data:`HEARTBEAT_S` seconds.

        Cheap enough to call for every mini-batch or layer. ``fraction`` (of the current stage) defaults
        to the last one reported.
        """
        self.check_cancel()
        if time.monotonic() - self._last_report[0] >= HEARTBEAT_S:
            self.update(self._fraction if fraction is None else fraction, message)

    def wait(self, func: Callable[[], T], message: str = "", fraction: float | None = None) -> T:
        """Run ``func()`` (work that cannot check for cancellation itself) and return its result.

        ``func`` runs in a daemon thread while this one keeps reporting progress and watching the cancel
        request. On cancellation :class:`Cancelled` is raised at once; ``func`` finishes in the
        background and its result is dropped. Exceptions of ``func`` are re-raised here. ``fraction`` (of
        the current stage) is reported first; default: the last one reported.
        """
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = func()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc

        self.update(self._fraction if fraction is None else fraction, message)
        thread = threading.Thread(target=target, name="regionlens-wait", daemon=True)
        thread.start()
        while True:
            thread.join(_WAIT_TICK_S)
            if not thread.is_alive():
                break
            self.poll(message=message)
        if "error" in box:
            raise box["error"]
        return box["value"]

    @contextlib.contextmanager
    def watch(self, module: Any) -> Iterator[None]:
        """Within the block, every layer of the torch ``module`` polls (see :meth:`poll`) before it runs
        and when its gradient is computed, so one long forward or backward pass can be cancelled.

        A cancel raises :class:`Cancelled` out of the forward call or out of ``loss.backward()``.
        """
        handles = []

        def before(_module: Any, _inputs: Any) -> None:
            self.poll()

        def on_grad(grad: Any) -> None:
            self.poll()

        def after(_module: Any, _inputs: Any, output: Any) -> None:
            if getattr(output, "requires_grad", False):
                output.register_hook(on_grad)

        for sub in module.modules() if hasattr(module, "modules") else ():  # a stand-in model: nothing to watch
            handles.append(sub.register_forward_pre_hook(before))
            handles.append(sub.register_forward_hook(after))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def log(self, message: str) -> None:
        """Record a message for the run manifest and forward it to the log callback."""
        self.log_messages.append(message)
        if self.log_callback is not None:
            self.log_callback(message)

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self.cancel_event.is_set():
            raise Cancelled("Run cancelled by the user; no output was written.")

    def cancel(self) -> None:
        """Request cancellation (thread-safe)."""
        self.cancel_event.set()

    @property
    def stage_name(self) -> str:
        """Name of the current stage (what the callback receives as ``stage``)."""
        return self._stage

    def sub(self, name: str, start: float, end: float) -> Progress:
        """Child progress sharing callback and cancel event, mapped into ``[start, end]`` of this stage."""
        lo = self._lo + (self._hi - self._lo) * start
        hi = self._lo + (self._hi - self._lo) * end
        child = Progress(
            callback=self.callback,
            cancel_event=self.cancel_event,
            log_messages=self.log_messages,
            log_callback=self.log_callback,
            _last_report=self._last_report,
        )
        child._stage, child._lo, child._hi = name, lo, hi
        return child
