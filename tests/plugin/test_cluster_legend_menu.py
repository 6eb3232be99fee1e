"""The cluster card opens from the legend: right-clicking a cluster's class under a clusters layer in the Layers
panel offers "Cluster card…" for that cluster (plugin/clusters.py ``legend_node_cluster``,
plugin/ui/cluster_card.py ``LegendCardMenu``, wired in plugin/main.py)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsLayerTreeModel, QgsProject
from qgis.gui import QgsLayerTreeView, QgsLayerTreeViewMenuProvider
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtGui import QContextMenuEvent
from qgis.PyQt.QtWidgets import QApplication, QMenu

from plugin.clusters import legend_node_cluster
from plugin.main import RegionLensPlugin
from plugin.results import load_run_outputs
from plugin.ui.cluster_card import CARD_ACTION_TEXT, LegendCardMenu

from .conftest import N_CLUSTERS


def _view(project: QgsProject, qtbot) -> QgsLayerTreeView:
    view = QgsLayerTreeView()
    model = QgsLayerTreeModel(project.layerTreeRoot(), view)
    model.setFlag(QgsLayerTreeModel.Flag.ShowLegendAsTree)
    view.setModel(model)
    view.resize(400, 900)
    view.show()
    qtbot.addWidget(view)
    qtbot.waitExposed(view)
    return view


def _legend_nodes(view: QgsLayerTreeView, layer) -> list:  # noqa: ANN001
    node = view.layerTreeModel().rootGroup().findLayer(layer.id())
    return view.layerTreeModel().layerLegendNodes(node)


def test_a_legend_node_maps_to_its_cluster(qgis_new_project: QgsProject, run_gpkg: Path, qtbot) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    clusters = layers["clusters"]
    view = _view(qgis_new_project, qtbot)
    nodes = _legend_nodes(view, clusters)
    assert len(nodes) == N_CLUSTERS
    assert [legend_node_cluster(node) for node in nodes] == [(clusters, c) for c in range(N_CLUSTERS)]
    # Reordered categories: the node still names its own cluster, not the one at its position.
    renderer = clusters.renderer()
    renderer.moveCategory(0, N_CLUSTERS - 1)
    clusters.emitStyleChanged()
    qtbot.wait(10)
    assert [legend_node_cluster(node)[1] for node in _legend_nodes(view, clusters)] == [1, 2, 3, 0]
    # Other nodes are not clusters: a predictions layer's classes, a layer node, nothing.
    predictions = layers["predictions"]
    assert all(legend_node_cluster(node) is None for node in _legend_nodes(view, predictions))
    assert legend_node_cluster(view.layerTreeModel().rootGroup().findLayer(clusters.id())) is None
    assert legend_node_cluster(None) is None


def test_menu_for_a_cluster_class_adds_the_card_action(qgis_new_project: QgsProject, run_gpkg: Path, qtbot) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    clusters = layers["clusters"]
    view = _view(qgis_new_project, qtbot)
    opened = []
    menus = LegendCardMenu(view, lambda layer, cluster: opened.append((layer, cluster)))
    index = view.legendNode2index(_legend_nodes(view, clusters)[2])
    menu = menus.menu_for(index)
    assert view.currentLegendNode() is _legend_nodes(view, clusters)[2]  # QGIS's own menu is built for it
    assert [a.text() for a in menu.actions()] == [CARD_ACTION_TEXT]  # no menu provider in this bare view
    menu.actions()[0].trigger()
    assert opened == [(clusters, 2)]
    layer_index = view.node2index(view.layerTreeModel().rootGroup().findLayer(clusters.id()))
    assert menus.menu_for(layer_index) is None  # the layer's own menu has its RegionLens submenu
    predictions_index = view.legendNode2index(_legend_nodes(view, layers["predictions"])[0])
    assert menus.menu_for(predictions_index) is None


class _QgisMenu(QgsLayerTreeViewMenuProvider):
    """Stands for QGIS's own menu provider: a menu with one action of its own, built for the current node."""

    def __init__(self, view: QgsLayerTreeView) -> None:
        super().__init__()
        self.view = view
        self.built_for: list = []

    def createContextMenu(self) -> QMenu:  # noqa: N802 - QGIS API
        self.built_for.append(self.view.currentLegendNode())
        menu = QMenu()
        menu.addAction("Edit symbol\u2026")
        return menu


def test_the_card_action_follows_qgis_own_menu(qgis_new_project: QgsProject, run_gpkg: Path, qtbot) -> None:
    clusters = load_run_outputs(run_gpkg, qgis_new_project)["clusters"]
    view = _view(qgis_new_project, qtbot)
    provider = _QgisMenu(view)
    view.setMenuProvider(provider)  # the view owns it, as QGIS's view owns its provider
    menus = LegendCardMenu(view, lambda layer, cluster: None)
    node = _legend_nodes(view, clusters)[1]
    assert _right_click(view, view.legendNode2index(node)) == [
        "Edit symbol\u2026", "", CARD_ACTION_TEXT]  # QGIS's actions, a separator, the card
    assert provider.built_for == [node]
    menus.remove()


def _right_click(view: QgsLayerTreeView, index) -> list[str]:  # noqa: ANN001
    """Right-click the row; the texts of the menu that pops up (its last action chosen), or [] if none does."""
    shown: list[str] = []

    def choose() -> None:
        popup = QApplication.activePopupWidget()
        if popup is not None:
            shown.extend(a.text() for a in popup.actions())
            popup.actions()[-1].trigger()
            popup.close()

    QTimer.singleShot(50, choose)
    pos = view.visualRect(index).center()
    event = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos))
    QApplication.sendEvent(view.viewport(), event)
    QApplication.processEvents()
    return shown


def test_right_click_in_the_layers_panel_opens_the_card_until_unload(
        qgis_iface, qgis_new_project: QgsProject, run_gpkg: Path, monkeypatch, qtbot) -> None:
    view = _view(qgis_new_project, qtbot)
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        layers = plugin.open_run_results(run_gpkg)
        clusters = layers["clusters"]
        view.expandAll()
        qtbot.wait(20)
        index = view.legendNode2index(_legend_nodes(view, clusters)[3])
        assert _right_click(view, index) == [CARD_ACTION_TEXT]
        assert len(plugin.cluster_cards) == 1
        card = plugin.cluster_cards[0]
        assert card.layer is clusters and card.cluster == 3
    finally:
        plugin.unload()
    assert plugin.legend_card_menu is None
    assert _right_click(view, index) == []  # unloaded: the view's own (empty) menu, no card
    assert plugin.cluster_cards == []
