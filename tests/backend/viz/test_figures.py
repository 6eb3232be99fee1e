"""Tests of backend.viz: every figure writes a real, non-blank PNG; colours match matplotlib's palettes."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

import regionlens_common
from backend.tasks.clustering import cluster_profiles
from backend.viz import (
    CLUSTER_COLOURS,
    cluster_colour,
    cluster_colours,
    plot_cluster_profiles,
    plot_embedding_2d,
    plot_pred_vs_obs,
    plot_training_loss,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 1


@pytest.fixture
def emb() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    return rng.normal(size=(60, 6)) + labels[:, None] * 3.0, labels


def test_embedding_plot(tmp_path: Path, emb: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = emb
    out = plot_embedding_2d(x, labels, tmp_path / "figures" / "deep" / "embedding_2d.png", "baseline")
    assert out == tmp_path / "figures" / "deep" / "embedding_2d.png"
    _assert_png(out)
    _assert_png(plot_embedding_2d(x[:, :1], None, tmp_path / "one_dim.png", "one dimension"))
    many = np.arange(60) % 14  # more than 10 clusters: tab20
    _assert_png(plot_embedding_2d(x, many, tmp_path / "many.png", "14 clusters"))
    with pytest.raises(ValueError):
        plot_embedding_2d(x, labels[:5], tmp_path / "bad.png", "bad")


def test_pred_vs_obs_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    obs = rng.normal(size=50)
    pred = obs + rng.normal(scale=0.5, size=50)
    pred[3] = np.nan  # missing values are skipped
    data = {name: (obs, pred) for name in ("population", "crime", "theft", "burglary")}
    _assert_png(plot_pred_vs_obs(data, tmp_path / "pred_vs_obs.png", "ridge, shuffled folds"))
    _assert_png(plot_pred_vs_obs({"population": (obs, pred)}, tmp_path / "single.png", "one label"))
    with pytest.raises(ValueError):
        plot_pred_vs_obs({}, tmp_path / "empty.png", "none")
    with pytest.raises(ValueError, match="crime"):
        plot_pred_vs_obs({"crime": (obs, pred[:10])}, tmp_path / "bad.png", "bad")


def test_cluster_profiles_plot(tmp_path: Path, emb: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = emb
    rng = np.random.default_rng(2)
    feats = pd.DataFrame(rng.normal(size=(60, 12)), columns=[f"feature_{i}" for i in range(12)])
    feats["constant"] = 1.0
    profiles = cluster_profiles(labels, feats)
    _assert_png(plot_cluster_profiles(profiles, tmp_path / "cluster_profiles.png", top=8))
    with pytest.raises(ValueError):
        plot_cluster_profiles(profiles.drop(columns="zscore"), tmp_path / "bad.png")


def test_training_loss_plot(tmp_path: Path) -> None:
    _assert_png(plot_training_loss([3.0, 2.0, 1.5, 1.2, 1.1], tmp_path / "loss.png"))
    history = {"total": list(np.geomspace(100, 0.1, 60)), "poi": list(np.geomspace(50, 0.05, 60))}
    _assert_png(plot_training_loss(history, tmp_path / "loss_parts.png"))
    with pytest.raises(ValueError):
        plot_training_loss([], tmp_path / "empty.png")


def test_no_pyplot_figures_leak(tmp_path: Path, emb: tuple[np.ndarray, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    x, labels = emb
    plot_embedding_2d(x, labels, tmp_path / "a.png", "a")
    plot_training_loss([1.0, 0.5], tmp_path / "b.png")
    assert plt.get_fignums() == before


def test_cluster_colours_are_the_shared_palette() -> None:
    tab10 = [to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    tab20 = [to_hex(c) for c in matplotlib.colormaps["tab20"].colors]
    assert list(CLUSTER_COLOURS) == tab10 + tab20[1::2]  # tab10, then the light half of tab20
    # One colour per cluster number whatever k is: cluster 1 stays orange with 12 clusters (it was light
    # blue in the figures and orange on the map).
    for k in range(31):
        assert cluster_colours(k) == regionlens_common.cluster_colours(k)
        assert cluster_colours(k) == [cluster_colour(i) for i in range(k)]
    assert cluster_colours(12)[1] == "#ff7f0e"
    assert len(set(cluster_colours(31))) == 31
    with pytest.raises(ValueError):
        cluster_colours(-1)
