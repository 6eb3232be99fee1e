"""The plugin class QGIS loads: toolbar button and Plugins-menu entries.

The toolbar button ("Run RegionLens…") shows or hides the run dock (:mod:`.ui.run_dock`); the menu
also holds "Open run results…" and "Load sample data". The dock calls
:meth:`RegionLensPlugin.start_run`, which keeps the running tasks referenced (a QgsTask whose Python
object is collected while running crashes QGIS), loads the results and reports in the message bar with
a "Details" button (the run log, or the worker's traceback and error output) and, when the run wrote
one, an "Open report" button (its ``report.html``); that message stays until closed.

"Find similar regions" (menu, run dock, explorer, an embeddings layer's context menu) and its map tool
(menu) run the worker's ``similar`` job (:mod:`.similar`); "Cluster card…" is in a clusters layer's
context menu and in that of each cluster's class in its legend (:mod:`.ui.cluster_card`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsMessageLog,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsLayerTreeView, QgsMapTool
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QFileDialog

try:  # Qt6 (QGIS 4): QAction lives in QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction

from . import setup as backend_setup
from .common import common
from .export import VECTOR_LAYER_TYPE, ExportResult, export_layer_dialog
from .layers_added import LayersAdded
from .processing import RegionLensProvider
from .report import REPORT_NAME, ReportParameters, run_report
from .report import open_report as open_report_file
from .results import RunLayers, load_run_outputs
from .sample_data import load_sample_data
from .settings import Setting
from .tasks import LOG_TAG, PLUGIN_ROOT, RunCancelled, RunFailed, RunOutcome, RunParameters, RunSucceeded, RunTask
from .ui.messages import push_message
from .ui.run_dock import RunDock
from .worker_client import find_backend_python

if TYPE_CHECKING:  # the explorer (numpy, matplotlib) is imported when first opened
    from .explorer import EmbeddingExplorer
    from .similar import SimilarMapTool, SimilarTask
    from .ui.apply_dialog import ApplyDialog
    from .ui.cluster_card import ClusterCardDialog, LegendCardMenu

__all__ = ["RegionLensPlugin"]

MENU = "&RegionLens"
#: The Plugins-menu entries, in order: the plugin's attribute holding the action, its text, the plugin method it
#: calls (none: the map tool's checkable action) and its tooltip. The first is also the toolbar button.
MENU_ACTIONS = (
    ("run_action", "Run RegionLens\u2026", "toggle_run_dock",
     "Open the RegionLens run dock: regions, POIs, imagery, labels, methods, output folder"),
    ("open_results_action", "Open run results\u2026", "open_run_results",
     "Load a RegionLens run (regionlens.gpkg) as styled layers"),
    ("sample_data_action", "Load sample data", "load_sample_data",
     "Add the bundled San Francisco sample city (block groups, POIs, Landsat image)"),
    ("explorer_action", "Embedding explorer", "open_explorer",
     "Plot the embeddings in 2-D, coloured by cluster; select in the plot to select on the map"),
    ("apply_action", "Apply a saved model to another layer\u2026", "open_apply_dialog",
     "Embed another region layer with a model a run saved (<run output>/models/<method>)"),
    ("export_action", "Export layer\u2026", "export_layer",
     "Export a layer to a shapefile (field names shortened, and listed) or a GeoPackage"),
    ("similar_action", "Find similar regions", "find_similar",
     "Select regions of a run's embeddings (on the map or in the explorer), then map how similar every region is "
     "to them; the most similar are outlined"),
    ("similar_tool_action", "Find similar regions: click a region", "",
     "Map tool: click a region to map how similar every region is to it; Shift+click adds regions"),
    ("setup_action", "Set up backend\u2026", "show_setup_dialog",
     "Create the RegionLens backend environment (PyTorch; CUDA build when an NVIDIA GPU is found)"),
)


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
        self.run_action: QAction | None = None  # "Run RegionLens…": shows/hides the run dock (toolbar)
        self.run_dock: RunDock | None = None  # created on first use
        self.provider: RegionLensProvider | None = None  # Processing provider, while registered
        self.setup_action: QAction | None = None  # "Set up backend…"
        self.options_factory: backend_setup.RegionLensOptionsFactory | None = None  # Settings › Options page
        self.explorer_action: QAction | None = None  # "Embedding explorer"
        self.export_action: QAction | None = None  # "Export layer…" (Plugins menu)
        self.layer_export_action: QAction | None = None  # "Export layer…" in the layer tree's context menu
        self.explorer: EmbeddingExplorer | None = None  # created on first use
        self.apply_action: QAction | None = None  # "Apply a saved model to another layer…"
        self.apply_dialog: ApplyDialog | None = None  # created on first use
        self.similar_action: QAction | None = None  # "Find similar regions" (menu, layer tree)
        self.card_action: QAction | None = None  # "Cluster card…" in a clusters layer's context menu
        self.legend_card_menu: LegendCardMenu | None = None  # "Cluster card…" on a cluster's legend entry
        self.report_tasks: dict[Path, RunTask] = {}  # run folder -> its running ``report`` job (after a rename)
        self._report_again: set[Path] = set()  # run folders renamed again while their report job ran
        self.cluster_cards: list[ClusterCardDialog] = []  # open cards (modeless)
        self._offered = LayersAdded(self._add_layer_actions)  # layers that get the layer tree actions
        self.last_similarity: QgsVectorLayer | None = None  # the latest "find similar regions" layer
        self._similar_notice: Any = None  # the "Finding regions similar ..." message while that job runs
        self.similar_tool_action: QAction | None = None  # checkable: the "click a region" map tool
        self.similar_tool: SimilarMapTool | None = None  # created on first use

    # ------------------------------------------------------------------ QGIS plugin API

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        """Register the Processing provider (``regionlens:embed``, ``:cluster``, ``:predict``).

        Headless QGIS (``qgis_process``) calls only this; :meth:`initGui` calls it first. Idempotent.
        """
        if self.provider is not None:
            return
        provider = RegionLensProvider()
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider
        else:
            QgsMessageLog.logMessage(
                "Could not register the RegionLens Processing provider (is another copy of the plugin loaded?).",
                LOG_TAG, Qgis.MessageLevel.Warning,
            )  # fmt: skip

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        """Register the Processing provider; create the menu entries and the toolbar button."""
        self.initProcessing()
        icon = QIcon(str(PLUGIN_ROOT / "resources" / "icon.svg"))
        for i, (attribute, text, method, tip) in enumerate(MENU_ACTIONS):
            setattr(self, attribute, self._add_action(icon, text, method, tip, toolbar=i == 0))
        self.layer_export_action = QAction(icon, "Export layer\u2026", self.iface.mainWindow())
        self.layer_export_action.triggered.connect(lambda _checked=False: self.export_layer())
        self.iface.addCustomActionForLayerType(self.layer_export_action, "RegionLens", VECTOR_LAYER_TYPE, True)
        self.iface.addCustomActionForLayerType(self.similar_action, "RegionLens", VECTOR_LAYER_TYPE, False)
        self.similar_tool_action.setCheckable(True)
        self.similar_tool_action.toggled.connect(self.toggle_similar_tool)
        self.card_action = QAction(icon, "Cluster card\u2026", self.iface.mainWindow())
        self.card_action.setToolTip("What this cluster is: size, defining features, example regions; rename it")
        self.card_action.triggered.connect(lambda _checked=False: self.open_cluster_card())
        self.iface.addCustomActionForLayerType(self.card_action, "RegionLens", VECTOR_LAYER_TYPE, False)
        self._offer_layer_actions(True)
        view = self.iface.layerTreeView() if hasattr(self.iface, "layerTreeView") else None
        if isinstance(view, QgsLayerTreeView):
            from .ui.cluster_card import LegendCardMenu

            self.legend_card_menu = LegendCardMenu(view, lambda layer, cluster: self.open_cluster_card(layer, cluster))
        self.options_factory = backend_setup.RegionLensOptionsFactory(open_setup=self.show_setup_dialog)
        self.iface.registerOptionsWidgetFactory(self.options_factory)

    def unload(self) -> None:
        """Remove the menu entries, the toolbar button and the Processing provider; cancel running tasks."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        for task in list(self.tasks):
            task.cancel()
        self._offer_layer_actions(False)
        if self.similar_tool is not None:
            self.toggle_similar_tool(False)
            self.similar_tool.deleteLater()
            self.similar_tool = None
        self.similar_tool_action = None
        for action in (self.similar_action, self.card_action):
            if action is not None:
                self.iface.removeCustomActionForLayerType(action)
        if self.card_action is not None:
            self.card_action.deleteLater()
        self.similar_action = self.card_action = None
        if self.legend_card_menu is not None:
            self.legend_card_menu.remove()
            self.legend_card_menu.deleteLater()
            self.legend_card_menu = None
        for card in self.cluster_cards:
            card.close()
        self.cluster_cards.clear()
        if self.run_dock is not None:
            self.run_dock.disconnect_project()
            self.iface.removeDockWidget(self.run_dock)
            self.run_dock.deleteLater()
            self.run_dock = None
        if self.explorer is not None:
            self.explorer.close()
            self.iface.removeDockWidget(self.explorer)
            self.explorer.deleteLater()
            self.explorer = None
        if self.layer_export_action is not None:
            self.iface.removeCustomActionForLayerType(self.layer_export_action)
            self.layer_export_action.deleteLater()
            self.layer_export_action = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        self.explorer_action = None
        self.apply_action = None
        if self.apply_dialog is not None:
            self.apply_dialog.close()
            self.apply_dialog.deleteLater()
            self.apply_dialog = None
        self.export_action = None
        self.open_results_action = None
        self.sample_data_action = None
        self.run_action = None
        self.setup_action = None
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        backend_setup.close_setup_dialog()  # cancels a running backend installation

    # ------------------------------------------------------------------ actions

    def load_sample_data(self) -> dict[str, QgsMapLayer]:
        """Add the San Francisco sample city to the current project, zoom to it, and choose it in the run dock."""
        project = QgsProject.instance()
        was_empty = not project.mapLayers()
        try:
            layers = load_sample_data(project)
        except (OSError, ValueError) as exc:
            self.iface.messageBar().pushCritical("RegionLens", str(exc))
            return {}
        if was_empty:  # show the image unwarped, in its own CRS
            crs = layers["landsat"].crs()
            project.setCrs(crs)
            # QGIS's layer-tree bridge gives an empty project the CRS of the first layer in the tree (the POIs,
            # EPSG:4326) in a deferred update queued by the layers just added; set ours after it.
            QTimer.singleShot(0, lambda: project.setCrs(crs))
        self._zoom_to(layers["block_groups"])
        dock = self.run_dock if self.run_dock is not None and self.run_dock.isVisible() else self.toggle_run_dock()
        dock.use_sample(layers)
        self.iface.messageBar().pushSuccess(
            "RegionLens", "Sample city added and chosen in the run dock: San Francisco block groups, OpenStreetMap "
            "POIs, Landsat-7 image, population and crime labels. Press Run."
        )
        return layers

    def toggle_run_dock(self) -> RunDock:
        """Show the run dock (created on first use), or hide it when it is already showing."""
        if self.run_dock is None:
            self.run_dock = RunDock(self, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.run_dock)
            self.run_dock.show()
            if self.run_dock.backend_python is None:  # first use: the setup dialog opens by itself
                self.run_dock.set_up_backend()
        elif self.run_dock.isVisible():
            self.run_dock.hide()
        else:
            self.run_dock.show()
            self.run_dock.raise_()
        return self.run_dock

    def open_run_results(self, path: str | Path | None = None) -> RunLayers | dict[str, QgsMapLayer]:
        """Ask for a ``regionlens.gpkg`` or a run's ``report.html`` (unless ``path`` is given) and open it.

        A GeoPackage loads styled; a report opens in the browser (and nothing is loaded).
        """
        if path is None:
            start = str(Setting.LAST_RESULTS_DIR.get() or Path.home())
            chosen, _filter = QFileDialog.getOpenFileName(
                self.iface.mainWindow(),
                "Open RegionLens run results",
                start,
                f"RegionLens results (regionlens.gpkg {REPORT_NAME});;GeoPackage (*.gpkg);;Run report (*.html)",
            )
            if not chosen:
                return {}
            path = chosen
        path = Path(path)
        Setting.LAST_RESULTS_DIR.set(str(path.parent.parent))
        if path.suffix.lower() in (".html", ".htm"):
            self.open_report(path)
            return {}
        return self._load_results(path)

    def open_report(self, path: str | Path) -> bool:
        """Open a run's ``report.html`` (or the report of a run folder or GeoPackage) in the browser.

        Returns:
            True if it opened; otherwise the message bar says why.
        """
        if open_report_file(path):
            return True
        report = run_report(path)
        text = (f"Could not open {report}: no application opens HTML files here." if report is not None
                else f"No run report found at {path} (runs write {REPORT_NAME} beside regionlens.gpkg).")
        self.iface.messageBar().pushWarning("RegionLens", text)
        return False

    def open_explorer(self, embeddings=None, clusters=None) -> EmbeddingExplorer | None:
        """Show the embedding explorer (created on first use) for these layers, default the latest run's.

        Returns:
            The explorer, or ``None`` when matplotlib is missing (said in the message bar).
        """
        try:
            from .explorer import open_explorer
        except ImportError as exc:  # numpy, in a broken Python
            self.iface.messageBar().pushCritical("RegionLens", f"The embedding explorer cannot start: {exc}")
            return None
        try:
            self.explorer = open_explorer(self.iface, embeddings, clusters, explorer=self.explorer)
        except ImportError as exc:  # matplotlib missing: the message says what to install
            self.iface.messageBar().pushCritical("RegionLens", str(exc))
            return None
        self.explorer.set_find_similar(lambda layer: self.find_similar(layer))
        self.explorer.on_renamed = self._cluster_renamed
        if self.explorer.data is None:
            self.iface.messageBar().pushInfo(
                "RegionLens", "No RegionLens embeddings in this project yet: open run results or run RegionLens."
            )
        return self.explorer

    def open_apply_dialog(self) -> ApplyDialog:
        """Show the "apply a saved model to another layer" dialog (modeless; created on first use)."""
        from .ui.apply_dialog import ApplyDialog

        if self.apply_dialog is None:
            self.apply_dialog = ApplyDialog(self, self.iface.mainWindow())
        self.apply_dialog.show()
        self.apply_dialog.raise_()
        return self.apply_dialog

    def find_similar(self, layer: QgsVectorLayer | None = None, top: int = common.SIMILAR_TOP_N) -> SimilarTask | None:
        """Map how similar every region is to the selected ones (the worker's ``similar`` job, in the background).

        Args:
            layer: The embeddings layer (default: the active layer when it holds embeddings, else the
                explorer's, else the latest run's).
            top: How many of the most similar regions to outline.

        Returns:
            The queued task, or ``None`` (the message bar says why: no embeddings, nothing selected, no backend).
        """
        from .explorer.data import find_run_layers
        from .similar import SimilarTask, chosen_region_ids, to_similar_parameters

        project = QgsProject.instance()
        active = self.iface.activeLayer()
        layer = layer or self._similar_layer()
        if layer is None:
            self.iface.messageBar().pushWarning(
                "RegionLens", "No embeddings to compare: open run results or run RegionLens, then select regions.")
            return None
        python = find_backend_python()
        if python is None:
            self.ensure_backend()
            return None
        others = [active, find_run_layers(project, near=layer).get("clusters")]
        try:
            params = to_similar_parameters(layer, chosen_region_ids(layer, [o for o in others if o is not None]),
                                           python, top)
        except ValueError as exc:
            self.iface.messageBar().pushWarning("RegionLens", str(exc))
            return None
        task = SimilarTask(params, description=f"RegionLens: {params.title}")
        task.on_finished = lambda outcome: self._similar_finished(task, outcome, layer)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        self._similar_notice = push_message(self.iface.messageBar(), f"Finding regions similar to "
                                            f"{len(params.params['ids'])} selected region(s)\u2026", duration=0)
        return task

    def find_similar_at(self, point: QgsPointXY, add: bool = False) -> SimilarTask | None:
        """The map tool's click: choose the region under ``point`` (canvas CRS) of the embeddings layer (``add``:
        add it to the regions chosen already) and find the regions similar to the chosen ones."""
        from .similar import region_at

        layer = self._similar_layer()
        if layer is None:
            self.iface.messageBar().pushWarning(
                "RegionLens", "No embeddings to compare: open run results or run RegionLens first.")
            return None
        canvas = self.iface.mapCanvas()
        tolerance = QgsMapTool.searchRadiusMU(canvas) if canvas is not None else 0.0
        fid = region_at(layer, point, QgsProject.instance().crs() if canvas is None
                        else canvas.mapSettings().destinationCrs(), tolerance)
        if fid is None:
            self.iface.messageBar().pushInfo("RegionLens", f"No region of '{layer.name()}' there; click a region.")
            return None
        layer.selectByIds([fid], Qgis.SelectBehavior.AddToSelection if add else Qgis.SelectBehavior.SetSelection)
        return self.find_similar(layer)

    def toggle_similar_tool(self, on: bool) -> None:
        """Make the "click a region: find similar" map tool the canvas's tool (or leave it)."""
        from .similar import SimilarMapTool

        canvas = self.iface.mapCanvas()
        if canvas is None:
            return
        if on:
            if self.similar_tool is None:
                self.similar_tool = SimilarMapTool(canvas, self.find_similar_at)
                if self.similar_tool_action is not None:
                    self.similar_tool.setAction(self.similar_tool_action)
            canvas.setMapTool(self.similar_tool)
        elif self.similar_tool is not None and canvas.mapTool() is self.similar_tool:
            canvas.unsetMapTool(self.similar_tool)

    def _similar_layer(self) -> QgsVectorLayer | None:
        """The embeddings to compare: the active layer's, else the explorer's, else the latest run's."""
        from .explorer.data import find_run_layers
        from .similar import is_embeddings_layer

        explorer = self.explorer.embeddings_layer() if self.explorer is not None else None
        layer = next((c for c in (self.iface.activeLayer(), explorer) if is_embeddings_layer(c)), None)
        return layer or find_run_layers(QgsProject.instance()).get("embeddings")

    def open_cluster_card(self, layer: QgsVectorLayer | None = None, cluster: int | None = None):
        """Open the card of a cluster of a clusters layer (default: the active layer; the cluster of its first
        selected region, else the first). ``None`` (said in the message bar) for another layer."""
        from .clusters import is_clusters_layer
        from .ui.cluster_card import ClusterCardDialog

        layer = layer if layer is not None else self.iface.activeLayer()
        if not is_clusters_layer(layer):
            self.iface.messageBar().pushWarning(
                "RegionLens", "Choose a RegionLens clusters layer (region_id and cluster fields) for a cluster card.")
            return None
        dialog = ClusterCardDialog(layer, cluster, self.iface.mainWindow(), on_renamed=self._cluster_renamed)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        dialog.destroyed.connect(lambda _obj=None, d=dialog: self.cluster_cards.remove(d)
                                 if d in self.cluster_cards else None)
        self.cluster_cards.append(dialog)
        dialog.show()
        return dialog

    def export_layer(self, layer: QgsMapLayer | None = None) -> ExportResult | None:
        """Ask for a layer (default: the active one), a format and a file; export; list renamed fields."""
        return export_layer_dialog(self.iface, layer)

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

    def ensure_backend(self, on_ready: Callable[[Path], object] | None = None) -> bool:
        """First use: True when a backend interpreter exists; else open the setup dialog and return False.

        Call it before anything needs the worker (opening the run dock, starting a run). ``on_ready`` is
        called with the new interpreter once the setup succeeds.
        """
        return backend_setup.ensure_backend(self.iface.mainWindow(), on_ready, self.iface.messageBar())

    def show_setup_dialog(self) -> backend_setup.SetupDialog:
        """Open the backend setup dialog (modeless; one per session)."""
        return backend_setup.show_setup_dialog(self.iface.mainWindow())

    # ------------------------------------------------------------------ helpers

    def _add_action(self, icon: QIcon, text: str, method: str, tip: str, toolbar: bool = False) -> QAction:
        """A Plugins-menu entry (and toolbar button) that calls the plugin's ``method`` (by name, without
        arguments; none: nothing)."""
        action = QAction(icon, text, self.iface.mainWindow())
        if method:
            action.triggered.connect(lambda _checked=False: getattr(self, method)())
        action.setStatusTip(tip)
        action.setToolTip(tip)
        self.iface.addPluginToMenu(MENU, action)
        if toolbar:
            self.iface.addToolBarIcon(action)
        self.actions.append(action)
        return action

    def _load_results(self, gpkg: Path) -> RunLayers | dict[str, QgsMapLayer]:
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
        _expand_in_view(self.iface, layers)
        methods = ", ".join(layers.methods)
        text = f"Loaded {len(layers.entries)} layers ({methods}) from {gpkg}."
        if run_report(gpkg) is not None:
            push_message(self.iface.messageBar(), text, Qgis.MessageLevel.Success,
                         actions=[("Open report", lambda: self.open_report(gpkg))])
        else:
            self.iface.messageBar().pushSuccess("RegionLens", text)
        if self.explorer is not None and common.LAYER_EMBEDDINGS in layers:  # an open explorer follows the new run
            self.explorer.set_layers(layers[common.LAYER_EMBEDDINGS], layers.get(common.LAYER_CLUSTERS))
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
            report = outcome.result.get("report_html") or outcome.gpkg
            actions = [("Open report", lambda: self.open_report(report))] if run_report(report) is not None else []
            push_message(  # stays until closed: the person reads it, its log and its report when back
                bar, f"finished on {outcome.device} in {outcome.seconds:.1f} s", Qgis.MessageLevel.Success,
                details=_run_log(task, outcome), details_title="RegionLens run log", parent=self.iface.mainWindow(),
                duration=0, actions=actions,
            )  # fmt: skip
        elif isinstance(outcome, RunFailed):
            first = (outcome.message.strip().splitlines() or [outcome.kind])[0]
            details = "\n\n".join(part for part in (outcome.message.strip(), outcome.details.strip()) if part)
            push_message(
                bar, f"the run failed ({outcome.kind}): {first}", Qgis.MessageLevel.Critical,
                details=details or "No details.", details_title="RegionLens: worker log and traceback",
                parent=self.iface.mainWindow(),
            )  # fmt: skip
        elif isinstance(outcome, RunCancelled):
            bar.pushInfo("RegionLens", outcome.message)
        if on_done is not None:
            on_done(outcome)

    def _similar_finished(self, task: SimilarTask, outcome: RunOutcome, embeddings: QgsVectorLayer) -> None:
        from .similar import load_similarity

        if task in self.tasks:
            self.tasks.remove(task)
        bar = self.iface.messageBar()
        notice, self._similar_notice = self._similar_notice, None
        if notice is not None and not sip.isdeleted(notice):
            bar.popWidget(notice)  # "Finding regions similar ..." would read as if the job still ran
        if isinstance(outcome, RunSucceeded):
            result = outcome.result
            try:
                near = embeddings if not sip.isdeleted(embeddings) else None
                layer = load_similarity(result["output"], task.params.title, near=near)
            except (KeyError, OSError, ValueError) as exc:
                bar.pushCritical("RegionLens", f"The similar regions could not be loaded: {exc}")
                return
            self.last_similarity = layer
            top = [f"{row['region_id']}: {row['similarity']:.3f}" for row in result.get("top") or []]
            push_message(
                bar, f"{len(top)} most similar regions outlined in red in '{layer.name()}'.",
                Qgis.MessageLevel.Success, details="\n".join([f"Written to {result['output']}", "",
                                                              "Most similar (cosine similarity):", *top]),
                details_title="RegionLens: similar regions", parent=self.iface.mainWindow(), duration=0,
            )  # fmt: skip (stays with its Details until closed, like a finished run's message)
        elif isinstance(outcome, RunFailed):
            first = (outcome.message.strip().splitlines() or [outcome.kind])[0]
            push_message(bar, f"finding similar regions failed ({outcome.kind}): {first}", Qgis.MessageLevel.Critical,
                         details="\n\n".join(p for p in (outcome.message, outcome.details) if p) or "No details.",
                         details_title="RegionLens: worker log and traceback", parent=self.iface.mainWindow())
        elif isinstance(outcome, RunCancelled):
            bar.pushInfo("RegionLens", outcome.message)

    def _cluster_renamed(self, layer: QgsVectorLayer, cluster: int, name: str) -> None:
        """A cluster got a new name: other views of the same layer follow (the explorer, open cards), and the
        run's report is brought up to date."""
        from .clusters import run_folder

        if self.explorer is not None and self.explorer.clusters_layer() is layer:
            self.explorer.cluster_renamed(layer, cluster, name)
        for card in self.cluster_cards:
            if card.layer is layer:
                card.cluster_renamed(cluster, name)
        folder = run_folder(layer)
        if folder is not None and run_report(folder) is not None:
            self.update_report(folder)

    def update_report(self, folder: Path) -> RunTask | None:
        """Redraw a run's report with its cluster names (the worker's ``report`` job, in the background).

        A rename while the run's job runs queues one more job after it (so the last name always reaches the
        report). Returns the task, or ``None`` without a backend (the message bar says so).
        """
        folder = Path(folder).resolve()
        running = self.report_tasks.get(folder)
        if running is not None:
            self._report_again.add(folder)
            return running
        python = find_backend_python()
        if python is None:
            self.iface.messageBar().pushWarning(
                "RegionLens", f"The name is saved, but {folder / REPORT_NAME} still shows the old one: set up the "
                "backend (Plugins \u203a RegionLens \u203a Set up backend\u2026) to update the report.")
            return None
        task = RunTask(ReportParameters(python, folder),  # type: ignore[arg-type] # the fields RunTask reads
                       description=f"RegionLens: update the report of {folder.name}")
        task.on_finished = lambda outcome: self._report_updated(folder, outcome)  # no task <-> callback cycle
        self.tasks.append(task)
        self.report_tasks[folder] = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _report_updated(self, folder: Path, outcome: RunOutcome) -> None:
        task = self.report_tasks.pop(folder, None)
        if task in self.tasks:
            self.tasks.remove(task)
        if isinstance(outcome, RunFailed):
            first = (outcome.message.strip().splitlines() or [outcome.kind])[0]
            push_message(self.iface.messageBar(), f"updating the report of {folder.name} failed: {first}",
                         Qgis.MessageLevel.Warning,
                         details="\n\n".join(p for p in (outcome.message, outcome.details) if p) or "No details.",
                         details_title="RegionLens: worker log and traceback", parent=self.iface.mainWindow())
        if folder in self._report_again:
            self._report_again.discard(folder)
            self.update_report(folder)

    def _offer_layer_actions(self, offer: bool) -> None:
        """Put "Find similar regions" on embeddings layers' and "Cluster card…" on clusters layers' context menus
        (layers there now and layers added later)."""
        self._offered.follow(offer)

    def _add_layer_actions(self, layers) -> None:
        from .clusters import is_clusters_layer
        from .similar import is_embeddings_layer

        for layer in layers:
            if self.similar_action is not None and is_embeddings_layer(layer):
                self.iface.addCustomActionForLayer(self.similar_action, layer)
            if self.card_action is not None and is_clusters_layer(layer):
                self.iface.addCustomActionForLayer(self.card_action, layer)

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


def _expand_in_view(iface, layers: RunLayers) -> None:
    """Expand the run's group and its primary method's group in QGIS's layer tree view.

    The group node is expanded, but the view showed it collapsed whenever the group that was on top before
    was expanded: the view applies a new node's expanded state while the row it is inserted at (0) still
    counts as the previous group's, which Qt sees as expanded already, so nothing is done; once the rows
    shift, the new group is left collapsed. Expanding it in the view after the insertion shows it as it is.
    """
    view = iface.layerTreeView() if hasattr(iface, "layerTreeView") else None
    if not isinstance(view, QgsLayerTreeView):
        return
    view.setExpanded(view.node2index(layers.group), True)
    primary = layers.group.findGroup(layers.methods[0]) if layers.methods else None
    if primary is not None:
        view.setExpanded(view.node2index(primary), True)


def _run_log(task: RunTask, outcome: RunSucceeded) -> str:
    """What the "Details" button of a finished run shows: outputs, then the worker's log lines."""
    result = outcome.result
    lines = [
        f"Finished on {outcome.device} in {outcome.seconds:.1f} s.",
        f"Results: {result.get('output_dir', outcome.gpkg.parent)}",
        f"GeoPackage: {outcome.gpkg}",
    ]
    if result.get("run_json"):
        lines.append(f"Run manifest: {result['run_json']}")
    lines += ["", "Log:"] + [f"  {line}" for line in task.status.log]
    return "\n".join(lines)
