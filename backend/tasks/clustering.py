"""Clustering of region embeddings, choice of k by silhouette, and readable cluster profiles.

Embeddings are centred (not rescaled: their geometry is what the method learned) and clustered with
k-means (k-means++ initialisation, several restarts, seeded) or Ward agglomerative clustering. When k
is ``"auto"``, every k in ``[k_min, k_max]`` is scored with the silhouette coefficient (Rousseeuw,
1987, "Silhouettes: a graphical aid to the interpretation and validation of cluster analysis") and the
best one is kept. Clusters are renumbered by size, so cluster 0 is the largest.

A cluster's profile is the mean of each interpretable input feature (POI category shares, image
statistics, land-use shares) over its regions, with a z-score against all regions, so a planner can
read what a cluster *is*; :func:`cluster_labels` condenses it to a short text such as
``"cafe+ bank+ b1_mean-"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from backend.errors import InputError
from backend.progress import Progress

__all__ = [
    "CLUSTER_METHODS",
    "SILHOUETTE_SAMPLE",
    "MAX_AGGLOMERATIVE",
    "ClusterResult",
    "suggest_k",
    "cluster",
    "cluster_profiles",
    "cluster_labels",
]

#: Accepted clustering methods.
CLUSTER_METHODS = ("kmeans", "agglomerative")
#: Silhouettes are computed on a seeded sample of at most this many regions.
SILHOUETTE_SAMPLE = 2000
#: Ward clustering needs N^2 / 2 distances; above this many regions use k-means.
MAX_AGGLOMERATIVE = 20000
#: Longest cluster label text (characters).
_LABEL_CHARS = 60


@dataclass
class ClusterResult:
    """Cluster assignment of every region.

    Attributes:
        labels: 0-based cluster of every region (input order); cluster 0 is the largest.
        k: Number of clusters.
        silhouette: Silhouette coefficient of ``labels`` on the centred embeddings (NaN if undefined).
        scores: k -> silhouette for every k tried when k was ``"auto"`` (empty otherwise).
        method: ``"kmeans"`` or ``"agglomerative"``.
    """

    labels: np.ndarray
    k: int
    silhouette: float
    scores: dict[int, float] = field(default_factory=dict)
    method: str = "kmeans"


def _centre(X: np.ndarray) -> np.ndarray:  # noqa: N803
    xa = np.asarray(X, dtype=float)
    if xa.ndim == 1:
        xa = xa[:, None]
    if xa.ndim != 2 or len(xa) == 0:
        raise ValueError(f"X must be a non-empty N x d array; got shape {xa.shape}.")
    if not np.isfinite(xa).all():
        raise ValueError("X holds NaN or infinite values; embeddings must be finite.")
    # Centred only: the embedding's own geometry is what the method learned; per-dimension scaling would
    # give a PCA embedding's noisiest last component as much weight as its first.
    return xa - xa.mean(axis=0)


def _silhouette(xs: np.ndarray, labels: np.ndarray, seed: int) -> float:
    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(xs) - 1:
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(xs) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(xs, labels, sample_size=sample, random_state=seed))


def _k_range(xs: np.ndarray, k_min: int, k_max: int) -> range:
    if k_min < 2:
        raise ValueError(f"k_min must be at least 2, got {k_min}.")
    n_distinct = len(np.unique(xs, axis=0))
    hi = min(k_max, len(xs) - 1, n_distinct)
    if hi < k_min:
        raise InputError(
            f"Cannot choose among {k_min}..{k_max} clusters: only {len(xs)} regions with {n_distinct} distinct "
            f"embeddings; {_fewer_hint(k_min, len(xs), n_distinct, 'k_min')}"
        )
    return range(k_min, hi + 1)


def _fewer_hint(k: int, n: int, n_distinct: int, name: str) -> str:
    """What to do when ``k`` clusters cannot be made: a smaller k only when one exists (k >= 2 always)."""
    largest = min(n - 1, n_distinct)
    if largest >= 2:
        return f"choose {name} between 2 and {largest}."
    if n_distinct < n:
        return ("the regions' embeddings are (nearly) all the same, so there is nothing to cluster; check that the "
                "inputs differ between regions.")
    return "clustering needs at least 3 regions."


class _Ward:
    """Ward tree built once and cut at any k."""

    def __init__(self, xs: np.ndarray) -> None:
        from scipy.cluster.hierarchy import linkage

        if len(xs) > MAX_AGGLOMERATIVE:
            raise InputError(
                f"Agglomerative clustering of {len(xs)} regions needs too much memory (limit "
                f"{MAX_AGGLOMERATIVE}); use method 'kmeans'."
            )
        self._tree = linkage(xs, method="ward")

    def cut(self, k: int) -> np.ndarray:
        from scipy.cluster.hierarchy import fcluster

        return fcluster(self._tree, t=k, criterion="maxclust").astype(int) - 1


def _kmeans(xs: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(xs).astype(int)


def _scores(xs: np.ndarray, ks: range, method: str, seed: int, progress: Progress | None = None) -> dict[int, float]:
    progress = progress or Progress()
    ward = _Ward(xs) if method == "agglomerative" else None
    out: dict[int, float] = {}
    for i, k in enumerate(ks):
        progress.update(i / len(ks), f"silhouette of k = {k}")
        labels = ward.cut(k) if ward is not None else _kmeans(xs, k, seed)
        out[k] = _silhouette(xs, labels, seed)
    return out


def _best(scores: dict[int, float]) -> int:
    """Highest silhouette; ties (and all-NaN) go to the smallest k."""
    best_k, best_s = min(scores), -np.inf
    for k in sorted(scores):
        s = scores[k]
        if np.isfinite(s) and s > best_s:
            best_k, best_s = k, s
    return best_k


def suggest_k(
    X: np.ndarray,  # noqa: N803
    k_min: int = 2,
    k_max: int = 12,
    seed: int = 0,
    method: str = "kmeans",
) -> tuple[int, dict[int, float]]:
    """Number of clusters with the best silhouette on the (centred) embeddings.

    Args:
        X: N x d embeddings.
        k_min: Smallest k tried (at least 2).
        k_max: Largest k tried; clipped to N - 1 and to the number of distinct rows.
        seed: Random state of k-means and of the silhouette sample (at most 2000 regions).
        method: ``"kmeans"`` or ``"agglomerative"`` (Ward); the method whose partitions are scored.

    Returns:
        ``(k, scores)`` with ``scores`` mapping every k tried to its silhouette.

    Raises:
        ValueError: If ``X`` is empty or not finite, ``k_min < 2`` or ``method`` is unknown.
        InputError: If there are too few regions (or distinct embeddings) for ``k_min`` clusters.
    """
    if method not in CLUSTER_METHODS:
        raise ValueError(f"Unknown clustering method '{method}'; use one of {CLUSTER_METHODS}.")
    xs = _centre(X)
    scores = _scores(xs, _k_range(xs, k_min, k_max), method, seed)
    return _best(scores), scores


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 by decreasing size (ties: by the old label number)."""
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(uniq), dtype=int)
    rank[order] = np.arange(len(uniq))
    return rank[inverse.ravel()]


def cluster(
    X: np.ndarray,  # noqa: N803
    k: int | Literal["auto"] = "auto",
    method: str = "kmeans",
    k_min: int = 2,
    k_max: int = 12,
    seed: int = 0,
    progress: Progress | None = None,
) -> ClusterResult:
    """Cluster the embeddings (centred, not rescaled).

    Args:
        X: N x d embeddings.
        k: Number of clusters, or ``"auto"`` for the best silhouette in ``[k_min, k_max]``.
        method: ``"kmeans"`` or ``"agglomerative"`` (Ward linkage).
        k_min: Smallest k tried when ``k`` is ``"auto"``.
        k_max: Largest k tried when ``k`` is ``"auto"``.
        seed: Random state of k-means and of the silhouette sample.
        progress: Reported (and cancellation checked) once per k tried.

    Returns:
        The :class:`ClusterResult`, clusters numbered by decreasing size.

    Raises:
        ValueError: If ``X`` is empty or not finite, ``method`` is unknown, or ``k`` is neither
            ``"auto"`` nor an integer >= 2.
        InputError: If ``k`` is not smaller than the number of regions, there are fewer distinct
            embeddings than ``k``, or too many regions for agglomerative clustering.
    """
    if method not in CLUSTER_METHODS:
        raise ValueError(f"Unknown clustering method '{method}'; use one of {CLUSTER_METHODS}.")
    xs = _centre(X)
    scores: dict[int, float] = {}
    if k == "auto":
        scores = _scores(xs, _k_range(xs, k_min, k_max), method, seed, progress)
        k_used = _best(scores)
    elif isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 2:
        k_used = int(k)
        n_distinct = len(np.unique(xs, axis=0))
        if k_used > len(xs) - 1 or k_used > n_distinct:
            raise InputError(
                f"Cannot make {k_used} clusters from {len(xs)} regions ({n_distinct} distinct embeddings); "
                f"{_fewer_hint(k_used, len(xs), n_distinct, 'k')}"
            )
    else:
        raise ValueError(f"k must be 'auto' or an integer >= 2, not {k!r}.")
    raw = _Ward(xs).cut(k_used) if method == "agglomerative" else _kmeans(xs, k_used, seed)
    labels = _relabel(raw)
    return ClusterResult(
        labels=labels,
        k=int(len(np.unique(labels))),
        silhouette=_silhouette(xs, labels, seed),
        scores=scores,
        method=method,
    )


def cluster_profiles(labels: np.ndarray, features: pd.DataFrame) -> pd.DataFrame:
    """Per-cluster mean and z-score of every interpretable feature, in long format.

    ``zscore = (cluster mean - mean over all regions) / std over all regions`` (population standard
    deviation, ddof = 0), and 0 for a feature that does not vary. Missing feature values are skipped.

    Args:
        labels: Cluster of every region (same order as ``features`` rows).
        features: Numeric features, one row per region (non-numeric columns are ignored).

    Returns:
        Columns ``cluster``, ``n_regions``, ``feature``, ``mean``, ``zscore``; one row per (cluster,
        feature), clusters ascending, features in column order.

    Raises:
        ValueError: If ``labels`` and ``features`` differ in length or ``features`` has no numeric column.
    """
    lab = np.asarray(labels).ravel()
    if len(lab) != len(features):
        raise ValueError(f"{len(lab)} cluster labels for {len(features)} feature rows.")
    numeric = features.select_dtypes(include="number").astype(float)
    if numeric.shape[1] == 0:
        raise ValueError("features has no numeric column to profile clusters with.")
    numeric = numeric.reset_index(drop=True)
    overall_mean = numeric.mean(axis=0)
    overall_std = numeric.std(axis=0, ddof=0)
    safe_std = overall_std.where(overall_std > 0)
    groups = numeric.groupby(lab, sort=True)
    means = groups.mean()
    sizes = groups.size()
    z = ((means - overall_mean) / safe_std).fillna(0.0)
    out = pd.DataFrame(
        {
            "cluster": np.repeat(means.index.to_numpy().astype(int), numeric.shape[1]),
            "n_regions": np.repeat(sizes.to_numpy().astype(int), numeric.shape[1]),
            "feature": np.tile(np.asarray(numeric.columns, dtype=str), len(means)),
            "mean": means.to_numpy().ravel(),
            "zscore": z.to_numpy().ravel(),
        }
    )
    return out


def _truncate(tokens: list[str], limit: int) -> str:
    text = ""
    for tok in tokens:
        candidate = f"{text} {tok}" if text else tok
        if len(candidate) > limit:
            if not text:  # a single over-long feature name
                return tok[: limit - 3] + "..."
            break
        text = candidate
    return text


def cluster_labels(profiles: pd.DataFrame, top: int = 3) -> dict[int, str]:
    """Short text naming each cluster's most distinctive features.

    The ``top`` features with the largest ``|zscore|`` (non-zero) are listed, each followed by ``+``
    (above the average region) or ``-`` (below), e.g. ``"cafe+ bank+ b1_mean-"``; the text is cut at a
    whole feature to at most 60 characters. A cluster with no distinctive feature is ``"average"``.

    Args:
        profiles: Output of :func:`cluster_profiles`.
        top: Most features named per cluster.

    Returns:
        Cluster number -> label text.

    Raises:
        ValueError: If ``profiles`` lacks the columns ``cluster``, ``feature`` or ``zscore``, or ``top < 1``.
    """
    missing = {"cluster", "feature", "zscore"} - set(profiles.columns)
    if missing:
        raise ValueError(f"profiles lacks columns {sorted(missing)}.")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}.")
    out: dict[int, str] = {}
    for c, rows in profiles.groupby("cluster", sort=True):
        z = rows["zscore"].to_numpy(dtype=float)
        names = rows["feature"].astype(str).to_numpy()
        keep = np.isfinite(z) & (z != 0)
        z, names = z[keep], names[keep]
        order = np.argsort(-np.abs(z), kind="stable")[:top]
        tokens = [f"{names[i]}{'+' if z[i] > 0 else '-'}" for i in order]
        out[int(c)] = _truncate(tokens, _LABEL_CHARS) if tokens else "average"
    return out
