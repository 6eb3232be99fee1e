"""Tests of backend.tasks.clustering: k by silhouette, relabelling, profiles and label texts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from backend.errors import Cancelled, InputError
from backend.tasks import clustering as clustering_mod
from backend.tasks.clustering import cluster, cluster_labels, cluster_profiles, suggest_k


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
    with pytest.raises(InputError, match="regions"):
        suggest_k(x[:2])


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_cluster_recovers_blobs_and_relabels_by_size(method: str) -> None:
    x, truth = _blobs((15, 50, 30), d=4, seed=1)
    res = cluster(x, k="auto", method=method, k_max=6, seed=0)
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
    with pytest.raises(InputError, match="nothing to cluster"):
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


def test_cluster_label_texts() -> None:
    prof = pd.DataFrame(
        {
            "cluster": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2],
            "n_regions": [5] * 10,
            "feature": ["cafe", "bank", "b1_mean", "park", "cafe", "bank", "b1_mean", "park", "cafe", "bank"],
            "zscore": [1.5, 1.2, -0.9, 0.1, -0.2, 0.0, 2.0, -0.4, 0.0, 0.0],
        }
    )
    texts = cluster_labels(prof, top=3)
    assert texts[0] == "cafe+ bank+ b1_mean-"
    assert texts[1] == "b1_mean+ park- cafe-"  # zero z-scores are never named
    assert texts[2] == "average"
    assert cluster_labels(prof, top=1)[0] == "cafe+"

    long = pd.DataFrame(
        {"cluster": [0, 0, 0], "n_regions": 1, "feature": ["x" * 30, "y" * 30, "z" * 30], "zscore": [3.0, 2.0, 1.0]}
    )
    text = cluster_labels(long)[0]
    assert text == "x" * 30 + "+"  # the next feature would pass 60 characters: cut at a whole feature
    huge = cluster_labels(long.assign(feature=["w" * 100, "a", "b"]))[0]
    assert len(huge) == 60 and huge.endswith("...")


def test_cancel_between_the_k_tried(cancel_after, monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = _blobs()
    tried: list[int] = []
    real = clustering_mod._kmeans
    monkeypatch.setattr(clustering_mod, "_kmeans", lambda xs, k, seed: tried.append(k) or real(xs, k, seed))
    with pytest.raises(Cancelled):
        cluster(x, k="auto", k_min=2, k_max=10, progress=cancel_after(2))
    assert tried == [2, 3]  # one check per k: the third k was never tried
