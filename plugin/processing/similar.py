"""``regionlens:similar``: regions similar to chosen ones, by their embeddings (worker ``similar``, backend/jobs.py).

The input is any polygon layer with an id field and numeric ``emb_000`` ... fields: the ``embeddings`` layer
of a run, of any of its methods, or of a layer embedded by *Apply a saved model* in another city. The chosen
regions are the ids typed in (comma separated) or, when none are typed, the layer's selected features. The
output GeoPackage holds the layer ``similarity`` (``similarity``, ``top_n``, ``chosen``; names in
``regionlens_common``).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterString,
)

from ..common import common
from ..i18n import tr
from ._base import POLYGONS, EmbeddingLayerAlgorithm, integer_parameter
from ._outputs import LayerToLoad, gpkg_uri

__all__ = ["SimilarAlgorithm", "chosen_ids"]


def chosen_ids(text: str, layer: Any, id_field: str) -> list[str]:
    """The chosen region ids: the comma-separated ``text``, else the ``id_field`` of ``layer``'s selected features.

    Raises:
        QgsProcessingException: If neither gives an id.
    """
    ids = [part.strip() for part in (text or "").split(",") if part.strip()]
    if not ids and layer is not None and id_field in layer.fields().names():
        ids = [str(feature[id_field]) for feature in layer.selectedFeatures()]
    if not ids:
        raise QgsProcessingException(tr(
            "Choose the regions to compare with: type their ids (comma separated) or select them on the map in "
            "the embedding layer."))
    return list(dict.fromkeys(ids))


class SimilarAlgorithm(EmbeddingLayerAlgorithm):
    """Cosine similarity of every region to the mean embedding of chosen regions."""

    ALG_ID = "similar"
    DISPLAY_NAME = "Find similar regions"
    TAGS = "embedding,similar,similarity,cosine,neighbourhood,region"
    HELP = (
        "Scores every region of an embedding layer (a polygon layer with numeric fields emb_000, emb_001, ..., "
        "such as a run's 'embeddings' layer or the layer 'Apply a saved model' wrote for another city) by the "
        "cosine similarity of its embedding to the mean embedding of the chosen regions (embeddings centred "
        "first, so a common offset does not make every region alike).\n\nThe chosen regions are the ids typed "
        "in (comma separated) or, when none are typed, the features selected in the embedding layer (leave "
        "'Selected features only' off: every region is scored). The output GeoPackage holds the layer "
        "'similarity' with the fields similarity (-1 to 1), top_n (1 for the N most similar regions, the chosen "
        "ones excluded) and chosen (1 for the chosen regions)."
    )

    REGION_IDS = "REGION_IDS"
    TOP = "TOP"
    # outputs
    SIMILARITY = "SIMILARITY"

    def add_parameters(self) -> None:
        """Declare the parameters."""
        self.addParameter(QgsProcessingParameterString(
            self.REGION_IDS, tr("Chosen region ids, comma separated (empty: the layer's selected features)"),
            optional=True))  # fmt: skip
        self.addParameter(integer_parameter(
            self.TOP, tr("Mark this many most similar regions (top_n)"), common.SIMILAR_TOP_N, 0, 100000))

    def add_outputs(self) -> None:
        """Declare the outputs."""
        self.addOutput(QgsProcessingOutputVectorLayer(self.SIMILARITY, tr("Similarity"), POLYGONS))

    def processAlgorithm(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Export the embedding layer, run the backend's ``similar`` job, report its output."""
        id_field = self.parameterAsString(parameters, self.ID_FIELD, context)
        ids = chosen_ids(self.parameterAsString(parameters, self.REGION_IDS, context),
                         self.parameterAsVectorLayer(parameters, self.INPUT, context), id_field)
        result, gpkg = self.run_job("similar", parameters, context, feedback, lambda folder: {
            "run": self.export_embeddings(parameters, context, feedback, folder),
            "ids": ids,
            "id_field": id_field,
            "top": self.parameterAsInt(parameters, self.TOP, context),
        })
        for row in result.get("top") or []:
            feedback.pushInfo(f"{row.get('region_id')}: {float(row.get('similarity', float('nan'))):.3f}")
        uri = gpkg_uri(gpkg, str(result.get("layer") or common.SIMILARITY_LAYER))
        self.layers_to_load.append(LayerToLoad(uri, tr("Similarity"), self.SIMILARITY, "similarity"))
        return {self.OUTPUT: gpkg, self.SIMILARITY: uri}
