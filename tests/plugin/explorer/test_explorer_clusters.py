"""The embedding explorer names clusters (saved into the layer and the legend), opens cluster cards and asks the
plugin to find similar regions (plugin/explorer/widget.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProject, QgsVectorLayer

from plugin.explorer import EmbeddingExplorer, open_explorer
from plugin.main import RegionLensPlugin
from plugin.results import load_run_outputs
from plugin.ui.cluster_card import ClusterCardDialog

from ..conftest import CLUSTER_NAMES


@pytest.fixture
def run_layers(run_gpkg: Path, qgis_new_project: QgsProject):
    return load_run_outputs(run_gpkg, qgis_new_project)


@pytest.fixture
def explorer(run_layers, qgis_iface) -> EmbeddingExplorer:
    dock = open_explorer(qgis_iface)
    yield dock
    for card in list(dock.cards):
        card.close()
    dock.close()
    dock.deleteLater()


def _file_names(gpkg: Path) -> dict[int, set[str]]:
    layer = QgsVectorLayer(f"{gpkg}|layername=clusters", "check", "ogr")
    names: dict[int, set[str]] = {}
    for feature in layer.getFeatures():
        names.setdefault(feature["cluster"], set()).add(feature["cluster_name"])
    return names


def test_rename_in_the_explorer_saves_layer_legend_and_plot(explorer: EmbeddingExplorer, run_layers,
                                                            run_gpkg: Path) -> None:
    assert [explorer.cluster_combo.itemText(i) for i in range(4)] == [f"{c}: {n}" for c, n in enumerate(CLUSTER_NAMES)]
    explorer.choose_cluster(2)
    assert explorer.cluster_name_edit.text() == CLUSTER_NAMES[2]
    renamed = []
    explorer.on_renamed = lambda *args: renamed.append(args)
    explorer.cluster_name_edit.setText("schools and parks")
    explorer.rename_button.click()
    assert _file_names(run_gpkg)[2] == {"schools and parks"}  # committed to the GeoPackage
    assert _file_names(run_gpkg)[1] == {CLUSTER_NAMES[1]}
    clusters = run_layers["clusters"]
    assert clusters.renderer().categories()[2].label() == "Cluster 2 \u2014 schools and parks"  # the map legend
    assert explorer.cluster_combo.itemText(2) == "2: schools and parks"
    legend = [t.get_text() for t in explorer.plot.axes.get_legend().get_texts()]
    assert legend[2].startswith("2: schools")  # the plot's legend
    assert renamed == [(clusters, 2, "schools and parks")]
    assert explorer.rename_cluster("   ") is False and "empty" in explorer.status.text()


def test_plot_selection_picks_the_cluster_and_the_card_opens(explorer: EmbeddingExplorer, run_layers) -> None:
    rows = np.flatnonzero(explorer.data.cluster == 3)
    explorer.select_rows(rows)
    assert explorer.current_cluster() == 3
    card = explorer.open_cluster_card()
    assert isinstance(card, ClusterCardDialog) and card.cluster == 3 and card.layer is run_layers["clusters"]
    assert card.size_label.text().startswith("3 regions")
    card.name_edit.setText("bars at night")
    card.rename_button.click()  # a rename in the card reaches the explorer
    assert explorer.cluster_combo.itemText(explorer.cluster_combo.findData(3)) == "3: bars at night"
    assert explorer.cluster_name_edit.text() == "bars at night"


def test_find_similar_button_calls_the_plugin(explorer: EmbeddingExplorer, run_layers) -> None:
    assert explorer.similar_button.isHidden()
    asked = []
    explorer.set_find_similar(asked.append)
    assert not explorer.similar_button.isHidden()
    explorer.similar_button.click()
    assert asked == [run_layers["embeddings"]]


def test_the_plugins_explorer_finds_similar_through_the_plugin(qgis_iface, run_layers, monkeypatch) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    asked = []
    monkeypatch.setattr(plugin, "find_similar", lambda layer=None: asked.append(layer))
    explorer = plugin.open_explorer()
    try:
        explorer.similar_button.click()
        assert asked == [run_layers["embeddings"]]
        # A card opened from the layer tree renames: the explorer follows.
        card = plugin.open_cluster_card(run_layers["clusters"], 1)
        assert card.rename("quiet streets")
        assert explorer.cluster_combo.itemText(explorer.cluster_combo.findData(1)) == "1: quiet streets"
        # And a rename in the explorer reaches the open card.
        explorer.rename_cluster("quieter streets", 1)
        assert card.name_edit.text() == "quieter streets"
    finally:
        plugin.unload()
