"""Tests of backend.viz: every figure writes a real, non-blank PNG; colours match matplotlib's palettes."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from backend.tasks.clustering import cluster_profiles
from backend.viz import (
    CLUSTER_COLORS,
    CLUSTER_COLORS_MANY,
    cluster_colors,
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


def test_cluster_colors_match_matplotlib() -> None:
    assert CLUSTER_COLORS == [to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    assert CLUSTER_COLORS_MANY == [to_hex(c) for c in matplotlib.colormaps["tab20"].colors]
    assert cluster_colors(4) == CLUSTER_COLORS[:4]
    assert cluster_colors(10) == CLUSTER_COLORS
    assert cluster_colors(12) == CLUSTER_COLORS_MANY[:12]
    assert cluster_colors(25)[20:] == CLUSTER_COLORS_MANY[:5]
    with pytest.raises(ValueError):
        cluster_colors(-1)
