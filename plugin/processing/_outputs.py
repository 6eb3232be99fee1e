"""Output layers: GeoPackage layer URIs, loaded into the project on completion and styled on load.

Algorithms list what should be loaded (:class:`LayerToLoad`) while they run; in the main thread, after
the run, :func:`queue_layers` hands them to ``context.addLayerToLoadOnCompletion`` with a
:class:`StyleOnLoad` post-processor, which applies :mod:`plugin.styling` once QGIS has added the layer:
clusters categorized, predictions graduated and, beside them, a second instance of the predictions
layer for the residuals with the diverging style. Headless runs (``qgis_process``, ``processing.run``)
load nothing; the outputs are then the files and URIs in the results.

QGIS does not own the post-processors' Python objects: one collected before QGIS calls it crashes
QGIS. Every instance is therefore kept in :data:`_POST_PROCESSORS` for the session.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingUtils,
    QgsProject,
    QgsVectorLayer,
)

from .. import styling
from ..common import common, gpkg_uri
from ..i18n import tr

__all__ = ["LayerToLoad", "StyleOnLoad", "gpkg_uri", "queue_layers"]

#: Every post-processor handed to QGIS, kept alive (see the module docstring).
_POST_PROCESSORS: list[QgsProcessingLayerPostProcessorInterface] = []

#: What :class:`StyleOnLoad` knows how to style.
STYLES = (common.LAYER_EMBEDDINGS, common.LAYER_CLUSTERS, common.LAYER_PREDICTIONS, common.SIMILARITY_LAYER)


@dataclass
class LayerToLoad:
    """An output layer to add to the project when the algorithm has finished."""

    uri: str  # gpkg_uri(...)
    name: str  # layer name in the project
    output: str  # name of the algorithm output it belongs to
    style: str  # one of STYLES
    label: str | None = None  # predictions: the label whose <label>_pred / _res fields are shown
    extra_labels: tuple[str, ...] = ()  # predictions: further labels, each shown by another instance of the layer
    group: str = ""  # layer-tree group to put the layer (and its companions) in; "" = where Processing puts it
    tag: str = ""  # appended to the names of the companion layers, e.g. " (calliper)"


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer after QGIS added it to the project.

    Args:
        style: ``embeddings``, ``clusters``, ``predictions`` or ``similarity``.
        label: For ``predictions``: the label to show.
        residuals: For ``predictions``: also add a residuals layer (same source) below it.
    """

    def __init__(self, style: str, label: str | None = None, residuals: bool = True,
                 extra_labels: tuple[str, ...] = (), group: str = "", tag: str = "") -> None:  # fmt: skip
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"Unknown output style '{style}'; use one of {STYLES}.")
        self.style = style
        self.label = label
        self.residuals = residuals
        self.extra_labels = tuple(extra_labels)
        self.group = group
        self.tag = tag
        self.residuals_layer: QgsVectorLayer | None = None  # the residuals layer of ``label`` it added, if any
        self.added: list[QgsVectorLayer] = []  # every companion layer it added (other labels, residuals)

    def postProcessLayer(  # noqa: N802 - QGIS API
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        """Apply the style; never raises (a styling problem must not fail a finished run)."""
        if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
            return
        project = layer.project() or context.project() or QgsProject.instance()
        if self.group:
            _move_to_group(project, layer, self.group)
        try:
            if self.style == common.LAYER_CLUSTERS:
                styling.style_clusters(layer)
            elif self.style == common.LAYER_EMBEDDINGS:
                styling.style_embeddings(layer)
            elif self.style == "similarity":
                styling.style_similarity(layer)
            elif self.label is not None:
                styling.style_predictions(layer, self.label)
                after = layer
                if self.residuals and _has(layer, self.label, common.RES):
                    self.residuals_layer = after = self._add_residuals(layer, self.label, project, after) or after
                for label in self.extra_labels:
                    if not _has(layer, label, common.PRED):
                        continue
                    other = QgsVectorLayer(layer.source(), tr("Predicted {}").format(label) + self.tag,
                                           layer.providerType())  # fmt: skip
                    if not other.isValid():
                        continue
                    styling.style_predictions(other, label)
                    after = self._insert_after(project, other, after, visible=False)
                    if self.residuals and _has(layer, label, common.RES):
                        after = self._add_residuals(layer, label, project, after) or after
        except ValueError as exc:
            if feedback is not None:
                feedback.reportError(tr("Could not style '{}': {}").format(layer.name(), exc))

    def _add_residuals(self, layer: QgsVectorLayer, label: str, project: QgsProject,
                       after: QgsVectorLayer) -> QgsVectorLayer | None:  # fmt: skip
        name = tr("Residuals {} (observed \u2212 predicted)").format(f"{label}{self.tag}")
        residuals = QgsVectorLayer(layer.source(), name, layer.providerType())
        if not residuals.isValid():
            return None
        styling.style_residuals(residuals, label)
        return self._insert_after(project, residuals, after, visible=after is layer)

    def _insert_after(self, project: QgsProject, new: QgsVectorLayer, after: QgsVectorLayer,
                      visible: bool) -> QgsVectorLayer:  # fmt: skip
        root = project.layerTreeRoot()
        node = root.findLayer(after.id())
        parent = node.parent() if node is not None else None
        project.addMapLayer(new, False)
        if isinstance(parent, QgsLayerTreeGroup):
            added = parent.insertLayer(parent.children().index(node) + 1, new)
        else:
            added = root.insertLayer(0, new)
        if added is not None and not visible:
            added.setItemVisibilityChecked(False)
        self.added.append(new)
        return new


def _has(layer: QgsVectorLayer, label: str, suffix: str) -> bool:
    return common.prediction_column(label, suffix) in layer.fields().names()


def _move_to_group(project: QgsProject, layer: QgsMapLayer, name: str) -> None:
    """Put ``layer``'s node into the top-level group ``name`` (created at the top when missing)."""
    root = project.layerTreeRoot()
    node = root.findLayer(layer.id())
    if node is None:
        return
    group = root.findGroup(name)
    if group is None:
        group = root.insertGroup(0, name)
        group.setExpanded(True)
    parent = node.parent()
    if parent is group:
        return
    group.addChildNode(node.clone())
    if isinstance(parent, QgsLayerTreeGroup):
        parent.removeChildNode(node)


def post_processor(item: LayerToLoad) -> StyleOnLoad:
    """A :class:`StyleOnLoad` for ``item``, kept alive for the session."""
    processor = StyleOnLoad(item.style, item.label, extra_labels=item.extra_labels, group=item.group, tag=item.tag)
    _POST_PROCESSORS.append(processor)
    return processor


def queue_layers(context: QgsProcessingContext, items: list[LayerToLoad]) -> None:
    """Ask Processing to load ``items`` into the context's project when the algorithm has finished.

    Call from ``postProcessAlgorithm`` (main thread). Without a project (headless) nothing is queued.
    """
    project = context.project()
    if project is None:
        return
    for item in items:
        hint = QgsProcessingUtils.LayerHint.Vector
        details = QgsProcessingContext.LayerDetails(item.name, project, item.output, hint)
        details.forceName = True
        details.setPostProcessor(post_processor(item))
        context.addLayerToLoadOnCompletion(item.uri, details)
