"""Write the README's screenshots (``make screenshots``; run in QGIS's Python, offscreen).

The pictures show what a planner does with the plugin: the sample city's block groups saved as a
GeoPackage (id field ``fid``, QGIS's default format), two methods (the baseline and CaLLiPer, with their
defaults) and three labels (population, robbery, crime incidents counted per block group).

- ``docs/images/run_dock.png``: the run dock filled in like that (methods from the real backend);
- ``docs/images/results_map.png``: the run's results as the plugin loads them: the layer tree with the
  run's group (one group per method, the clusters' legend naming each cluster in words) beside the map
  canvas showing the first method's clusters only;
- ``docs/images/explorer.png``: the embedding explorer on that run, with a few regions selected;
- ``docs/images/leaderboard.png``: the metrics dialog's summary tab (best method per label, the R2 chart);
- ``docs/images/cluster_card.png``: the card of the largest cluster;
- ``docs/images/similar_map.png``: the regions similar to one region (the worker's ``similar`` job), the
  most similar outlined.

The run itself goes through the run dock and the real backend worker (a QgsTask, as in QGIS) into
``out/screenshots/sf_sample/`` and is reused when ``out/screenshots/sf_sample/regionlens.gpkg`` exists
(delete ``out/screenshots`` to run it again: about two minutes on two CPU cores).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHOTS = ROOT / "out" / "screenshots"
#: The run the pictures show (its folder name appears in the layer names).
RUN_DIR = SHOTS / "sf_sample"
#: The sample block groups saved as a GeoPackage, as a planner's own region layer would be.
REGIONS_GPKG = SHOTS / "sf_block_groups.gpkg"
REGIONS_TITLE = "Block groups (GeoPackage)"
METHODS = ("baseline", "calliper")
LABEL_FIELDS = ("Population", "Robbery")  # numeric fields of the block groups; crime incidents are counted
IMAGES = ROOT / "docs" / "images"
DOCK_WIDTH = 520  # wide enough for the layer names in the dropdowns


def _wait(app, seconds: float, until=lambda: False) -> bool:  # noqa: ANN001
    """Process events for up to ``seconds`` or until ``until()``; returns whether it came true."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if until():
            return True
        app.processEvents()
        time.sleep(0.02)
    return until()


def write_regions_gpkg(layer, path: Path):  # noqa: ANN001, ANN201
    """Save ``layer`` as a GeoPackage the way QGIS's *Export › Save Features As* does (key column ``fid``)."""
    from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

    path.parent.mkdir(parents=True, exist_ok=True)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "block_groups"
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    error, message = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options
    )[:2]
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise RuntimeError(f"Cannot write {path}: {message}")
    regions = QgsVectorLayer(f"{path}|layername=block_groups", REGIONS_TITLE, "ogr")
    if not regions.isValid() or "fid" not in regions.fields().names():
        raise RuntimeError(f"{path} does not open as a GeoPackage layer with a fid field.")
    return regions


class _Plugin:
    """What the run dock needs from the plugin: ``start_run`` queues a real :class:`plugin.tasks.RunTask`."""

    iface = None

    def __init__(self) -> None:
        self.tasks: list = []

    @staticmethod
    def ensure_backend(*_args: object, **_kwargs: object) -> bool:
        return True

    def start_run(self, params, on_done=None):  # noqa: ANN001, ANN201
        from qgis.core import QgsApplication

        from plugin.tasks import RunTask

        task = RunTask(params, on_finished=on_done, description=f"RegionLens: {Path(params.output_dir).name}")
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task


def _run(app, dock) -> Path:  # noqa: ANN001
    """Run the dock's choices into :data:`RUN_DIR` through the real worker; returns the GeoPackage."""
    from plugin.input_export import remove_exported_inputs
    from plugin.parameters import inputs_dir_for
    from plugin.tasks import RunSucceeded

    if RUN_DIR.exists():  # an unfinished earlier attempt (ours): start again
        shutil.rmtree(RUN_DIR)
    remove_exported_inputs(inputs_dir_for(RUN_DIR))  # its exported inputs too
    shown = dock.output_file.filePath()
    dock.output_file.setFilePath(str(RUN_DIR))
    dock.refresh_validation()
    print(f"Running {', '.join(METHODS)} on the sample city into {RUN_DIR} (a few minutes)...", flush=True)
    task = dock.run()
    if task is None:
        raise RuntimeError(f"The run dock refused to start: {dock.stage_label.text()} {dock.problems}")
    last = ""
    while not _wait(app, 5.0, lambda: dock.task is None):
        if dock.stage_label.text() != last:
            last = dock.stage_label.text()
            print(f"  {last}", flush=True)
    outcome = dock.last_outcome
    if not isinstance(outcome, RunSucceeded):
        raise RuntimeError(f"The screenshot run did not succeed: {outcome}")
    print(f"  {dock.stage_label.text()}", flush=True)
    if dock.metrics_dialog is not None:
        dock.metrics_dialog.close()
    dock.output_file.setFilePath(shown)
    return outcome.gpkg


def shoot_run_dock(app, project, sample: dict, regions) -> object:  # noqa: ANN001
    """Fill in the run dock as a planner would and save ``run_dock.png``; returns the dock."""
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtWidgets import QScrollArea

    from plugin.parameters import METHODS as REGISTRY
    from plugin.parameters import LabelChoice, RunChoices
    from plugin.ui.run_dock import RunDock, suggested_output_folder

    dock = RunDock(_Plugin(), project=project, fetch_info=True)
    manager = QgsApplication.taskManager()
    _wait(app, 0.5)
    _wait(app, 120, lambda: manager.countActiveTasks() == 0)  # methods from the backend's `info`
    missing = [m for m in METHODS if m not in dock.method_sections]
    if missing:
        raise RuntimeError(f"The backend does not offer {', '.join(missing)}: {dock.backend_error}")
    dock.set_choices(RunChoices(
        region_layer_id=regions.id(), region_id_field="fid",
        poi_layer_id=sample["pois"].id(), poi_category_field="category", poi_name_field="name",
        raster_layer_ids=[sample["landsat"].id()],
        labels=[LabelChoice(field=f) for f in LABEL_FIELDS]
        + [LabelChoice(points_layer_id=sample["crime_incidents"].id(), name="incidents")],
        methods=[REGISTRY.choice(m) for m in METHODS],
        output_dir=str(suggested_output_folder(project, RUN_DIR.name)),
    ))
    dock.resize(QSize(DOCK_WIDTH, 1200))
    dock.show()
    _wait(app, 1.0)
    problems = dock.refresh_validation()
    if problems:
        raise RuntimeError(f"The run dock shows problems: {problems}")
    scroll = dock.findChild(QScrollArea).verticalScrollBar()
    while scroll.maximum() > 0 and dock.height() < 2400:  # tall enough to show the whole form unscrolled
        dock.resize(QSize(DOCK_WIDTH, dock.height() + scroll.maximum() + 4))
        _wait(app, 0.3)
    dock.grab().save(str(IMAGES / "run_dock.png"))
    print(IMAGES / "run_dock.png")
    return dock


def shoot_results(app, project, layers) -> None:  # noqa: ANN001
    """The layer tree and the map canvas side by side, as in QGIS after the run; saves ``results_map.png``."""
    from qgis.core import QgsLayerTreeLayer, QgsLayerTreeModel, QgsRectangle
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor
    from qgis.PyQt.QtWidgets import QHBoxLayout, QWidget

    from plugin.sample_data import SAMPLE_GROUP

    root = project.layerTreeRoot()
    sample_group = root.findGroup(SAMPLE_GROUP)
    if sample_group is not None:  # the inputs stay in the project, hidden, so that only the clusters show
        sample_group.setItemVisibilityChecked(False)
        sample_group.setExpanded(False)
    for node in root.children():
        if isinstance(node, QgsLayerTreeLayer):
            node.setItemVisibilityChecked(False)
    clusters = layers["clusters"]
    shown = [layer for layer in project.mapLayers().values() if root.findLayer(layer.id()).isVisible()]
    if shown != [clusters]:
        raise RuntimeError(f"Only the clusters should be visible, not {[layer.name() for layer in shown]}.")

    window = QWidget()
    row = QHBoxLayout(window)
    row.setContentsMargins(0, 0, 0, 0)
    model = QgsLayerTreeModel(root, window)
    model.setFlag(QgsLayerTreeModel.Flag.AllowNodeChangeVisibility)
    model.setFlag(QgsLayerTreeModel.Flag.ShowLegendAsTree)
    tree = QgsLayerTreeView(window)
    tree.setModel(model)
    tree.setMinimumWidth(720)  # the cluster names in the legend and the layer names in full
    canvas = QgsMapCanvas(window)
    canvas.setCanvasColor(QColor(255, 255, 255))
    bridge = QgsLayerTreeMapCanvasBridge(root, canvas, window)
    bridge.setAutoSetupOnFirstLayer(False)
    canvas.setDestinationCrs(clusters.crs())
    row.addWidget(tree)
    row.addWidget(canvas, 1)
    window.resize(QSize(1560, 780))
    window.show()
    _wait(app, 0.5)
    for name in layers.methods[1:]:  # the other methods' groups open too: each holds the same kinds of layers
        layers.group.findGroup(name).setExpanded(True)
    tree.scrollToTop()
    extent = QgsRectangle(clusters.extent())
    extent.scale(1.03)
    canvas.setExtent(extent)
    canvas.refresh()
    _wait(app, 1.0)
    _wait(app, 60, lambda: not canvas.isDrawing())
    _wait(app, 0.5)
    window.grab().save(str(IMAGES / "results_map.png"))
    print(IMAGES / "results_map.png")
    window.close()
    del bridge


def shoot_explorer(app, layers) -> None:  # noqa: ANN001
    """The embedding explorer on the run with a few regions selected; saves ``explorer.png``."""
    from qgis.PyQt.QtCore import QSize

    from plugin.explorer.widget import open_explorer

    explorer = open_explorer(None, layers["embeddings"], layers["clusters"])
    explorer.resize(QSize(900, 700))
    explorer.show()
    _wait(app, 1.0)
    xy = explorer.coordinates
    explorer.select_in_plot(float(xy[:, 0].min()), float(xy[:, 0].mean()), float(xy[:, 1].mean()),
                            float(xy[:, 1].max()))
    _wait(app, 1.0)
    explorer.grab().save(str(IMAGES / "explorer.png"))
    print(IMAGES / "explorer.png")
    explorer.close()
    explorer.deleteLater()


def shoot_leaderboard(app, gpkg: Path, images: Path = IMAGES) -> Path:  # noqa: ANN001
    """The metrics dialog as it opens after a run (the summary tab); saves ``leaderboard.png``."""
    from plugin.ui.metrics_dialog import MetricsDialog

    dialog = MetricsDialog.from_gpkg(gpkg)
    dialog.resize(980, 720)
    dialog.show()
    _wait(app, 1.0)
    path = images / "leaderboard.png"
    dialog.grab().save(str(path))
    print(path)
    dialog.close()
    dialog.deleteLater()
    return path


def shoot_cluster_card(app, layers, images: Path = IMAGES) -> Path:  # noqa: ANN001
    """The card of cluster 0 (the largest) of the primary method; saves ``cluster_card.png``."""
    from plugin.ui.cluster_card import ClusterCardDialog

    card = ClusterCardDialog(layers["clusters"], 0)
    card.resize(620, 520)
    card.show()
    _wait(app, 0.5)
    path = images / "cluster_card.png"
    card.grab().save(str(path))
    print(path)
    card.close()
    card.deleteLater()
    return path


def shoot_similar(app, project, layers, images: Path = IMAGES, folder: Path = SHOTS) -> Path:  # noqa: ANN001
    """Regions similar to the first region (the worker's ``similar`` job, run here in this thread) on the map;
    saves ``similar_map.png``."""
    from qgis.core import QgsRectangle
    from qgis.gui import QgsMapCanvas
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    from plugin.similar import load_similarity, to_similar_parameters
    from plugin.worker_client import WorkerClient, find_backend_python

    embeddings = layers["embeddings"]
    first = next(embeddings.getFeatures())
    python = find_backend_python()
    if python is None:
        raise RuntimeError("No backend interpreter: run `make venv-backend` first.")
    params = to_similar_parameters(embeddings, [str(first["region_id"])], python, folder=folder)
    job = {**params.worker_config(), "output": str(Path(folder) / "similar.gpkg"), "overwrite": True}  # one file
    client = WorkerClient(python, params.plugin_root)
    try:
        client.start(timeout=120)
        result = client.run_job("similar", job, idle_timeout=120)
    finally:
        client.close(timeout=5)
    layer = load_similarity(result["output"], params.title, project)
    canvas = QgsMapCanvas()
    canvas.setCanvasColor(QColor(255, 255, 255))
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.resize(QSize(900, 760))
    extent = QgsRectangle(layer.extent())
    extent.scale(1.03)
    canvas.setExtent(extent)
    canvas.show()
    canvas.refresh()
    _wait(app, 1.0)
    _wait(app, 60, lambda: not canvas.isDrawing())
    _wait(app, 0.5)
    path = images / "similar_map.png"
    canvas.grab().save(str(path))
    print(path)
    canvas.close()
    project.removeMapLayer(layer.id())
    return path


def main() -> int:
    """Run (or reuse) the screenshot run and render the pictures; returns the exit code."""
    from qgis.core import QgsApplication, QgsProject

    from plugin.results import load_run_outputs
    from plugin.sample_data import SAMPLE_GROUP, load_sample_data

    app = QgsApplication([], True)
    app.initQgis()
    try:
        IMAGES.mkdir(parents=True, exist_ok=True)
        project = QgsProject.instance()
        sample = load_sample_data(project)
        project.setCrs(sample["landsat"].crs())
        regions = write_regions_gpkg(sample["block_groups"], REGIONS_GPKG)
        project.removeMapLayer(sample["block_groups"].id())  # the planner's regions are the GeoPackage's
        project.addMapLayer(regions, False)
        project.layerTreeRoot().findGroup(SAMPLE_GROUP).insertLayer(0, regions)

        dock = shoot_run_dock(app, project, sample, regions)
        gpkg = RUN_DIR / "regionlens.gpkg"
        if not gpkg.is_file():
            gpkg = _run(app, dock)
        else:
            print(f"Reusing the run in {RUN_DIR} (delete it to run again).")
        dock.close()
        dock.disconnect_project()
        dock.deleteLater()

        layers = load_run_outputs(gpkg, project)
        shoot_results(app, project, layers)
        shoot_explorer(app, layers)
        shoot_leaderboard(app, gpkg)
        shoot_cluster_card(app, layers)
        shoot_similar(app, project, layers)
    except RuntimeError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    finally:
        app.processEvents()
        QgsProject.instance().clear()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every picture is saved by now; QGIS 3.22's exitQgis() segfaulted offscreen at the end of this script
    # (after the last picture), so the process ends without it.
    os._exit(code)
