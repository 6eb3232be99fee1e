"""Write the README's screenshots (``make screenshots``; run in QGIS's Python, offscreen).

The pictures show the run ``make demo`` wrote (``out/demo/``: baseline, CaLLiPer, CooKIE, HAFusion, ReFound and
fusion on the San Francisco sample, six labels), as the plugin shows it; nothing is run again, and nothing is
written into the run's folder:

- ``docs/images/run_dock.png``: the run dock set up like the demo run (the sample layers, the run's labels and
  methods with their parameters, from its ``run.json``; methods from the real backend);
- ``docs/images/results_map.png``: the run's results as the plugin loads them: the layer tree with the
  run's group (one group per method, the primary method's open with its clusters' legend naming each cluster
  in words) beside the map canvas showing the primary method's clusters only;
- ``docs/images/explorer.png``: the embedding explorer on that run, with a few regions selected;
- ``docs/images/leaderboard.png``: the metrics dialog's summary tab (best method per label, the R2 chart);
- ``docs/images/cluster_card.png``: the card of cluster 0 of the primary method;
- ``docs/images/similar_map.png``: the regions similar to one region (the worker's ``similar`` job, written
  to ``out/screenshots/``), the most similar outlined;
- ``docs/images/interval_map.png``: the primary method's population predictions in the *Interval width*
  style (how wide each region's prediction interval is), with its legend.

Usage: ``scripts/screenshots.py [--run DIR]`` (default ``out/demo``; run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The run the pictures show (``make demo`` writes it).
RUN_DIR = ROOT / "out" / "demo"
#: Where the pictures' own outputs go (the similarity layer): never into the run's folder.
SHOTS = ROOT / "out" / "screenshots"
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


def _show(app, widget, width: int, height: int, seconds: float = 1.0) -> None:  # noqa: ANN001
    """Show ``widget`` at ``width`` x ``height`` pixels and let it settle for ``seconds``."""
    from qgis.PyQt.QtCore import QSize

    widget.resize(QSize(width, height))
    widget.show()
    _wait(app, seconds)


def _drawn(app, canvas) -> None:  # noqa: ANN001
    """Wait until the map canvas has drawn its layers (at most a minute)."""
    _wait(app, 1.0)
    _wait(app, 60, lambda: not canvas.isDrawing())
    _wait(app, 0.5)


def _save(widget, path: Path, keep: bool = False) -> Path:  # noqa: ANN001
    """Save what ``widget`` shows as the picture ``path`` (printed); then close and delete it unless ``keep``."""
    widget.grab().save(str(path))
    print(path)
    if not keep:
        widget.close()
        widget.deleteLater()
    return path


def read_run(run_dir: Path) -> dict:
    """The run's ``run.json``.

    Raises:
        RuntimeError: If the folder holds no finished run (telling to run ``make demo`` first).
    """
    gpkg, manifest = run_dir / "regionlens.gpkg", run_dir / "run.json"
    if not gpkg.is_file() or not manifest.is_file():
        raise RuntimeError(f"No finished run in {run_dir} ({gpkg.name} and {manifest.name}): run `make demo` "
                           "first, or pass --run <a run's output folder>.")
    return json.loads(manifest.read_text(encoding="utf-8"))


class _Plugin:
    """What the run dock needs from the plugin to show itself (nothing is run from it here)."""

    iface = None

    @staticmethod
    def ensure_backend(*_args: object, **_kwargs: object) -> bool:
        return True


def _sample_layer(sample: dict, path: object) -> object:
    """The loaded sample layer read from the file ``path`` names (by file name)."""
    name = Path(str(path)).name
    for layer in sample.values():
        if Path(layer.source().split("|")[0]).name == name:
            return layer
    raise RuntimeError(f"The run read {name}, which is not one of the sample city's layers.")


def demo_choices(project, sample: dict, manifest: dict):  # noqa: ANN001, ANN201
    """The run dock's choices that make the run of ``manifest`` (its inputs are the sample city's files)."""
    from plugin.parameters import LabelChoice, MethodChoice, RunChoices
    from plugin.ui.run_dock import suggested_output_folder

    cfg = manifest["config"]
    labels = []
    for lab in cfg.get("labels") or []:
        source = ({"field": lab["field"]} if lab.get("field")
                  else {"points_layer_id": _sample_layer(sample, lab["points"]).id()})
        labels.append(LabelChoice(**source, target=lab.get("target", "density"), log1p=bool(lab.get("log1p")),
                                  name=lab["name"]))
    pois, pred, k = cfg.get("pois") or {}, cfg.get("prediction") or {}, (cfg.get("clustering") or {}).get("k")
    return RunChoices(
        region_layer_id=_sample_layer(sample, cfg["regions"]["path"]).id(), region_id_field=cfg["regions"]["id_field"],
        poi_layer_id=_sample_layer(sample, pois["path"]).id() if pois else "",
        poi_category_field=pois.get("category_field") or "", poi_name_field=pois.get("name_field") or "",
        raster_layer_ids=[_sample_layer(sample, r["path"]).id() for r in cfg.get("rasters") or []],
        labels=labels,
        methods=[MethodChoice(m["name"], int(m["dim"]), dict(m.get("params") or {})) for m in cfg["methods"]],
        cluster_k=k if isinstance(k, int) else 0,
        prediction_models=list(pred.get("models") or ["ridge"]), folds=int(pred.get("folds", 5)),
        repeats=int(pred.get("repeats", 3)), spatial=bool(pred.get("spatial", True)),
        coverage=float(pred.get("coverage", 0.9)), seed=int(cfg.get("seed", 0)),
        output_dir=str(suggested_output_folder(project, Path(cfg["output_dir"]).name)),
    )


def shoot_run_dock(app, project, choices) -> object:  # noqa: ANN001
    """The run dock set up with ``choices`` (as a planner would fill it in); saves ``run_dock.png``."""
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtWidgets import QScrollArea

    from plugin.ui.run_dock import RunDock

    dock = RunDock(_Plugin(), project=project, fetch_info=True)
    manager = QgsApplication.taskManager()
    _wait(app, 0.5)
    _wait(app, 120, lambda: manager.countActiveTasks() == 0)  # methods from the backend's `info`
    missing = [m.name for m in choices.methods if m.name not in dock.method_sections]
    if missing:
        raise RuntimeError(f"The backend does not offer {', '.join(missing)}: {dock.backend_error}")
    dock.set_choices(choices)
    shown = sorted(m.name for m in dock.choices().methods)  # the dock lists them in its own order
    if shown != sorted(m.name for m in choices.methods):
        raise RuntimeError(f"The run dock shows methods {shown}, not the run's {[m.name for m in choices.methods]}.")
    _show(app, dock, DOCK_WIDTH, 1200)
    problems = dock.refresh_validation()
    if problems:
        raise RuntimeError(f"The run dock shows problems: {problems}")
    scroll = dock.findChild(QScrollArea).verticalScrollBar()
    while scroll.maximum() > 0 and dock.height() < 3200:  # tall enough to show the whole form unscrolled
        dock.resize(QSize(DOCK_WIDTH, dock.height() + scroll.maximum() + 4))
        _wait(app, 0.3)
    _save(dock, IMAGES / "run_dock.png", keep=True)
    return dock


def shoot_results(app, project, layers) -> None:  # noqa: ANN001
    """The layer tree and the map canvas side by side, as in QGIS after the run; saves ``results_map.png``."""
    from qgis.core import QgsLayerTreeLayer, QgsLayerTreeModel, QgsRectangle
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas
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
    _show(app, window, 1560, 780, 0.5)
    for name in layers.methods[1:]:  # the other methods' groups closed, as the plugin loads them: all show
        layers.group.findGroup(name).setExpanded(False)
    tree.scrollToTop()
    extent = QgsRectangle(clusters.extent())
    extent.scale(1.03)
    canvas.setExtent(extent)
    canvas.refresh()
    _drawn(app, canvas)
    _save(window, IMAGES / "results_map.png")
    del bridge


def shoot_explorer(app, layers) -> None:  # noqa: ANN001
    """The embedding explorer on the run with a few regions selected; saves ``explorer.png``."""

    from plugin.explorer.widget import open_explorer

    explorer = open_explorer(None, layers["embeddings"], layers["clusters"])
    _show(app, explorer, 900, 700)
    xy = explorer.coordinates
    explorer.select_in_plot(float(xy[:, 0].min()), float(xy[:, 0].mean()), float(xy[:, 1].mean()),
                            float(xy[:, 1].max()))
    _wait(app, 1.0)
    _save(explorer, IMAGES / "explorer.png")


def shoot_leaderboard(app, gpkg: Path, images: Path = IMAGES) -> Path:  # noqa: ANN001
    """The metrics dialog as it opens after a run (the summary tab); saves ``leaderboard.png``."""
    from plugin.ui.metrics_dialog import MetricsDialog

    dialog = MetricsDialog.from_gpkg(gpkg)
    _show(app, dialog, 980, 720)
    return _save(dialog, images / "leaderboard.png")


def shoot_cluster_card(app, layers, images: Path = IMAGES) -> Path:  # noqa: ANN001
    """The card of cluster 0 (the largest) of the primary method; saves ``cluster_card.png``."""
    from plugin.ui.cluster_card import ClusterCardDialog

    card = ClusterCardDialog(layers["clusters"], 0)
    _show(app, card, 620, 520, 0.5)
    return _save(card, images / "cluster_card.png")


def shoot_similar(app, project, layers, images: Path = IMAGES, folder: Path = SHOTS) -> Path:  # noqa: ANN001
    """Regions similar to the first region (the worker's ``similar`` job, run here in this thread) on the map;
    saves ``similar_map.png``."""
    from qgis.core import QgsRectangle
    from qgis.gui import QgsMapCanvas
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
    _show(app, canvas, 900, 760, 0)
    extent = QgsRectangle(layer.extent())
    extent.scale(1.03)
    canvas.setExtent(extent)
    canvas.refresh()
    _drawn(app, canvas)
    path = _save(canvas, images / "similar_map.png")
    project.removeMapLayer(layer.id())
    return path


def shoot_interval_map(layers, coverage: float, images: Path = IMAGES,  # noqa: ANN001
                       label: str = "population") -> Path:
    """The primary method's predictions of ``label`` in the interval-width style (intervals of nominal
    ``coverage``); saves ``interval_map.png``."""
    from plugin.render_demo import render_layer
    from plugin.styling import INTERVAL_STYLE

    predictions = layers.layer("predictions", label=label)
    if predictions is None or INTERVAL_STYLE not in predictions.styleManager().styles():
        raise RuntimeError(f"The run has no {label} predictions with intervals (the {INTERVAL_STYLE} style).")
    manager = predictions.styleManager()
    shown = manager.currentStyle()
    manager.setCurrentStyle(INTERVAL_STYLE)
    try:
        path = render_layer(predictions, images / "interval_map.png", size=(900, 760),
                            title=f"{label}: {round(100 * coverage)} % interval width ({layers.methods[0]})")
    finally:
        manager.setCurrentStyle(shown)
    print(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Render the pictures of a finished run (default: the demo's); returns the exit code."""
    from qgis.core import QgsApplication, QgsProject
    from qgis.PyQt.QtCore import QEvent

    from plugin.results import load_run_outputs
    from plugin.sample_data import load_sample_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RUN_DIR, help=f"a run's output folder (default {RUN_DIR})")
    run_dir = parser.parse_args(argv).run.resolve()
    try:
        manifest = read_run(run_dir)
    except RuntimeError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 2
    app = QgsApplication([], True)
    app.initQgis()
    try:
        IMAGES.mkdir(parents=True, exist_ok=True)
        project = QgsProject.instance()
        sample = load_sample_data(project)
        project.setCrs(sample["landsat"].crs())
        dock = shoot_run_dock(app, project, demo_choices(project, sample, manifest))
        dock.close()
        dock.disconnect_project()
        dock.deleteLater()

        gpkg = run_dir / "regionlens.gpkg"
        layers = load_run_outputs(gpkg, project)
        shoot_results(app, project, layers)
        shoot_explorer(app, layers)
        shoot_leaderboard(app, gpkg)
        shoot_cluster_card(app, layers)
        shoot_interval_map(layers, float((manifest["config"].get("prediction") or {}).get("coverage", 0.9)))
        SHOTS.mkdir(parents=True, exist_ok=True)
        shoot_similar(app, project, layers)
    except RuntimeError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    finally:
        app.processEvents()
        # Delete the closed widgets (deleteLater) before the project drops its layers: the closed explorer's
        # layer combos would otherwise react to the layers going and crash the process.
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QgsProject.instance().clear()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every picture is saved by now; QGIS 3.22's exitQgis() segfaulted offscreen at the end of this script
    # (after the last picture), so the process ends without it.
    os._exit(code)
