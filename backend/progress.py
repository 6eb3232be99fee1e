"""Progress reporting and cooperative cancellation.

A :class:`Progress` is handed down from the CLI or the worker to every stage. Long loops call
:meth:`Progress.update` (which also checks for cancellation) so a cancel request stops the run
within one iteration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.errors import Cancelled

__all__ = ["Progress", "ProgressCallback"]

#: ``callback(stage, fraction, message)``; fraction is the overall fraction of the run in [0, 1].
ProgressCallback = Callable[[str, float, str], None]


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

    def stage(self, name: str, start: float, end: float) -> Progress:
        """Enter a stage that covers ``[start, end]`` of the whole run and report its start."""
        self._stage, self._lo, self._hi = name, float(start), float(end)
        self.update(0.0, "")
        return self

    def update(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) of the current stage; raise :class:`Cancelled` if cancelled."""
        self.check_cancel()
        overall = self._lo + (self._hi - self._lo) * min(max(float(fraction), 0.0), 1.0)
        if self.callback is not None:
            self.callback(self._stage, overall, message)

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

    def sub(self, name: str, start: float, end: float) -> Progress:
        """Child progress sharing callback and cancel event, mapped into ``[start, end]`` of this stage."""
        lo = self._lo + (self._hi - self._lo) * start
        hi = self._lo + (self._hi - self._lo) * end
        child = Progress(
            callback=self.callback,
            cancel_event=self.cancel_event,
            log_messages=self.log_messages,
            log_callback=self.log_callback,
        )
        child._stage, child._lo, child._hi = name, lo, hi
        return child
