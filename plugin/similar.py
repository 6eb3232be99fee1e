"""Find similar regions: the worker's ``similar`` job on the selected regions of an embeddings layer.

The chosen regions are the selected features of an embeddings layer (selected on the map, or in the
embedding explorer, which selects the same regions in the run's layers); a selection on another layer of
the same regions (the run's clusters, say) counts too. The job (docs/protocol.md) computes the cosine
similarity of every region's embedding to the chosen regions' mean and writes the layer ``similarity`` to a
new GeoPackage beside the embeddings (``similar.gpkg``, ``similar_2.gpkg``, ...: an earlier result, maybe
loaded, is never overwritten). It runs in QGIS's task manager through :class:`.tasks.RunTask`; the result
loads graduated by similarity with the top N outlined (:func:`.styling.style_similarity`).

:class:`SimilarMapTool` is the map tool: a click on a region chooses it and finds the regions similar to it,
Shift+click adds it to the regions already chosen.

Embeddings that do not come from a GeoPackage file (a shapefile, a memory layer) are exported first, with
their region ids and ``emb_*`` columns, to ``<output stem>_inputs/embeddings.gpkg``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsGeometry,
    QgsLayerTreeGroup,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt

from . import styling
from .common import common, gpkg_source
from .input_export import InputExporter, remove_exported_inputs
from .results import open_gpkg_layer
from .tasks import PLUGIN_ROOT, RunCancelled, RunTask

__all__ = [
    "ID_FIELD",
    "SimilarMapTool",
    "SimilarParameters",
    "SimilarTask",
    "chosen_region_ids",
    "is_embeddings_layer",
    "load_similarity",
    "region_at",
    "similar_output",
    "to_similar_parameters",
]

ID_FIELD = common.ID_FIELD
_EMB_PREFIX = common.EMBEDDING_PREFIX


def is_embeddings_layer(layer: object) -> bool:
    """Whether a layer holds embeddings: a ``region_id`` field and ``emb_*`` fields."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return False
    names = layer.fields().names()
    return ID_FIELD in names and any(name.startswith(_EMB_PREFIX) for name in names)


def _selected_ids(layer: QgsVectorLayer) -> list[str]:
    index = layer.fields().indexOf(ID_FIELD)
    if index < 0:
        return []
    ids = []
    for feature in layer.getSelectedFeatures():
        value = feature.attribute(index)
        if value is not None and str(value) not in ("", "NULL"):
            ids.append(str(value))
    return list(dict.fromkeys(ids))


def chosen_region_ids(embeddings: QgsVectorLayer, others: Iterable[QgsVectorLayer] = ()) -> list[str]:
    """Region ids of the selected features of ``embeddings``; when none are selected there, of the first of
    ``others`` (e.g. the active layer, the run's clusters) that has a ``region_id`` field and a selection."""
    ids = _selected_ids(embeddings)
    for layer in others:
        if ids:
            break
        if isinstance(layer, QgsVectorLayer) and layer is not embeddings:
            ids = _selected_ids(layer)
    return ids


def similar_output(folder: str | Path) -> Path:
    """The first free ``similar.gpkg``, ``similar_2.gpkg``, ... in ``folder``."""
    folder = Path(folder)
    stem = Path(common.SIMILAR_GPKG).stem
    path, n = folder / common.SIMILAR_GPKG, 2
    while path.exists() or path.with_name(f"{path.stem}_inputs").exists():
        path, n = folder / f"{stem}_{n}.gpkg", n + 1
    return path


@dataclass
class SimilarParameters:
    """Everything a background ``similar`` job needs (the fields :class:`.tasks.RunTask` reads)."""

    backend_python: Path
    params: dict[str, Any]  # the worker's similar parameters (backend/jobs.py SimilarJob), absolute paths
    title: str = ""  # the result layer's name
    inputs_dir: Path | None = None  # exported embeddings (layers not read from a GeoPackage), removed after
    plugin_root: Path = PLUGIN_ROOT
    start_timeout: float = 120.0
    cancel_grace: float = 5.0
    idle_timeout: float | None = None
    output_dir: Path = field(default_factory=Path)  # the output's folder (task description)
    action: str = "similar"  # the worker action (docs/protocol.md)
    cancelled_message: str = "Finding similar regions was cancelled; nothing was written."

    def worker_config(self) -> dict[str, Any]:
        """The request's parameters."""
        return dict(self.params)


def to_similar_parameters(
    embeddings: QgsVectorLayer,
    ids: list[str],
    backend_python: Path,
    top: int = common.SIMILAR_TOP_N,
    folder: str | Path | None = None,
) -> SimilarParameters:
    """The job for these chosen regions of an embeddings layer.

    Args:
        embeddings: The embeddings layer (``region_id``, ``emb_*``).
        ids: The chosen regions' ids.
        backend_python: The backend interpreter.
        top: How many of the most similar regions to outline.
        folder: Where the output goes (default: beside the embeddings' GeoPackage; required for a layer
            that is not read from a GeoPackage).

    Raises:
        ValueError: If the layer is not an embeddings layer, no region is chosen, or a layer that is not a
            GeoPackage's has no folder to write to or cannot be exported.
    """
    if not is_embeddings_layer(embeddings):
        raise ValueError(f"Layer '{embeddings.name()}' is not an embeddings layer ({ID_FIELD} and emb_000, "
                         "emb_001, \u2026): choose a run's Embeddings layer.")
    if not ids:
        raise ValueError("Select one or more regions first (on the map or in the embedding explorer), then "
                         "find the regions similar to them.")
    gpkg, table = gpkg_source(embeddings)
    target = Path(folder).expanduser().resolve() if folder is not None else (gpkg.parent if gpkg else None)
    if target is None:
        raise ValueError(f"Layer '{embeddings.name()}' is not read from a GeoPackage; choose a folder for the result.")
    output = similar_output(target)
    names = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    title = f"Similar to {names} ({embeddings.name()})"
    inputs_dir = None
    if gpkg is None:
        exporter = InputExporter(output.with_name(f"{output.stem}_inputs"))
        exporter.prepare()
        fields = [ID_FIELD] + [n for n in embeddings.fields().names() if n.startswith(_EMB_PREFIX)]
        gpkg, table, inputs_dir = exporter.export(embeddings, "embeddings", fields), "embeddings", exporter.folder
    params = {"run": str(gpkg), "layer": table or None, "ids": list(ids), "id_field": ID_FIELD, "top": int(top),
              "output": str(output), "overwrite": False}
    return SimilarParameters(Path(backend_python), params, title, inputs_dir, output_dir=target)


class SimilarTask(RunTask):
    """Run the worker's ``similar`` action in the background (the outcomes of :class:`.tasks.RunTask`; the
    result is the job's answer: ``output``, ``layer``, ``top``, ``ids``, ...)."""

    def __init__(self, params: SimilarParameters, on_finished=None,
                 description: str = "RegionLens: find similar regions") -> None:
        super().__init__(params, on_finished, description)  # type: ignore[arg-type] # the fields RunTask reads

    def finished(self, result: bool) -> None:
        """Main thread: remove exported inputs (kept only while the job reads them), then report."""
        inputs = getattr(self.params, "inputs_dir", None)
        if inputs is not None:
            remove_exported_inputs(inputs)
        if self.outcome is None and self.isCanceled():
            self.outcome = RunCancelled("Finding similar regions was cancelled; nothing was written.")
        elif isinstance(self.outcome, RunCancelled):
            self.outcome = RunCancelled("Finding similar regions was cancelled; nothing was written.")
        super().finished(result)


def load_similarity(gpkg: str | Path, title: str, project: QgsProject | None = None,
                    near: QgsVectorLayer | None = None) -> QgsVectorLayer:
    """Add the ``similarity`` layer of a ``similar`` job's GeoPackage, styled, at the top of the group of the run
    that holds ``near`` (above every other layer of the run, so it is seen at once: a run's clusters layer is
    shown and opaque), or at the top of the layer tree.

    Raises:
        ValueError: If the layer cannot be opened or lacks the similarity columns.
    """
    project = project or QgsProject.instance()
    layer = open_gpkg_layer(gpkg, common.SIMILARITY_LAYER, title)
    styling.style_similarity(layer)
    project.addMapLayer(layer, False)
    root = project.layerTreeRoot()
    node = root.findLayer(near.id()) if near is not None else None
    group = node.parent() if node is not None else None
    while isinstance(group, QgsLayerTreeGroup) and isinstance(group.parent(), QgsLayerTreeGroup) \
            and group.parent() is not root:
        group = group.parent()  # up to the run's group (a direct child of the root)
    (group if isinstance(group, QgsLayerTreeGroup) else root).insertLayer(0, layer)
    return layer


def region_at(layer: QgsVectorLayer, point: QgsPointXY, crs: QgsCoordinateReferenceSystem,
              tolerance: float = 0.0) -> int | None:
    """Feature id of the layer's region under ``point`` (in ``crs``), or ``None``.

    Args:
        layer: A polygon layer.
        point: The clicked point.
        crs: Its CRS (the map canvas's).
        tolerance: Search radius in ``crs`` units, for a click on a region's edge.
    """
    transform = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance())
    try:
        local = transform.transform(point)
    except QgsCsException:
        return None
    box = QgsRectangle(local.x(), local.y(), local.x(), local.y())
    box.grow(max(float(tolerance), 0.0) * _scale(transform, point))
    geometry = QgsGeometry.fromPointXY(local)
    request = QgsFeatureRequest().setFilterRect(box if not box.isEmpty() else geometry.boundingBox())
    nearest, best = None, None
    for feature in layer.getFeatures(request):
        distance = feature.geometry().distance(geometry)
        if distance >= 0 and (best is None or distance < best):
            nearest, best = feature.id(), distance
    return nearest


def _scale(transform: QgsCoordinateTransform, point: QgsPointXY) -> float:
    """Layer units per canvas unit near ``point`` (1 for the same CRS)."""
    if transform.isShortCircuited():
        return 1.0
    try:
        a = transform.transform(point)
        b = transform.transform(QgsPointXY(point.x() + 1.0, point.y()))
    except QgsCsException:
        return 1.0
    return max(math.hypot(b.x() - a.x(), b.y() - a.y()), 1e-12)


class SimilarMapTool(QgsMapToolEmitPoint):
    """Map tool: click a region to find the regions similar to it; Shift+click adds it to the chosen ones.

    Args:
        canvas: The map canvas.
        find: Called with the point (canvas CRS) and whether to add to the selection (the plugin's
            :meth:`find_similar_at`).
    """

    def __init__(self, canvas: QgsMapCanvas, find) -> None:
        super().__init__(canvas)
        self.find = find
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802 - Qt API
        if event.button() != Qt.MouseButton.LeftButton:
            return
        add = bool(event.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier))
        self.find(event.mapPoint(), add)
