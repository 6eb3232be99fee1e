"""The run dock on the real sample layers, and runs through it with the real backend worker.

Covers plugin/ui/run_dock.py (populated from layers, live validation, per-project settings, Run,
Cancel, a killed worker), the toolbar action of plugin/main.py, the message bar with a "Details"
button (plugin/ui/messages.py) and the metrics table (plugin/ui/metrics_dialog.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

from plugin.common import common
from plugin.main import RegionLensPlugin
from plugin.parameters import METHODS, RunChoices, label_name, to_run_config, validate
from plugin.project_settings import save_choices
from plugin.results import gpkg_layer_names
from plugin.tasks import RunCancelled, RunFailed, RunSucceeded
from plugin.ui import run_dock as run_dock_module
from plugin.ui.backend_banner import BACKEND_MISSING, BACKEND_MISSING_PROBLEM, OPTIONS_PAGE
from plugin.ui.messages import DetailsDialog, push_message
from plugin.ui.metrics_dialog import MetricsDialog
from plugin.ui.run_dock import RunDock, next_free_folder

#: Every test starts with the baseline-only method registry (conftest ``fresh_registry``).
pytestmark = pytest.mark.usefixtures("fresh_registry")


@pytest.fixture
def plugin(qgis_iface):
    plugin = RegionLensPlugin(qgis_iface)
    yield plugin
    if plugin.run_dock is not None:
        plugin.run_dock.disconnect_project()
        plugin.run_dock.deleteLater()
        plugin.run_dock = None


@pytest.fixture
def dock(plugin, qtbot, qgis_new_project):
    """A dock that does not ask the backend for its methods (baseline only)."""
    widget = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    widget.disconnect_project()


def items(list_widget) -> dict[str, object]:
    return {list_widget.item(i).text(): list_widget.item(i) for i in range(list_widget.count())}


def check(list_widget, text: str) -> None:
    items(list_widget)[text].setCheckState(Qt.CheckState.Checked)


def small_run(dock: RunDock, sample: dict, output_dir: Path, rasters: bool = True) -> None:
    """Fill the dock for a fast run on the sample city (dim 8, k 4, 3 folds, 1 repeat, ridge only)."""
    dock.region_combo.setLayer(sample["block_groups"])
    dock.region_id_combo.setField("GEO_ID")
    dock.poi_combo.setLayer(sample["pois"])
    dock.poi_category_combo.setField("category")
    if rasters:
        check(dock.raster_list, sample["landsat"].name())
    check(dock.label_list, "Population")
    dock.method_sections["baseline"].set_checked(True)
    dock.method_sections["baseline"].dim.setValue(8)
    dock.k_spin.setValue(4)
    dock.folds_spin.setValue(3)
    dock.repeats_spin.setValue(1)
    dock.ridge_check.setChecked(True)
    dock.gbm_check.setChecked(False)
    dock.spatial_check.setChecked(False)
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    dock.output_file.setFilePath(str(output_dir))


def started(dock: RunDock, sample: dict, output_dir: Path, qtbot):
    """A small run started through the dock, once the worker reports its first stage; returns its task."""
    small_run(dock, sample, output_dir)
    task = dock.run()
    assert task is not None
    qtbot.waitUntil(lambda: bool(task.status.stage) or dock.last_outcome is not None, timeout=90_000)
    assert dock.last_outcome is None, dock.last_outcome
    return task


def message_items(bar, level):
    return [item for item in bar.items() if item.level() == level]


# ------------------------------------------------------------------------------------- populated


def test_dock_populated_from_sample_layers(dock: RunDock, sample: dict) -> None:
    assert dock.region_combo.currentLayer() is sample["block_groups"]
    region_names = [dock.region_combo.itemText(i) for i in range(dock.region_combo.count())]
    assert region_names == [sample["block_groups"].name()]  # polygons only: no POIs, no raster
    assert dock.region_id_combo.currentField() == "GEO_ID"
    dock.region_combo.setLayer(sample["pois"])  # the filter refuses a point layer
    assert dock.region_combo.currentLayer() is not sample["pois"]
    dock.region_combo.setLayer(sample["block_groups"])

    assert dock.poi_combo.currentLayer() is None  # optional, empty until chosen
    poi_names = [dock.poi_combo.itemText(i) for i in range(dock.poi_combo.count())]
    assert sample["pois"].name() in poi_names and sample["block_groups"].name() not in poi_names
    dock.poi_combo.setLayer(sample["pois"])
    assert dock.poi_category_combo.currentField() == "category"
    assert dock.poi_name_combo.currentField() == "name"
    poi_fields = [dock.poi_category_combo.itemText(i) for i in range(dock.poi_category_combo.count())]
    assert {"category", "name"} <= set(poi_fields)

    assert list(items(dock.raster_list)) == [sample["landsat"].name()]
    assert dock.raster_hint.isHidden()
    labels = set(items(dock.label_list))
    assert {"Population", "Vandalism", "Robbery", "Drugs", "CarTheft"} <= labels
    assert "GEO_ID" not in labels and "NAME" not in labels  # numeric fields only
    check(dock.label_list, "Robbery")
    dock.region_id_combo.setField("Population")  # the id field is never a label; other ticks stay
    assert "Population" not in items(dock.label_list)
    dock.region_id_combo.setField("GEO_ID")
    assert "Population" in items(dock.label_list)
    assert items(dock.label_list)["Robbery"].checkState() == Qt.CheckState.Checked
    items(dock.label_list)["Robbery"].setCheckState(Qt.CheckState.Unchecked)
    assert list(dock.method_sections) == ["baseline"]
    baseline = dock.method_sections["baseline"]
    assert baseline.is_checked() and baseline.advanced.isCollapsed()
    assert set(baseline.param_widgets) == {"log1p_counts", "neighbourhood_m"}
    assert dock.k_spin.value() == 0 and dock.k_spin.text() == "auto"
    assert [dock.device_combo.itemData(i) for i in range(dock.device_combo.count())] == list(common.DEVICES)


def test_result_layers_are_never_offered_as_regions(plugin, qtbot, qgis_new_project: QgsProject, make_run_gpkg,
                                                   tmp_path: Path) -> None:
    """A project holding only a run's results (reopened to look at them) offers no region layer and no
    ``cluster`` label; region layers added later are offered, the results still not."""
    from plugin.results import is_result_layer, load_run_outputs

    loaded = load_run_outputs(make_run_gpkg(tmp_path / "run_1"), qgis_new_project)
    clusters = loaded[common.LAYER_CLUSTERS]
    assert is_result_layer(clusters) and is_result_layer(loaded[common.LAYER_EMBEDDINGS])
    widget = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(widget)
    try:
        assert widget.region_combo.currentLayer() is None
        assert widget.region_combo.count() == 0
        assert widget.label_list.count() == 0  # no `cluster`, no `emb_000` as labels
        assert "region" in widget.validation_label.text().lower() or not widget.run_button.isEnabled()

        from plugin.sample_data import load_sample_data

        sample = load_sample_data(qgis_new_project)
        assert not is_result_layer(sample["block_groups"])
        assert widget.region_combo.currentLayer() is sample["block_groups"]
        offered = [widget.region_combo.layer(i) for i in range(widget.region_combo.count())]
        assert clusters not in offered and sample["block_groups"] in offered
        assert "cluster" not in items(widget.label_list) and "Population" in items(widget.label_list)
    finally:
        widget.disconnect_project()


def test_raster_list_follows_the_project(dock: RunDock, qgis_new_project: QgsProject, sample: dict) -> None:
    assert dock.raster_list.count() == 1
    qgis_new_project.removeMapLayer(sample["landsat"].id())
    assert dock.raster_list.count() == 0 and not dock.raster_hint.isHidden()


# ------------------------------------------------------------------------------------- validation


def test_live_validation_messages(dock: RunDock, sample: dict, tmp_path: Path, qtbot) -> None:
    dock.output_file.setFilePath("")
    dock.refresh_validation()
    text = dock.validation_label.text()
    assert "No input for baseline" in text and "Choose an output folder" in text
    assert not dock.run_button.isEnabled()

    small_run(dock, sample, tmp_path / "run")
    qtbot.waitUntil(lambda: dock.problems == [], timeout=5_000)  # updated by itself (debounced)
    assert dock.validation_label.isHidden() and dock.run_button.isEnabled()

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("x")
    dock.output_file.setFilePath(str(tmp_path / "run"))  # the same path again: re-check by hand
    dock.refresh_validation()
    assert "already holds files" in dock.validation_label.text() and not dock.run_button.isEnabled()
    dock.overwrite_check.setChecked(True)
    qtbot.waitUntil(lambda: dock.problems == [], timeout=5_000)

    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    dock.output_file.setFilePath(str(blocker / "run"))
    qtbot.waitUntil(lambda: "is a file" in dock.validation_label.text(), timeout=5_000)


def test_no_region_layer_in_dock(dock: RunDock, qgis_new_project: QgsProject) -> None:
    assert dock.region_combo.currentLayer() is None
    assert "Choose a region layer" in "\n".join(dock.refresh_validation())


def test_duplicate_ids_in_dock(dock: RunDock, qgis_new_project: QgsProject, tmp_path: Path) -> None:
    layer = QgsVectorLayer("Polygon?crs=EPSG:32610&field=zone:string(10)", "zones", "memory")
    from qgis.core import QgsFeature, QgsGeometry

    for zone, x in (("a", 0), ("a", 10)):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({x} 0,{x + 10} 0,{x + 10} 10,{x} 10,{x} 0))"))
        feature.setAttributes([zone])
        layer.dataProvider().addFeature(feature)
    qgis_new_project.addMapLayer(layer)
    dock.region_combo.setLayer(layer)
    assert dock.region_id_combo.currentField() == "zone"
    assert any("duplicate values" in p for p in dock.refresh_validation())


def test_backend_missing(plugin, qgis_new_project, sample, monkeypatch: pytest.MonkeyPatch, qtbot) -> None:
    monkeypatch.setattr(run_dock_module, "find_backend_python", lambda: None)
    widget = RunDock(plugin, None, qgis_new_project)
    qtbot.addWidget(widget)
    widget.resize(305, 700)  # a narrow right-hand dock
    widget.show()
    try:
        # a banner at the very top, above the scrolled form, names the real place of the settings
        assert widget.banner.isVisible() and widget.banner.label.text() == BACKEND_MISSING
        assert OPTIONS_PAGE in BACKEND_MISSING and OPTIONS_PAGE == "Settings \u203a Options \u203a RegionLens"
        assert widget.setup_button.isVisible()
        top = widget.setup_button.mapTo(widget, widget.setup_button.rect().bottomLeft()).y()
        assert top < widget.height()  # visible without scrolling
        qtbot.wait(50)  # (layout requests are processed by the event loop)
        label = widget.banner.label
        assert label.height() >= label.heightForWidth(label.width())  # the whole text, not clipped
        assert widget.banner.minimumSizeHint().height() >= label.heightForWidth(label.width())  # asks for it
        assert not widget.backend_label.isVisible()
        assert list(widget.method_sections) == ["baseline"]  # still offered
        assert BACKEND_MISSING_PROBLEM in widget.validation_label.text()
        assert not widget.run_button.isEnabled()
        assert widget.run() is None

        calls: list = []
        monkeypatch.setattr(plugin, "ensure_backend", lambda on_ready: calls.append(on_ready) or False)
        assert not widget.setup_button.isHidden()
        widget.setup_button.click()  # opens the plugin's setup dialog ...
        assert len(calls) == 1
        monkeypatch.setattr(run_dock_module, "find_backend_python", lambda: Path("/opt/backend/bin/python"))
        METHODS.from_backend = True  # (no worker to ask here)
        calls[0](Path("/opt/backend/bin/python"))  # ... and once it is ready the dock offers Run
        assert widget.backend_python == Path("/opt/backend/bin/python") and widget.setup_button.isHidden()
        assert widget.banner.isHidden()
        assert BACKEND_MISSING_PROBLEM not in widget.validation_label.text()
    finally:
        widget.disconnect_project()


def test_methods_fetched_in_background(plugin, qgis_new_project, backend_python: Path, qtbot) -> None:
    widget = RunDock(plugin, None, qgis_new_project)  # fetch_info: a QgsTask asks the worker
    qtbot.addWidget(widget)
    try:
        assert widget.info_task is not None  # the constructor returned without waiting for it
        qtbot.waitUntil(lambda: widget.info_task is None, timeout=90_000)
        assert METHODS.from_backend and METHODS.info["methods"]
        assert set(widget.method_sections) == set(METHODS.info["methods"]) and "baseline" in widget.method_sections
        assert "torch" in widget.backend_label.text()
    finally:
        widget.disconnect_project()


def test_labels_can_be_renamed_and_ids_are_not_offered(
    plugin, dock: RunDock, sample: dict, qgis_new_project: QgsProject, qtbot
) -> None:
    dock.region_combo.setLayer(sample["block_groups"])
    assert "CENSUSAREA" not in items(dock.label_list)  # geometry-derived: not a quantity to predict
    item = items(dock.label_list)["Robbery"]
    item.setCheckState(Qt.CheckState.Checked)
    item.setText("robberies")  # double-click and type: the label's column name
    dock.label_points_combo.setLayer(sample["crime_incidents"])
    # The layer "Crime incidents 2012 H2 (SFPD)"-like title gives a short readable default name.
    assert dock.label_points_name.placeholderText() == label_name(sample["crime_incidents"].name())
    assert len(dock.label_points_name.placeholderText()) <= 31
    dock.label_points_name.setText("incidents")
    labels = dock.choices().labels
    assert [(lab.field, lab.name) for lab in labels] == [("Robbery", "robberies"), ("", "incidents")]
    save_choices(dock.choices(), qgis_new_project)
    second = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(second)
    try:
        assert "robberies" in items(second.label_list) and second.label_points_name.text() == "incidents"
        assert second.choices().labels == labels
    finally:
        second.disconnect_project()


# ------------------------------------------------------------------------------------- settings


def test_settings_persist_per_project(plugin, sample: dict, qgis_new_project: QgsProject, tmp_path: Path, qtbot):
    first = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(first)
    small_run(first, sample, tmp_path / "run")
    check(first.label_list, "Robbery")
    first.label_points_combo.setLayer(sample["crime_incidents"])
    first.target_combo.setCurrentIndex(first.target_combo.findData("count"))
    first.log1p_check.setChecked(False)
    first.seed_spin.setValue(11)
    first.method_sections["baseline"].param_widgets["neighbourhood_m"].setValue(1000.0)
    first.od_origin.setText("from")
    wanted = first.choices()
    qtbot.waitUntil(lambda: qgis_new_project.readEntry("RegionLens", "run/seed", "")[0] == "11", timeout=5_000)
    first.disconnect_project()

    second = RunDock(plugin, None, qgis_new_project, fetch_info=False)  # a new dock reads them back
    qtbot.addWidget(second)
    try:
        assert second.choices() == wanted
        assert second.method_sections["baseline"].choice().params["neighbourhood_m"] == 1000.0
        assert items(second.raster_list)[sample["landsat"].name()].checkState() == Qt.CheckState.Checked

        # Saved with the project file, restored when the project is read again.
        project_file = tmp_path / "city.qgz"
        assert qgis_new_project.write(str(project_file))
        qgis_new_project.clear()
        assert second.choices().region_layer_id == ""
        assert qgis_new_project.read(str(project_file))
        qtbot.waitUntil(lambda: second.choices() == wanted, timeout=5_000)
    finally:
        second.disconnect_project()


def test_reopened_project_keeps_every_saved_method(
    plugin, sample: dict, qgis_new_project: QgsProject, tmp_path: Path, qtbot
) -> None:
    info = {"version": "test", "methods": {
        "baseline": {"title": "Baseline", "dim": 32, "views": ["poi_counts"], "min_views": 1, "params": {},
                     "view_inputs": {"poi_counts": "pois"}},
        "hafusion": {"title": "HAFusion", "dim": 16, "views": ["poi_counts"], "min_views": 1, "params": {"epochs": 0},
                     "view_inputs": {"poi_counts": "pois"}},
        "fusion": {"title": "Fusion", "dim": 16, "views": [], "min_views": 0, "params": {},
                   "combines_methods": True},
    }}  # fmt: skip
    METHODS.update_from_info(info)
    first = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(first)
    small_run(first, sample, tmp_path / "run")
    first.method_sections["hafusion"].set_checked(True)
    assert first.method_sections["fusion"].is_checked()  # two methods: their combination comes with them
    first.method_sections["fusion"].set_checked(False)  # the planner does not want it
    assert [m.name for m in first.choices().methods] == ["baseline", "hafusion"]
    first.save()
    project_file = tmp_path / "city.qgz"
    assert qgis_new_project.write(str(project_file))
    first.disconnect_project()

    METHODS.reset()  # a new QGIS session: only the baseline is known until the backend answers
    second = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(second)
    try:
        qgis_new_project.clear()
        assert qgis_new_project.read(str(project_file))
        assert [m.name for m in second.choices().methods] == ["baseline"]  # hafusion not offered yet
        METHODS.update_from_info(info)  # the backend answers (as BackendInfoTask.finished does)
        second._info_done(info, "")
        assert [m.name for m in second.choices().methods] == ["baseline", "hafusion"]
    finally:
        second.disconnect_project()


def test_output_folder_is_suggested_and_fresh(
    dock: RunDock, qgis_new_project: QgsProject, tmp_path: Path, qtbot
) -> None:
    # an unsaved project: the first free run folder in the home folder (run_1 unless earlier runs are there)
    assert dock.output_file.filePath() == str(next_free_folder(Path.home() / "regionlens" / "run_1"))
    assert qgis_new_project.write(str(tmp_path / "city.qgz"))
    qgis_new_project.clear()
    (tmp_path / "regionlens" / "run_1").mkdir(parents=True)
    (tmp_path / "regionlens" / "run_1" / "regionlens.gpkg").write_text("x")
    (tmp_path / "regionlens" / "run_2_inputs").mkdir()  # a run's exported inputs: run_2 is taken too
    assert qgis_new_project.read(str(tmp_path / "city.qgz"))
    assert dock.output_file.filePath() == str(tmp_path / "regionlens" / "run_3")  # beside the project
    assert next_free_folder(tmp_path / "regionlens" / "run_1") == tmp_path / "regionlens" / "run_3"
    assert next_free_folder(tmp_path / "regionlens" / "sf") == tmp_path / "regionlens" / "sf"
    assert qgis_new_project.readEntry("RegionLens", "run/output_dir", "")[0] in ("", '""')  # not stored by itself


def test_a_chosen_output_folder_survives_a_run_and_a_reopened_project(
    dock: RunDock, qgis_new_project: QgsProject, tmp_path: Path, qtbot
) -> None:
    """The walk lost the planner's own folder on reopening (a fresh suggestion under the project took its place)
    and kept "Finished ..." from the closed project in the dock."""
    mine = tmp_path / "studies" / "results"
    dock.output_file.setFilePath(str(mine))  # the person's choice
    assert qgis_new_project.write(str(tmp_path / "city.qgz"))
    mine.mkdir(parents=True)
    (mine / "regionlens.gpkg").write_text("x")  # a run has written there since
    dock.progress_bar.setValue(100)
    dock.stage_label.setText("Finished on cpu in 1.0 s.")
    qgis_new_project.clear()
    assert dock.progress_bar.value() == 0 and dock.stage_label.text() == ""
    assert qgis_new_project.read(str(tmp_path / "city.qgz"))
    assert dock.output_file.filePath() == str(tmp_path / "studies" / "results_2")  # beside the chosen one
    dock.save()
    assert "results_2" in qgis_new_project.readEntry("RegionLens", "run/output_dir", "")[0]  # still a choice


# ------------------------------------------------------------------------------------- runs


def grid_geopackage(path: Path, pois: QgsVectorLayer, cells: int = 6, size: float = 500.0) -> QgsVectorLayer:
    """A cells x cells grid of squares over the middle of the sample POIs, saved as a GeoPackage (key column fid),
    with a text name and a numeric ``households`` field; opened as QGIS opens a .gpkg."""
    memory = QgsVectorLayer("Polygon?crs=EPSG:3857&field=name:string(20)&field=households:integer", "grid", "memory")
    extent = QgsCoordinateTransform(pois.crs(), memory.crs(), QgsProject.instance()).transformBoundingBox(
        pois.extent())
    x0 = extent.center().x() - cells * size / 2
    y0 = extent.center().y() - cells * size / 2
    features = []
    for i in range(cells * cells):
        feature = QgsFeature(memory.fields())
        x, y = x0 + (i % cells) * size, y0 + (i // cells) * size
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y, x + size, y + size)))
        feature.setAttributes([f"cell {i}", 100 + (i * 37) % 250])
        features.append(feature)
    assert memory.dataProvider().addFeatures(features)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    error = QgsVectorFileWriter.writeAsVectorFormatV3(memory, str(path), QgsProject.instance().transformContext(),
                                                      options)[0]
    assert error == QgsVectorFileWriter.WriterError.NoError
    layer = QgsVectorLayer(str(path), "grid", "ogr")
    assert layer.isValid() and layer.fields().names() == ["fid", "name", "households"]
    return layer


def test_geopackage_regions_two_methods_two_labels_through_the_dock(
    plugin, sample: dict, qgis_new_project: QgsProject, backend_python: Path, tmp_path: Path, qtbot
) -> None:
    grid = grid_geopackage(tmp_path / "grid.gpkg", sample["pois"])
    qgis_new_project.addMapLayer(grid)
    dock = RunDock(plugin, None, qgis_new_project)  # asks the backend for its methods
    qtbot.addWidget(dock)
    try:
        qtbot.waitUntil(lambda: dock.info_task is None, timeout=90_000)
        assert "hafusion" in dock.method_sections
        dock.region_combo.setLayer(grid)
        assert dock.region_id_combo.currentField() == "fid"  # the only id there is: a GeoPackage's key column
        dock.poi_combo.setLayer(sample["pois"])
        check(dock.label_list, "households")
        dock.label_points_combo.setLayer(sample["crime_incidents"])
        for name, section in dock.method_sections.items():
            section.set_checked(name in ("baseline", "hafusion"))
        dock.method_sections["baseline"].dim.setValue(4)
        dock.method_sections["hafusion"].dim.setValue(4)
        dock.method_sections["hafusion"].param_widgets["epochs"].setValue(2)
        dock.k_spin.setValue(3)
        dock.folds_spin.setValue(3)
        dock.repeats_spin.setValue(1)
        dock.spatial_check.setChecked(False)
        dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
        out = tmp_path / "grid_run"
        dock.output_file.setFilePath(str(out))
        assert dock.refresh_validation() == []
        assert [m.name for m in dock.choices().methods] == ["baseline", "hafusion"]
        task = dock.run()
        assert task is not None
        qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=300_000)
        outcome = dock.last_outcome
        assert isinstance(outcome, RunSucceeded), outcome
        # fid reached the worker as a real column: the regions are named by it.
        embeddings = QgsVectorLayer(f"{outcome.gpkg}|layername=embeddings", "e", "ogr")
        assert sorted(int(f["region_id"]) for f in embeddings.getFeatures()) == list(range(1, 37))

        # Every layer of every method and label is on the map, grouped per method inside the run's group.
        group = qgis_new_project.layerTreeRoot().findGroup("RegionLens \u2014 grid_run")
        assert group is not None
        assert [child.name() for child in group.children()] == ["baseline", "hafusion", "Metrics (grid_run)"]
        loaded = {node.layer().source().split("layername=")[1] for node in group.findLayers()}
        assert loaded == set(gpkg_layer_names(outcome.gpkg))
        labels = ["households", "crime_incidents"]  # the counted points' label: the shared short name
        for method in ("baseline", "hafusion"):
            names = [node.layer().name() for node in group.findGroup(method).findLayers()]
            tag = f"({method}, grid_run)"
            assert f"Clusters {tag}" in names and f"Embeddings {tag}" in names
            units = " (modelled as log1p(per km\u00b2))"  # the dock's default target
            assert all(f"Predicted {label} {tag}{units}" in names for label in labels), names
            assert all(f"Residuals {label}, observed \u2212 predicted {tag}{units}" in names for label in labels), names
        assert dock.output_file.filePath() == str(tmp_path / "grid_run_2")  # a fresh folder for the next run
    finally:
        dock.disconnect_project()


def test_run_through_the_dock(
    qgis_iface, plugin, sample: dict, qgis_new_project: QgsProject, backend_python: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, qtbot,
) -> None:  # fmt: skip
    toolbar: list = []
    monkeypatch.setattr(qgis_iface, "addToolBarIcon", toolbar.append)
    qgis_iface.mainWindow().show()
    plugin.initGui()
    try:
        assert toolbar == [plugin.run_action]  # the toolbar button opens the dock
        plugin.run_action.trigger()
        dock = plugin.run_dock
        assert isinstance(dock, RunDock) and dock.isVisible()
        qtbot.waitUntil(lambda: dock.info_task is None, timeout=90_000)  # methods from the backend

        out = tmp_path / "run_sf"
        small_run(dock, sample, out)
        dock.refresh_validation()
        assert dock.problems == []
        progress: list[float] = []
        qtbot.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
        task = dock.task
        assert task is not None and task in plugin.tasks  # the plugin keeps a reference
        task.progressChanged.connect(progress.append)
        assert not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
        qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=240_000)

        outcome = dock.last_outcome
        assert isinstance(outcome, RunSucceeded), outcome
        assert task not in plugin.tasks
        assert outcome.gpkg == (out / "regionlens.gpkg").resolve() and outcome.gpkg.is_file()
        assert progress and max(progress) > 50 and dock.progress_bar.value() == 100
        assert dock.stage_label.text().startswith(f"Finished on {outcome.device}")
        assert (tmp_path / "run_sf_inputs" / "config.json").is_file()  # inputs beside the results

        group = qgis_new_project.layerTreeRoot().findGroup("RegionLens \u2014 run_sf")
        assert group is not None
        names = {node.layer().name() for node in group.findLayers()}
        assert {"Clusters (baseline, run_sf)",
                "Predicted population (baseline, run_sf) (modelled as log1p(per km\u00b2))",
                "Embeddings (baseline, run_sf)", "Metrics (run_sf)"} <= names

        dialog = dock.metrics_dialog
        assert isinstance(dialog, MetricsDialog) and dialog.isVisible()
        assert dialog.row_count() >= 1
        assert [dialog.cell(0, c) for c in (0, 1, 4, 5)] == ["baseline", "population", "ridge", "shuffled"]
        assert "Population" in dialog.cell(0, 2)  # the modelled target, e.g. log1p(Population) density
        assert dialog.cell(0, 3) == "log1p(per km\u00b2)"  # its units
        float(dialog.cell(0, 6).split(" ")[0])  # R2 (one repeat: no std)

        bar = qgis_iface.messageBar()
        success = [i for i in message_items(bar, Qgis.MessageLevel.Success) if "finished on" in i.text()]
        assert success and success[0].text() == f"finished on {outcome.device} in {outcome.seconds:.1f} s"
        assert success[0].title() == "RegionLens"
        success[0].details_button.click()
        assert isinstance(success[0].details_dialog, DetailsDialog)
        assert "Log:" in success[0].details_dialog.text() and str(outcome.gpkg) in success[0].details_dialog.text()
        success[0].details_dialog.close()

        # The folder now holds results: the dock moved on to a fresh one, so the next run can start.
        assert dock.output_file.filePath() == str(tmp_path / "run_sf_2")
        qtbot.waitUntil(lambda: dock.problems == [], timeout=5_000)
        assert dock.run_button.isEnabled() and "already holds files" not in dock.validation_label.text()
        plugin.run_action.trigger()  # the toolbar button hides the dock again
        assert not dock.isVisible()
    finally:
        plugin.unload()
        qgis_iface.mainWindow().hide()
    assert plugin.run_dock is None


def test_cancel_mid_run_leaves_nothing(
    qgis_iface, plugin, dock: RunDock, sample: dict, backend_python: Path, tmp_path: Path, qtbot
) -> None:
    out = tmp_path / "run_cancel"
    started(dock, sample, out, qtbot)
    qtbot.mouseClick(dock.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=30_000)
    assert isinstance(dock.last_outcome, RunCancelled), dock.last_outcome
    assert not out.exists()
    assert not (tmp_path / "run_cancel_inputs").exists()  # the exported inputs are removed too
    assert not list(tmp_path.glob(".run_cancel.tmp-*"))
    assert dock.stage_label.text().startswith("Cancelled")
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    assert qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Info)


def test_killed_worker_gives_a_clear_message(
    qgis_iface, plugin, dock: RunDock, sample: dict, backend_python: Path, tmp_path: Path, qtbot
) -> None:
    out = tmp_path / "run_killed"
    task = started(dock, sample, out, qtbot)
    assert task.worker_pid is not None
    os.kill(task.worker_pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=30_000)

    outcome = dock.last_outcome
    assert isinstance(outcome, RunFailed), outcome
    assert outcome.kind == "died"
    assert "killed (exit -9)" in outcome.message and "out of memory" in outcome.message
    assert not out.exists() and not list(tmp_path.glob(".run_killed.tmp-*"))
    assert "killed (exit -9)" in dock.stage_label.text()
    critical = message_items(qgis_iface.messageBar(), Qgis.MessageLevel.Critical)
    item = next(i for i in critical if "exit -9" in i.text())
    assert item.text().startswith("the run failed (died): the worker was killed (exit -9), most likely out of memory")
    item.details_button.click()
    assert "exit -9" in item.details_dialog.text()
    item.details_dialog.close()


# ------------------------------------------------------------------------------------- widgets


def test_metrics_dialog_sorts_numbers(run_gpkg: Path, qtbot) -> None:
    dialog = MetricsDialog.from_gpkg(run_gpkg)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle().endswith("run_small")
    assert dialog.row_count() == 4
    assert dialog.table.columnCount() == 10  # ... and the intervals' coverage
    assert dialog.cell(0, 6) == "0.400 \u00b1 0.050" and dialog.cell(0, 7) == "1.000 \u00b1 0.100"
    rows = [
        {"method": m, "label": "pop", "target": "density", "model": "ridge", "protocol": "shuffled",
         "r2_mean": r2, "r2_std": 0.01, "mae_mean": 1.0, "mae_std": None, "rmse_mean": None, "rmse_std": None}
        for m, r2 in (("a", 0.5), ("b", -0.25), ("c", 0.05))
    ]  # fmt: skip
    dialog.set_rows(rows)
    dialog.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)
    assert [dialog.cell(r, 0) for r in range(3)] == ["a", "c", "b"]  # by value, not by text
    assert dialog.cell(0, 7) == "1.000" and dialog.cell(0, 8) == ""
    assert dialog.as_text().splitlines()[0].startswith("Method\tLabel")


def test_message_with_details(qgis_iface, qtbot) -> None:
    bar = qgis_iface.messageBar()
    item = push_message(bar, "something failed", Qgis.MessageLevel.Critical, details="Traceback: boom")
    assert item in bar.items() and item.level() == Qgis.MessageLevel.Critical
    assert item.details_button is not None and item.details_button.text() == "Details"
    item.details_button.click()
    assert item.details_dialog.text() == "Traceback: boom"
    item.details_dialog.close()
    plain = push_message(bar, "no details", Qgis.MessageLevel.Info)
    assert plain.details_button is None


def test_a_long_message_is_shortened_and_kept_whole_in_its_details(qgis_iface, qtbot) -> None:
    """The message bar clips a long text on its second line: it shows a short form, the whole text opens
    from Details (above the log when there is one)."""
    from plugin.ui.messages import MAX_MESSAGE_CHARS, shorten

    bar = qgis_iface.messageBar()
    long_text = "The run failed: " + " ".join(f"region_{i} has an empty geometry;" for i in range(30))
    item = push_message(bar, long_text, Qgis.MessageLevel.Critical, details="worker log")
    shown = item.text()
    assert len(shown) <= MAX_MESSAGE_CHARS and shown.endswith("\u2026") and long_text.startswith(shown[:-1])
    item.details_button.click()
    assert item.details_dialog.text() == long_text + "\n\nworker log"
    item.details_dialog.close()
    two_lines = push_message(bar, "Done in 3 s.\nbaseline: 579 regions", Qgis.MessageLevel.Info)
    assert two_lines.text() == "Done in 3 s.\u2026" and two_lines.details_button is not None
    assert shorten("short and whole") == "short and whole"
    for pushed in (item, two_lines):
        bar.popWidget(pushed)


def test_first_opening_without_backend_opens_the_setup(plugin, qgis_new_project, monkeypatch) -> None:
    """README: the first time something needs the backend, the setup dialog opens by itself."""
    monkeypatch.setattr(run_dock_module, "find_backend_python", lambda: None)
    calls: list = []
    monkeypatch.setattr(plugin, "ensure_backend", lambda on_ready: calls.append(on_ready) or False)
    dock = plugin.toggle_run_dock()
    assert len(calls) == 1 and not dock.banner.isHidden()
    plugin.toggle_run_dock()  # hide
    plugin.toggle_run_dock()  # show again: the banner offers it, no second dialog
    assert len(calls) == 1


def test_dock_fits_300_px_with_every_panel_open(
    plugin, sample: dict, qgis_new_project: QgsProject, backend_info: dict, tmp_path: Path, qtbot
) -> None:
    """A narrow dock (300 px) shows every field whole: long layer names, parameter names and check boxes
    shrink or wrap instead of widening the content past the dock (nothing cut off, no sideways scrolling)."""
    from qgis.gui import QgsCollapsibleGroupBox
    from qgis.PyQt.QtWidgets import QScrollArea

    METHODS.update_from_info(backend_info)
    dock = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(dock)
    dock.show()
    try:
        small_run(dock, sample, tmp_path / "run")
        for section in dock.method_sections.values():
            section.set_checked(True)
        for box in dock.findChildren(QgsCollapsibleGroupBox):
            box.setCollapsed(False)
        dock.resize(300, 800)
        qtbot.wait(100)
        scroll = dock.findChild(QScrollArea)
        assert scroll.widget().minimumSizeHint().width() <= scroll.viewport().width()
        assert scroll.widget().width() <= scroll.viewport().width()
    finally:
        dock.disconnect_project()


def test_wheel_over_the_dock_does_not_change_its_editors(dock: RunDock) -> None:
    from tests.plugin.ui.test_wheel_guard import wheel

    device = dock.device_combo.currentIndex()
    dim = dock.method_sections["baseline"].dim
    before = dim.value()
    assert not wheel(dock.device_combo).isAccepted()
    assert not wheel(dim).isAccepted()
    assert dock.device_combo.currentIndex() == device and dim.value() == before


# ------------------------------------------------------------------------ spatial context, ensembles, fusion


def backend_presets(info: dict) -> list[str]:
    """The spatial contexts the backend offers, besides none (its ``info``)."""
    return [name for name, spec in info["context_presets"].items() if spec]


def learned_and_combining(info: dict) -> tuple[str, str]:
    """A method that accepts an ensemble and learns from POI points alone, and the one that combines the others."""
    learned = next(n for n, d in info["methods"].items() if d["ensemble"] and d["views"] == ["poi_points"])
    combining = next(n for n, d in info["methods"].items() if d["combines_methods"])
    return learned, combining


def test_advanced_context_ensemble_and_fusion_reach_the_request(
    plugin, sample: dict, qgis_new_project: QgsProject, backend_python: Path, backend_info: dict, tmp_path: Path,
    qtbot,
) -> None:
    METHODS.update_from_info(backend_info)
    learned, fusion = learned_and_combining(backend_info)
    dock = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(dock)
    try:
        small_run(dock, sample, tmp_path / "run", rasters=False)
        # The dropdown offers None and exactly the backend's presets; the spin box its limit.
        combo = dock.context_combo
        assert [combo.itemData(i) for i in range(combo.count())] == ["", *backend_presets(backend_info)]
        assert combo.itemText(0) == "None" and "neighbour" in combo.toolTip()
        assert dock.ensemble_spin.maximum() == backend_info["limits"]["ensemble"][1] > 1

        # Baseline alone: no seeds to train, and fusion has nothing to combine.
        fusion_box = dock.method_sections[fusion].checkbox
        assert not dock.ensemble_spin.isEnabled() and "learned methods only" in dock.ensemble_spin.toolTip()
        dock.method_sections["baseline"].set_checked(False)
        assert not fusion_box.isEnabled() and "at least one other method" in fusion_box.toolTip()
        dock.method_sections["baseline"].set_checked(True)
        assert fusion_box.isEnabled()
        assert not fusion_box.isChecked()  # one method: fusion is offered, not chosen
        dock.method_sections[learned].set_checked(True)
        dock.method_sections[learned].dim.setValue(8)
        assert dock.ensemble_spin.isEnabled() and learned in dock.ensemble_spin.toolTip()
        # A second method: their combination is chosen by itself (the primary layer set)...
        assert fusion_box.isChecked()
        # ...unless the planner unticks it: it stays off while they change the other methods.
        fusion_box.setChecked(False)
        dock.method_sections[learned].set_checked(False)
        dock.method_sections[learned].set_checked(True)
        assert not fusion_box.isChecked() and fusion_box.isEnabled()
        fusion_box.setChecked(True)

        combo.setCurrentIndex(combo.findData(backend_presets(backend_info)[-1]))
        dock.ensemble_spin.setValue(3)
        choices = dock.choices()
        assert (choices.context, choices.ensemble) == (backend_presets(backend_info)[-1], 3)
        assert dock.refresh_validation() == []
        config = to_run_config(choices, project=qgis_new_project)
        assert config["context"] == backend_presets(backend_info)[-1]
        # fusion first (the primary layer set); the ensemble only on the method that learns.
        assert [(m["name"], m.get("ensemble")) for m in config["methods"]] == [
            (fusion, None), ("baseline", None), (learned, 3)
        ]
        # The backend's own parser reads the request as meant (its checks run there, not here).
        request = tmp_path / "request.json"
        request.write_text(json.dumps(config))
        code = ("import json, sys; from backend.config import config_from_dict; "
                "c = config_from_dict(json.load(open(sys.argv[1]))); "
                "print(json.dumps([c.context, [[m.name, m.ensemble] for m in c.methods]]))")  # fmt: skip
        out = subprocess.run([str(backend_python), "-c", code, str(request)], cwd=Path(__file__).parents[3],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        assert json.loads(out.stdout.splitlines()[-1]) == [
            backend_presets(backend_info)[-1], [[fusion, 1], ["baseline", 1], [learned, 3]]
        ]

        # Unticking the last other method unticks fusion and disables it again.
        dock.method_sections["baseline"].set_checked(False)
        dock.method_sections[learned].set_checked(False)
        assert not fusion_box.isEnabled() and not fusion_box.isChecked()
        assert not dock.ensemble_spin.isEnabled()
    finally:
        dock.disconnect_project()


def test_fusion_alone_and_an_unknown_context_are_explained(
    sample: dict, qgis_new_project: QgsProject, backend_info: dict, tmp_path: Path
) -> None:
    METHODS.update_from_info(backend_info)
    _learned, fusion = learned_and_combining(backend_info)
    choices = RunChoices(region_layer_id=sample["block_groups"].id(), region_id_field="GEO_ID",
                         poi_layer_id=sample["pois"].id(), poi_category_field="category",
                         methods=[METHODS.choice(fusion)], context="2km", ensemble=99,
                         output_dir=str(tmp_path / "out"))  # fmt: skip
    problems = validate(choices, qgis_new_project, backend_info)
    limit = backend_info["limits"]["ensemble"][1]
    assert problems == [
        f"{fusion} combines the run's other methods: choose at least one other method with it.",
        f"The backend trains at most {limit} seeds per method; choose an ensemble of 1 to {limit}.",
        f"The backend has no spatial context '2km'; choose one of {', '.join(backend_presets(backend_info))} or None.",
    ]


def test_context_and_ensemble_are_saved_with_the_project(
    plugin, sample: dict, qgis_new_project: QgsProject, backend_info: dict, tmp_path: Path, qtbot
) -> None:
    METHODS.update_from_info(backend_info)
    learned, fusion = learned_and_combining(backend_info)
    first = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(first)
    small_run(first, sample, tmp_path / "run", rasters=False)
    first.method_sections[learned].set_checked(True)
    first.method_sections[fusion].set_checked(True)
    first.context_combo.setCurrentIndex(1)
    first.context_combo.activated.emit(1)  # as a person choosing it
    first.ensemble_spin.setValue(4)
    wanted = first.choices()
    assert (wanted.context, wanted.ensemble) == (backend_presets(backend_info)[0], 4)
    first.save()
    project_file = tmp_path / "city.qgz"
    assert qgis_new_project.write(str(project_file))
    first.disconnect_project()

    METHODS.reset()  # a new QGIS session: no presets, no ensembles, only the baseline until the backend answers
    second = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(second)
    try:
        qgis_new_project.clear()
        assert qgis_new_project.read(str(project_file))
        held = second.choices()
        assert (held.context, held.ensemble) == (wanted.context, 4)  # kept, not yet offered
        METHODS.update_from_info(backend_info)
        second._info_done(backend_info, "")
        assert second.choices() == wanted
        assert second.context_combo.currentData() == wanted.context and second.ensemble_spin.value() == 4
        assert second.method_sections[fusion].checkbox.isChecked()
    finally:
        second.disconnect_project()


def test_baseline_fusion_and_context_through_the_dock(
    plugin, sample: dict, qgis_new_project: QgsProject, backend_python: Path, backend_info: dict, tmp_path: Path,
    qtbot,
) -> None:  # fmt: skip
    """A run with fusion and a spatial context through the real worker: fusion's layers are the primary ones."""
    METHODS.update_from_info(backend_info)
    _learned, fusion = learned_and_combining(backend_info)
    grid = grid_geopackage(tmp_path / "grid.gpkg", sample["pois"])
    qgis_new_project.addMapLayer(grid)
    dock = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(dock)
    try:
        dock.region_combo.setLayer(grid)
        dock.poi_combo.setLayer(sample["pois"])
        check(dock.label_list, "households")
        for name, section in dock.method_sections.items():
            section.set_checked(name in ("baseline", fusion))
        dock.method_sections["baseline"].dim.setValue(4)
        dock.k_spin.setValue(3)
        dock.folds_spin.setValue(3)
        dock.repeats_spin.setValue(1)
        dock.spatial_check.setChecked(False)
        dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
        preset = backend_presets(backend_info)[0]
        dock.context_combo.setCurrentIndex(dock.context_combo.findData(preset))
        dock.output_file.setFilePath(str(tmp_path / "fused"))
        assert dock.refresh_validation() == []
        assert dock.run() is not None
        qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=300_000)
        outcome = dock.last_outcome
        assert isinstance(outcome, RunSucceeded), outcome
        run = json.loads((Path(outcome.gpkg).parent / "run.json").read_text())
        assert run["config"]["context"] == preset and run["context"]
        group = qgis_new_project.layerTreeRoot().findGroup("RegionLens \u2014 fused")
        assert [child.name() for child in group.children()][:2] == [fusion, "baseline"]  # fusion is the primary
        metrics = QgsVectorLayer(f"{outcome.gpkg}|layername=metrics", "m", "ogr")
        assert {f["method"] for f in metrics.getFeatures()} == {fusion, "baseline"}
    finally:
        dock.disconnect_project()
