"""The plugin class QGIS loads: toolbar button and Plugins-menu entries.

For now: "Load sample data" and "Open run results…"; the run dialog arrives with its own module and
calls :meth:`RegionLensPlugin.start_run`, which keeps the running tasks referenced (a QgsTask whose
Python object is collected while running crashes QGIS).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsMessageLog,
    QgsProject,
    QgsRectangle,
)
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QFileDialog

try:  # Qt6 (QGIS 4): QAction lives in QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction

from .results import load_run_outputs
from .sample_data import load_sample_data
from .settings import Setting
from .tasks import LOG_TAG, PLUGIN_ROOT, RunCancelled, RunFailed, RunOutcome, RunParameters, RunSucceeded, RunTask

__all__ = ["RegionLensPlugin"]

MENU = "&RegionLens"


class RegionLensPlugin:
    """RegionLens in the QGIS GUI.

    Args:
        iface: The QGIS interface.
    """

    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.tasks: list[RunTask] = []  # running tasks, referenced until they finish
        self.open_results_action: QAction | None = None
        self.sample_data_action: QAction | None = None

    # ------------------------------------------------------------------ QGIS plugin API

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        """Create the menu entries and the toolbar button."""
        icon = QIcon(str(PLUGIN_ROOT / "resources" / "icon.svg"))
        self.open_results_action = self._add_action(
            icon, "Open run results\u2026", self.open_run_results, toolbar=True,
            tip="Load a RegionLens run (regionlens.gpkg) as styled layers",
        )  # fmt: skip
        self.sample_data_action = self._add_action(
            icon, "Load sample data", self.load_sample_data,
            tip="Add the bundled San Francisco sample city (block groups, POIs, Landsat image)",
        )  # fmt: skip

    def unload(self) -> None:
        """Remove the menu entries and the toolbar button; cancel running tasks."""
        for task in list(self.tasks):
            task.cancel()
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        self.open_results_action = None
        self.sample_data_action = None

    # ------------------------------------------------------------------ actions

    def load_sample_data(self) -> dict[str, QgsMapLayer]:
        """Add the San Francisco sample city to the current project and zoom to it."""
        project = QgsProject.instance()
        was_empty = not project.mapLayers()
        try:
            layers = load_sample_data(project)
        except (OSError, ValueError) as exc:
            self.iface.messageBar().pushCritical("RegionLens", str(exc))
            return {}
        if was_empty:
            project.setCrs(layers["landsat"].crs())  # show the image unwarped
        self._zoom_to(layers["block_groups"])
        self.iface.messageBar().pushSuccess(
            "RegionLens", "Sample city added: San Francisco block groups, OpenStreetMap POIs, Landsat-7 image."
        )
        return layers

    def open_run_results(self, path: str | Path | None = None) -> dict[str, QgsMapLayer]:
        """Ask for a ``regionlens.gpkg`` (unless ``path`` is given) and load it styled."""
        if path is None:
            start = str(Setting.LAST_RESULTS_DIR.get() or Path.home())
            chosen, _filter = QFileDialog.getOpenFileName(
                self.iface.mainWindow(),
                "Open RegionLens run results",
                start,
                "RegionLens results (regionlens.gpkg);;GeoPackage (*.gpkg)",
            )
            if not chosen:
                return {}
            path = chosen
        path = Path(path)
        Setting.LAST_RESULTS_DIR.set(str(path.parent.parent))
        return self._load_results(path)

    def start_run(self, params: RunParameters, on_done: Callable[[RunOutcome], None] | None = None) -> RunTask:
        """Run the backend in a QgsTask; load the results when it succeeds.

        Args:
            params: What to run.
            on_done: Also called with the outcome (main thread), after the plugin has handled it.

        Returns:
            The task (already queued in QGIS's task manager).
        """
        task = RunTask(params, description=f"RegionLens: {Path(params.output_dir).name}")
        task.on_finished = lambda outcome: self._run_finished(task, outcome, on_done)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    # ------------------------------------------------------------------ helpers

    def _add_action(
        self, icon: QIcon, text: str, callback: Callable[[], object], toolbar: bool = False, tip: str = ""
    ) -> QAction:
        action = QAction(icon, text, self.iface.mainWindow())
        action.triggered.connect(lambda _checked=False: callback())
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        self.iface.addPluginToMenu(MENU, action)
        if toolbar:
            self.iface.addToolBarIcon(action)
        self.actions.append(action)
        return action

    def _load_results(self, gpkg: Path) -> dict[str, QgsMapLayer]:
        project = QgsProject.instance()
        was_empty = not project.mapLayers()
        try:
            layers = load_run_outputs(gpkg, project)
        except (OSError, ValueError) as exc:
            self.iface.messageBar().pushCritical("RegionLens", str(exc))
            return {}
        first = next((layer for layer in layers.values() if layer.isSpatial()), None)
        if first is not None:
            if was_empty:
                project.setCrs(first.crs())
            self._zoom_to(first)
        self.iface.messageBar().pushSuccess("RegionLens", f"Loaded {len(layers)} layers from {gpkg}.")
        return layers

    def _run_finished(self, task: RunTask, outcome: RunOutcome, on_done: Callable[[RunOutcome], None] | None) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        bar = self.iface.messageBar()
        if isinstance(outcome, RunSucceeded):
            QgsMessageLog.logMessage(
                f"Run finished on {outcome.device} in {outcome.seconds:.1f} s: {outcome.gpkg}", LOG_TAG,
                Qgis.MessageLevel.Success,
            )  # fmt: skip
            self._load_results(outcome.gpkg)
        elif isinstance(outcome, RunFailed):
            bar.pushCritical("RegionLens", f"The run failed ({outcome.kind}): {outcome.message} Details in the log.")
        elif isinstance(outcome, RunCancelled):
            bar.pushInfo("RegionLens", outcome.message)
        if on_done is not None:
            on_done(outcome)

    def _zoom_to(self, layer: QgsMapLayer) -> None:
        canvas = self.iface.mapCanvas()
        if canvas is None:
            return
        extent = QgsRectangle(layer.extent())
        destination = QgsProject.instance().crs()
        if destination.isValid() and layer.crs().isValid() and destination != layer.crs():
            transform = QgsCoordinateTransform(layer.crs(), destination, QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        extent.scale(1.05)
        canvas.setExtent(extent)
        canvas.refresh()
