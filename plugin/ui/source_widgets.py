"""Run-dock widgets for the POI file (an OpenStreetMap extract or GeoParquet) and the kind of each raster.

* :func:`poi_file_widget`: a file chooser for ``.osm.pbf`` / ``.parquet`` POI files, shown beside the POI
  layer choice (the backend reads the file itself, clipped to the regions: docs/sources.md).
* :class:`RasterKinds`: the kind (``imagery`` or ``embedding``) of each raster of the dock's raster list,
  held on the list items, suggested from the band count (``embedding`` from
  :data:`plugin.sources.EMBEDDING_MIN_BANDS` bands) and changed with a dropdown for the highlighted raster.
"""

from __future__ import annotations

from qgis.core import QgsRasterLayer
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QComboBox, QListWidget, QListWidgetItem, QWidget

from ..sources import EMBEDDING_MIN_BANDS, POI_FILE_FILTER, RASTER_KINDS, suggested_raster_kind

__all__ = ["KIND_ROLE", "NAME_ROLE", "RasterKinds", "poi_file_widget"]

#: Item data roles holding a raster item's kind and its layer name.
KIND_ROLE = int(Qt.ItemDataRole.UserRole) + 1
NAME_ROLE = int(Qt.ItemDataRole.UserRole) + 2
_KIND_LABELS = {"imagery": "Imagery", "embedding": "Satellite embedding"}


def poi_file_widget(parent: QWidget) -> QgsFileWidget:
    """A file chooser for POI files the backend reads directly (OpenStreetMap extracts, GeoParquet)."""
    widget = QgsFileWidget(parent)
    widget.setStorageMode(QgsFileWidget.StorageMode.GetFile)
    widget.setFilter(POI_FILE_FILTER)
    widget.setDialogTitle("POI file: OpenStreetMap extract or GeoParquet")
    widget.setToolTip(
        "Instead of a POI layer: an OpenStreetMap extract (.osm.pbf; categories from its tags, e.g. amenity=cafe) or "
        "a GeoParquet file (Overture places: categories.primary). Read directly, only inside the regions' extent."
    )
    return widget


class RasterKinds:
    """The kind of every raster item of ``raster_list``, with a dropdown for the highlighted one.

    Args:
        raster_list: The dock's checkable raster list (items hold the layer id in ``UserRole``).
        parent: Parent of the dropdown (:attr:`combo`), which the dock places under the list.
    """

    def __init__(self, raster_list: QListWidget, parent: QWidget) -> None:
        self.raster_list = raster_list
        self.combo = QComboBox(parent)
        for kind in RASTER_KINDS:
            self.combo.addItem(_KIND_LABELS.get(kind, kind), kind)
        self.combo.setToolTip(
            "Kind of the highlighted raster: imagery (band statistics and image chips), or a satellite-embedding "
            f"raster such as AlphaEarth or TESSERA (suggested from {EMBEDDING_MIN_BANDS} bands): the mean of every "
            "band per region, and the method 'pretrained'."
        )
        self.combo.setEnabled(False)
        raster_list.currentItemChanged.connect(self._show)
        self.combo.activated.connect(self._chosen)

    @staticmethod
    def kind(item: QListWidgetItem) -> str:
        """The kind held by ``item`` (``imagery`` when none)."""
        return str(item.data(KIND_ROLE) or RASTER_KINDS[0])

    @staticmethod
    def set_kind(item: QListWidgetItem, kind: str, name: str | None = None) -> None:
        """Hold ``kind`` on ``item`` and say it in the item's text (``name``: the layer name, kept on the item)."""
        if name is not None:
            item.setData(NAME_ROLE, name)
        name = str(item.data(NAME_ROLE) or item.text())
        item.setData(KIND_ROLE, kind)
        item.setText(name if kind == RASTER_KINDS[0] else f"{name} ({kind})")

    @staticmethod
    def initial_kind(layer: QgsRasterLayer, stored: set[str] | None, kept: dict[str, str]) -> str:
        """A listed raster's kind: kept from the list before, else stored (``stored``: embedding layer ids, or
        ``None`` when nothing was stored), else suggested from its band count."""
        if layer.id() in kept:
            return kept[layer.id()]
        if stored is not None:
            return "embedding" if layer.id() in stored else RASTER_KINDS[0]
        return suggested_raster_kind(layer.bandCount())

    def kinds(self) -> dict[str, str]:
        """Layer id -> kind of every listed raster."""
        items = [self.raster_list.item(i) for i in range(self.raster_list.count())]
        return {str(item.data(Qt.ItemDataRole.UserRole)): self.kind(item) for item in items}

    def _show(self, item: QListWidgetItem | None, _previous: QListWidgetItem | None = None) -> None:
        self.combo.setEnabled(item is not None)
        if item is not None:
            self.combo.setCurrentIndex(max(0, self.combo.findData(self.kind(item))))

    def _chosen(self, _index: int) -> None:
        item = self.raster_list.currentItem()
        if item is None:
            return
        self.set_kind(item, str(self.combo.currentData()))  # itemChanged: the dock stores and re-validates
