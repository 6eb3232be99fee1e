"""``regionlens:cluster``: cluster the regions of an embedding layer (worker ``cluster``, backend/jobs.py).

The input is any polygon layer with an id field and numeric ``emb_000`` ... fields, usually the
``embeddings`` layer of a run. The output GeoPackage holds ``clusters`` (region id, ``cluster``,
``cluster_name``) and the ``cluster_profiles`` table; ``clusters`` loads categorized.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterEnum,
)

from ..common import common, gpkg_uri
from ..i18n import tr
from ._base import POLYGONS, EmbeddingLayerAlgorithm
from ._outputs import LayerToLoad

__all__ = ["CLUSTER_METHODS", "ClusterAlgorithm"]

#: Clustering methods of the backend (backend/tasks/clustering.py).
CLUSTER_METHODS = ("kmeans", "agglomerative")


class ClusterAlgorithm(EmbeddingLayerAlgorithm):
    """Cluster an embedding layer's regions."""

    ALG_ID = "cluster"
    DISPLAY_NAME = "Cluster region embeddings"
    TAGS = "embedding,cluster,kmeans,agglomerative,region"
    HELP = (
        "Clusters the regions of an embedding layer (a polygon layer with numeric fields emb_000, emb_001, "
        "..., such as the 'embeddings' layer RegionLens writes) with k-means or agglomerative (Ward) "
        "clustering.\n\nK = 0 chooses the number of clusters between 4 and 12 by silhouette over the distinct "
        "embeddings (regions with identical embeddings count once). The output GeoPackage holds the layer "
        "'clusters' (region id, cluster, and cluster_name: the cluster in words) and the table "
        "'cluster_profiles'. The result also reports the number of clusters and the silhouette score."
    )

    METHOD = "METHOD"
    # outputs
    CLUSTER_PROFILES = "CLUSTER_PROFILES"
    N_CLUSTERS = "N_CLUSTERS"
    SILHOUETTE = "SILHOUETTE"

    def add_parameters(self) -> None:
        """Declare the parameters."""
        self.addParameter(self.clusters_parameter(0))
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, tr("Method"), list(CLUSTER_METHODS), defaultValue=0))
        self.addParameter(self.seed_parameter())

    def add_outputs(self) -> None:
        """Declare the outputs."""
        self.addOutput(QgsProcessingOutputVectorLayer(self.CLUSTERS, tr("Clusters"), POLYGONS))
        self.addOutput(
            QgsProcessingOutputVectorLayer(
                self.CLUSTER_PROFILES, tr("Cluster profiles"), QgsProcessing.SourceType.TypeVector
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.N_CLUSTERS, tr("Number of clusters")))
        self.addOutput(QgsProcessingOutputNumber(self.SILHOUETTE, tr("Silhouette score")))

    def problem(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str | None:
        """K = 1 is refused."""
        return self.clusters_problem(parameters, context)

    def processAlgorithm(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Export the embedding layer, run the backend's ``cluster`` job, report its outputs."""
        k = self.parameterAsInt(parameters, self.K, context)
        result, gpkg = self.run_job("cluster", parameters, context, feedback, lambda folder: {
            "embeddings": self.export_embeddings(parameters, context, feedback, folder),
            "id_field": self.parameterAsString(parameters, self.ID_FIELD, context),
            "k": k if k >= 2 else "auto",
            "method": CLUSTER_METHODS[self.parameterAsEnum(parameters, self.METHOD, context)],
            "seed": self.parameterAsInt(parameters, self.SEED, context),
        })
        feedback.pushInfo(
            tr("{} clusters (silhouette {:.3f}), sizes {}").format(
                result.get("k"), float(result.get("silhouette", float("nan"))), result.get("sizes")
            )
        )
        clusters = gpkg_uri(gpkg, common.LAYER_CLUSTERS)
        self.layers_to_load.append(LayerToLoad(clusters, tr("Clusters"), self.CLUSTERS, common.LAYER_CLUSTERS))
        return {
            self.OUTPUT: gpkg,
            self.CLUSTERS: clusters,
            self.CLUSTER_PROFILES: gpkg_uri(gpkg, common.TABLE_CLUSTER_PROFILES),
            self.N_CLUSTERS: result.get("k"),
            self.SILHOUETTE: result.get("silhouette"),
        }
