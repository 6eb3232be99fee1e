"""Downstream tasks on region embeddings: prediction targets, out-of-fold regression, clustering.

* :mod:`backend.tasks.targets`: a label as a count, density or rate, optionally log1p, and back.
* :mod:`backend.tasks.prediction`: ridge and gradient boosting scored out-of-fold under shuffled and
  spatially blocked repeated K-fold.
* :mod:`backend.tasks.clustering`: k-means or Ward clustering, k by silhouette over the distinct
  embeddings, cluster profiles and readable cluster names.
"""

from backend.tasks.clustering import (
    ClusterResult,
    cluster,
    cluster_names,
    cluster_profiles,
    profile_features,
    suggest_k,
)
from backend.tasks.prediction import METRIC_COLUMNS, PredictionResult, evaluate_label, metrics_table
from backend.tasks.targets import Target, make_target

__all__ = [
    "Target",
    "make_target",
    "PredictionResult",
    "METRIC_COLUMNS",
    "evaluate_label",
    "metrics_table",
    "ClusterResult",
    "suggest_k",
    "cluster",
    "cluster_profiles",
    "cluster_names",
    "profile_features",
]
