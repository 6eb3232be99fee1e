"""Clusters in words: names edited and saved into the layer and legend; the cluster card (plugin/clusters.py,
plugin/ui/cluster_card.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsVectorLayer

from plugin.clusters import cluster_cards, layer_method, rename_cluster
from plugin.results import load_run_outputs
from plugin.ui.cluster_card import ClusterCardDialog

from .conftest import CLUSTER_NAMES


def _names_in_file(gpkg: Path, table: str = "clusters") -> dict[str, str]:
    layer = QgsVectorLayer(f"{gpkg}|layername={table}", "check", "ogr")
    return {f["region_id"]: f["cluster_name"] for f in layer.getFeatures()}


def _legend(layer: QgsVectorLayer) -> list[str]:
    return [category.label() for category in layer.renderer().categories()]


def test_rename_saves_into_the_geopackage_and_the_legend(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    clusters = layers["clusters"]
    assert _legend(clusters)[1] == f"Cluster 1 \u2014 {CLUSTER_NAMES[1]}"
    assert rename_cluster(clusters, 1, "  quiet   residential streets ") == 3
    names = _names_in_file(run_gpkg)  # read back from the file, not from the layer's buffer
    assert [names[f"r{i:02d}"] for i in (1, 5, 9)] == ["quiet residential streets"] * 3
    assert names["r00"] == CLUSTER_NAMES[0] and names["r02"] == CLUSTER_NAMES[2]
    assert _legend(clusters)[1] == "Cluster 1 \u2014 quiet residential streets"
    assert _legend(clusters)[0] == f"Cluster 0 \u2014 {CLUSTER_NAMES[0]}"
    assert not clusters.isEditable()
    # A second method's clusters are its own layer and keep their names.
    assert layer_method(clusters) == "baseline"


def test_rename_reaches_the_layers_panel(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    """The Layers panel shows the new name at once (its legend entries are rebuilt, not only the renderer's
    labels: a real-QGIS walk found the panel still showing the old name)."""
    from qgis.core import QgsLayerTreeModel
    from qgis.PyQt.QtCore import Qt

    layers = load_run_outputs(run_gpkg, qgis_new_project)
    clusters = layers["clusters"]
    model = QgsLayerTreeModel(qgis_new_project.layerTreeRoot())
    node = qgis_new_project.layerTreeRoot().findLayer(clusters.id())

    def shown() -> list[str]:
        return [str(n.data(Qt.ItemDataRole.DisplayRole)) for n in model.layerLegendNodes(node)]

    assert shown()[1] == f"Cluster 1 \u2014 {CLUSTER_NAMES[1]}"
    rename_cluster(clusters, 1, "west side")
    assert shown()[1] == "Cluster 1 \u2014 west side" and shown()[0] == f"Cluster 0 \u2014 {CLUSTER_NAMES[0]}"


def test_rename_refuses_bad_input_and_keeps_the_layer(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    clusters = load_run_outputs(run_gpkg, qgis_new_project)["clusters"]
    with pytest.raises(ValueError, match="empty"):
        rename_cluster(clusters, 1, "   ")
    with pytest.raises(ValueError, match="no cluster 9"):
        rename_cluster(clusters, 9, "x")
    clusters.startEditing()
    with pytest.raises(ValueError, match="being edited"):
        rename_cluster(clusters, 1, "x")
    clusters.rollBack()
    assert _names_in_file(run_gpkg)["r01"] == CLUSTER_NAMES[1]
    embeddings = load_run_outputs(run_gpkg, qgis_new_project)["embeddings"]
    with pytest.raises(ValueError, match="not a RegionLens clusters layer"):
        rename_cluster(embeddings, 1, "x")


def test_cards_without_clusters_json_come_from_the_layer_and_profiles(qgis_new_project, run_gpkg: Path) -> None:
    clusters = load_run_outputs(run_gpkg, qgis_new_project)["clusters"]
    cards = cluster_cards(clusters)
    assert sorted(cards) == [0, 1, 2, 3]
    card = cards[1]
    assert (card.name, card.size, card.total) == (CLUSTER_NAMES[1], 3, 12)
    assert card.examples == ["r01", "r05", "r09"]
    assert [(f.feature, f.zscore) for f in card.features] == [("POI share: cafe", -0.5)]
    assert "counted in the layer" in card.source and "cluster profiles" in card.source


def test_cards_read_clusters_json(qgis_new_project, make_run_gpkg, tmp_path: Path) -> None:
    gpkg = make_run_gpkg(tmp_path / "run_json", methods=("baseline", "calliper"))
    summary = {
        "calliper": {
            "2": {"name": "ignored: the layer's name wins", "size": 3, "examples": ["r06", "r02"],
                  "features": [{"feature": "POI share: bar", "zscore": 2.4, "mean": 0.31},
                               {"feature": "image brightness", "zscore": -1.1}]},
        },
    }
    (gpkg.parent / "clusters.json").write_text(json.dumps(summary), encoding="utf-8")
    layers = load_run_outputs(gpkg, qgis_new_project)
    calliper = layers.layer("clusters", "calliper")
    assert layer_method(calliper) == "calliper"
    card = cluster_cards(calliper)[2]
    assert card.name == CLUSTER_NAMES[2] and card.size == 3 and card.examples == ["r06", "r02"]
    assert [(f.feature, f.zscore, f.mean) for f in card.features] == [
        ("POI share: bar", 2.4, 0.31), ("image brightness", -1.1, None)]
    assert "clusters.json" in card.source
    # The baseline's clusters are not in the file: counted in the layer instead.
    assert "counted in the layer" in cluster_cards(layers["clusters"])[2].source


def test_card_dialog_shows_renames_and_selects(qgis_new_project, run_gpkg: Path, qtbot) -> None:
    clusters = load_run_outputs(run_gpkg, qgis_new_project)["clusters"]
    selected = next(f.id() for f in clusters.getFeatures() if f["cluster"] == 2)
    clusters.selectByIds([selected])
    renamed = []
    dialog = ClusterCardDialog(clusters, on_renamed=lambda *args: renamed.append(args))
    qtbot.addWidget(dialog)
    assert dialog.cluster == 2  # the selected region's cluster
    assert dialog.name_edit.text() == CLUSTER_NAMES[2]
    assert dialog.size_label.text() == "3 regions (25 % of 12)"
    assert dialog.feature_rows() == [("POI share: cafe", "+0.50", "0.2")]
    dialog.show()
    header = dialog.features_table.horizontalHeader()
    for column in (1, 2):  # the number columns' headers are shown whole ("Mean in cluster" was cut)
        text = dialog.features_table.horizontalHeaderItem(column).text()
        assert header.sectionSize(column) >= header.fontMetrics().horizontalAdvance(text)
    assert dialog.examples_label.text() == "Example regions: r02, r06, r10"
    dialog.name_edit.setText("schools and parks")
    dialog.rename_button.click()
    assert renamed == [(clusters, 2, "schools and parks")]
    assert _names_in_file(run_gpkg)["r06"] == "schools and parks"
    assert dialog.cluster_combo.currentText() == "2: schools and parks"
    dialog.show_cluster(0)
    assert dialog.cluster == 0 and dialog.name_edit.text() == CLUSTER_NAMES[0]
    assert dialog.name_edit.cursorPosition() == 0  # a long name is shown from its start
    assert dialog.select_cluster() == 3 and len(clusters.selectedFeatureIds()) == 3
    dialog.name_edit.setText("")
    dialog.rename_button.click()
    assert "empty" in dialog.message_label.text()


def _files(folder: Path) -> dict[str, bytes]:
    """The folder's files (SQLite's -wal and -shm companions of an open GeoPackage aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def test_rename_reaches_the_runs_clusters_json_and_profiles(qgis_new_project, make_run_gpkg, tmp_path: Path) -> None:
    """The name is saved wherever the run keeps it: the method's card in clusters.json and its cluster profiles
    (so a reopened run, its card and its report show it); the other method's copies are left alone."""
    gpkg = make_run_gpkg(tmp_path / "run_rename", methods=("baseline", "calliper"))
    cards = {m: {str(c): {"name": CLUSTER_NAMES[c], "size": 3, "features": [], "examples": []} for c in range(4)}
             for m in ("baseline", "calliper")}
    cards_path = gpkg.parent / "clusters.json"
    cards_path.write_text(json.dumps(cards), encoding="utf-8")
    layers = load_run_outputs(gpkg, qgis_new_project)
    shown_profiles = layers.layer("cluster_profiles", "calliper")
    before = _files(gpkg.parent)
    rename_cluster(layers.layer("clusters", "calliper"), 2, "schools & parks")
    saved = json.loads(cards_path.read_text(encoding="utf-8"))
    assert saved["calliper"]["2"]["name"] == "schools & parks"
    cards["calliper"]["2"]["name"] = "schools & parks"
    assert saved == cards  # nothing else in the file changed
    assert set(_names_in_file(gpkg, "clusters_calliper").values()) >= {"schools & parks"}
    profiles = QgsVectorLayer(f"{gpkg}|layername=cluster_profiles_calliper", "check", "ogr")
    names = {f["cluster"]: f["cluster_name"] for f in profiles.getFeatures()}
    assert names == {**dict(enumerate(CLUSTER_NAMES)), 2: "schools & parks"}
    assert {f["cluster"]: f["cluster_name"] for f in shown_profiles.getFeatures()}[2] == "schools & parks"
    baseline = QgsVectorLayer(f"{gpkg}|layername=cluster_profiles", "check", "ogr")
    assert {f["cluster"]: f["cluster_name"] for f in baseline.getFeatures()} == dict(enumerate(CLUSTER_NAMES))
    assert sorted(_files(gpkg.parent)) == sorted(before)  # no file created (and no temporary one left)
    # A card opened now, and the run opened again, show the new name.
    reopened = load_run_outputs(gpkg, qgis_new_project).layer("clusters", "calliper")
    assert cluster_cards(reopened)[2].name == "schools & parks"
    assert _legend(reopened)[2] == "Cluster 2 \u2014 schools & parks"


def test_rename_of_a_run_without_clusters_json_creates_none(qgis_new_project, run_gpkg: Path) -> None:
    clusters = load_run_outputs(run_gpkg, qgis_new_project)["clusters"]
    before = sorted(_files(run_gpkg.parent))
    rename_cluster(clusters, 0, "harbour")
    assert sorted(_files(run_gpkg.parent)) == before
    profiles = QgsVectorLayer(f"{run_gpkg}|layername=cluster_profiles", "check", "ogr")
    assert {f["cluster_name"] for f in profiles.getFeatures() if f["cluster"] == 0} == {"harbour"}


def test_a_rename_in_the_plugin_rewrites_the_report(qgis_iface, qgis_new_project, make_run_gpkg, backend_python: Path,
                                                   tmp_path: Path, qtbot, monkeypatch) -> None:
    """A rename in a card opened by the plugin runs the worker's ``report`` job on the run; a second rename while it
    runs is not lost: one more job follows, and the report ends with the last name."""
    from plugin import main as plugin_main
    from plugin.main import RegionLensPlugin

    monkeypatch.setattr(plugin_main, "find_backend_python", lambda: backend_python)
    gpkg = make_run_gpkg(tmp_path / "run_report")
    folder = gpkg.parent
    cards = {"baseline": {str(c): {"name": CLUSTER_NAMES[c], "size": 3, "features": [], "examples": []}
                          for c in range(4)}}
    (folder / "clusters.json").write_text(json.dumps(cards), encoding="utf-8")
    (folder / "run.json").write_text(json.dumps({"primary_method": "baseline", "methods": ["baseline"]}))
    (folder / "report.html").write_text("<p>the run's report</p>", encoding="utf-8")
    plugin = RegionLensPlugin(qgis_iface)
    try:
        clusters = plugin.open_run_results(gpkg)["clusters"]
        card = plugin.open_cluster_card(clusters, 1)
        card.rename("tram depot")
        first = plugin.report_tasks[folder.resolve()]
        assert plugin.update_report(folder) is first  # renamed again meanwhile: queued, not run at once
        card.rename("tram depot & market")
        qtbot.waitUntil(lambda: folder.resolve() in plugin.report_tasks
                        and plugin.report_tasks[folder.resolve()] is not first, timeout=60_000)
        qtbot.waitUntil(lambda: not plugin.report_tasks, timeout=60_000)
        page = (folder / "report.html").read_text(encoding="utf-8")
        assert "Cluster 1: tram depot &amp; market" in page and "Cluster 0: " + CLUSTER_NAMES[0] in page
    finally:
        plugin.unload()
