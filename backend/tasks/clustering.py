"""Clustering of region embeddings, choice of k, and cluster profiles and names a planner can read.

Embeddings are centred (not rescaled: their geometry is what the method learned) and clustered with
k-means (k-means++ initialisation, several restarts, seeded) or Ward agglomerative clustering.

**Identical embeddings count once.** Regions with identical inputs (no POI, no pixel, the same land use)
get identical embeddings; a city where half the tracts are empty has half its rows equal. Clustering and
the choice of k work on the *distinct* rows, and every region then takes the cluster of its row. So a
block of 400 identical rows is one point: it cannot inflate the silhouette (identical rows have a
silhouette of 1 among themselves) and cannot claim clusters of its own beyond the one it forms; a
cluster made of a single distinct row scores 0, as any singleton cluster does. When many regions share
one embedding, :attr:`ClusterResult.warnings` says how many.

**Choice of k** (``k = "auto"``): every k in ``[k_min, k_max]`` (default 4..12, clipped to the number of
distinct rows minus one) is scored with the mean silhouette coefficient (Rousseeuw, 1987, "Silhouettes:
a graphical aid to the interpretation and validation of cluster analysis") over the distinct rows, on a
seeded sample of at most :data:`SILHOUETTE_SAMPLE` of them, so the cost stays linear in the number of
regions; the best k is kept (ties: the smaller k). Above :data:`MINIBATCH_ABOVE` distinct rows k-means is
mini-batch k-means (Sculley, 2010, "Web-scale k-means clustering"; batches of :data:`MINIBATCH_SIZE` rows), whose
cost per restart no longer grows with N times the iterations of Lloyd's algorithm; the chosen k's partition is the
one already scored, not fitted again. The lower bound of 4 keeps a weak two-way split (the
sample city's best silhouette at k = 2 is 0.22) from hiding the structure a planner looks for.
Everything is deterministic given the seed. Clusters are renumbered by size, so cluster 0 is the largest.

A cluster's **profile** is the mean of each interpretable feature (POI category shares, POI density,
image brightness, greenness and texture, land-use shares, region area; see :func:`profile_features`)
over its regions, with a z-score against all regions. :func:`cluster_names` turns it into words, such
as ``"more cafes, banks; brighter image; smaller regions"``; a cluster that no feature sets apart (or
a run with no interpretable feature) is named by its size and the regions most like it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from backend.errors import InputError
from backend.progress import Progress
from regionlens_common import AUTO_K_MAX, AUTO_K_MIN, CLUSTER_FIELD, EMBEDDING_COLUMN

__all__ = [
    "CLUSTER_METHODS",
    "SILHOUETTE_SAMPLE",
    "MINIBATCH_ABOVE",
    "MINIBATCH_SIZE",
    "MAX_AGGLOMERATIVE",
    "AUTO_K_MIN",
    "AUTO_K_MAX",
    "SHARED_WARNING",
    "MIN_Z",
    "ClusterResult",
    "suggest_k",
    "cluster",
    "profile_features",
    "cluster_profiles",
    "cluster_names",
    "cluster_cards",
]

#: Accepted clustering methods.
CLUSTER_METHODS = ("kmeans", "agglomerative")
#: Silhouettes are computed on a seeded sample of at most this many distinct embeddings.
SILHOUETTE_SAMPLE = 2000
#: Above this many distinct embeddings k-means is mini-batch k-means (Lloyd's full passes cost N x k x iterations).
MINIBATCH_ABOVE = 20000
#: Rows per mini-batch.
MINIBATCH_SIZE = 4096
#: Ward clustering needs N^2 / 2 distances; above this many distinct embeddings use k-means.
MAX_AGGLOMERATIVE = 20000
#: Warn when at least this share of the regions has one and the same embedding.
SHARED_WARNING = 0.05
#: A feature names a cluster only when its cluster mean is at least this many standard deviations off.
MIN_Z = 0.5
#: A cluster with no feature at :data:`MIN_Z` is "near the average", named by its features at this |z| or more.
NEAR_AVERAGE_Z = 0.15
#: Longest cluster name (characters); cut at a whole phrase.
_NAME_CHARS = 90
#: Most phrases in a cluster name.
_NAME_PHRASES = 3


@dataclass
class ClusterResult:
    """Cluster assignment of every region.

    Attributes:
        labels: 0-based cluster of every region (input order); cluster 0 is the largest.
        k: Number of clusters.
        silhouette: Silhouette coefficient of the partition of the distinct embeddings (NaN if undefined).
        scores: k -> silhouette for every k tried when k was ``"auto"`` (empty otherwise).
        method: ``"kmeans"`` or ``"agglomerative"``.
        n_distinct: Number of distinct embeddings.
        largest_shared: Most regions sharing one embedding (1 when all differ).
        warnings: Sentences for the run log (many regions with one embedding, a narrowed k range).
    """

    labels: np.ndarray
    k: int
    silhouette: float
    scores: dict[int, float] = field(default_factory=dict)
    method: str = "kmeans"
    n_distinct: int = 0
    largest_shared: int = 1
    warnings: list[str] = field(default_factory=list)


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


def _finite_rows(X: np.ndarray) -> np.ndarray:  # noqa: N803
    """``X`` as N x d floats, checked finite; neither centred nor copied (examples are chosen by the distance to
    their cluster's own mean, which no shift changes; a copy of a national embedding takes seconds)."""
    xs = np.asarray(X, dtype=float)
    if xs.ndim == 1:
        xs = xs[:, None]
    if not np.isfinite(xs).all():
        raise ValueError("X holds NaN or infinite values; embeddings must be finite.")
    return xs


@dataclass
class _Distinct:
    """The distinct embeddings and which of them every region has."""

    rows: np.ndarray  # D x d
    inverse: np.ndarray  # N: index into rows
    counts: np.ndarray  # D: regions per distinct row

    @classmethod
    def of(cls, X: np.ndarray) -> _Distinct:  # noqa: N803
        """The distinct rows of ``X``, centred on their own mean (so copies of a row change nothing)."""
        xa = _centre(X)  # checks shape and finiteness
        raw = np.asarray(X, dtype=float).reshape(xa.shape)
        rows, inverse, counts = np.unique(raw, axis=0, return_inverse=True, return_counts=True)
        return cls(rows - rows.mean(axis=0), inverse.ravel(), counts)

    def warnings(self) -> list[str]:
        n, top = int(self.counts.sum()), int(self.counts.max())
        if top < 2 or top < SHARED_WARNING * n:
            return []
        return [
            f"{top:,} of {n:,} regions share one embedding (identical inputs, e.g. no POI in the region); "
            f"clusters are chosen among the {len(self.rows):,} distinct embeddings, each counted once."
        ]


def _silhouette(xs: np.ndarray, labels: np.ndarray, seed: int) -> float:
    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(xs) - 1:
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(xs) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(xs, labels, sample_size=sample, random_state=seed))


def _k_range(n_distinct: int, k_min: int, k_max: int, notes: list[str]) -> range:
    if k_min < 2:
        raise ValueError(f"k_min must be at least 2, got {k_min}.")
    hi = min(k_max, n_distinct - 1)
    if hi < 2:
        raise InputError(
            f"Cannot cluster: only {n_distinct} distinct embedding(s); the regions' inputs barely differ. "
            "Add inputs (POIs, imagery) or regions."
        )
    if hi < k_min:
        notes.append(f"Only {n_distinct} distinct embeddings: k was chosen among 2..{hi} instead of {k_min}..{k_max}.")
        return range(2, hi + 1)
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
                f"Agglomerative clustering of {len(xs)} distinct embeddings needs too much memory (limit "
                f"{MAX_AGGLOMERATIVE}); use method 'kmeans'."
            )
        self._tree = linkage(xs, method="ward")

    def cut(self, k: int) -> np.ndarray:
        from scipy.cluster.hierarchy import fcluster

        return fcluster(self._tree, t=k, criterion="maxclust").astype(int) - 1


def _kmeans_model(n: int, k: int, seed: int) -> KMeans | MiniBatchKMeans:
    """Lloyd's k-means (10 restarts) up to :data:`MINIBATCH_ABOVE` rows, mini-batch k-means (3 restarts) above."""
    if n > MINIBATCH_ABOVE:
        return MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=MINIBATCH_SIZE, random_state=seed)
    return KMeans(n_clusters=k, n_init=10, random_state=seed)


def _kmeans(xs: np.ndarray, k: int, seed: int, progress: Progress | None = None) -> np.ndarray:
    """k-means labels; with ``progress``, the fit runs under :meth:`Progress.wait` (heartbeat and cancel)."""
    fit = _kmeans_model(len(xs), k, seed).fit_predict
    labels = fit(xs) if progress is None else progress.wait(lambda: fit(xs), f"k-means, k = {k}")
    return np.asarray(labels).astype(int)


def _partitions(
    xs: np.ndarray, ks: range, method: str, seed: int, progress: Progress | None = None
) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    """Silhouette and partition of every k in ``ks``."""
    progress = progress or Progress()
    ward = _Ward(xs) if method == "agglomerative" else None
    scores: dict[int, float] = {}
    parts: dict[int, np.ndarray] = {}
    for i, k in enumerate(ks):
        progress.update(i / len(ks), f"silhouette of k = {k}")
        parts[k] = ward.cut(k) if ward is not None else _kmeans(xs, k, seed, progress)
        scores[k] = _silhouette(xs, parts[k], seed)
    return scores, parts


def _scores(xs: np.ndarray, ks: range, method: str, seed: int, progress: Progress | None = None) -> dict[int, float]:
    return _partitions(xs, ks, method, seed, progress)[0]


def _best(scores: dict[int, float]) -> int:
    """Highest silhouette; ties (and all-NaN) go to the smallest k."""
    best_k, best_s = min(scores), -np.inf
    for k in sorted(scores):
        s = scores[k]
        if np.isfinite(s) and s > best_s:
            best_k, best_s = k, s
    return best_k


def _check_method(method: str) -> None:
    if method not in CLUSTER_METHODS:
        raise ValueError(f"Unknown clustering method '{method}'; use one of {CLUSTER_METHODS}.")


def suggest_k(
    X: np.ndarray,  # noqa: N803
    k_min: int = AUTO_K_MIN,
    k_max: int = AUTO_K_MAX,
    seed: int = 0,
    method: str = "kmeans",
) -> tuple[int, dict[int, float]]:
    """Number of clusters with the best silhouette over the distinct (centred) embeddings.

    Args:
        X: N x d embeddings.
        k_min: Smallest k tried (at least 2); lowered to 2 when there are too few distinct rows.
        k_max: Largest k tried; clipped to the number of distinct rows minus one.
        seed: Random state of k-means and of the silhouette sample (at most 2000 distinct rows).
        method: ``"kmeans"`` or ``"agglomerative"`` (Ward); the method whose partitions are scored.

    Returns:
        ``(k, scores)`` with ``scores`` mapping every k tried to its silhouette.

    Raises:
        ValueError: If ``X`` is empty or not finite, ``k_min < 2`` or ``method`` is unknown.
        InputError: If there are fewer than 3 distinct embeddings.
    """
    _check_method(method)
    distinct = _Distinct.of(X)
    scores = _scores(distinct.rows, _k_range(len(distinct.rows), k_min, k_max, []), method, seed)
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
    k_min: int = AUTO_K_MIN,
    k_max: int = AUTO_K_MAX,
    seed: int = 0,
    progress: Progress | None = None,
) -> ClusterResult:
    """Cluster the embeddings (centred, not rescaled; identical rows counted once).

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
        InputError: If there are fewer distinct embeddings than ``k`` (``"auto"``: fewer than 3), or too
            many for agglomerative clustering.
    """
    _check_method(method)
    # finding the distinct rows sorts the whole matrix (seconds at 250,000 regions): keep reporting meanwhile
    distinct = _Distinct.of(X) if progress is None else progress.wait(lambda: _Distinct.of(X), "distinct embeddings")
    rows, n_distinct = distinct.rows, len(distinct.rows)
    notes = distinct.warnings()
    scores: dict[int, float] = {}
    parts: dict[int, np.ndarray] = {}
    if k == "auto":
        scores, parts = _partitions(rows, _k_range(n_distinct, k_min, k_max, notes), method, seed, progress)
        k_used = _best(scores)
    elif isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 2:
        k_used = int(k)
        if k_used > n_distinct or k_used > len(distinct.inverse) - 1:
            raise InputError(
                f"Cannot make {k_used} clusters from {len(distinct.inverse)} regions ({n_distinct} distinct "
                f"embeddings); {_fewer_hint(k_used, len(distinct.inverse), n_distinct, 'k')}"
            )
    else:
        raise ValueError(f"k must be 'auto' or an integer >= 2, not {k!r}.")
    if k_used in parts:
        raw = parts[k_used]
    else:
        raw = _Ward(rows).cut(k_used) if method == "agglomerative" else _kmeans(rows, k_used, seed, progress)
    labels = _relabel(raw[distinct.inverse])
    return ClusterResult(
        labels=labels,
        k=int(len(np.unique(labels))),
        silhouette=_silhouette(rows, raw, seed),
        scores=scores,
        method=method,
        n_distinct=n_distinct,
        largest_shared=int(distinct.counts.max()),
        warnings=notes,
    )


# ------------------------------------------------------------------------------------ profiles

#: Profile feature names (the ``feature`` column of ``cluster_profiles``) and how a name phrases them.
POI_SHARE = "POI share: "
LANDUSE_SHARE = "land use: "
POI_DENSITY = "POIs per km\u00b2"
AREA = "region area (km\u00b2)"
BRIGHTNESS = "image brightness"
GREENNESS = "image greenness"
TEXTURE = "image texture"
#: Feature -> (phrase when above the average region, phrase when below).
_PHRASES = {
    POI_DENSITY: ("more POIs", "fewer POIs"),
    AREA: ("larger regions", "smaller regions"),
    BRIGHTNESS: ("brighter image", "darker image"),
    GREENNESS: ("greener image", "less green image"),
    TEXTURE: ("more varied image", "more uniform image"),
}
#: Embedding dimensions (``emb_000``...): profiled when nothing else exists, never used in names.
_EMB = EMBEDDING_COLUMN
_BAND_MEAN = re.compile(r"(?P<raster>.+)_b(?P<band>\d+)_mean")


def _image_features(image: pd.DataFrame) -> pd.DataFrame:
    """Brightness (mean of the band means), texture (mean of the band standard deviations) and, for a
    three-band image read as red, green, blue (the default bands 1-3), greenness (green minus the mean of
    red and blue); one set per raster, named after it when there are several."""
    rasters: dict[str, dict[int, str]] = {}
    for col in image.columns:
        m = _BAND_MEAN.fullmatch(str(col))
        if m:
            rasters.setdefault(m["raster"], {})[int(m["band"])] = str(col)
    out = {}
    for raster, bands in rasters.items():
        tag = f" ({raster})" if len(rasters) > 1 else ""
        means = image[list(bands.values())]
        out[BRIGHTNESS + tag] = means.mean(axis=1)
        stds = [f"{raster}_b{b}_std" for b in bands if f"{raster}_b{b}_std" in image.columns]
        if stds:
            out[TEXTURE + tag] = image[stds].mean(axis=1)
        if sorted(bands) == [1, 2, 3]:
            out[GREENNESS + tag] = image[bands[2]] - (image[bands[1]] + image[bands[3]]) / 2.0
    return pd.DataFrame(out, index=image.index)


def profile_features(views: Any, min_support: float = 0.05) -> pd.DataFrame:
    """Interpretable per-region features for cluster profiles, named in words.

    POI category shares (``POI share: cafe``; categories present in at least ``min_support`` of the
    regions, so a category seen once does not name a cluster), POIs per km², image brightness, texture
    and greenness (see :func:`_image_features`), land-use shares (``land use: residential``) and region
    area in km². Whatever the inputs hold; an empty frame when there is nothing (e.g. no area).

    Args:
        views: The run's :class:`backend.views.Views`.
        min_support: Smallest share of regions a POI category must appear in.

    Returns:
        One row per region (``views.region_ids``), numeric columns.
    """
    parts = []
    counts = views.tables.get("poi_counts")
    areas = views.areas_km2
    if counts is not None and counts.shape[1]:
        support = (counts > 0).mean(axis=0)
        common = counts.loc[:, support >= min_support]
        total = counts.sum(axis=1)
        if common.shape[1]:
            shares = common.div(total.replace(0, np.nan), axis=0).fillna(0.0)
            parts.append(shares.rename(columns=lambda c: f"{POI_SHARE}{c}"))
        if areas is not None:
            parts.append((total / areas.reindex(total.index).where(lambda a: a > 0)).rename(POI_DENSITY).to_frame())
    image = views.tables.get("image_stats")
    if image is not None and image.shape[1]:
        parts.append(_image_features(image))
    landuse = views.tables.get("landuse")
    if landuse is not None and landuse.shape[1]:
        parts.append(landuse.rename(columns=lambda c: f"{LANDUSE_SHARE}{c}"))
    if areas is not None:
        parts.append(areas.rename(AREA).to_frame())
    frame = pd.DataFrame(index=views.region_ids)
    for part in parts:
        frame = frame.join(part.reindex(views.region_ids))
    return frame.astype(float)


PROFILE_COLUMNS = [CLUSTER_FIELD, "n_regions", "feature", "mean", "zscore"]


def cluster_profiles(labels: np.ndarray, features: pd.DataFrame) -> pd.DataFrame:
    """Per-cluster mean and z-score of every numeric feature, in long format.

    ``zscore = (cluster mean - mean over all regions) / std over all regions`` (population standard
    deviation, ddof = 0), and 0 for a feature that does not vary. Missing feature values are skipped.

    Args:
        labels: Cluster of every region (same order as ``features`` rows).
        features: Numeric features, one row per region (non-numeric columns are ignored).

    Returns:
        Columns ``cluster``, ``n_regions``, ``feature``, ``mean``, ``zscore``; one row per (cluster,
        feature), clusters ascending, features in column order. Empty (with these columns) when
        ``features`` has no numeric column.

    Raises:
        ValueError: If ``labels`` and ``features`` differ in length.
    """
    lab = np.asarray(labels).ravel()
    if len(lab) != len(features):
        raise ValueError(f"{len(lab)} cluster labels for {len(features)} feature rows.")
    numeric = features.select_dtypes(include="number").astype(float)
    if numeric.shape[1] == 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("mean", "zscore") else (str if c == "feature" else int))
                             for c in PROFILE_COLUMNS})
    numeric = numeric.reset_index(drop=True)
    overall_mean = numeric.mean(axis=0)
    overall_std = numeric.std(axis=0, ddof=0)
    safe_std = overall_std.where(overall_std > 0)
    groups = numeric.groupby(lab, sort=True)
    means = groups.mean()
    sizes = groups.size()
    z = ((means - overall_mean) / safe_std).fillna(0.0)
    return pd.DataFrame(
        {
            CLUSTER_FIELD: np.repeat(means.index.to_numpy().astype(int), numeric.shape[1]),
            "n_regions": np.repeat(sizes.to_numpy().astype(int), numeric.shape[1]),
            "feature": np.tile(np.asarray(numeric.columns, dtype=str), len(means)),
            "mean": means.to_numpy().ravel(),
            "zscore": z.to_numpy().ravel(),
        }
    )


# --------------------------------------------------------------------------------------- names


def _plural(word: str) -> str:
    """``cafe`` -> ``cafes``, ``pharmacy`` -> ``pharmacies``, ``bus`` -> ``buses`` (last word only)."""
    if not word or not word[-1].isalpha():
        return word
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _phrase(feature: str, z: float) -> tuple[str, str]:
    """``(group, words)``: phrases of one group (e.g. "more" POI categories) are listed together."""
    up = z > 0
    if feature.startswith(POI_SHARE):
        what = feature[len(POI_SHARE):].replace("_", " ").strip()
        return ("poi+" if up else "poi-"), _plural(what)
    if feature.startswith(LANDUSE_SHARE):
        what = feature[len(LANDUSE_SHARE):].replace("_", " ").strip()
        return ("lu+" if up else "lu-"), what
    if feature in _PHRASES:
        return feature, _PHRASES[feature][0 if up else 1]
    base, _, tag = feature.partition(" (")  # "image brightness (<raster>)" when there are several rasters
    if base in _PHRASES:
        return feature, f"{_PHRASES[base][0 if up else 1]} ({tag}"
    return feature, f"{'higher' if up else 'lower'} {feature}"


_GROUP_WORDS = {"poi+": ("more ", ""), "poi-": ("fewer ", ""), "lu+": ("more ", " land"), "lu-": ("less ", " land")}


def _name_from_profile(rows: pd.DataFrame, min_z: float = MIN_Z) -> str:
    z = rows["zscore"].to_numpy(dtype=float)
    names = rows["feature"].astype(str).to_numpy()
    keep = np.isfinite(z) & (np.abs(z) >= min_z) & np.array([not _EMB.fullmatch(n) for n in names], dtype=bool)
    z, names = z[keep], names[keep]
    groups: dict[str, list[str]] = {}
    for i in np.argsort(-np.abs(z), kind="stable")[:_NAME_PHRASES]:
        group, words = _phrase(names[i], z[i])
        groups.setdefault(group, []).append(words)
    phrases = []
    for group, words in groups.items():
        lead, tail = _GROUP_WORDS.get(group, ("", ""))
        phrases.append(f"{lead}{', '.join(words)}{tail}")
    text = ""
    for phrase in phrases:
        candidate = f"{text}; {phrase}" if text else phrase
        if len(candidate) > _NAME_CHARS:
            return text or phrase[: _NAME_CHARS - 3] + "..."
        text = candidate
    return text


def _examples(xs: np.ndarray, members: np.ndarray, ids: list[str], n: int = 2) -> list[str]:
    """Ids of the ``n`` members nearest their cluster's mean embedding (distinct ids)."""
    pts = xs[members]
    order = np.argsort(((pts - pts.mean(axis=0)) ** 2).sum(axis=1), kind="stable")
    out: list[str] = []
    for j in order:
        rid = ids[int(members[j])]
        if rid not in out:
            out.append(rid)
        if len(out) == n:
            break
    return out


def cluster_names(
    profiles: pd.DataFrame,
    labels: np.ndarray,
    X: np.ndarray,  # noqa: N803
    region_ids: Any,
) -> dict[int, str]:
    """A name a planner can read for every cluster, never a column code.

    From the profile, the (at most three) features whose cluster mean is furthest from the average
    region, at least :data:`MIN_Z` standard deviations: POI categories as ``"more cafes, banks"`` /
    ``"fewer ..."``, image statistics as ``"brighter image"``, ``"greener image"``, ``"more varied
    image"`` (or their opposites), land use as ``"more residential land"``, area as ``"larger regions"``,
    any other feature as ``"higher <feature>"``; phrases are joined by ``"; "``. A cluster with no such
    feature but some at :data:`NEAR_AVERAGE_Z` or more is ``"near the average: less varied image; ..."``
    (typically the largest cluster of ordinary regions). Embedding dimensions are never named: a cluster with
    no interpretable feature at all is named by its size and the two regions nearest its mean embedding,
    ``"142 regions, most like 0601, 0602"``.

    Args:
        profiles: Output of :func:`cluster_profiles` (may be empty).
        labels: Cluster of every region.
        X: N x d embeddings (for the example regions).
        region_ids: Region ids in the order of ``labels``.

    Returns:
        Cluster number -> name, for every cluster in ``labels``.

    Raises:
        ValueError: If ``labels``, ``X`` and ``region_ids`` differ in length or ``profiles`` lacks a column.
    """
    lab = np.asarray(labels).ravel()
    xs = _finite_rows(X)
    ids = [str(r) for r in region_ids]
    if not len(lab) == len(xs) == len(ids):
        raise ValueError(f"{len(lab)} labels, {len(xs)} embeddings and {len(ids)} region ids differ in number.")
    missing = set(PROFILE_COLUMNS) - set(profiles.columns) - {"mean", "n_regions"}
    if missing:
        raise ValueError(f"profiles lacks columns {sorted(missing)}.")
    by_cluster = {int(c): rows for c, rows in profiles.groupby(CLUSTER_FIELD, sort=True)}
    out: dict[int, str] = {}
    for c in np.unique(lab):
        members = np.flatnonzero(lab == c)
        rows = by_cluster.get(int(c))
        name = _name_from_profile(rows) if rows is not None else ""
        if not name and rows is not None:  # no feature stands out: a cluster of near-average regions
            weak = _name_from_profile(rows, NEAR_AVERAGE_Z)
            name = f"near the average: {weak}" if weak else ""
        if not name:
            name = f"{len(members):,} regions, most like {', '.join(_examples(xs, members, ids))}"
        out[int(c)] = name
    return out


def cluster_cards(
    profiles: pd.DataFrame,
    labels: np.ndarray,
    names: dict[int, str],
    X: np.ndarray,  # noqa: N803
    region_ids: Any,
    n_features: int = 5,
    n_examples: int = 5,
    poll: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """What a cluster card shows, per cluster: name, size, defining features and example regions.

    Args:
        profiles: Output of :func:`cluster_profiles` (may be empty: no features then).
        labels: Cluster of every region.
        names: Cluster number -> name (:func:`cluster_names`).
        X: N x d embeddings (examples are the regions nearest their cluster's mean embedding).
        region_ids: Region ids in the order of ``labels``.
        n_features: Defining features per card: the largest |z-score| first (embedding dimensions only when the
            profile holds nothing else).
        n_examples: Example regions per card.
        poll: Called before every cluster (heartbeat and cancel on a national run).

    Returns:
        ``{"<cluster>": {"name", "size", "features": [{"feature", "mean", "zscore"}], "examples": [ids]}}``,
        clusters ascending.
    """
    lab = np.asarray(labels).ravel()
    xs = _finite_rows(X)
    ids = [str(r) for r in region_ids]
    by_cluster = {int(c): rows for c, rows in profiles.groupby(CLUSTER_FIELD, sort=True)} if len(profiles) else {}
    cards: dict[str, dict[str, Any]] = {}
    for c in np.unique(lab):
        if poll is not None:
            poll()
        members = np.flatnonzero(lab == c)
        rows = by_cluster.get(int(c))
        features: list[dict[str, Any]] = []
        if rows is not None:
            z = rows["zscore"].to_numpy(dtype=float)
            order = np.argsort(-np.abs(np.nan_to_num(z)), kind="stable")[:n_features]
            features = [{"feature": str(rows["feature"].iloc[i]), "mean": float(rows["mean"].iloc[i]),
                         "zscore": float(z[i])} for i in order]
        cards[str(int(c))] = {"name": names.get(int(c), ""), "size": int(len(members)), "features": features,
                              "examples": _examples(xs, members, ids, n=n_examples)}
    return cards
