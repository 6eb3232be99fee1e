"""A run's self-contained HTML report (``<output_dir>/report.html``, written by the backend) in the browser;
:class:`ReportParameters`, the worker's ``report`` job that brings it up to date after a cluster is renamed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices

from .common import common
from .tasks import PLUGIN_ROOT

__all__ = ["REPORT_NAME", "ReportParameters", "open_report", "run_report"]

#: File name of the report in a run folder (docs/protocol.md).
REPORT_NAME = common.REPORT_HTML


def run_report(path: str | Path) -> Path | None:
    """The report of the run at ``path`` (its folder, its ``regionlens.gpkg`` or the report itself).

    Returns:
        The report's path, or ``None`` when the run has none (an older run, a failed report).
    """
    path = Path(path).expanduser()
    candidate = path if path.suffix.lower() in (".html", ".htm") else (path if path.is_dir() else path.parent)
    if candidate.is_dir():
        candidate = candidate / REPORT_NAME
    return candidate.resolve() if candidate.is_file() else None


def open_report(path: str | Path) -> bool:
    """Open a report (or the report of a run folder or GeoPackage) in the system's browser.

    Returns:
        True if the browser was asked to open it; False if there is no report or nothing could open it.
    """
    report = run_report(path)
    return report is not None and bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(report))))


@dataclass
class ReportParameters:
    """The worker's ``report`` job on a run folder (the fields :class:`.tasks.RunTask` reads): redraws the run's
    cluster map and rewrites its ``report.html`` from the names saved in the run (docs/protocol.md)."""

    backend_python: Path
    output_dir: Path  # the run folder
    plugin_root: Path = PLUGIN_ROOT
    start_timeout: float = 120.0
    cancel_grace: float = 5.0
    idle_timeout: float | None = None
    action: str = "report"
    cancelled_message: str = "Updating the run's report was cancelled; the report is unchanged."

    def worker_config(self) -> dict[str, Any]:
        """The request's parameters."""
        return {"run": str(Path(self.output_dir).resolve())}
