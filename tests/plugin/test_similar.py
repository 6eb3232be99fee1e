"""Find similar regions from the plugin: the selected regions, the worker's ``similar`` job in a task, the result
loaded graduated with the top N outlined (plugin/similar.py, plugin/main.py, plugin/styling.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsFeatureRequest,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsSymbolLayer,
    QgsVectorLayer,
)

from plugin import main as plugin_main
from plugin.common import common
from plugin.main import RegionLensPlugin
from plugin.results import load_run_outputs
from plugin.similar import chosen_region_ids, similar_output, to_similar_parameters
from plugin.styling import TOP_OUTLINE, TOP_OUTLINE_WIDTH
from plugin.tasks import RunSucceeded


def _select(layer: QgsVectorLayer, ids: list[str]) -> None:
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["region_id"] in ids])


def test_parameters_name_the_run_layer_and_a_fresh_output(qgis_new_project: QgsProject, make_run_gpkg,
                                                          tmp_path: Path) -> None:
    gpkg = make_run_gpkg(tmp_path / "run_sim", methods=("baseline", "calliper"))
    layers = load_run_outputs(gpkg, qgis_new_project)
    calliper = layers.layer("embeddings", "calliper")
    clusters = layers["clusters"]
    assert chosen_region_ids(calliper, [clusters]) == []
    _select(clusters, ["r03", "r07"])  # selected on the visible clusters layer: counts
    ids = chosen_region_ids(calliper, [clusters])
    assert ids == ["r03", "r07"]
    params = to_similar_parameters(calliper, ids, Path("/usr/bin/python3"), top=4)
    assert params.params == {"run": str(gpkg.resolve()), "layer": "embeddings_calliper", "ids": ["r03", "r07"],
                             "id_field": "region_id", "top": 4, "output": str(gpkg.parent.resolve() / "similar.gpkg"),
                             "overwrite": False}
    assert params.inputs_dir is None and params.title.startswith("Similar to r03, r07")
    (gpkg.parent / common.SIMILAR_GPKG).write_bytes(b"an earlier result")
    assert similar_output(gpkg.parent).name == "similar_2.gpkg"  # never overwritten
    with pytest.raises(ValueError, match="Select one or more regions"):
        to_similar_parameters(calliper, [], Path("python"))
    with pytest.raises(ValueError, match="not an embeddings layer"):
        to_similar_parameters(clusters, ["r03"], Path("python"))


def test_a_layer_outside_a_geopackage_is_exported(qgis_new_project: QgsProject, run_gpkg: Path,
                                                   tmp_path: Path) -> None:
    source = QgsVectorLayer(f"{run_gpkg}|layername=embeddings", "emb", "ogr")
    memory = source.materialize(QgsFeatureRequest())
    assert memory.providerType() == "memory"
    with pytest.raises(ValueError, match="choose a folder"):
        to_similar_parameters(memory, ["r01"], Path("python"))
    params = to_similar_parameters(memory, ["r01"], Path("python"), folder=tmp_path / "out")
    exported = Path(params.params["run"])
    assert exported.is_file() and exported.parent == params.inputs_dir
    assert params.params["layer"] == "embeddings"
    check = QgsVectorLayer(f"{exported}|layername=embeddings", "check", "ogr")
    assert check.featureCount() == 12 and "emb_003" in check.fields().names()


def test_find_similar_runs_the_worker_and_loads_the_layer(qgis_iface, qgis_new_project: QgsProject, run_gpkg: Path,
                                                         backend_python: Path, qtbot, monkeypatch) -> None:
    monkeypatch.setattr(plugin_main, "find_backend_python", lambda: backend_python)
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        layers = plugin.open_run_results(run_gpkg)
        embeddings = layers["embeddings"]
        bar = qgis_iface.messageBar()
        bar.clear_messages()
        qgis_iface.setActiveLayer(layers["clusters"])
        assert plugin.find_similar() is None  # nothing selected yet: said, nothing started
        assert any("Select one or more regions" in m for m in bar.get_messages(Qgis.MessageLevel.Warning))
        _select(layers["clusters"], ["r02"])
        outcomes = []
        task = plugin.find_similar(top=3)
        assert task is not None and task in plugin.tasks
        task.on_finished = (lambda done: lambda outcome: (done(outcome), outcomes.append(outcome)))(task.on_finished)
        qtbot.waitUntil(lambda: bool(outcomes), timeout=120_000)
        assert isinstance(outcomes[0], RunSucceeded), outcomes[0]
        assert task not in plugin.tasks
        result = outcomes[0].result
        assert Path(result["output"]) == run_gpkg.parent / "similar.gpkg" and result["ids"] == ["r02"]

        layer = plugin.last_similarity
        assert layer is not None and layer.isValid() and layer.name().startswith("Similar to r02")
        root = qgis_new_project.layerTreeRoot()
        node = root.findLayer(layer.id())
        run_group = root.findLayer(embeddings.id()).parent()
        while run_group.parent() is not root:
            run_group = run_group.parent()
        # on top of the run's group: above its (shown, opaque) clusters layer, so the result is seen at once
        assert node.parent() is run_group and run_group.children().index(node) == 0
        renderer = layer.renderer()
        assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "similarity"
        assert renderer.ranges()[-1].label().endswith("(most similar)")
        # The top 3 are outlined: the symbol's outline width evaluates to the thick width for them only.
        ranges = renderer.ranges()  # copies: keep them while their symbols are used
        symbol = ranges[0].symbol()
        assert renderer.usingSymbolLevels() and symbol.symbolLayerCount() == 2
        symbol_layer = symbol.symbolLayer(1)  # the outline, drawn in a second pass over every fill
        assert symbol_layer.renderingPass() == 1
        width = symbol_layer.dataDefinedProperties().property(QgsSymbolLayer.Property.PropertyStrokeWidth)
        colour = symbol_layer.dataDefinedProperties().property(QgsSymbolLayer.Property.PropertyStrokeColor)
        context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
        thick = []
        for feature in layer.getFeatures():
            context.setFeature(feature)
            value, _ok = width.valueAsDouble(context, 0.0)
            if value == pytest.approx(TOP_OUTLINE_WIDTH) and feature["top_n"] == 1:
                assert colour.valueAsColor(context)[0].name() == TOP_OUTLINE
                thick.append(feature["region_id"])
        assert sorted(thick) == sorted(row["region_id"] for row in result["top"]) and len(thick) == 3
        assert any("most similar regions" in item.text() for item in bar.items())
        assert not any("Finding regions similar" in item.text() for item in bar.items())  # the job is over
    finally:
        plugin.unload()


def test_layer_tree_actions_for_embeddings_and_clusters(qgis_iface, qgis_new_project: QgsProject,
                                                        run_gpkg: Path) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        qgis_iface.addCustomActionForLayer.reset_mock()
        layers = load_run_outputs(run_gpkg, qgis_new_project)
        offered = [(call.args[0], call.args[1]) for call in qgis_iface.addCustomActionForLayer.call_args_list]
        assert (plugin.similar_action, layers["embeddings"]) in offered
        assert (plugin.card_action, layers["clusters"]) in offered
        assert all(layer not in (layers["metrics"], layers["predictions"])
                   for action, layer in offered if action is plugin.card_action)
        qgis_iface.setActiveLayer(layers["clusters"])
        plugin.card_action.trigger()
        (card,) = plugin.cluster_cards
        assert card.layer is layers["clusters"] and card.cluster == 0
        card.close()
        qgis_iface.setActiveLayer(layers["metrics"])
        qgis_iface.messageBar().clear_messages()
        assert plugin.open_cluster_card() is None
        assert any("clusters layer" in m for m in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning))
    finally:
        plugin.unload()


def test_run_dock_button_finds_similar_regions(qgis_iface, qgis_new_project: QgsProject, monkeypatch, qtbot) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    asked = []
    monkeypatch.setattr(plugin, "find_similar", lambda layer=None: asked.append(layer))
    plugin.initGui()
    try:
        dock = plugin.toggle_run_dock()
        dock.similar_button.click()
        assert asked == [None]  # the plugin picks the embeddings and the selection
        qtbot.waitUntil(lambda: dock.info_task is None, timeout=90_000)
    finally:
        plugin.unload()


def test_map_tool_click_chooses_the_region_and_finds_similar(qgis_iface, qgis_new_project: QgsProject,
                                                             run_gpkg: Path, monkeypatch) -> None:
    from qgis.core import QgsPointXY
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    asked = []
    monkeypatch.setattr(plugin, "find_similar", lambda layer=None: asked.append(layer))
    try:
        layers = plugin.open_run_results(run_gpkg)
        embeddings = layers["embeddings"]
        canvas = qgis_iface.mapCanvas()
        canvas.resize(400, 300)
        canvas.setDestinationCrs(embeddings.crs())
        canvas.setExtent(embeddings.extent())
        plugin.similar_tool_action.trigger()  # checkable: the canvas's tool is now ours
        tool = plugin.similar_tool
        assert canvas.mapTool() is tool and plugin.similar_tool_action.isChecked()

        def click(region: str, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
            feature = next(f for f in embeddings.getFeatures() if f["region_id"] == region)
            centre = feature.geometry().centroid().asPoint()
            pixel = canvas.getCoordinateTransform().transform(QgsPointXY(centre))
            event = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, QPoint(int(pixel.x()), int(pixel.y())),
                                     Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton, modifiers)
            tool.canvasReleaseEvent(event)

        click("r05")
        selected = sorted(f["region_id"] for f in embeddings.getSelectedFeatures())
        assert selected == ["r05"] and asked == [embeddings]
        click("r10", Qt.KeyboardModifier.ShiftModifier)  # Shift adds
        assert sorted(f["region_id"] for f in embeddings.getSelectedFeatures()) == ["r05", "r10"]
        click("r01")  # a plain click starts again
        assert sorted(f["region_id"] for f in embeddings.getSelectedFeatures()) == ["r01"]
        assert len(asked) == 3
        assert plugin.find_similar_at(QgsPointXY(0.0, 0.0)) is None  # no region there: said, nothing run
        assert len(asked) == 3
        plugin.similar_tool_action.trigger()
        assert canvas.mapTool() is not tool
    finally:
        plugin.unload()


def test_cancelled_job_says_so_and_removes_exported_inputs(qgis_new_project: QgsProject, run_gpkg: Path,
                                                           tmp_path: Path, qtbot) -> None:
    from plugin.similar import SimilarTask
    from plugin.tasks import RunCancelled

    source = QgsVectorLayer(f"{run_gpkg}|layername=embeddings", "emb", "ogr")
    params = to_similar_parameters(source.materialize(QgsFeatureRequest()), ["r01"], Path("python"),
                                   folder=tmp_path / "out")
    assert params.inputs_dir.is_dir()
    outcomes = []
    task = SimilarTask(params, on_finished=outcomes.append)
    task.cancel()
    task.finished(task.run())
    qtbot.waitUntil(lambda: bool(outcomes), timeout=5_000)
    assert isinstance(outcomes[0], RunCancelled) and "similar regions was cancelled" in outcomes[0].message
    assert not params.inputs_dir.exists()
    assert not Path(params.params["output"]).exists()

