"""Clusters in words: rename a cluster in its layer, and what a cluster card shows.

- :func:`rename_cluster` writes a new ``cluster_name`` into every region of the cluster (an attribute edit
  committed to the GeoPackage) and updates the legend entry of the categorised renderer; for a run's layer
  also the run's other copies of the name: the method's cards in ``clusters.json`` (replaced atomically) and
  its ``cluster_profiles`` table. The run's ``report.html`` is redrawn by the worker's ``report`` job, which
  the plugin starts after a rename (:func:`run_folder` says which run).
- :func:`cluster_cards` gathers, per cluster, its name, size, defining features (with z-scores) and a few
  example regions: from the run's ``clusters.json`` (written by the backend beside ``regionlens.gpkg``)
  when there is one; otherwise the size and examples are counted in the layer itself and the defining
  features read from the run's ``cluster_profiles`` table (the features with the largest |z-score|).
  Names always come from the layer, so that a rename shows at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeatureRequest,
    QgsLayerTreeModelLegendNode,
    QgsVectorLayer,
)

from .common import common, gpkg_source
from .results import gpkg_layer_names, run_methods
from .styling import cluster_legend

__all__ = [
    "CLUSTERS_JSON",
    "CLUSTER_FIELD",
    "EXAMPLES",
    "FEATURES",
    "ID_FIELD",
    "ClusterCard",
    "DefiningFeature",
    "cluster_cards",
    "cluster_fids",
    "is_clusters_layer",
    "layer_method",
    "legend_node_cluster",
    "rename_cluster",
    "run_folder",
]

ID_FIELD = common.ID_FIELD
CLUSTER_FIELD = common.CLUSTER_FIELD
#: The backend's cluster cards of every method, in the run folder (docs/protocol.md).
CLUSTERS_JSON = common.CLUSTER_CARDS_JSON
#: Example regions and defining features a card shows.
EXAMPLES, FEATURES = common.CLUSTER_CARD_EXAMPLES, common.CLUSTER_CARD_FEATURES


@dataclass(frozen=True)
class DefiningFeature:
    """An input feature that sets a cluster apart: its mean in the cluster and its z-score against all regions."""

    feature: str
    zscore: float
    mean: float | None = None


@dataclass
class ClusterCard:
    """What a cluster card shows."""

    cluster: int
    name: str
    size: int
    total: int  # regions in the layer
    features: list[DefiningFeature] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # region ids
    source: str = ""  # where the features and examples come from, in words

    @property
    def share(self) -> float:
        """Share of the layer's regions in this cluster."""
        return self.size / self.total if self.total else 0.0


def is_clusters_layer(layer: object) -> bool:
    """Whether a layer is a RegionLens clusters layer (``region_id`` and integer ``cluster`` fields)."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return False
    fields = layer.fields()
    return fields.indexOf(ID_FIELD) >= 0 and fields.indexOf(CLUSTER_FIELD) >= 0


def legend_node_cluster(node: object) -> tuple[QgsVectorLayer, int] | None:
    """The clusters layer and cluster number of a legend node: a cluster's class under a clusters layer in the
    Layers panel (``None`` for any other node).

    The node's rule key names a category of the layer's categorised renderer (its legend items follow the
    categories in order); the category's value is the cluster number.
    """
    if not isinstance(node, QgsLayerTreeModelLegendNode):
        return None
    layer_node = node.layerNode()
    layer = layer_node.layer() if layer_node is not None else None
    renderer = layer.renderer() if is_clusters_layer(layer) else None
    if not isinstance(renderer, QgsCategorizedSymbolRenderer) or renderer.classAttribute() != CLUSTER_FIELD:
        return None
    key = node.data(QgsLayerTreeModelLegendNode.RuleKeyRole)
    keys = [item.ruleKey() for item in renderer.legendSymbolItems()]
    categories = renderer.categories()
    if not key or key not in keys or len(keys) != len(categories):
        return None
    value = categories[keys.index(key)].value()
    try:
        return layer, int(value)
    except (TypeError, ValueError):  # the "all other values" class
        return None


def layer_method(layer: QgsVectorLayer) -> str:
    """The method whose clusters a run's layer holds (``clusters`` -> the primary, ``clusters_m`` -> ``m``);
    ``""`` for a layer from elsewhere."""
    gpkg, table = gpkg_source(layer)
    if gpkg is None or not table.startswith(CLUSTER_FIELD + "s"):
        return ""
    if table.startswith("clusters_"):
        return table[len("clusters_"):]
    methods = run_methods(gpkg)
    return methods[0] if methods else ""


def run_folder(layer: QgsVectorLayer) -> Path | None:
    """The folder of the run whose clusters a layer holds (``None`` for a layer from elsewhere)."""
    gpkg, _table = gpkg_source(layer)
    return gpkg.parent if gpkg is not None and layer_method(layer) else None


def _clusters(layer: QgsVectorLayer) -> dict[int, dict[str, Any]]:
    """Per cluster: name (first non-empty), size, region ids and feature ids, in feature order."""
    index = layer.fields().indexOf(CLUSTER_FIELD)
    id_index = layer.fields().indexOf(ID_FIELD)
    name_index = layer.fields().indexOf(common.CLUSTER_NAME_FIELD)
    wanted = [i for i in (index, id_index, name_index) if i >= 0]
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes(wanted)
    found: dict[int, dict[str, Any]] = {}
    for feature in layer.getFeatures(request):
        value = feature.attribute(index)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        entry = found.setdefault(value, {"name": "", "ids": [], "fids": []})
        name = feature.attribute(name_index) if name_index >= 0 else None
        if isinstance(name, str) and name and not entry["name"]:
            entry["name"] = name
        region = feature.attribute(id_index) if id_index >= 0 else None
        entry["ids"].append("" if region is None or str(region) == "NULL" else str(region))
        entry["fids"].append(feature.id())
    return found


def cluster_fids(layer: QgsVectorLayer, cluster: int, region_ids: Iterable[str] | None = None) -> list[int]:
    """Feature ids of the cluster's regions (only those with these region ids, when given)."""
    entry = _clusters(layer).get(int(cluster))
    if entry is None:
        return []
    keep = None if region_ids is None else {str(r) for r in region_ids}
    return [fid for fid, rid in zip(entry["fids"], entry["ids"], strict=True) if keep is None or rid in keep]


def rename_cluster(layer: QgsVectorLayer, cluster: int, name: str) -> int:
    """Give ``cluster`` a new name: in every region of the layer (committed to its file) and in the legend.

    Args:
        layer: A clusters layer with a ``cluster_name`` field.
        cluster: The cluster number.
        name: The new name (leading and trailing spaces dropped).

    Returns:
        The number of regions renamed.

    Raises:
        ValueError: If the name is empty, the layer has no such cluster or no ``cluster_name`` field, is
            being edited by the person, or the file refused the change (the layer is left unchanged); or if
            the run's ``clusters.json`` or ``cluster_profiles`` could not take the name (the layer has it).
    """
    name = " ".join(str(name).split())
    if not name:
        raise ValueError("A cluster name cannot be empty.")
    field_index = layer.fields().indexOf(common.CLUSTER_NAME_FIELD)
    if not is_clusters_layer(layer) or field_index < 0:
        raise ValueError(f"Layer '{layer.name()}' is not a RegionLens clusters layer with a "
                         f"{common.CLUSTER_NAME_FIELD} field.")
    fids = cluster_fids(layer, cluster)
    if not fids:
        raise ValueError(f"Layer '{layer.name()}' has no cluster {cluster}.")
    if layer.isEditable():
        raise ValueError(f"Layer '{layer.name()}' is being edited: save or discard your edits first, then rename.")
    if not layer.startEditing():
        raise ValueError(f"Layer '{layer.name()}' cannot be edited (is its file read-only?).")
    for fid in fids:
        layer.changeAttributeValue(fid, field_index, name)
    if not layer.commitChanges():
        errors = "; ".join(layer.commitErrors())
        layer.rollBack()
        raise ValueError(f"Could not save the new name into '{layer.name()}': {errors}")
    renderer = layer.renderer()
    if isinstance(renderer, QgsCategorizedSymbolRenderer):
        for i, category in enumerate(renderer.categories()):
            if category.value() == cluster or str(category.value()) == str(cluster):
                renderer.updateCategoryLabel(i, cluster_legend(int(cluster), name))
        layer.emitStyleChanged()
        layer.legendChanged.emit()  # the Layers panel rebuilds its legend entries (styleChanged alone does not)
        layer.triggerRepaint()
    _rename_in_run(layer, int(cluster), name)
    return len(fids)


def _rename_in_run(layer: QgsVectorLayer, cluster: int, name: str) -> None:
    """Save a cluster's new name into the run's ``clusters.json`` and ``cluster_profiles`` table of the layer's
    method, where the run wrote them (nothing is created; a layer from elsewhere changes nothing)."""
    gpkg, _table = gpkg_source(layer)
    method = layer_method(layer)
    if gpkg is None or not method:
        return
    cards_path = gpkg.parent / CLUSTERS_JSON
    data = _read_json(cards_path) if cards_path.is_file() else None
    card = data.get(method, {}).get(str(cluster)) if isinstance(data, dict) and isinstance(data.get(method), dict) \
        else None
    if isinstance(card, dict):
        card["name"] = name
        tmp = cards_path.with_name(f".{cards_path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, cards_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"Renamed in '{layer.name()}', but {cards_path} could not be updated: {exc}") from exc
    methods = run_methods(gpkg)
    table = common.method_layer(common.TABLE_CLUSTER_PROFILES, method, methods[0] if methods else method)
    if table in gpkg_layer_names(gpkg):
        _rename_in_table(f"{gpkg}|layername={table}", cluster, name)


def _rename_in_table(source: str, cluster: int, name: str) -> None:
    """Set ``cluster_name`` of the cluster's rows of a cluster profiles table (when it has that column); the
    project's layers of the table show it at once."""
    from qgis.core import QgsProject

    table = QgsVectorLayer(source, "cluster profiles", "ogr")
    index = table.fields().indexOf(common.CLUSTER_NAME_FIELD)
    if not table.isValid() or index < 0 or table.fields().indexOf(CLUSTER_FIELD) < 0:
        return
    fids = [f.id() for f in table.getFeatures() if f[CLUSTER_FIELD] == cluster]
    if not fids or not table.startEditing():
        return
    for fid in fids:
        table.changeAttributeValue(fid, index, name)
    if not table.commitChanges():
        errors = "; ".join(table.commitErrors())
        table.rollBack()
        raise ValueError(f"Renamed in the clusters layer, but the run's cluster profiles ({source}) refused the "
                         f"name: {errors}")
    for shown in QgsProject.instance().mapLayers().values():
        if isinstance(shown, QgsVectorLayer) and shown.source() == table.source() and not shown.isEditable():
            shown.reload()


# ------------------------------------------------------------------------------------------- cards


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_clusters(gpkg: Path, method: str) -> dict[int, dict[str, Any]] | None:
    """The ``clusters.json`` cards of ``method`` (cluster number -> its dict), or ``None`` when the run has none.

    The file (docs/protocol.md) is ``{method: {cluster id: {"name", "size", "features": [{"feature", "mean",
    "zscore"}], "examples": [region ids]}}}``.
    """
    data = _read_json(gpkg.parent / CLUSTERS_JSON)
    cards = data.get(method) if isinstance(data, dict) else None
    if not isinstance(cards, dict):
        return None
    entries: dict[int, dict[str, Any]] = {}
    for key, value in cards.items():
        try:
            number = int(key)
        except (TypeError, ValueError):
            continue
        if isinstance(value, dict):
            entries[number] = value
    return entries or None


def _features(value: Any) -> list[DefiningFeature]:
    """Defining features of a ``clusters.json`` card (entries without a name or a numeric z-score skipped)."""
    out = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        mean = item.get("mean")
        try:
            out.append(DefiningFeature(str(item["feature"]), float(item["zscore"]),
                                       float(mean) if isinstance(mean, (int, float)) else None))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _profile_features(gpkg: Path, method: str, primary: str) -> dict[int, list[DefiningFeature]]:
    """Per cluster, the features of the run's ``cluster_profiles`` table with the largest |z-score|."""
    table = "cluster_profiles" if method == primary else f"cluster_profiles_{method}"
    if table not in gpkg_layer_names(gpkg):
        return {}
    layer = QgsVectorLayer(f"{gpkg}|layername={table}", table, "ogr")
    if not layer.isValid() or any(layer.fields().indexOf(f) < 0 for f in (CLUSTER_FIELD, "feature", "zscore")):
        return {}
    has_mean = layer.fields().indexOf("mean") >= 0
    found: dict[int, list[DefiningFeature]] = {}
    for feature in layer.getFeatures():
        cluster, z = feature["cluster"], feature["zscore"]
        if not isinstance(cluster, int) or not isinstance(z, (int, float)):
            continue
        mean = feature["mean"] if has_mean and isinstance(feature["mean"], (int, float)) else None
        found.setdefault(cluster, []).append(DefiningFeature(str(feature["feature"]), float(z), mean))
    return {c: sorted(items, key=lambda f: -abs(f.zscore))[:FEATURES] for c, items in found.items()}


def cluster_cards(layer: QgsVectorLayer) -> dict[int, ClusterCard]:
    """A card per cluster of a clusters layer (see the module's description for the sources).

    Raises:
        ValueError: If the layer is not a clusters layer.
    """
    if not is_clusters_layer(layer):
        raise ValueError(f"Layer '{layer.name()}' has no {ID_FIELD} and {CLUSTER_FIELD} fields.")
    counted = _clusters(layer)
    total = sum(len(entry["ids"]) for entry in counted.values())
    gpkg, _table = gpkg_source(layer)
    method = layer_method(layer)
    summaries = _json_clusters(gpkg, method) if gpkg is not None else None
    profiles: dict[int, list[DefiningFeature]] = {}
    if summaries is None and gpkg is not None and method:
        methods = run_methods(gpkg)
        profiles = _profile_features(gpkg, method, methods[0] if methods else method)
    cards = {}
    for cluster in sorted(counted):
        entry = counted[cluster]
        summary = (summaries or {}).get(cluster)
        if summary is not None:
            examples = [str(e) for e in summary.get("examples") or []][:EXAMPLES]
            size = summary.get("size")
            cards[cluster] = ClusterCard(
                cluster, entry["name"] or str(summary.get("name") or ""),
                int(size) if isinstance(size, (int, float)) else len(entry["ids"]), total,
                _features(summary.get("features"))[:FEATURES], examples,
                f"{CLUSTERS_JSON} of the run",
            )
        else:
            source = "counted in the layer" + (f"; features from the run's cluster profiles ({method})"
                                               if cluster in profiles else "")
            cards[cluster] = ClusterCard(cluster, entry["name"], len(entry["ids"]), total,
                                         profiles.get(cluster, []), [r for r in entry["ids"] if r][:EXAMPLES],
                                         source)
    return cards
