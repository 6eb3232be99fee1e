"""Load a RegionLens run (``<output_dir>/regionlens.gpkg``, docs/protocol.md) into a QGIS project.

The layers are read from the GeoPackage file (``<gpkg>|layername=<layer>``): durable, never memory
layers. Every method's and every label's layers are loaded, styled by :mod:`.styling`, into one group
per run (``RegionLens — <run>``) holding one group per method (primary method first) and the
``metrics`` table that covers every method:

========================  ===============================================  ============================
key                        GeoPackage layer (primary / further method m)    style
========================  ===============================================  ============================
``clusters``               ``clusters`` / ``clusters_m``                    categorized on ``cluster``
``predictions``            ``predictions`` / ``predictions_m``, per label   graduated ``<label>_pred``
``residuals``              the same layer again, per label                  diverging ``<label>_res``
``embeddings``             ``embeddings`` / ``embeddings_m``                light single symbol
``cluster_profiles``       ``cluster_profiles`` / ``cluster_profiles_m``    - (table)
``metrics``                ``metrics`` (every method)                       - (table)
========================  ===============================================  ============================

A predictions layer of a run with prediction intervals (``<label>_lo``, ``<label>_hi``) has a second
style, *Interval width (hi − lo)*, in its Styles menu (:func:`.styling.add_interval_width_style`).

Layer names carry the run and the method (``Clusters (calliper, run_sf)``), so they stay apart in
layer lists. The methods and which one is primary come from the run's ``run.json`` (written beside
the GeoPackage) or, without it, from the GeoPackage's layer names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsProviderRegistry, QgsVectorLayer

from . import styling
from .common import common, gpkg_uri

EMBEDDINGS, CLUSTERS, PREDICTIONS = common.LAYER_EMBEDDINGS, common.LAYER_CLUSTERS, common.LAYER_PREDICTIONS
PROFILES, METRICS = common.TABLE_CLUSTER_PROFILES, common.TABLE_METRICS
#: The key of a predictions layer shown by its residuals (the same GeoPackage layer, another style).
RESIDUALS = "residuals"

__all__ = [
    "LAYER_KEYS",
    "RunLayer",
    "RunLayers",
    "gpkg_layer_names",
    "is_result_layer",
    "label_names",
    "load_run_outputs",
    "open_gpkg_layer",
    "run_group_name",
    "run_methods",
]

#: Order of a method's layers in its group (top first); ``metrics`` follows the method groups.
LAYER_KEYS = (CLUSTERS, PREDICTIONS, RESIDUALS, EMBEDDINGS, PROFILES, METRICS)
_METHOD_TABLES = common.METHOD_TABLES  # a ``_<method>`` variant each
_TITLES = {CLUSTERS: "Clusters", EMBEDDINGS: "Embeddings", PROFILES: "Cluster profiles"}


def run_group_name(gpkg_path: str | Path) -> str:
    """``RegionLens — <run folder name>``."""
    return f"{common.RUN_GROUP_PREFIX}{Path(gpkg_path).resolve().parent.name}"


def is_result_layer(layer: object) -> bool:
    """Whether a layer holds RegionLens results (embeddings, clusters, predictions, similarity, wherever they
    were written or exported): a region id field and embedding, cluster, prediction or similarity fields.

    Such layers are outputs, not a run's inputs: the run dock does not offer them as regions or land use.
    """
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return False
    names = layer.fields().names()
    if common.ID_FIELD not in names:
        return False
    return (
        any(common.EMBEDDING_COLUMN.match(name) for name in names)
        or common.CLUSTER_FIELD in names
        or common.SIMILARITY_FIELD in names
        or bool(common.prediction_labels(names))
    )


def gpkg_layer_names(gpkg_path: str | Path) -> list[str]:
    """Names of the layers and tables in a GeoPackage (empty if it cannot be read)."""
    details = QgsProviderRegistry.instance().querySublayers(str(gpkg_path))
    return [d.name() for d in details if d.providerKey() == "ogr"]


def label_names(layer: QgsVectorLayer) -> list[str]:
    """Labels of a predictions layer, in field order: every ``<label>_pred`` field's prefix."""
    return common.prediction_labels(layer.fields().names())


def open_gpkg_layer(gpkg_path: str | Path, layer_name: str, title: str | None = None) -> QgsVectorLayer:
    """Open one layer of a GeoPackage as a file-backed vector layer.

    Raises:
        ValueError: If QGIS cannot open it.
    """
    uri = gpkg_uri(Path(gpkg_path), layer_name)
    layer = QgsVectorLayer(uri, title or layer_name, "ogr")
    if not layer.isValid():
        raise ValueError(f"QGIS cannot open layer '{layer_name}' of {gpkg_path}.")
    return layer


def table_name(key: str, method: str, primary: str) -> str:
    """The GeoPackage layer of ``key`` for ``method``: ``key`` for the primary method, else ``key_method``."""
    return common.method_layer(key, method, primary)


def run_methods(gpkg_path: str | Path, primary_hint: str = "") -> list[str]:
    """The run's methods, primary first.

    From ``run.json`` beside the GeoPackage (``methods``, ``primary_method``) when it matches the
    GeoPackage; otherwise from the layer names (``embeddings_<m>`` ... are further methods) with the
    primary method named by the ``metrics`` table, ``primary_hint``, or ``"results"``.
    """
    path = Path(gpkg_path)
    available = set(gpkg_layer_names(path))
    suffixed = []
    for name in sorted(available):
        method = common.split_method_layer(name)[1]
        if method and method not in suffixed:
            suffixed.append(method)
    manifest = _read_manifest(path.parent / common.RUN_JSON)
    methods = [str(m) for m in manifest.get("methods") or [] if isinstance(m, str) and m]
    primary = str(manifest.get("primary_method") or (methods[0] if methods else ""))
    if (
        primary in methods
        and set(suffixed) == set(methods) - {primary}
        and any(key in available for key in _METHOD_TABLES)
    ):
        return [primary, *[m for m in methods if m != primary]]
    if not any(key in available for key in _METHOD_TABLES):
        return suffixed
    named = [m for m in _metrics_methods(path) if m not in suffixed] if METRICS in available else []
    return [named[0] if named else (primary_hint or "results"), *suffixed]


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics_methods(gpkg: Path) -> list[str]:
    layer = QgsVectorLayer(gpkg_uri(gpkg, METRICS), METRICS, "ogr")
    index = layer.fields().indexFromName("method") if layer.isValid() else -1
    if index < 0:
        return []
    return sorted({str(v) for v in layer.uniqueValues(index) if v is not None and str(v) not in {"", "NULL"}})


@dataclass(frozen=True)
class RunLayer:
    """One loaded layer: which method, which kind (a :data:`LAYER_KEYS` key) and which label."""

    method: str  # "" for the run-wide ``metrics`` table
    key: str
    layer: QgsVectorLayer
    label: str = ""  # the label of a predictions or residuals layer


class RunLayers(Mapping[str, QgsVectorLayer]):
    """Every layer a run loaded (:attr:`entries`), in its layer group (:attr:`group`).

    As a mapping it holds the primary method's layers by key, plus ``metrics``; ``predictions`` and
    ``residuals`` are those of the label asked for (default: the first label).
    """

    def __init__(self, entries: list[RunLayer], group: QgsLayerTreeGroup, methods: list[str], label: str | None):
        self.entries = entries
        self.group = group
        self.methods = methods
        self.label = label
        primary = methods[0] if methods else ""
        self._primary = {
            e.key: e.layer
            for e in reversed(entries)  # the first entry of a key wins
            if e.method in (primary, "") and (not e.label or e.label == label)
        }

    def __getitem__(self, key: str) -> QgsVectorLayer:
        return self._primary[key]

    def __iter__(self) -> Iterator[str]:
        return iter([key for key in LAYER_KEYS if key in self._primary])

    def __len__(self) -> int:
        return len(self._primary)

    def layer(self, key: str, method: str | None = None, label: str | None = None) -> QgsVectorLayer | None:
        """The layer of ``key`` for ``method`` (default: primary) and ``label`` (default: the first)."""
        method = self.methods[0] if method is None and self.methods else method
        for entry in self.entries:
            if entry.key == key and entry.method in (method, "") and (label is None or entry.label == label):
                return entry.layer
        return None


def load_run_outputs(
    gpkg_path: str | Path,
    project: QgsProject | None = None,
    group_name: str | None = None,
    label: str | None = None,
    primary_method: str = "",
    run_name: str | None = None,
    prediction_mode: str = "quantile",
    save_styles: bool = False,
) -> RunLayers:
    """Add every layer of a run, styled, to a new layer group at the top of the project's layer tree.

    Args:
        gpkg_path: The run's ``regionlens.gpkg`` (or any GeoPackage with these layers).
        project: Target project (default: ``QgsProject.instance()``).
        group_name: Group name (default: ``RegionLens — <run folder name>``).
        label: The label whose maps are shown and returned by the mapping (default: the first label).
        primary_method: Name of the unsuffixed layers' method when the GeoPackage does not say
            (no ``run.json``, no ``metrics``), e.g. the saved model an ``apply`` job used.
        run_name: Run name in the layer names (default: the GeoPackage's folder name).
        prediction_mode: ``quantile`` or ``jenks`` classes for the predictions layers.
        save_styles: Also store the styles in the GeoPackage (``layer_styles`` table) as the
            layers' default styles, so that they come styled however the file is opened.

    Returns:
        The loaded layers (see :class:`RunLayers`).

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
    methods = run_methods(path, primary_method)
    if not methods:
        layers_found = ", ".join(sorted(available)) or "none"
        raise ValueError(f"{path} holds no RegionLens layers (layers found: {layers_found}).")
    primary = methods[0]
    run = run_name or path.parent.name

    entries: list[RunLayer] = []
    all_labels: list[str] = []
    for method in methods:
        tag = f" ({method}, {run})"
        for key in (CLUSTERS, PREDICTIONS, EMBEDDINGS, PROFILES):
            table = table_name(key, method, primary)
            if table not in available:
                continue
            if key != PREDICTIONS:
                layer = open_gpkg_layer(path, table, f"{_TITLES[key]}{tag}")
                if key == CLUSTERS:
                    styling.style_clusters(layer)
                elif key == EMBEDDINGS:
                    styling.style_embeddings(layer)
                entries.append(RunLayer(method, key, layer))
                continue
            labels = label_names(open_gpkg_layer(path, table))
            all_labels += [lab for lab in labels if lab not in all_labels]
            for name in labels:
                predictions = open_gpkg_layer(path, table, f"Predicted {name}{tag}")
                styling.style_predictions(predictions, name, mode=prediction_mode)
                styling.add_interval_width_style(predictions, name)  # a second style, when the run has intervals
                entries.append(RunLayer(method, PREDICTIONS, predictions, name))
                if common.prediction_column(name, common.RES) in predictions.fields().names():
                    residuals = open_gpkg_layer(path, table, f"Residuals {name}, observed \u2212 predicted{tag}")
                    styling.style_residuals(residuals, name)
                    entries.append(RunLayer(method, RESIDUALS, residuals, name))
    if label is not None and label not in all_labels:
        raise ValueError(f"Label '{label}' is not in {path.name}; the run's labels: {', '.join(all_labels) or 'none'}.")
    chosen = label if label is not None else (all_labels[0] if all_labels else None)
    if METRICS in available:
        entries.append(RunLayer("", METRICS, open_gpkg_layer(path, METRICS, f"Metrics ({run})")))

    if save_styles:
        _save_default_styles(entries)

    group = _new_group(project, group_name or run_group_name(path))
    shown = next(
        (e for key in LAYER_KEYS for e in entries
         if e.method == primary and e.key == key and e.layer.isSpatial() and e.label in ("", chosen)),
        None,
    )  # fmt: skip
    order = {key: i for i, key in enumerate(LAYER_KEYS)}
    for method in methods:
        mine = [e for e in entries if e.method == method]
        if not mine:
            continue
        sub = group.addGroup(method)
        sub.setExpanded(method == primary)
        labels_order = {name: i for i, name in enumerate(all_labels)}
        mine.sort(key=lambda e: (order[e.key] if e.key not in (PREDICTIONS, RESIDUALS) else order[PREDICTIONS],
                                 labels_order.get(e.label, -1), order[e.key]))
        for entry in mine:
            _add(project, sub, entry.layer, entry is shown)
    for entry in entries:
        if entry.method == "":
            _add(project, group, entry.layer, False)
    return RunLayers(entries, group, methods, chosen)


def _add(project: QgsProject, group: QgsLayerTreeGroup, layer: QgsVectorLayer, visible: bool) -> None:
    project.addMapLayer(layer, False)
    node = group.addLayer(layer)
    node.setItemVisibilityChecked(visible)
    node.setExpanded(visible)


def _new_group(project: QgsProject, name: str) -> QgsLayerTreeGroup:
    """A new, expanded group at the top of the layer tree (a layer tree *view* may still show it collapsed:
    see ``plugin.main._expand_in_view``)."""
    group = project.layerTreeRoot().insertGroup(0, name)
    group.setExpanded(True)
    return group


def _save_default_styles(entries: list[RunLayer]) -> None:
    """Store styles in the GeoPackage's ``layer_styles`` table (best effort, errors ignored).

    One default style per GeoPackage layer: clusters, embeddings, and the first label's predictions;
    residuals and further labels are stored as extra styles.
    """
    defaults: set[str] = set()
    for entry in entries:
        if entry.key not in (CLUSTERS, PREDICTIONS, RESIDUALS, EMBEDDINGS):
            continue
        table = entry.layer.source().split("layername=")[-1]
        default = entry.key != RESIDUALS and table not in defaults
        if default:
            defaults.add(table)
        name = f"RegionLens {entry.key}" + (f" {entry.label}" if entry.label else "")
        entry.layer.saveStyleToDatabase(name, "Written by the RegionLens plugin", default, "")
