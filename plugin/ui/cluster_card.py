"""The cluster card: what one cluster of a clusters layer is, in words and numbers.

Name (editable: *Rename* writes it into the layer and the legend, :func:`..clusters.rename_cluster`), size
(regions and share), the defining features with their z-scores (how many standard deviations the cluster's
mean lies from the mean of all regions), and a few example regions that *Select on map* selects. Opens from
the embedding explorer, from the layer tree's context menu of a clusters layer and from that of a cluster's
class in the layer's legend (:class:`LegendCardMenu`).
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsVectorLayer
from qgis.gui import QgsLayerTreeView
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QEvent, QModelIndex, QObject, Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..clusters import CLUSTER_FIELD, ClusterCard, cluster_cards, cluster_fids, legend_node_cluster, rename_cluster

__all__ = ["CARD_ACTION_TEXT", "ClusterCardDialog", "LegendCardMenu", "cluster_to_show"]

CARD_ACTION_TEXT = "Cluster card\u2026"


def cluster_to_show(layer: QgsVectorLayer) -> int | None:
    """The cluster of the layer's first selected region (``None`` when nothing is selected)."""
    index = layer.fields().indexOf(CLUSTER_FIELD)
    for feature in layer.getSelectedFeatures():
        value = feature.attribute(index)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class ClusterCardDialog(QDialog):
    """The card of one cluster, with a combo to go to the others.

    Args:
        layer: A clusters layer.
        cluster: The cluster shown first (default: that of the first selected region, else the first).
        parent: Parent widget.
        on_renamed: Called with ``(layer, cluster, name)`` after a rename (the explorer redraws).

    Raises:
        ValueError: If the layer is not a clusters layer.
    """

    def __init__(self, layer: QgsVectorLayer, cluster: int | None = None, parent: QWidget | None = None,
                 on_renamed=None) -> None:
        super().__init__(parent)
        self.layer = layer
        self.on_renamed = on_renamed
        self.cards: dict[int, ClusterCard] = cluster_cards(layer)
        self.setWindowTitle(f"Cluster card \u2014 {layer.name()}")
        self.resize(560, 520)
        layout = QVBoxLayout(self)
        self.cluster_combo = QComboBox(self)
        self.name_edit = QLineEdit(self)
        self.name_edit.setToolTip("A name in words; Rename saves it into the layer and its legend")
        self.rename_button = QPushButton("Rename", self)
        name_row = QHBoxLayout()
        name_row.addWidget(self.name_edit, 1)
        name_row.addWidget(self.rename_button)
        self.size_label = QLabel(self)
        form = QFormLayout()
        form.addRow("Cluster", self.cluster_combo)
        form.addRow("Name", name_row)
        form.addRow("Size", self.size_label)
        layout.addLayout(form)
        layout.addWidget(QLabel("Defining features (z-score: standard deviations from the mean of all regions)",
                                self))
        self.features_table = QTableWidget(0, 3, self)
        self.features_table.setHorizontalHeaderLabels(["Feature", "z-score", "Mean in cluster"])
        self.features_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.features_table.verticalHeader().setVisible(False)
        header = self.features_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):  # numbers and their headers shown whole, the feature name takes the rest
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.features_table, 1)
        self.examples_label = QLabel(self)
        self.examples_label.setWordWrap(True)
        self.examples_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.examples_label)
        self.source_label = QLabel(self)
        self.source_label.setStyleSheet("QLabel { color: #606060; }")
        layout.addWidget(self.source_label)
        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        layout.addWidget(self.message_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.select_button = buttons.addButton("Select examples on map", QDialogButtonBox.ButtonRole.ActionRole)
        self.select_all_button = buttons.addButton("Select cluster on map", QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        for number, card in self.cards.items():
            self.cluster_combo.addItem(f"{number}: {card.name}" if card.name else f"Cluster {number}", number)
        self.cluster_combo.currentIndexChanged.connect(lambda _i: self._show())
        self.rename_button.clicked.connect(lambda _checked=False: self.rename(self.name_edit.text()))
        self.name_edit.returnPressed.connect(lambda: self.rename(self.name_edit.text()))
        self.select_button.clicked.connect(lambda _checked=False: self.select_examples())
        self.select_all_button.clicked.connect(lambda _checked=False: self.select_cluster())
        if cluster is None:
            cluster = cluster_to_show(layer)
        self.show_cluster(cluster if cluster is not None else next(iter(self.cards), 0))

    # ------------------------------------------------------------------ public API

    @property
    def cluster(self) -> int | None:
        """The cluster shown."""
        value = self.cluster_combo.currentData()
        return int(value) if value is not None else None

    @property
    def card(self) -> ClusterCard | None:
        return self.cards.get(self.cluster) if self.cluster is not None else None

    def show_cluster(self, cluster: int) -> None:
        """Show this cluster's card."""
        index = self.cluster_combo.findData(int(cluster))
        if index >= 0:
            self.cluster_combo.setCurrentIndex(index)
        self._show()

    def rename(self, name: str) -> bool:
        """Rename the cluster shown (layer, legend, this card); False with the reason shown if it failed."""
        cluster = self.cluster
        if cluster is None:
            return False
        try:
            rename_cluster(self.layer, cluster, name)
        except ValueError as exc:
            self.message_label.setText(str(exc))
            self.message_label.setStyleSheet("QLabel { color: #c62828; }")
            return False
        name = " ".join(name.split())
        self.cluster_renamed(cluster, name)
        self.message_label.setStyleSheet("")
        self.message_label.setText(f"Renamed: saved into {self.layer.name()} and its legend.")
        if self.on_renamed is not None:
            self.on_renamed(self.layer, cluster, name)
        return True

    def cluster_renamed(self, cluster: int, name: str) -> None:
        """Show a name given elsewhere (the explorer, another card)."""
        card = self.cards.get(int(cluster))
        if card is None:
            return
        card.name = name
        index = self.cluster_combo.findData(int(cluster))
        if index >= 0:
            self.cluster_combo.setItemText(index, f"{cluster}: {name}")
        if cluster == self.cluster:
            self.name_edit.setText(name)
            self.name_edit.setCursorPosition(0)  # a long name shows its start

    def select_examples(self) -> int:
        """Select the example regions on the map; the number selected."""
        card = self.card
        fids = cluster_fids(self.layer, card.cluster, card.examples) if card is not None else []
        self.layer.selectByIds(fids)
        return len(fids)

    def select_cluster(self) -> int:
        """Select all the cluster's regions on the map; the number selected."""
        fids = cluster_fids(self.layer, self.cluster) if self.cluster is not None else []
        self.layer.selectByIds(fids)
        return len(fids)

    def feature_rows(self) -> list[tuple[str, str, str]]:
        """The defining-features table as text."""
        table = self.features_table
        return [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]

    # ------------------------------------------------------------------ drawing

    def _show(self) -> None:
        card = self.card
        self.message_label.setText("")
        if card is None:
            self.name_edit.setText("")
            self.size_label.setText("")
            self.features_table.setRowCount(0)
            self.examples_label.setText("")
            return
        self.name_edit.setText(card.name)
        self.name_edit.setCursorPosition(0)  # a long name shows its start
        self.size_label.setText(f"{card.size:,} regions ({100 * card.share:.0f} % of {card.total:,})")
        self.features_table.setRowCount(len(card.features))
        for r, feature in enumerate(card.features):
            cells = (feature.feature, f"{feature.zscore:+.2f}", "" if feature.mean is None else f"{feature.mean:.3g}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.features_table.setItem(r, c, item)
        if not card.features:
            self.features_table.setRowCount(0)
        examples = ", ".join(card.examples)
        self.examples_label.setText(f"Example regions: {examples}" if examples else "No example regions.")
        self.source_label.setText(f"Source: {card.source}." if card.source else "")


class LegendCardMenu(QObject):
    """Offers *Cluster card…* when a cluster's class in the Layers panel is right-clicked.

    QGIS 3.22's layer tree view lets a plugin add actions to a layer's context menu only, not to a legend
    entry's (``contextMenuAboutToShow`` came in 3.32). So this filter watches right-clicks on the view: on a
    cluster's class it shows the menu QGIS shows there (the view's menu provider) with *Cluster card…* for that
    cluster added; any other right-click goes on to QGIS unchanged. :meth:`remove` stops it (plugin unload).

    Args:
        view: The Layers panel's view (``iface.layerTreeView()``).
        open_card: Called with ``(layer, cluster)`` when the action is chosen.
    """

    def __init__(self, view: QgsLayerTreeView, open_card: Callable[[QgsVectorLayer, int], object]) -> None:
        super().__init__(view)
        self.view = view
        self.open_card = open_card
        view.viewport().installEventFilter(self)

    def remove(self) -> None:
        """Stop watching the view."""
        self.view.viewport().removeEventFilter(self)

    def menu_for(self, index: QModelIndex) -> QMenu | None:
        """The context menu of the view's row ``index`` when it is a cluster's class (QGIS's menu for it plus
        *Cluster card…*), else ``None``. The row becomes the view's current one (QGIS's menu is built for it)."""
        found = legend_node_cluster(self.view.index2legendNode(index)) if index.isValid() else None
        if found is None:
            return None
        self.view.setCurrentIndex(index)
        provider = self.view.menuProvider()
        menu = provider.createContextMenu() if provider is not None else None
        if menu is None:
            menu = QMenu(self.view)
        elif menu.actions():
            menu.addSeparator()
        layer, cluster = found
        action = menu.addAction(CARD_ACTION_TEXT)
        action.setToolTip(f"Cluster {cluster}: size, defining features, example regions; rename it")
        action.triggered.connect(lambda _checked=False: self.open_card(layer, cluster))
        return menu

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() != QEvent.Type.ContextMenu or watched is not self.view.viewport():
            return False
        menu = self.menu_for(self.view.indexAt(event.pos()))
        if menu is None:
            return False
        menu.exec(event.globalPos())
        sip.delete(menu)  # as QGIS deletes the menus of its layer tree after they close
        return True
