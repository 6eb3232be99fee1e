"""Baseline embedder: the raw views, standardised, weighted equally, concatenated and reduced by PCA.

Every result table shows this beside the learned methods so that what learning adds is measured,
not assumed. A satellite-embedding raster's view (``embedding``) is one continuous view like the others. Each view
is centred and scaled so that it carries a total variance of one, so a wide view (70 POI categories) does not
outvote a narrow one (15 image statistics). Continuous views (image
statistics, land-use shares) are standardised column by column first. Count-like views (POI counts,
mobility rows) are log1p-transformed and scaled as a whole: standardising every category column would
blow a category seen once in the city up to a z-score of about sqrt(N) and let single rare POIs drive
the embedding. Optionally the features of regions whose centroids lie within ``neighbourhood_m`` metres
are averaged and appended (a spatial lag), a cheap context signal that needs no training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.models._base import WEIGHTS_FILE, Embedder, EmbedderParams, param
from backend.progress import Progress
from backend.views._base import Views
from regionlens_common import DEFAULT_METHOD

__all__ = ["BaselineEmbedder", "BaselineParams"]

_COUNT_VIEWS = {"poi_counts", "mobility"}


@dataclass
class BaselineParams(EmbedderParams):
    """Parameters of the baseline."""

    log1p_counts: bool = param(
        True, "Log-scale counts", "Take log(1 + x) of POI counts and mobility rows before standardising them.")
    neighbourhood_m: float = param(
        0.0, "Neighbourhood radius (m)",
        "Above 0: add the mean features of the regions within this many metres (0 = none).", minimum=0.0)


class BaselineEmbedder(Embedder[BaselineParams]):
    """Standardised, view-balanced concatenation of the raw views reduced to ``dim`` by PCA."""

    name = DEFAULT_METHOD
    title = "Baseline (views standardised, concatenated, PCA)"
    uses_views = ("poi_counts", "image_stats", "landuse", "mobility", "embedding")
    deterministic = True  # no random choice: every seed gives the same embedding

    def standardised(self, views: Views) -> np.ndarray:
        """The fitted views, standardised and view-balanced, before PCA (what the PCA compresses)."""
        return self._stack(views)

    def _block(self, views: Views, view: str) -> np.ndarray | None:
        """The raw matrix of one view aligned to the fitted vocabulary, or None if it cannot be built."""
        cols = self.vocabulary[view]
        if view == "mobility":
            if views.mobility is None or 2 * views.mobility.shape[1] != len(cols):
                return None  # other regions: mobility columns do not transfer
            mob = np.asarray(views.mobility, dtype=np.float64)
            mat = np.hstack([mob, mob.T])  # where trips go and where they come from
        else:
            table = views.tables.get(view)
            if table is None:
                return None
            mat = table.reindex(columns=cols, fill_value=0.0).to_numpy(dtype=np.float64)
        if view in _COUNT_VIEWS and self.params.log1p_counts:
            mat = np.log1p(np.clip(mat, 0.0, None))
        return np.nan_to_num(mat)

    def _stack(self, views: Views) -> np.ndarray:
        parts = []
        for view in self.vocabulary:
            mat = self._block(views, view)
            width = len(self._mean[view])
            # A view missing at transform time contributes its fitted mean (zero after centring).
            parts.append(np.zeros((len(views), width)) if mat is None else (mat - self._mean[view]) / self._std[view])
        x = np.hstack(parts)
        if self.params.neighbourhood_m > 0 and views.centroids is not None:
            x = np.hstack([x, _neighbour_mean(x, np.asarray(views.centroids), self.params.neighbourhood_m)])
        return x

    def _fit(self, views: Views, progress: Progress) -> None:
        self.vocabulary = {}
        for view in self.views_used(views):
            if view == "mobility":
                ids = [str(r) for r in views.region_ids]
                self.vocabulary["mobility"] = [f"out_{r}" for r in ids] + [f"in_{r}" for r in ids]
            else:
                self.vocabulary[view] = [str(c) for c in views.tables[view].columns]
        self._mean, self._std = {}, {}
        for view in self.vocabulary:
            mat = self._block(views, view)
            assert mat is not None  # the view is present at fit time
            std = mat.std(axis=0)
            self._mean[view] = mat.mean(axis=0)
            if view in _COUNT_VIEWS:  # one scale for the whole view: total variance 1
                total = float(np.sqrt((std**2).sum()))
                self._std[view] = np.full(mat.shape[1], total if total > 1e-12 else 1.0)
            else:  # standardise each column, then total variance 1
                self._std[view] = np.where(std > 1e-12, std, 1.0) * np.sqrt(mat.shape[1])
        progress.update(0.5, "standardised views")
        x = self._stack(views)
        x_mean = x.mean(axis=0)
        # PCA by SVD of the centred matrix; each component's sign is fixed so results are reproducible.
        # (one LAPACK call: seconds at 250,000 regions, so it runs under Progress.wait to keep reporting and
        # cancellable)
        _, s, vt = progress.wait(lambda: np.linalg.svd(x - x_mean, full_matrices=False), "PCA")
        k = min(self.dim, vt.shape[0])
        comps = vt[:k]
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
        self._x_mean = x_mean
        self._components = comps
        var = s**2
        self.explained_variance_ratio = (var[:k] / var.sum()).tolist() if var.sum() > 0 else [0.0] * k
        if k < self.dim:
            progress.log(f"baseline: only {k} components exist (asked for {self.dim}); the embedding has {k} columns.")
        progress.update(1.0, f"PCA to {k} dimensions")

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        x = self._stack(views)
        out = (x - self._x_mean) @ self._components.T
        progress.update(1.0, "baseline embeddings")
        return out

    def _save_weights(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"x_mean": self._x_mean, "components": self._components}
        for view in self.vocabulary:
            tensors[f"mean.{view}"] = np.asarray(self._mean[view], dtype=np.float64)
            tensors[f"std.{view}"] = np.asarray(self._std[view], dtype=np.float64)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))

    def _load_weights(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        t = load_file(str(folder / WEIGHTS_FILE))
        self._x_mean = t["x_mean"]
        self._components = t["components"]
        self._mean = {v: t[f"mean.{v}"] for v in self.vocabulary}
        self._std = {v: t[f"std.{v}"] for v in self.vocabulary}


def _neighbour_mean(x: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray:
    """Mean of the rows of ``x`` whose points lie within ``radius`` of each point (itself included)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    out = np.empty_like(x)
    for i, nbrs in enumerate(tree.query_ball_point(xy, r=radius)):
        out[i] = x[nbrs].mean(axis=0)
    return out

