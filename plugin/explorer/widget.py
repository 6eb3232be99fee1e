"""The embedding explorer dock: a 2-D projection of a run's embeddings, linked to the map.

Selecting points in the plot (rectangle or lasso) selects the same regions in the clusters and
embeddings layers; selecting regions on the map highlights their points. Below the plot a cluster can be
renamed (saved into the clusters layer and its legend) and its card opened (:mod:`..ui.cluster_card`), and
"Find similar regions" compares every region with the selected ones (set by the plugin). Projections run on QGIS's
main thread, which is fine for the city sizes RegionLens targets (t-SNE and UMAP are refused above
20,000 regions; PCA is fast at any size).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from qgis.core import QgsMapLayer, QgsMapLayerProxyModel, QgsProject, QgsVectorLayer
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..layers_added import LayersAdded
from .data import (
    CLUSTER_FIELD,
    CLUSTERS,
    EMBEDDINGS,
    ID_FIELD,
    ColourSource,
    ExplorerData,
    colour_sources,
    embedding_fields,
    find_run_layers,
    read_explorer_data,
    read_values,
)
from .plot import NO_CLUSTER_COLOUR, PlotContent, ScatterPlot
from .projection import Projection, available_projections, project

__all__ = ["EmbeddingExplorer", "open_explorer"]

CLUSTER_COLOURING = "Cluster"


class EmbeddingExplorer(QgsDockWidget):
    """Dock widget with the embedding plot and its controls.

    Args:
        iface: The QGIS interface (message bar for errors; may be ``None`` in tests).
        parent: Parent widget.

    Raises:
        ImportError: If matplotlib is missing (the message says what to install).
    """

    def __init__(self, iface=None, parent: QWidget | None = None) -> None:
        super().__init__("RegionLens embedding explorer", parent)
        self.setObjectName("RegionLensEmbeddingExplorer")
        self.iface = iface
        self.data: ExplorerData | None = None
        self.projection: Projection | None = None
        self._projections: dict[str, Projection] = {}  # cache for the current data
        self._sources: list[ColourSource] = []
        self._linked: list[QgsVectorLayer] = []  # layers whose selectionChanged we listen to
        self._syncing = False  # True while the plot sets the map selection
        self._loading = False
        self._watched = LayersAdded(self._update_layer_filters)  # new layers update the combos

        body = QWidget(self)
        self.plot = ScatterPlot(body, on_select=self._plot_selected)
        self.embeddings_combo = QgsMapLayerComboBox(body)
        self.embeddings_combo.setFilters(QgsMapLayerProxyModel.Filter.VectorLayer)
        self.clusters_combo = QgsMapLayerComboBox(body)
        self.clusters_combo.setFilters(QgsMapLayerProxyModel.Filter.VectorLayer)
        self.clusters_combo.setAllowEmptyLayer(True)
        self.projection_combo = QComboBox(body)
        self.projection_combo.addItems(available_projections())
        self.projection_combo.setToolTip("t-SNE and UMAP appear when scikit-learn / umap-learn are installed")
        self.colour_combo = QComboBox(body)
        self.mode_combo = QComboBox(body)
        self.mode_combo.addItem("Rectangle", "rectangle")
        self.mode_combo.addItem("Lasso", "lasso")
        self.save_button = QPushButton("Save figure\u2026", body)
        self.cluster_combo = QComboBox(body)
        self.cluster_combo.setToolTip("A cluster of the clusters layer (selecting in the plot picks the most "
                                      "common cluster of the selection)")
        self.cluster_name_edit = QLineEdit(body)
        self.cluster_name_edit.setPlaceholderText("cluster name in words")
        self.rename_button = QPushButton("Rename", body)
        self.rename_button.setToolTip("Save the name into the clusters layer and its legend")
        self.card_button = QPushButton("Cluster card\u2026", body)
        self.card_button.setToolTip("Size, defining features with z-scores, example regions")
        self.similar_button = QPushButton("Find similar", body)
        self.similar_button.setToolTip("Map how similar every region is to the regions selected in the plot")
        self.similar_button.setVisible(False)  # shown once the plugin sets find_similar
        #: Called with the embeddings layer by "Find similar regions" (set by the plugin).
        self.find_similar: Callable[[QgsVectorLayer], object] | None = None
        #: Called with ``(layer, cluster, name)`` after a rename here or in a card opened here.
        self.on_renamed: Callable[[QgsVectorLayer, int, str], object] | None = None
        self.cards: list = []  # cluster cards opened from here
        self.status = QLabel(body)
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Embeddings", self.embeddings_combo)
        form.addRow("Clusters", self.clusters_combo)
        row = QHBoxLayout()
        row.addWidget(QLabel("Projection", body))
        row.addWidget(self.projection_combo)
        row.addWidget(QLabel("Colour by", body))
        row.addWidget(self.colour_combo, 1)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Select", body))
        tools.addWidget(self.mode_combo)
        tools.addStretch(1)
        tools.addWidget(self.save_button)
        self.cluster_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.cluster_combo.setMinimumContentsLength(6)  # the dock stays as narrow as QGIS first makes it
        self.cluster_name_edit.setMinimumWidth(60)
        names = QHBoxLayout()
        names.addWidget(QLabel("Cluster", body))
        names.addWidget(self.cluster_combo, 1)
        names.addWidget(self.cluster_name_edit, 2)
        actions = QHBoxLayout()
        actions.addWidget(self.rename_button)
        actions.addWidget(self.card_button)
        actions.addStretch(1)
        actions.addWidget(self.similar_button)
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.plot.canvas, 1)
        layout.addLayout(tools)
        layout.addLayout(names)
        layout.addLayout(actions)
        layout.addWidget(self.status)
        self.setWidget(body)

        self.embeddings_combo.layerChanged.connect(self._embeddings_changed)
        self.clusters_combo.layerChanged.connect(lambda _layer: self._reload())
        self.projection_combo.currentIndexChanged.connect(lambda _i: self._redraw(reproject=True))
        self.colour_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        self.mode_combo.currentIndexChanged.connect(lambda _i: self.plot.set_mode(self.mode_combo.currentData()))
        self.save_button.clicked.connect(self._ask_save)
        self.cluster_combo.currentIndexChanged.connect(lambda _i: self._cluster_chosen())
        self.rename_button.clicked.connect(lambda _checked=False: self.rename_cluster(self.cluster_name_edit.text()))
        self.cluster_name_edit.returnPressed.connect(lambda: self.rename_cluster(self.cluster_name_edit.text()))
        self.card_button.clicked.connect(lambda _checked=False: self.open_cluster_card())
        self.similar_button.clicked.connect(lambda _checked=False: self._find_similar())
        self._watch_project(True)

    # ------------------------------------------------------------------ public API

    def set_layers(self, embeddings: QgsVectorLayer | None, clusters: QgsVectorLayer | None = None) -> None:
        """Show these layers (the clusters layer default: the run's, found next to the embeddings).

        Raises:
            ValueError: If ``embeddings`` has no ``region_id`` and ``emb_*`` fields, or ``clusters``
                no ``region_id`` and ``cluster`` fields.
        """
        if embeddings is not None and not _is_embeddings(embeddings):
            raise ValueError(f"Layer '{embeddings.name()}' has no {ID_FIELD} and embedding fields (emb_000, \u2026).")
        if clusters is not None and not _is_clusters(clusters):
            raise ValueError(f"Layer '{clusters.name()}' has no {ID_FIELD} and {CLUSTER_FIELD} fields.")
        self._update_layer_filters()
        if embeddings is not None and clusters is None:
            clusters = find_run_layers(embeddings.project() or QgsProject.instance(), near=embeddings).get(CLUSTERS)
        self._loading = True
        try:
            self.embeddings_combo.setLayer(embeddings)
            self.clusters_combo.setLayer(clusters)
        finally:
            self._loading = False
        self._reload()

    def embeddings_layer(self) -> QgsVectorLayer | None:
        layer = self.embeddings_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def clusters_layer(self) -> QgsVectorLayer | None:
        layer = self.clusters_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    @property
    def coordinates(self) -> np.ndarray:
        """N x 2 plot coordinates, one row per region of :attr:`data`."""
        return self.plot.coords

    @property
    def highlighted(self) -> np.ndarray:
        """Rows shown highlighted (selected on the map or in the plot)."""
        return self.plot.highlighted

    def point_colours(self) -> np.ndarray:
        """N x 4 RGBA face colours of the points."""
        return np.zeros((0, 4)) if self.plot.points is None else np.asarray(self.plot.points.get_facecolors())

    def set_projection(self, name: str) -> None:
        """Switch to ``PCA``, ``t-SNE`` or ``UMAP`` (one of :func:`available_projections`)."""
        index = self.projection_combo.findText(name)
        if index < 0:
            raise ValueError(f"Projection '{name}' is not available here; available: {available_projections()}.")
        self.projection_combo.setCurrentIndex(index)

    def set_colouring(self, title: str) -> None:
        """Colour by ``Cluster`` or by a numeric field (its title in the combo, e.g. ``population_pred``)."""
        index = self.colour_combo.findText(title)
        if index < 0:
            raise ValueError(f"Cannot colour by '{title}'; choose one of {self.colour_titles()}.")
        self.colour_combo.setCurrentIndex(index)

    def colour_titles(self) -> list[str]:
        return [self.colour_combo.itemText(i) for i in range(self.colour_combo.count())]

    def select_in_plot(self, xmin: float, xmax: float, ymin: float, ymax: float) -> int:
        """Select the points in a rectangle (data coordinates) and their regions on the map.

        Returns:
            The number of regions selected.
        """
        rows = self.plot.rows_in_rectangle(xmin, xmax, ymin, ymax)
        self.plot.select(rows)
        return len(rows)

    def select_rows(self, rows) -> None:
        """Select these rows in the plot and their regions on the map."""
        self.plot.select(rows)

    def save_figure(self, path: str | Path) -> Path:
        """Write the plot to a PNG (or SVG / PDF by extension)."""
        return self.plot.save(path)

    def set_find_similar(self, callback: Callable[[QgsVectorLayer], object] | None) -> None:
        """Show "Find similar regions", calling ``callback`` with the embeddings layer (``None``: hide it)."""
        self.find_similar = callback
        self.similar_button.setVisible(callback is not None)

    def current_cluster(self) -> int | None:
        """The cluster chosen below the plot (``None`` without clusters)."""
        value = self.cluster_combo.currentData()
        return int(value) if value is not None else None

    def choose_cluster(self, cluster: int) -> None:
        """Choose a cluster below the plot."""
        index = self.cluster_combo.findData(int(cluster))
        if index >= 0:
            self.cluster_combo.setCurrentIndex(index)

    def rename_cluster(self, name: str, cluster: int | None = None) -> bool:
        """Rename a cluster (default: the chosen one) in the clusters layer, its legend and the plot.

        Returns:
            True when renamed; otherwise the status line and the message bar say why.
        """
        from ..clusters import rename_cluster

        layer, cluster = self.clusters_layer(), self.current_cluster() if cluster is None else cluster
        if layer is None or cluster is None:
            self._message("Choose a clusters layer first.")
            return False
        try:
            rename_cluster(layer, cluster, name)
        except ValueError as exc:
            self.status.setText(str(exc))
            self._message(str(exc))
            return False
        self._cluster_renamed(layer, cluster, " ".join(name.split()))
        return True

    def open_cluster_card(self, cluster: int | None = None):
        """Open the card of a cluster (default: the chosen one); ``None`` without a clusters layer."""
        from ..ui.cluster_card import ClusterCardDialog

        layer = self.clusters_layer()
        if layer is None:
            self._message("Choose a clusters layer first.")
            return None
        card = ClusterCardDialog(layer, self.current_cluster() if cluster is None else cluster, self,
                                 on_renamed=self._cluster_renamed)
        card.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        card.destroyed.connect(lambda _obj=None, c=card: self.cards.remove(c) if c in self.cards else None)
        self.cards.append(card)
        card.show()
        return card

    def refresh(self) -> None:
        """Read the layers again (after they changed), follow the map selection again, and redraw."""
        self._watch_project(True)
        self._reload()

    # ------------------------------------------------------------------ loading and drawing

    def _embeddings_changed(self, layer: QgsMapLayer | None) -> None:
        if self._loading:
            return
        clusters = None
        if isinstance(layer, QgsVectorLayer):
            clusters = find_run_layers(layer.project() or QgsProject.instance(), near=layer).get(CLUSTERS)
        self._loading = True
        try:
            if clusters is not None:
                self.clusters_combo.setLayer(clusters)
        finally:
            self._loading = False
        self._reload()

    def _reload(self) -> None:
        if self._loading:
            return
        self._unlink()
        self.data, self.projection = None, None
        self._projections.clear()
        embeddings, clusters = self.embeddings_layer(), self.clusters_layer()
        self._fill_colour_combo(embeddings, clusters)
        if embeddings is None:
            hint = "Choose an embeddings layer (emb_000, emb_001, \u2026)."
            self.plot.draw(PlotContent(np.zeros((0, 2)), message=hint))
            self.status.setText("")
            return
        try:
            self.data = read_explorer_data(embeddings, clusters)
        except ValueError as exc:
            self.plot.draw(PlotContent(np.zeros((0, 2)), message=str(exc)))
            self.status.setText(str(exc))
            return
        self._link(embeddings)
        if clusters is not None:
            self._link(clusters)
        self._fill_cluster_combo()
        self._redraw(reproject=True)
        self._sync_from_map()

    def _fill_colour_combo(self, embeddings: QgsVectorLayer | None, clusters: QgsVectorLayer | None) -> None:
        current = self.colour_combo.currentText()
        self._sources = colour_sources(embeddings, clusters) if embeddings is not None else []
        self.colour_combo.blockSignals(True)
        try:
            self.colour_combo.clear()
            self.colour_combo.addItem(CLUSTER_COLOURING)
            for source in self._sources:
                self.colour_combo.addItem(source.title)
            index = self.colour_combo.findText(current)
            self.colour_combo.setCurrentIndex(max(index, 0))
        finally:
            self.colour_combo.blockSignals(False)

    def _redraw(self, reproject: bool = False) -> None:
        data = self.data
        if data is None:
            return
        if len(data) == 0:
            self.plot.draw(PlotContent(np.zeros((0, 2)), message="The embeddings layer has no complete rows."))
            return
        method = self.projection_combo.currentText() or "PCA"
        if reproject or method not in self._projections:
            try:
                self._projections[method] = self._project(data, method)
            except (ImportError, ValueError) as exc:
                self._message(str(exc))
                self.status.setText(str(exc))
                if method == "PCA":
                    return
                self._projections[method] = self._project(data, "PCA")
        self.projection = self._projections[method]
        self.plot.draw(self._content(data, self.projection))
        note = f"{len(data):,} regions, {data.matrix.shape[1]} dimensions, {self.projection.method}."
        if data.skipped:
            note += f" {data.skipped} regions without complete embeddings are not shown."
        note += " Drag in the plot to select regions on the map."
        self.status.setText(note)

    @staticmethod
    def _project(data: ExplorerData, method: str) -> Projection:
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            return project(data.matrix, method)
        finally:
            QApplication.restoreOverrideCursor()

    def _content(self, data: ExplorerData, projection: Projection) -> PlotContent:
        from matplotlib.colors import to_rgba

        title = self.embeddings_layer().name() if self.embeddings_layer() is not None else ""
        choice = self.colour_combo.currentText()
        source = next((s for s in self._sources if s.title == choice), None)
        if source is not None:
            values = read_values(source.layer, source.field, data.region_ids)
            return PlotContent(projection.coords, values=values, value_label=source.field, title=title,
                               axis_labels=projection.axis_labels)  # fmt: skip
        palette = {c: to_rgba(colour) for c, colour in data.cluster_colours.items()}
        grey = to_rgba(NO_CLUSTER_COLOUR)
        colours = np.array([palette.get(int(c), grey) for c in data.cluster]).reshape(-1, 4)
        legend = [
            (f"{c}: {data.cluster_labels[c]}" if data.cluster_labels.get(c) else f"Cluster {c}", colour)
            for c, colour in sorted(data.cluster_colours.items())
        ]
        if (data.cluster < 0).any():
            legend.append(("no cluster", NO_CLUSTER_COLOUR))
        return PlotContent(projection.coords, colours=colours, legend=legend, title=title,
                           axis_labels=projection.axis_labels)  # fmt: skip

    # ------------------------------------------------------------------ plot <-> map selection

    def _fill_cluster_combo(self) -> None:
        current = self.current_cluster()
        labels = self.data.cluster_labels if self.data is not None else {}
        self.cluster_combo.blockSignals(True)
        try:
            self.cluster_combo.clear()
            for cluster in sorted(labels):
                self.cluster_combo.addItem(_cluster_item(cluster, labels[cluster]), cluster)
            index = self.cluster_combo.findData(current) if current is not None else -1
            self.cluster_combo.setCurrentIndex(max(index, 0) if self.cluster_combo.count() else -1)
        finally:
            self.cluster_combo.blockSignals(False)
        for widget in (self.cluster_combo, self.cluster_name_edit, self.rename_button, self.card_button):
            widget.setEnabled(bool(labels))
        self._cluster_chosen()

    def _cluster_chosen(self) -> None:
        cluster = self.current_cluster()
        labels = self.data.cluster_labels if self.data is not None else {}
        self.cluster_name_edit.setText(labels.get(cluster, "") if cluster is not None else "")
        self.cluster_name_edit.setCursorPosition(0)  # a long name shows its start

    def _cluster_renamed(self, layer: QgsVectorLayer, cluster: int, name: str) -> None:
        """A cluster got a new name here or in a card opened here: show it, and tell the plugin."""
        self.cluster_renamed(layer, cluster, name)
        if self.on_renamed is not None:
            self.on_renamed(layer, cluster, name)

    def cluster_renamed(self, layer: QgsVectorLayer, cluster: int, name: str) -> None:
        """Show a cluster's new name (given elsewhere) in the combo and the plot's legend."""
        if self.data is not None and layer is self.clusters_layer():
            self.data.cluster_labels[cluster] = name
            index = self.cluster_combo.findData(cluster)
            if index >= 0:
                self.cluster_combo.setItemText(index, _cluster_item(cluster, name))
            if cluster == self.current_cluster():
                self.cluster_name_edit.setText(name)
                self.cluster_name_edit.setCursorPosition(0)  # a long name shows its start
            self._redraw()

    def _find_similar(self) -> None:
        layer = self.embeddings_layer()
        if self.find_similar is None or layer is None:
            return
        self.find_similar(layer)

    def _plot_selected(self, rows: np.ndarray) -> None:
        data = self.data
        if data is None:
            return
        chosen = data.cluster[rows] if len(rows) else np.zeros(0, dtype=int)
        chosen = chosen[chosen >= 0]
        if len(chosen):  # the most common cluster of the selection
            values, counts = np.unique(chosen, return_counts=True)
            self.choose_cluster(int(values[np.argmax(counts)]))
        self._syncing = True
        try:
            embeddings, clusters = self.embeddings_layer(), self.clusters_layer()
            if embeddings is not None:
                embeddings.selectByIds([int(f) for f in data.embedding_fids[rows]])
            if clusters is not None:
                fids = data.cluster_fids[rows]
                clusters.selectByIds([int(f) for f in fids[fids >= 0]])
        finally:
            self._syncing = False

    def _link(self, layer: QgsVectorLayer) -> None:
        if layer in self._linked:
            return
        layer.selectionChanged.connect(self._map_selection_changed)
        self._linked.append(layer)

    def _unlink(self) -> None:
        for layer in self._linked:
            try:
                layer.selectionChanged.disconnect(self._map_selection_changed)
            except (RuntimeError, TypeError):  # the layer was deleted, or is no longer connected
                pass
        self._linked.clear()

    def _map_selection_changed(self, *_args) -> None:
        if self._syncing:
            return
        layer = self.sender()
        self._sync_from_map(layer if isinstance(layer, QgsVectorLayer) else None)

    def _sync_from_map(self, layer: QgsVectorLayer | None = None) -> None:
        """Highlight the rows of the regions selected on ``layer`` (default: the clusters layer, else
        the embeddings layer)."""
        data = self.data
        if data is None:
            return
        if layer is None:
            layer = self.clusters_layer() or self.embeddings_layer()
        if layer is None:
            return
        selected = np.asarray(sorted(layer.selectedFeatureIds()), dtype=np.int64)
        fids = data.cluster_fids if layer is self.clusters_layer() else data.embedding_fids
        rows = np.flatnonzero(np.isin(fids, selected)) if len(selected) else np.zeros(0, dtype=np.int64)
        self.plot.set_highlighted(rows)

    # ------------------------------------------------------------------ GUI helpers

    def _ask_save(self) -> None:
        name = (self.embeddings_layer().name() if self.embeddings_layer() is not None else "embeddings") + "_2d.png"
        start = str(Path.home() / name.replace(" ", "_"))
        chosen, _filter = QFileDialog.getSaveFileName(
            self, "Save figure", start, "PNG image (*.png);;SVG (*.svg);;PDF (*.pdf)"
        )
        if not chosen:
            return
        try:
            path = self.save_figure(chosen)
        except (OSError, ValueError) as exc:
            self._message(f"Could not save the figure: {exc}")
            return
        if self.iface is not None:
            self.iface.messageBar().pushSuccess("RegionLens", f"Figure saved to {path}.")

    def _message(self, text: str) -> None:
        if self.iface is not None:
            self.iface.messageBar().pushWarning("RegionLens", text)

    def _watch_project(self, watch: bool) -> None:
        self._watched.follow(watch)

    def _update_layer_filters(self, *_args) -> None:
        """Offer only embeddings layers in the first combo and clusters layers in the second."""
        layers = list(QgsProject.instance().mapLayers().values())
        before = (self.embeddings_layer(), self.clusters_layer())
        self._loading = True
        try:
            self.embeddings_combo.setExceptedLayerList([lyr for lyr in layers if not _is_embeddings(lyr)])
            self.clusters_combo.setExceptedLayerList([lyr for lyr in layers if not _is_clusters(lyr)])
        finally:
            self._loading = False
        if (self.embeddings_layer(), self.clusters_layer()) != before:
            self._reload()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._unlink()  # a closed explorer does not follow map selections
        self._watch_project(False)
        super().closeEvent(event)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._watch_project(True)
        if not self._linked and self.embeddings_layer() is not None:  # shown again after a close
            self._reload()


def _cluster_item(cluster: int, name: str) -> str:
    return f"{cluster}: {name}" if name else f"Cluster {cluster}"


def _is_embeddings(layer: QgsMapLayer) -> bool:
    return (
        isinstance(layer, QgsVectorLayer) and layer.fields().indexOf(ID_FIELD) >= 0 and bool(embedding_fields(layer))
    )


def _is_clusters(layer: QgsMapLayer) -> bool:
    fields = layer.fields() if isinstance(layer, QgsVectorLayer) else None
    return fields is not None and fields.indexOf(ID_FIELD) >= 0 and fields.indexOf(CLUSTER_FIELD) >= 0


def open_explorer(
    iface,
    embeddings_layer: QgsVectorLayer | None = None,
    clusters_layer: QgsVectorLayer | None = None,
    explorer: EmbeddingExplorer | None = None,
) -> EmbeddingExplorer:
    """Show the explorer docked on the right, for these layers or the project's latest run.

    Args:
        iface: The QGIS interface.
        embeddings_layer: Embeddings to show; default: the topmost RegionLens run group's.
        clusters_layer: Clusters to colour by; default: the run's, next to the embeddings.
        explorer: An explorer to reuse (shown again and pointed at the layers) instead of a new one.

    Returns:
        The explorer.

    Raises:
        ImportError: If matplotlib is missing.
    """
    if explorer is None:
        explorer = EmbeddingExplorer(iface, iface.mainWindow() if iface is not None else None)
        if iface is not None:
            iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, explorer)
    if embeddings_layer is None:
        found = find_run_layers(QgsProject.instance())
        embeddings_layer = found.get(EMBEDDINGS)
        clusters_layer = clusters_layer or found.get(CLUSTERS)
    if embeddings_layer is not None:
        explorer.set_layers(embeddings_layer, clusters_layer)
    else:
        explorer.refresh()
    explorer.show()
    explorer.raise_()
    return explorer
