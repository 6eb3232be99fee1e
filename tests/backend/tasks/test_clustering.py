"""Tests of backend.tasks.clustering: k by silhouette over distinct embeddings, relabelling, profiles and names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from backend.errors import Cancelled, InputError
from backend.tasks import clustering as clustering_mod
from backend.tasks.clustering import (
    MIN_Z,
    NEAR_AVERAGE_Z,
    cluster,
    cluster_names,
    cluster_profiles,
    profile_features,
    suggest_k,
)
from backend.views import Views


def _blobs(sizes: tuple[int, ...] = (40, 40, 40, 40), d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(len(sizes), d))
    x = np.vstack([c + rng.normal(size=(s, d)) for c, s in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x, truth


def test_suggest_k_finds_four_blobs() -> None:
    x, _ = _blobs()
    k, scores = suggest_k(x, k_min=2, k_max=8, seed=0)
    assert k == 4
    assert sorted(scores) == list(range(2, 9))
    assert scores[4] == max(scores.values())
    k_agg, _ = suggest_k(x, k_max=8, method="agglomerative")
    assert k_agg == 4


def test_k_max_is_clipped_to_regions() -> None:
    x, _ = _blobs((3, 3), d=2)
    _, scores = suggest_k(x, k_min=2, k_max=12)
    assert max(scores) == 5
    with pytest.raises(InputError, match="distinct"):
        suggest_k(x[:2])


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_cluster_recovers_blobs_and_relabels_by_size(method: str) -> None:
    x, truth = _blobs((15, 50, 30), d=4, seed=1)
    res = cluster(x, k="auto", method=method, k_min=2, k_max=6, seed=0)
    assert res.k == 3 and res.method == method
    assert adjusted_rand_score(truth, res.labels) == pytest.approx(1.0)
    assert list(np.bincount(res.labels)) == [50, 30, 15]  # cluster 0 is the largest
    assert res.labels.dtype.kind == "i"
    assert 0.5 < res.silhouette <= 1.0
    assert set(res.scores) == set(range(2, 7))


def test_fixed_k_and_determinism() -> None:
    x, _ = _blobs(seed=3)
    a = cluster(x, k=6, seed=2)
    b = cluster(x, k=6, seed=2)
    assert a.k == 6 and a.scores == {}
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.all(np.diff(np.bincount(a.labels)) <= 0)


def test_invalid_k() -> None:
    x, _ = _blobs((4, 4))
    with pytest.raises(InputError, match="choose k between 2 and 7"):
        cluster(x, k=8)
    same = np.ones((5, 3))  # k is already 2: no smaller k to suggest
    with pytest.raises(InputError, match="nothing to cluster") as err:
        cluster(same, k=2)
    assert "choose k" not in str(err.value)
    with pytest.raises(InputError, match="only 1 distinct embedding"):
        cluster(same, k="auto")
    with pytest.raises(InputError, match="at least 3 regions"):
        cluster(np.eye(2), k=2)
    with pytest.raises(ValueError, match="'auto'"):
        cluster(x, k=1)
    with pytest.raises(ValueError, match="method"):
        cluster(x, k=2, method="dbscan")


def test_profiles_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    feats = pd.DataFrame({"a": [1.0, 3.0, 5.0, 5.0, 5.0], "b": [2.0] * 5, "name": list("vwxyz")})
    prof = cluster_profiles(labels, feats)
    assert list(prof.columns) == ["cluster", "n_regions", "feature", "mean", "zscore"]
    assert list(prof["feature"]) == ["a", "b", "a", "b"]  # non-numeric column ignored
    assert list(prof["n_regions"]) == [2, 2, 3, 3]
    # overall mean 3.8, population std 1.6
    a = prof[prof["feature"] == "a"].set_index("cluster")
    assert a.loc[0, "mean"] == pytest.approx(2.0)
    assert a.loc[0, "zscore"] == pytest.approx((2.0 - 3.8) / 1.6)
    assert a.loc[1, "zscore"] == pytest.approx((5.0 - 3.8) / 1.6)
    assert (prof.loc[prof["feature"] == "b", "zscore"] == 0.0).all()  # constant feature
    with pytest.raises(ValueError):
        cluster_profiles(labels[:3], feats)


def _sparse_counts(seed: int = 0) -> np.ndarray:
    """log1p counts of 3 rare POI categories over 600 regions; about two thirds of the regions are empty."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((600, 3))
    rows = rng.choice(600, 250, replace=False)
    counts[rows] = rng.poisson([0.8, 0.5, 0.3], size=(250, 3))
    return np.log1p(counts)


def test_identical_rows_do_not_drive_k() -> None:
    x = _sparse_counts()
    n_zero = int((x.sum(axis=1) == 0).sum())
    res = cluster(x, k="auto", seed=0)
    # Before: k = 12 with a silhouette of 0.95, bought by the block of identical empty regions.
    distinct = np.unique(x, axis=0)
    assert res.k == suggest_k(distinct, seed=0)[0]  # the copies of a row do not change the choice
    assert res.silhouette < 0.6
    assert res.n_distinct == len(distinct) and res.largest_shared == n_zero
    assert res.warnings and f"{n_zero} of 600 regions share one embedding" in res.warnings[0]
    # identical rows share their cluster
    zero = x.sum(axis=1) == 0
    assert len(np.unique(res.labels[zero])) == 1


def test_auto_k_starts_at_four_and_narrows_for_few_distinct_rows() -> None:
    x, _ = _blobs((60, 60), d=3, seed=4)
    res = cluster(x, k="auto", seed=0)
    assert min(res.scores) == 4 and res.k >= 4 and not res.warnings
    few = np.repeat(np.eye(3) * 5.0, 20, axis=0)  # three distinct embeddings
    res = cluster(few, k="auto", seed=0)
    assert sorted(res.scores) == [2] and res.k == 2
    assert any("k was chosen among 2..2" in w for w in res.warnings)


def test_auto_k_is_deterministic_and_samples_large_inputs() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2600, 4))
    a = suggest_k(x, k_max=5, seed=3)
    b = suggest_k(x, k_max=5, seed=3)
    assert a == b and sorted(a[1]) == [4, 5]


def test_sample_city_gets_at_least_four_clusters(sf_views) -> None:
    from backend.models import get_embedder
    from backend.progress import Progress

    emb = get_embedder("baseline", dim=16, seed=0).fit_transform(sf_views, Progress())
    res = cluster(emb.to_numpy(), k="auto", seed=0)
    assert res.k >= 4
    assert np.isfinite(res.silhouette)


def test_profiles_of_nothing_are_empty_not_an_error() -> None:
    prof = cluster_profiles(np.array([0, 1, 1]), pd.DataFrame({"name": list("abc")}))
    assert prof.empty and list(prof.columns) == ["cluster", "n_regions", "feature", "mean", "zscore"]


def _views(counts: pd.DataFrame, image: pd.DataFrame | None = None, areas: list[float] | None = None) -> Views:
    ids = pd.Index([f"r{i}" for i in range(len(counts))], name="region_id")
    tables = {"poi_counts": counts.set_axis(ids)}
    if image is not None:
        tables["image_stats"] = image.set_axis(ids)
    area = pd.Series(areas if areas is not None else [1.0] * len(ids), index=ids)
    return Views(region_ids=ids, tables=tables, areas_km2=area, centroids=np.zeros((len(ids), 2)))


def test_profile_features_are_words() -> None:
    counts = pd.DataFrame({"cafe": [3, 0, 0, 1], "bank": [0, 2, 1, 0], "rare": [0, 0, 0, 1]})
    image = pd.DataFrame(
        {f"img_b{b}_{s}": np.arange(4.0) + b for b in (1, 2, 3) for s in ("mean", "std")}
    )
    feats = profile_features(_views(counts, image, [1.0, 2.0, 0.5, 1.0]), min_support=0.3)
    assert list(feats.columns) == [
        "POI share: cafe", "POI share: bank", "POIs per km\u00b2", "image brightness", "image texture",
        "image greenness", "region area (km\u00b2)",
    ]  # fmt: skip
    assert feats["POI share: cafe"].tolist() == [1.0, 0.0, 0.0, 0.5]
    assert feats["POIs per km\u00b2"].tolist() == [3.0, 1.0, 2.0, 2.0]
    assert feats["image brightness"].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_cluster_names_read_as_words() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    counts = pd.DataFrame({"cafe": [5, 4, 6, 0, 0, 0, 1, 1, 0], "pharmacy": [0, 0, 0, 3, 2, 4, 0, 1, 0]})
    image = pd.DataFrame({"sf_landsat7_3857_30m_b1_mean": [9, 9, 9, 1, 1, 1, 5, 5, 5.0]})
    areas = [1.0] * 6 + [9.0, 8.0, 9.0]
    views = _views(counts, image, areas)
    prof = cluster_profiles(labels, profile_features(views))
    x = np.arange(18.0).reshape(9, 2)
    names = cluster_names(prof, labels, x, views.region_ids)
    assert set(names) == {0, 1, 2}
    for name in names.values():
        assert "sf_landsat" not in name and "_mean" not in name and "+" not in name
    assert "more cafes" in names[0] and "brighter image" in names[0]
    assert "more pharmacies" in names[1] and "darker image" in names[1]
    assert "larger regions" in names[2]


def test_clusters_without_features_are_named_by_example_regions() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    x = np.array([[0.0, 0], [0.1, 0], [5, 0], [9, 9], [9.2, 9]])
    ids = ["a", "b", "c", "d", "e"]
    emb = pd.DataFrame(x, columns=["emb_000", "emb_001"])
    names = cluster_names(cluster_profiles(labels, emb), labels, x, ids)
    assert names[0] == "3 regions, most like b, a"
    assert names[1].startswith("2 regions, most like ")
    assert "emb_" not in " ".join(names.values())
    empty = cluster_profiles(labels, pd.DataFrame(index=range(5)))
    assert cluster_names(empty, labels, x, ids)[0] == "3 regions, most like b, a"


def test_a_cluster_of_near_average_regions_is_named_by_its_weak_features() -> None:
    """No feature reaches MIN_Z: the name says the regions are near the average and how they lean, not ids."""
    labels = np.array([0] * 6 + [1] * 2)
    feats = pd.DataFrame({"image brightness": [1.2, 1.25, 1.15, 1.2, 1.2, 1.2, 0.0, 1.0],
                          "image texture": [2.0, 2.0, 2.1, 1.9, 2.0, 2.0, 2.0, 2.0]})
    prof = cluster_profiles(labels, feats)
    z0 = prof[(prof["cluster"] == 0) & (prof["feature"] == "image brightness")]["zscore"].iloc[0]
    assert NEAR_AVERAGE_Z <= abs(z0) < MIN_Z  # (the case this test is about)
    names = cluster_names(prof, labels, np.zeros((8, 2)), [str(i) for i in range(8)])
    assert names[0] == "near the average: brighter image"
    assert "most like" not in names[0]


def test_cancel_between_the_k_tried(cancel_after, monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = _blobs()
    tried: list[int] = []
    real = clustering_mod._kmeans
    monkeypatch.setattr(clustering_mod, "_kmeans", lambda xs, k, seed, *a: tried.append(k) or real(xs, k, seed, *a))
    with pytest.raises(Cancelled):
        cluster(x, k="auto", k_min=2, k_max=10, progress=cancel_after(2))
    assert tried == [2]  # checked before every k and during its fit: the second k's fit never started

    from backend.progress import Progress

    progress = Progress()
    progress.callback = lambda stage, fraction, message: message == "silhouette of k = 4" and progress.cancel()
    tried.clear()
    with pytest.raises(Cancelled):
        cluster(x, k="auto", k_min=2, k_max=10, progress=progress)
    assert tried == [2, 3, 4]  # cancelled when k = 4 was announced: no later k was tried


def test_silhouette_is_sampled_above_the_threshold_and_exact_below(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.metrics import silhouette_score

    x, truth = _blobs((30, 30, 30), d=3)
    exact = silhouette_score(x, truth)
    assert clustering_mod._silhouette(x, truth, seed=4) == pytest.approx(exact, abs=1e-12)  # 90 <= 2000 rows
    monkeypatch.setattr(clustering_mod, "SILHOUETTE_SAMPLE", 40)
    sampled = clustering_mod._silhouette(x, truth, seed=4)
    assert sampled == pytest.approx(silhouette_score(x, truth, sample_size=40, random_state=4), abs=1e-12)
    assert sampled != pytest.approx(exact, abs=1e-9)  # a sample of 40 rows, not all 90


def test_kmeans_is_mini_batch_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    x, truth = _blobs((60, 60, 60, 60), d=4)
    assert type(clustering_mod._kmeans_model(len(x), 4, 0)).__name__ == "KMeans"
    monkeypatch.setattr(clustering_mod, "MINIBATCH_ABOVE", 100)
    assert type(clustering_mod._kmeans_model(len(x), 4, 0)).__name__ == "MiniBatchKMeans"
    res = cluster(x, k=4, seed=0)
    assert adjusted_rand_score(truth, res.labels) == pytest.approx(1.0)
    res_auto = cluster(x, k="auto", k_min=2, k_max=6, seed=0)
    assert res_auto.k == 4 and adjusted_rand_score(truth, res_auto.labels) == pytest.approx(1.0)


def test_auto_k_fits_each_k_once_and_keeps_the_chosen_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    x, truth = _blobs()
    tried: list[int] = []
    real = clustering_mod._kmeans
    monkeypatch.setattr(clustering_mod, "_kmeans", lambda xs, k, seed, *a: tried.append(k) or real(xs, k, seed, *a))
    res = cluster(x, k="auto", k_min=2, k_max=6, seed=0)
    assert tried == [2, 3, 4, 5, 6]  # the chosen k's partition is not fitted a second time
    assert res.k == 4 and adjusted_rand_score(truth, res.labels) == pytest.approx(1.0)


def test_a_long_kmeans_fit_keeps_reporting_and_can_be_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from backend import progress as progress_mod
    from backend.progress import Progress

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    messages: list[str] = []
    progress = Progress(callback=lambda stage, fraction, message: messages.append(message))

    class Slow:
        def fit_predict(self, xs: np.ndarray) -> np.ndarray:
            release.wait(5.0)  # a fit that cannot check for cancellation itself
            return np.zeros(len(xs), dtype=int)

    def cancel_on_heartbeat(stage: str, fraction: float, message: str) -> None:
        messages.append(message)
        if message.startswith("k-means") and messages.count(message) >= 3:
            progress.cancel()

    progress.callback = cancel_on_heartbeat
    monkeypatch.setattr(clustering_mod, "_kmeans_model", lambda n, k, seed: Slow())
    x, _ = _blobs()
    with pytest.raises(Cancelled):
        cluster(x, k=3, progress=progress)
    release.set()
    assert messages.count("k-means, k = 3") >= 3  # heartbeats while the fit ran, then the cancel took effect


def test_cluster_cards_poll_per_cluster_and_pick_examples_by_distance_to_the_cluster_mean() -> None:
    """Examples are the members nearest their cluster's mean (a shift of every embedding changes nothing, so
    the national-size embedding is neither centred nor copied), and ``poll`` runs before every cluster."""
    from backend.tasks.clustering import cluster_cards

    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(c, 1.0, size=(40, 3)) for c in (0.0, 10.0, 20.0)])
    labels = np.repeat([0, 1, 2], 40)
    ids = [f"r{i}" for i in range(len(x))]
    polls: list[int] = []
    cards = cluster_cards(pd.DataFrame(), labels, {0: "a", 1: "b", 2: "c"}, x, ids, n_examples=3,
                          poll=lambda: polls.append(1))
    assert len(polls) == 3
    for c in range(3):
        members = np.flatnonzero(labels == c)
        d = ((x[members] - x[members].mean(axis=0)) ** 2).sum(axis=1)
        assert cards[str(c)]["examples"] == [ids[members[j]] for j in np.argsort(d, kind="stable")[:3]]
    assert cluster_cards(pd.DataFrame(), labels, {}, x + 1e3, ids, n_examples=3) == {
        k: {**v, "name": ""} for k, v in cards.items()}
    with pytest.raises(ValueError, match="finite"):
        cluster_cards(pd.DataFrame(), labels, {}, np.where(x > 15, np.nan, x), ids)


def test_region_layer_leaves_the_frame_as_it_was() -> None:
    """The layer shares the frame's data (no deep copy of a national embedding) yet changing either leaves
    the other alone."""
    import geopandas as gpd
    import shapely

    from backend.pipeline import region_layer
    from regionlens_common import ID_FIELD

    frame = pd.DataFrame({"emb_000": [1.0, 2.0], "emb_001": [3.0, 4.0]}, index=pd.Index([7, 9], name="fid"))
    geometry = gpd.GeoSeries([shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)], index=[9, 7])
    before = frame.copy()
    layer = region_layer(frame, geometry, "EPSG:32610")
    assert list(layer.index) == ["7", "9"]
    assert layer.index.name == ID_FIELD
    assert layer.geometry.iloc[0].equals(shapely.box(1, 0, 2, 1))  # region 7's geometry, by id
    layer.loc["7", "emb_000"] = -1.0
    pd.testing.assert_frame_equal(frame, before)


def test_profiling_and_naming_the_clusters_keeps_reporting_and_can_be_cancelled(
        monkeypatch: pytest.MonkeyPatch, cancel_at_message) -> None:
    """Naming the clusters (each cluster's typical regions) took seconds without a progress event at 250,000
    regions: it runs under Progress.wait, so heartbeats come and a cancel stops the job."""
    import threading

    from backend import progress as progress_mod
    from backend.pipeline import cluster_embedding

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = clustering_mod.cluster_names
    monkeypatch.setattr(clustering_mod, "cluster_names", lambda *a: release.wait(5.0) and real(*a))
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.3, size=(30, 2)) for c in (0.0, 5.0, 10.0)])
    ids = pd.Index([f"r{i}" for i in range(len(x))], name="region_id")
    features = pd.DataFrame({"area_km2": rng.uniform(1, 2, len(x))}, index=ids)
    progress, messages = cancel_at_message("cluster profiles and names", 4)
    with pytest.raises(Cancelled):
        cluster_embedding(x, ids, features, pd.DataFrame(x), k=3, method="kmeans", k_min=2, k_max=4, seed=0,
                          progress=progress)
    release.set()
    assert messages.count("cluster profiles and names") >= 4
