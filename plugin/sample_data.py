"""The bundled San Francisco sample city (resources/sample_data/sf/, sources in its ATTRIBUTION)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsFillSymbol,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)

from .styling import base_symbol

__all__ = ["SAMPLE_CHOICES", "SAMPLE_DIR", "SAMPLE_GROUP", "SAMPLE_LAYERS", "load_sample_data"]

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "resources" / "sample_data" / "sf"
SAMPLE_GROUP = "RegionLens sample \u2014 San Francisco"

#: key -> (file, layer title, provider, visible when added); top of the group first.
SAMPLE_LAYERS: dict[str, tuple[str, str, str, bool]] = {
    "pois": ("sf_pois_osm.geojson", "POIs (OpenStreetMap)", "ogr", True),
    "crime_incidents": ("sf_crime_incidents_2012h2.geojson", "Crime incidents 2012 H2 (SFPD)", "ogr", False),
    "block_groups": ("sf_block_groups_crime_pop.geojson", "Block groups (population, crime)", "ogr", True),
    "landsat": ("sf_landsat7_3857_30m.tif", "Landsat-7 (USGS)", "gdal", True),
}

#: What the run dock preselects for the sample (``RunDock.use_sample``): every input and some labels.
SAMPLE_CHOICES: dict[str, str | list[str]] = {
    "regions": "block_groups",
    "region_id_field": "GEO_ID",
    "pois": "pois",
    "poi_category_field": "category",
    "poi_name_field": "name",
    "rasters": ["landsat"],
    "label_fields": ["Population", "Robbery"],  # numeric fields of the block groups
    "label_points": "crime_incidents",  # counted per block group
}


def load_sample_data(project: QgsProject | None = None, sample_dir: Path | None = None) -> dict[str, QgsMapLayer]:
    """Add the sample layers to a new group at the top of the layer tree.

    The crime incidents are added unchecked (13,000 points; a label source, not an input).

    Args:
        project: Target project (default: ``QgsProject.instance()``).
        sample_dir: Folder of the sample files (default: the bundled one).

    Returns:
        The layers by key (``block_groups``, ``pois``, ``crime_incidents``, ``landsat``).

    Raises:
        FileNotFoundError: If a sample file is missing (a broken install).
        ValueError: If QGIS cannot open one.
    """
    if project is None:
        project = QgsProject.instance()
    folder = sample_dir or SAMPLE_DIR
    layers: dict[str, QgsMapLayer] = {}
    for key, (file_name, title, provider, _visible) in SAMPLE_LAYERS.items():
        path = folder / file_name
        if not path.is_file():
            raise FileNotFoundError(f"Sample file missing: {path}. Reinstall the RegionLens plugin.")
        if provider == "gdal":
            layer: QgsMapLayer = QgsRasterLayer(str(path), title, provider)
        else:
            layer = QgsVectorLayer(str(path), title, provider)
        if not layer.isValid():
            raise ValueError(f"QGIS cannot open the sample file {path}.")
        layers[key] = layer
    _style(layers)
    group = project.layerTreeRoot().insertGroup(0, SAMPLE_GROUP)
    for key, (_file, _title, _provider, visible) in SAMPLE_LAYERS.items():
        project.addMapLayer(layers[key], False)
        node = group.addLayer(layers[key])
        node.setItemVisibilityChecked(visible)
        node.setExpanded(False)
    return layers


def _style(layers: dict[str, QgsMapLayer]) -> None:
    blocks = layers["block_groups"]
    outline = QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "255,230,120,230", "outline_width": "0.2", "outline_width_unit": "MM"}
    )  # hollow, light outline: readable over the Landsat image
    blocks.setRenderer(QgsSingleSymbolRenderer(outline))
    pois = layers["pois"]
    symbol = base_symbol(pois, "#d95f02")
    symbol.setSize(1.4)
    pois.setRenderer(QgsSingleSymbolRenderer(symbol))
    crimes = layers["crime_incidents"]
    symbol = base_symbol(crimes, "#7570b3")
    symbol.setSize(1.0)
    crimes.setRenderer(QgsSingleSymbolRenderer(symbol))
