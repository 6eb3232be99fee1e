"""Load a RegionLens run (``<output_dir>/regionlens.gpkg``, docs/protocol.md) into a QGIS project.

The layers are read from the GeoPackage file (``<gpkg>|layername=<layer>``): durable, never memory
layers. They go into one layer group, styled by :mod:`.styling`:

========================  ==========================================  ============================
key of the returned dict   GeoPackage layer                           style
========================  ==========================================  ============================
``clusters``               ``clusters``                               categorized on ``cluster``
``predictions``            ``predictions``                            graduated ``<label>_pred``
``residuals``              ``predictions`` (second layer instance)    diverging ``<label>_res``
``embeddings``             ``embeddings``                             light single symbol
``metrics``                ``metrics`` (table)                        -
``cluster_profiles``       ``cluster_profiles`` (table)               -
========================  ==========================================  ============================

Layers a run did not write (no labels: no predictions) are left out of the dict.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsProviderRegistry, QgsVectorLayer

from . import styling

__all__ = [
    "LAYER_KEYS",
    "gpkg_layer_names",
    "label_names",
    "load_run_outputs",
    "open_gpkg_layer",
    "run_group_name",
]

#: Order of the layers in the group (top first).
LAYER_KEYS = ("clusters", "predictions", "residuals", "embeddings", "metrics", "cluster_profiles")
_METHOD_LAYERS = {"clusters", "predictions", "embeddings"}  # these get a ``_<method>`` variant per method


def run_group_name(gpkg_path: str | Path) -> str:
    """``RegionLens — <run folder name>``."""
    return f"RegionLens \u2014 {Path(gpkg_path).resolve().parent.name}"


def gpkg_layer_names(gpkg_path: str | Path) -> list[str]:
    """Names of the layers and tables in a GeoPackage (empty if it cannot be read)."""
    details = QgsProviderRegistry.instance().querySublayers(str(gpkg_path))
    return [d.name() for d in details if d.providerKey() == "ogr"]


def label_names(layer: QgsVectorLayer) -> list[str]:
    """Labels of a predictions layer, in field order: every ``<label>_pred`` field's prefix."""
    names = layer.fields().names()
    return [name[: -len("_pred")] for name in names if name.endswith("_pred") and len(name) > len("_pred")]


def open_gpkg_layer(gpkg_path: str | Path, layer_name: str, title: str | None = None) -> QgsVectorLayer:
    """Open one layer of a GeoPackage as a file-backed vector layer.

    Raises:
        ValueError: If QGIS cannot open it.
    """
    uri = f"{Path(gpkg_path)}|layername={layer_name}"
    layer = QgsVectorLayer(uri, title or layer_name, "ogr")
    if not layer.isValid():
        raise ValueError(f"QGIS cannot open layer '{layer_name}' of {gpkg_path}.")
    return layer


def load_run_outputs(
    gpkg_path: str | Path,
    project: QgsProject | None = None,
    group_name: str | None = None,
    label: str | None = None,
    method: str | None = None,
    prediction_mode: str = "quantile",
    save_styles: bool = False,
) -> dict[str, QgsVectorLayer]:
    """Add a run's layers, styled, to a new layer group at the top of the project's layer tree.

    Args:
        gpkg_path: The run's ``regionlens.gpkg``.
        project: Target project (default: ``QgsProject.instance()``).
        group_name: Group name (default: ``RegionLens — <run folder name>``).
        label: Label the predictions and residuals layers show (default: the first label).
        method: Load the layers of this further method (``clusters_<method>``, ...) instead of the
            primary method's; ``None`` for the primary method.
        prediction_mode: ``quantile`` or ``jenks`` classes for the predictions layer.
        save_styles: Also store the styles in the GeoPackage (``layer_styles`` table) as the
            layers' default styles, so that they come styled however the file is opened.

    Returns:
        The loaded layers by key (see the module docstring).

    Raises:
        FileNotFoundError: If the GeoPackage does not exist.
        ValueError: If it holds no RegionLens layers, a layer cannot be opened, or ``label`` is not
            one of the run's labels.
    """
    path = Path(gpkg_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"RegionLens results not found: {path}")
    if project is None:
        project = QgsProject.instance()
    available = set(gpkg_layer_names(path))
    suffix = f"_{method}" if method else ""

    def table(key: str) -> str:
        return f"{key}{suffix}" if key in _METHOD_LAYERS else key

    wanted = [key for key in LAYER_KEYS if key != "residuals" and table(key) in available]
    if not any(key in _METHOD_LAYERS for key in wanted):
        layers_found = ", ".join(sorted(available)) or "none"
        raise ValueError(
            f"{path} holds no RegionLens layers{' for method ' + method if method else ''} "
            f"(layers found: {layers_found})."
        )
    tag = f" ({method})" if method else ""
    layers: dict[str, QgsVectorLayer] = {}

    if "clusters" in wanted:
        layers["clusters"] = open_gpkg_layer(path, table("clusters"), f"Clusters{tag}")
        styling.style_clusters(layers["clusters"])
    if "predictions" in wanted:
        predictions = open_gpkg_layer(path, table("predictions"), "Predictions")
        labels = label_names(predictions)
        if label is not None and label not in labels:
            raise ValueError(f"Label '{label}' is not in {path.name}; the run's labels: {', '.join(labels) or 'none'}.")
        chosen = label if label is not None else (labels[0] if labels else None)
        if chosen is not None:
            predictions.setName(f"Predicted {chosen}{tag}")
            styling.style_predictions(predictions, chosen, mode=prediction_mode)
            layers["predictions"] = predictions
            if f"{chosen}_res" in predictions.fields().names():
                residuals = open_gpkg_layer(
                    path, table("predictions"), f"Residuals {chosen}{tag} (observed \u2212 predicted)"
                )
                styling.style_residuals(residuals, chosen)
                layers["residuals"] = residuals
    if "embeddings" in wanted:
        layers["embeddings"] = open_gpkg_layer(path, table("embeddings"), f"Embeddings{tag}")
        styling.style_embeddings(layers["embeddings"])
    if "metrics" in wanted:
        layers["metrics"] = open_gpkg_layer(path, "metrics", "Metrics")
    if "cluster_profiles" in wanted:
        layers["cluster_profiles"] = open_gpkg_layer(path, "cluster_profiles", "Cluster profiles")

    if save_styles:
        _save_default_styles(layers)

    group = _new_group(project, group_name or run_group_name(path))
    first_map_layer = next((key for key in LAYER_KEYS if key in layers and layers[key].isSpatial()), None)
    for key in LAYER_KEYS:
        if key not in layers:
            continue
        layer = layers[key]
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        node.setItemVisibilityChecked(key == first_map_layer)
        node.setExpanded(key == first_map_layer)
    return layers


def _new_group(project: QgsProject, name: str) -> QgsLayerTreeGroup:
    group = project.layerTreeRoot().insertGroup(0, name)
    group.setExpanded(True)
    return group


def _save_default_styles(layers: dict[str, QgsVectorLayer]) -> None:
    """Store styles in the GeoPackage's ``layer_styles`` table (best effort, errors ignored)."""
    for key in ("clusters", "predictions", "embeddings"):
        if key in layers:
            layers[key].saveStyleToDatabase(f"RegionLens {key}", "Written by the RegionLens plugin", True, "")
    if "residuals" in layers:
        layers["residuals"].saveStyleToDatabase("RegionLens residuals", "Written by the RegionLens plugin", False, "")
