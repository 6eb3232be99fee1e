"""The plugin as QGIS loads it: classFactory, menus, sample data, opening results (plugin/main.py)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsVectorLayer

from plugin import main as plugin_main
from plugin.main import RegionLensPlugin
from plugin.sample_data import SAMPLE_GROUP


def test_class_factory_init_gui_unload(installed_package: ModuleType, qgis_iface) -> None:
    plugin = installed_package.classFactory(qgis_iface)
    assert type(plugin).__name__ == "RegionLensPlugin"
    plugin.initGui()
    texts = [action.text() for action in plugin.actions]
    assert texts[0] == "Run RegionLens\u2026"  # the toolbar button opens the run dock
    assert {"Open run results\u2026", "Load sample data"} <= set(texts)
    assert not plugin.actions[0].icon().isNull()
    plugin.unload()
    assert plugin.actions == []


def test_load_sample_data(qgis_iface, qgis_new_project: QgsProject, qtbot) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        plugin.sample_data_action.trigger()
        group = qgis_new_project.layerTreeRoot().findGroup(SAMPLE_GROUP)
        assert group is not None
        layers = {node.layer().name(): node for node in group.findLayers()}
        assert len(layers) == 4
        for node in layers.values():
            assert node.layer().isValid()
        blocks = next(n.layer() for n in layers.values() if n.layer().name().startswith("Block groups"))
        assert isinstance(blocks, QgsVectorLayer)
        assert blocks.featureCount() == 579
        assert "Population" in blocks.fields().names()
        crimes = next(n for n in layers.values() if n.layer().name().startswith("Crime incidents"))
        assert not crimes.itemVisibilityChecked()  # optional, added unchecked
        assert any(isinstance(n.layer(), QgsRasterLayer) for n in layers.values())
        assert qgis_new_project.crs().authid() == "EPSG:3857"
        assert qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success)

        # The run dock opens with every sample input chosen: try everything with one click on Run.
        dock = plugin.run_dock
        assert dock is not None and not dock.isHidden()  # shown (the stub main window itself is hidden)
        choices = dock.choices()
        by_name = {n.layer().name(): n.layer() for n in layers.values()}
        assert choices.region_layer_id == blocks.id() and choices.region_id_field == "GEO_ID"
        pois = next(layer for name, layer in by_name.items() if name.startswith("POIs"))
        assert choices.poi_layer_id == pois.id()
        assert (choices.poi_category_field, choices.poi_name_field) == ("category", "name")
        landsat = next(layer for layer in by_name.values() if isinstance(layer, QgsRasterLayer))
        assert choices.raster_layer_ids == [landsat.id()]
        assert [lab.field for lab in choices.labels if lab.field] == ["Population", "Robbery"]
        assert [lab.points_layer_id for lab in choices.labels if lab.points_layer_id] == [crimes.layer().id()]
        assert Path(choices.output_dir).parent.name == "regionlens"
        dock.refresh_validation()
        assert dock.problems == [], dock.problems
        qtbot.waitUntil(lambda: dock.info_task is None, timeout=90_000)
    finally:
        plugin.unload()


def test_open_run_results_from_dialog(
    qgis_iface,
    qgis_new_project: QgsProject,
    run_gpkg: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugin_main.QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(run_gpkg), ""))
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        plugin.open_results_action.trigger()
        group = qgis_new_project.layerTreeRoot().findGroup("RegionLens \u2014 run_small")
        assert group is not None
        names = {node.layer().source().split("layername=")[1] for node in group.findLayers()}
        assert names == {"clusters", "predictions", "embeddings", "cluster_profiles", "metrics"}
        assert len(group.findLayers()) == 8  # two labels: a predictions and a residuals map each
        assert qgis_new_project.crs().authid() == "EPSG:32610"
    finally:
        plugin.unload()


def test_open_run_results_reports_errors(qgis_iface, qgis_new_project: QgsProject, tmp_path: Path) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    assert plugin.open_run_results(tmp_path / "missing" / "regionlens.gpkg") == {}
    assert any("not found" in message for message in bar.get_messages(Qgis.MessageLevel.Critical))
    assert not qgis_new_project.mapLayers()


def test_sample_data_opens_in_the_image_crs_in_real_qgis(qgis_iface, qgis_new_project: QgsProject, qtbot) -> None:
    """In QGIS the layer tree's canvas bridge gives an empty project the CRS of the first layer in the tree (the
    POIs, EPSG:4326) once the event loop runs: the sample must still end in the image's CRS (EPSG:3857)."""
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas

    canvas = QgsMapCanvas()
    bridge = QgsLayerTreeMapCanvasBridge(qgis_new_project.layerTreeRoot(), canvas)
    plugin = RegionLensPlugin(qgis_iface)
    try:
        layers = plugin.load_sample_data()
        qtbot.wait(100)  # the bridge's deferred update, then ours
        assert qgis_new_project.crs().authid() == layers["landsat"].crs().authid() == "EPSG:3857"
    finally:
        del bridge
        canvas.deleteLater()
