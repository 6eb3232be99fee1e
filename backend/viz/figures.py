"""Static PNG figures of a run: embedding map, predicted vs observed, cluster profiles, training loss.

Figures are drawn on standalone :class:`matplotlib.figure.Figure` objects with the Agg canvas, never
through pyplot, so no global figure state is created or leaked (safe in the worker and in tests).
Cluster colours come from :mod:`backend.viz.colors`, the same list the QGIS styling uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from backend.tasks.prediction import regression_metrics
from backend.viz.colors import cluster_colours
from regionlens_common import CLUSTER_FIELD

__all__ = [
    "DPI",
    "plot_embedding_2d",
    "plot_pred_vs_obs",
    "plot_cluster_profiles",
    "plot_training_loss",
]

#: Resolution of every PNG.
DPI = 110
_LEGEND_MAX = 20  # clusters beyond this are drawn but not listed in the legend
_LEGEND_CHARS = 48  # longest cluster name shown in the legend


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def _legend_text(c: int, size: int, names: Mapping[int, str] | None) -> str:
    text = f"cluster {c} ({size})"
    name = (names or {}).get(c, "")
    if name:
        text += ": " + (name if len(name) <= _LEGEND_CHARS else name[: _LEGEND_CHARS - 1] + "\u2026")
    return text


def plot_embedding_2d(
    emb: np.ndarray,
    labels: np.ndarray | None,
    path: str | Path,
    title: str = "Region embeddings (PCA)",
    names: Mapping[int, str] | None = None,
) -> Path:
    """Scatter of the embeddings projected on their first two principal components, coloured by cluster.

    Args:
        emb: N x d embeddings.
        labels: 0-based cluster of every region, or None for a single colour.
        path: PNG file to write (parent folders are created).
        title: Figure title.
        names: Cluster number -> readable name, shown in the legend.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``emb`` is empty or not finite, or ``labels`` has another length or negative values.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(emb, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"emb must be a non-empty, finite N x d array; got shape {x.shape}.")
    lab = np.zeros(len(x), dtype=int) if labels is None else np.asarray(labels).astype(int).ravel()
    if len(lab) != len(x) or (lab < 0).any():
        raise ValueError(f"labels must hold one non-negative cluster per row ({len(x)}), got {len(lab)}.")

    n_comp = min(2, x.shape[1], len(x))
    pca = PCA(n_components=n_comp, random_state=0)
    xy = pca.fit_transform(x)
    ratio = list(pca.explained_variance_ratio_)
    if n_comp < 2:
        xy = np.column_stack([xy, np.zeros((len(xy), 2 - n_comp))])
        ratio += [0.0] * (2 - n_comp)

    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    k = int(lab.max()) + 1
    colors = cluster_colours(k)
    size = float(np.clip(3000.0 / len(x), 4.0, 30.0))
    handles = []
    for c in range(k):
        sel = lab == c
        if not sel.any():
            continue
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=colors[c], alpha=0.8, linewidths=0)
        if labels is not None and c < _LEGEND_MAX:
            handles.append(
                Line2D([], [], marker="o", linestyle="", color=colors[c], label=_legend_text(c, int(sel.sum()), names))
            )
    if handles:
        ax.legend(handles=handles, fontsize="small", loc="best", ncol=1 if len(handles) <= 10 else 2)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pred_vs_obs(
    obs_pred: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    path: str | Path,
    title: str = "Out-of-fold predictions",
    units: Mapping[str, str] | None = None,
) -> Path:
    """Predicted against observed values, one panel per label, with the y = x line and R2.

    Pairs where either value is missing are left out (of the points and of R2).

    Args:
        obs_pred: Label -> ``(observed, predicted)`` arrays of equal length.
        path: PNG file to write (parent folders are created).
        title: Figure title.
        units: Optional label -> text shown in the axis labels (e.g. ``"log1p(Population per km2)"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``obs_pred`` is empty or a label's arrays differ in length.
    """
    if not obs_pred:
        raise ValueError("obs_pred is empty: nothing to plot.")
    n = len(obs_pred)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(4.2 * ncols, 4.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (label, (obs, pred)) in zip(axes.ravel(), obs_pred.items(), strict=False):
        o = np.asarray(obs, dtype=float).ravel()
        p = np.asarray(pred, dtype=float).ravel()
        if len(o) != len(p):
            raise ValueError(f"Label '{label}': {len(o)} observed but {len(p)} predicted values.")
        ok = np.isfinite(o) & np.isfinite(p)
        o, p = o[ok], p[ok]
        unit = (units or {}).get(label, "")
        ax.set_xlabel(f"observed {unit}".strip())
        ax.set_ylabel(f"predicted {unit}".strip())
        if len(o) == 0:
            ax.set_title(f"{label}: no data")
            continue
        size = float(np.clip(3000.0 / len(o), 4.0, 30.0))
        ax.scatter(o, p, s=size, color=cluster_colours(1)[0], alpha=0.6, linewidths=0)
        lo = float(min(o.min(), p.min()))
        hi = float(max(o.max(), p.max()))
        pad = 0.03 * (hi - lo) if hi > lo else 1.0
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", linewidth=1, linestyle="--")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        r2 = regression_metrics(o, p)["r2"]
        ax.set_title(f"{label}: R² = {r2:.2f} (n = {len(o)})")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _save(fig, path)


def plot_cluster_profiles(
    profiles: pd.DataFrame,
    path: str | Path,
    top: int = 8,
    title: str = "Cluster profiles (z-score of the feature mean)",
) -> Path:
    """Heatmap of the z-scores of the most distinctive features per cluster.

    The ``top`` features with the largest ``max |zscore|`` over clusters are shown; red is above the
    average region, blue below.

    Args:
        profiles: Output of :func:`backend.tasks.clustering.cluster_profiles` (columns ``cluster``,
            ``n_regions``, ``feature``, ``zscore``).
        path: PNG file to write (parent folders are created).
        top: Number of features shown.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``profiles`` is empty, lacks a needed column, or ``top < 1``.
    """
    missing = {CLUSTER_FIELD, "n_regions", "feature", "zscore"} - set(profiles.columns)
    if missing:
        raise ValueError(f"profiles lacks columns {sorted(missing)}.")
    if profiles.empty:
        raise ValueError("profiles is empty: nothing to plot.")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}.")
    z = profiles.pivot_table(index=CLUSTER_FIELD, columns="feature", values="zscore", aggfunc="first", sort=True)
    strength = z.abs().max(axis=0).sort_values(ascending=False, kind="stable")
    feats = list(strength.index[:top])
    z = z[feats]
    sizes = profiles.groupby(CLUSTER_FIELD)["n_regions"].first()
    vmax = float(np.nanmax(np.abs(z.to_numpy()))) if z.size else 1.0
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0

    fig = _new_figure(max(5.0, 0.8 * len(feats) + 3.0), max(3.0, 0.45 * len(z) + 2.0))
    ax = fig.add_subplot()
    im = ax.imshow(z.to_numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(feats)), [str(f) for f in feats], rotation=45, ha="right")
    ax.set_yticks(range(len(z)), [f"cluster {int(c)} ({int(sizes.loc[c])})" for c in z.index])
    colors = cluster_colours(int(max(z.index)) + 1)
    for tick, c in zip(ax.get_yticklabels(), z.index, strict=True):
        tick.set_color(colors[int(c)])
        tick.set_fontweight("bold")
    if z.size <= 240:
        for (i, j), val in np.ndenumerate(z.to_numpy()):
            if np.isfinite(val):
                ax.text(
                    j,
                    i,
                    f"{val:.1f}".replace("-0.0", "0.0"),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(val) > 0.6 * vmax else "black",
                )
    fig.colorbar(im, ax=ax, label="z-score")
    ax.set_title(title)
    return _save(fig, path)


def plot_training_loss(
    history: Sequence[float] | Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "Training loss",
) -> Path:
    """Loss per epoch (or step), one line per named series.

    A logarithmic y axis is used when every value is positive and they span more than two decades.

    Args:
        history: Loss values, or series name -> loss values (e.g. ``{"total": [...], "poi": [...]}``).
        path: PNG file to write (parent folders are created).
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If there is no value to plot.
    """
    series = {"loss": list(history)} if not isinstance(history, Mapping) else {k: list(v) for k, v in history.items()}
    series = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v) > 0}
    if not series:
        raise ValueError("history is empty: nothing to plot.")
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    colors = cluster_colours(len(series))
    for (name, values), color in zip(series.items(), colors, strict=True):
        ax.plot(np.arange(1, len(values) + 1), values, color=color, label=name, marker="." if len(values) < 40 else "")
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()])
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize="small")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
