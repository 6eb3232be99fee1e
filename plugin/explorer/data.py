"""Read what the explorer plots from QGIS layers: embeddings, clusters and colour values.

Rows follow the embeddings layer (one per feature with a region id and finite ``emb_*`` values, in
feature order); the clusters layer and any colour layer are joined on the region id field
(``region_id`` in RegionLens outputs, docs/protocol.md). Feature ids are kept per layer, so that a
plot selection can select the same regions on the map and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeatureRequest,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProject,
    QgsProviderRegistry,
    QgsVectorLayer,
)

from ..common import common
from ..styling import cluster_colour

__all__ = [
    "CLUSTER_FIELD",
    "CLUSTER_LABEL_FIELD",
    "CLUSTERS",
    "EMBEDDINGS",
    "ID_FIELD",
    "ColourSource",
    "ExplorerData",
    "cluster_colours",
    "colour_sources",
    "embedding_fields",
    "find_run_layers",
    "numeric_fields",
    "read_explorer_data",
    "read_values",
    "region_fids",
]

ID_FIELD = common.ID_FIELD
EMBEDDINGS, CLUSTERS = common.LAYER_EMBEDDINGS, common.LAYER_CLUSTERS
CLUSTER_FIELD = common.CLUSTER_FIELD
CLUSTER_LABEL_FIELD = common.CLUSTER_NAME_FIELD  # the readable cluster name (docs/protocol.md)
RUN_GROUP_PREFIX = common.RUN_GROUP_PREFIX
_EMB_RE = common.EMBEDDING_COLUMN
_NUMERIC_TYPES = {"int", "integer", "integer64", "real", "double", "float", "decimal", "numeric"}


@dataclass
class ExplorerData:
    """The regions of one embeddings layer, with their clusters, ready to plot."""

    region_ids: list[str]  # one per row
    matrix: np.ndarray  # N x d embeddings
    embedding_fids: np.ndarray  # feature id of each row in the embeddings layer
    cluster: np.ndarray  # cluster of each row, -1 where the clusters layer has none
    cluster_fids: np.ndarray  # feature id of each row in the clusters layer, -1 where missing
    cluster_labels: dict[int, str] = field(default_factory=dict)  # cluster -> its description
    cluster_colours: dict[int, str] = field(default_factory=dict)  # cluster -> "#rrggbb"
    skipped: int = 0  # embedding features left out (no region id, or NULL / non-finite values)

    def __len__(self) -> int:
        return len(self.region_ids)


@dataclass(frozen=True)
class ColourSource:
    """A numeric field the points can be coloured by, with the layer it comes from."""

    title: str
    layer: QgsVectorLayer
    field: str


def embedding_fields(layer: QgsVectorLayer) -> list[str]:
    """The layer's ``emb_000``, ``emb_001``, ... fields, in field order."""
    return [name for name in layer.fields().names() if _EMB_RE.match(name)]


def _key(value: object) -> str | None:
    """A region id as text (``None`` for NULL)."""
    if value is None or (hasattr(value, "isNull") and value.isNull()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _request(layer: QgsVectorLayer, names: list[str]) -> QgsFeatureRequest:
    indices = [layer.fields().indexOf(name) for name in names]
    return QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes(indices)


def _require(layer: QgsVectorLayer, name: str, what: str) -> int:
    index = layer.fields().indexOf(name)
    if index < 0:
        raise ValueError(f"Layer '{layer.name()}' has no '{name}' field ({what}).")
    return index


def region_fids(layer: QgsVectorLayer, id_field: str = ID_FIELD) -> dict[str, int]:
    """Region id -> feature id of ``layer`` (the first feature of an id that appears twice).

    Raises:
        ValueError: If the layer has no ``id_field``.
    """
    index = _require(layer, id_field, "the region id")
    fids: dict[str, int] = {}
    for feature in layer.getFeatures(_request(layer, [id_field])):
        key = _key(feature.attribute(index))
        if key is not None and key not in fids:
            fids[key] = feature.id()
    return fids


def cluster_colours(
    layer: QgsVectorLayer | None, clusters: list[int], field_name: str = CLUSTER_FIELD
) -> dict[int, str]:
    """Colour of each cluster as the map shows it.

    The colours of the layer's categorized renderer on ``field_name`` when it has one (so a
    planner's restyling carries over), else :func:`..styling.cluster_colour`, which is what RegionLens
    styles clusters with.
    """
    from_renderer: dict[int, str] = {}
    renderer = layer.renderer() if layer is not None else None
    if isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == field_name:
        for category in renderer.categories():
            try:
                value = int(category.value())
            except (TypeError, ValueError):
                continue
            if category.symbol() is not None:
                from_renderer[value] = category.symbol().color().name()
    return {c: from_renderer.get(c, cluster_colour(c).name()) for c in clusters}


def read_explorer_data(
    embeddings: QgsVectorLayer,
    clusters: QgsVectorLayer | None = None,
    id_field: str = ID_FIELD,
) -> ExplorerData:
    """Read the embedding matrix and join the clusters.

    Args:
        embeddings: A layer with ``id_field`` and ``emb_*`` fields.
        clusters: A layer with ``id_field``, ``cluster`` (integer) and optionally ``cluster_name``.
        id_field: The region id field of both layers.

    Returns:
        The rows to plot.

    Raises:
        ValueError: If a layer lacks the id field, the embeddings layer has no ``emb_*`` field, or
            the clusters layer has no ``cluster`` field.
    """
    names = embedding_fields(embeddings)
    if not names:
        raise ValueError(f"Layer '{embeddings.name()}' has no embedding fields (emb_000, emb_001, ...).")
    id_index = _require(embeddings, id_field, "the region id")
    emb_indices = [embeddings.fields().indexOf(name) for name in names]
    region_ids: list[str] = []
    rows: list[list[float]] = []
    fids: list[int] = []
    skipped = 0
    for feature in embeddings.getFeatures(_request(embeddings, [id_field, *names])):
        key = _key(feature.attribute(id_index))
        try:
            values = [float(feature.attribute(i)) for i in emb_indices]
        except (TypeError, ValueError):  # NULL
            values = []
        if key is None or not values or not all(math.isfinite(v) for v in values):
            skipped += 1
            continue
        region_ids.append(key)
        rows.append(values)
        fids.append(feature.id())
    matrix = np.asarray(rows, dtype=float).reshape(len(rows), len(names))

    n = len(region_ids)
    cluster = np.full(n, -1, dtype=np.int64)
    cluster_fids = np.full(n, -1, dtype=np.int64)
    labels: dict[int, str] = {}
    if clusters is not None:
        c_id = _require(clusters, id_field, "the region id")
        c_index = _require(clusters, CLUSTER_FIELD, "the cluster number")
        label_index = clusters.fields().indexOf(CLUSTER_LABEL_FIELD)
        wanted = [id_field, CLUSTER_FIELD] + ([CLUSTER_LABEL_FIELD] if label_index >= 0 else [])
        row_of = {key: i for i, key in enumerate(region_ids)}
        for feature in clusters.getFeatures(_request(clusters, wanted)):
            i = row_of.get(_key(feature.attribute(c_id)))
            if i is None or cluster_fids[i] >= 0:
                continue
            value = feature.attribute(c_index)
            try:
                number = int(value)
            except (TypeError, ValueError):  # NULL cluster
                continue
            cluster[i] = number
            cluster_fids[i] = feature.id()
            if label_index >= 0 and number not in labels:
                text = feature.attribute(label_index)
                labels[number] = text if isinstance(text, str) else ""
    present = sorted({int(c) for c in cluster if c >= 0})
    return ExplorerData(
        region_ids=region_ids,
        matrix=matrix,
        embedding_fids=np.asarray(fids, dtype=np.int64),
        cluster=cluster,
        cluster_fids=cluster_fids,
        cluster_labels={c: labels.get(c, "") for c in present},
        cluster_colours=cluster_colours(clusters, present),
        skipped=skipped,
    )


def read_values(layer: QgsVectorLayer, field_name: str, region_ids: list[str], id_field: str = ID_FIELD) -> np.ndarray:
    """Values of a numeric field for ``region_ids`` (NaN where missing, NULL or not finite).

    Raises:
        ValueError: If the layer lacks ``id_field`` or ``field_name``.
    """
    id_index = _require(layer, id_field, "the region id")
    index = _require(layer, field_name, "the colour values")
    row_of = {key: i for i, key in enumerate(region_ids)}
    values = np.full(len(region_ids), np.nan)
    for feature in layer.getFeatures(_request(layer, [id_field, field_name])):
        i = row_of.get(_key(feature.attribute(id_index)))
        if i is None:
            continue
        value = feature.attribute(index)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values[i] = float(value)
    return values


def numeric_fields(layer: QgsVectorLayer) -> list[str]:
    """Numeric fields worth colouring by: not ``emb_*``, not the cluster number, not a primary key."""
    keys = set(layer.dataProvider().pkAttributeIndexes()) if layer.dataProvider() is not None else set()
    names = []
    for i, fld in enumerate(layer.fields()):
        if i in keys or _EMB_RE.match(fld.name()) or fld.name() in (CLUSTER_FIELD, ID_FIELD):
            continue
        if fld.isNumeric() or fld.typeName().lower() in _NUMERIC_TYPES:
            names.append(fld.name())
    return names


def _table_name(layer: QgsMapLayer) -> str:
    """The GeoPackage table behind a layer (``embeddings``, ``clusters_hafusion``, ...), else ''."""
    if not isinstance(layer, QgsVectorLayer):
        return ""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    return str(parts.get("layerName") or "")


def _group_of(project: QgsProject, layer: QgsMapLayer | None) -> QgsLayerTreeGroup | None:
    if layer is not None:
        node = project.layerTreeRoot().findLayer(layer.id())
        if node is not None and isinstance(node.parent(), QgsLayerTreeGroup):
            return node.parent()
        return None
    for child in project.layerTreeRoot().children():
        if isinstance(child, QgsLayerTreeGroup) and child.name().startswith(RUN_GROUP_PREFIX):
            return child
    return None


def _layers_in(project: QgsProject, group: QgsLayerTreeGroup | None) -> list[QgsVectorLayer]:
    if group is not None:
        layers = [node.layer() for node in group.findLayers()]
    else:
        layers = [node.layer() for node in project.layerTreeRoot().findLayers()]
    return [layer for layer in layers if isinstance(layer, QgsVectorLayer) and layer.isValid()]


def find_run_layers(project: QgsProject | None = None, near: QgsMapLayer | None = None) -> dict[str, QgsVectorLayer]:
    """The embeddings and clusters layers of a RegionLens run in the project.

    Args:
        project: The project (default: the current one).
        near: Look in the layer group holding this layer; default: the topmost ``RegionLens — ...``
            group, else the whole project.

    Returns:
        ``{"embeddings": layer, "clusters": layer}``, either key missing when not found. A method's
        ``clusters_<m>`` goes with its ``embeddings_<m>``.
    """
    project = project or QgsProject.instance()
    layers = _layers_in(project, _group_of(project, near))  # no group: the whole project
    found: dict[str, QgsVectorLayer] = {}
    if isinstance(near, QgsVectorLayer) and embedding_fields(near):
        found[EMBEDDINGS] = near
    for layer in layers:
        if EMBEDDINGS not in found and embedding_fields(layer) and layer.fields().indexOf(ID_FIELD) >= 0:
            found[EMBEDDINGS] = layer
    method = ""
    if EMBEDDINGS in found:
        base, method = common.split_method_layer(_table_name(found[EMBEDDINGS]))
        method = method if base == EMBEDDINGS else ""
    candidates = [
        layer for layer in layers
        if layer.fields().indexOf(CLUSTER_FIELD) >= 0 and layer.fields().indexOf(ID_FIELD) >= 0
    ]  # fmt: skip
    preferred = [layer for layer in candidates if _table_name(layer) == common.method_layer(CLUSTERS, method)]
    if preferred or candidates:
        found[CLUSTERS] = (preferred or candidates)[0]
    return found


def colour_sources(embeddings: QgsVectorLayer, clusters: QgsVectorLayer | None = None) -> list[ColourSource]:
    """Numeric fields the points can be coloured by: those of the clusters and embeddings layers and
    of every other layer with region ids in the same layer group (e.g. ``population_pred``)."""
    project = embeddings.project() or QgsProject.instance()
    group = _group_of(project, embeddings)
    layers = [layer for layer in (clusters, embeddings) if layer is not None]
    layers += [layer for layer in _layers_in(project, group) if group is not None and layer not in layers]
    seen: set[tuple[str, str]] = set()
    sources: list[ColourSource] = []
    for layer in layers:
        if layer.fields().indexOf(ID_FIELD) < 0:
            continue
        for name in numeric_fields(layer):
            if (layer.source(), name) in seen:
                continue
            seen.add((layer.source(), name))
            sources.append(ColourSource(name, layer, name))
    titles = [s.title for s in sources]
    return [
        ColourSource(f"{s.title} ({s.layer.name()})", s.layer, s.field) if titles.count(s.title) > 1 else s
        for s in sources
    ]
