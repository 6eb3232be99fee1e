"""Spatial context: a stage after any embedder that appends the mean embedding of each region's neighbours.

The idea of srai's ContextualCountEmbedder (Woźniak and Szymański, 2021), applied to any embedding instead of
raw counts: a region is described by what it is and by what surrounds it. Two kinds of neighbourhood,
freely combined:

* adjacency rings ``1..rings``: ring k holds the regions exactly k steps away in the queen-contiguity graph
  of the region polygons (shared boundary or corner, 1 m tolerance; :mod:`backend.views.adjacency`);
* distance bands ``distances_m``: band i holds the regions whose centroids lie farther than the previous
  distance and at most ``distances_m[i]`` metres away (the region itself excluded).

For every ring and band the mean embedding of its regions is appended (a region with no region in a ring
or band gets its own embedding there, so an isolated region is its own neighbourhood). Everything is
computed with a spatial index and sparse matrices, never an N x N dense matrix.

The stage has no learned weights: it depends only on the polygons, so it is inductive wherever the
embedder is (a saved model applied to another layer gets the context of that layer's regions). It is saved
as ``context.json`` next to the embedder's ``config.json``.

Configuration (``context`` in the run configuration, applied to every method)::

    context = {rings = 1, distances_m = [1000]}
    context = "standard"        # a preset, see CONTEXT_PRESETS
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from backend.errors import ConfigError, InputError

__all__ = ["CONTEXT_PRESETS", "CONTEXT_FILE", "ContextSpec", "SpatialContext", "append_context", "parse_context",
           "load_context"]

#: Named settings accepted for ``context``.
CONTEXT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "adjacent": {"rings": 1},
    "1km": {"distances_m": [1000.0]},
    "standard": {"rings": 1, "distances_m": [1000.0]},
}
#: File a saved model holds its context stage in.
CONTEXT_FILE = "context.json"
#: Most adjacency rings allowed (each ring is one more block of columns).
MAX_RINGS = 5


@dataclass
class ContextSpec:
    """Which neighbourhoods to average: adjacency rings ``1..rings`` and distance bands (metres)."""

    rings: int = 0
    distances_m: list[float] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when no neighbourhood is configured."""
        return self.rings == 0 and not self.distances_m

    def describe(self) -> str:
        """Short human description, e.g. ``rings 1; within 1000 m``."""
        parts = []
        if self.rings:
            parts.append("ring 1" if self.rings == 1 else f"rings 1-{self.rings}")
        parts += [f"{int(d) if float(d).is_integer() else d} m" for d in self.distances_m]
        return "; ".join(parts) or "none"


def parse_context(value: Any, where: str = "context") -> ContextSpec | None:
    """Validate a ``context`` setting: None, a preset name or a table ``{rings, distances_m}``.

    Returns:
        The spec, or None when no context is asked for.

    Raises:
        ConfigError: On an unknown preset, unknown keys, a negative or non-integer ring count, or distances
            that are not positive, strictly increasing numbers.
    """
    if value is None or value is False:
        return None
    if isinstance(value, str):
        if value not in CONTEXT_PRESETS:
            raise ConfigError(f"{where}: unknown preset '{value}'; use one of {sorted(CONTEXT_PRESETS)} or a table "
                              "like {rings = 1, distances_m = [1000]}.")
        value = CONTEXT_PRESETS[value]
    if isinstance(value, ContextSpec):
        value = asdict(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a preset name or a table {{rings = 1, distances_m = [1000]}}, "
                          f"not {type(value).__name__}.")
    unknown = sorted(set(value) - {"rings", "distances_m"})
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed: ['distances_m', 'rings'].")
    rings = value.get("rings", 0)
    if isinstance(rings, bool) or not isinstance(rings, int) or not 0 <= rings <= MAX_RINGS:
        raise ConfigError(f"{where}.rings must be an integer from 0 to {MAX_RINGS}, not {rings!r}.")
    dists = value.get("distances_m", [])
    if isinstance(dists, int | float) and not isinstance(dists, bool):
        dists = [dists]
    if not isinstance(dists, list | tuple) or any(isinstance(d, bool) or not isinstance(d, int | float)
                                                  for d in dists):
        raise ConfigError(f"{where}.distances_m must be a list of distances in metres, not {dists!r}.")
    dists = [float(d) for d in dists]
    if any(not np.isfinite(d) or d <= 0 for d in dists) or any(b <= a for a, b in zip(dists, dists[1:], strict=False)):
        raise ConfigError(f"{where}.distances_m must be positive and strictly increasing, not {dists}.")
    spec = ContextSpec(rings=rings, distances_m=dists)
    return None if spec.empty else spec


class SpatialContext:
    """Appends neighbour means of an embedding (see the module docstring).

    Args:
        spec: The neighbourhoods (a :class:`ContextSpec`, a preset name or a ``{rings, distances_m}`` dict).
        tolerance_m: Largest gap between polygons still counted as a shared boundary.

    Raises:
        ConfigError: If ``spec`` is invalid or empty.
    """

    def __init__(self, spec: ContextSpec | str | Mapping[str, Any], tolerance_m: float = 1.0) -> None:
        parsed = parse_context(spec)
        if parsed is None:
            raise ConfigError("A spatial context needs at least one adjacency ring or distance band.")
        self.spec = parsed
        self.tolerance_m = float(tolerance_m)
        self.input_dim: int | None = None

    # ------------------------------------------------------------------------------------------ API
    def fit(self, embeddings: pd.DataFrame, geometry: Any = None) -> SpatialContext:
        """Remember the embedding width (the stage has no weights); returns ``self``."""
        self.input_dim = int(embeddings.shape[1])
        return self

    def transform(self, embeddings: pd.DataFrame, geometry: Any) -> pd.DataFrame:
        """The embedding with one neighbour-mean block per ring and band appended (columns ``emb_000``...).

        Args:
            embeddings: N x d frame indexed by ``region_id``.
            geometry: The regions' polygons (GeoSeries in a metric CRS), aligned with ``embeddings``.

        Raises:
            RuntimeError: If called before :meth:`fit`.
            InputError: If the geometry is missing or does not match the embedding rows.
        """
        from backend.models._base import embedding_frame

        if self.input_dim is None:
            raise RuntimeError("SpatialContext: call fit() (or load()) before transform().")
        if embeddings.shape[1] != self.input_dim:
            raise InputError(f"The spatial context was fitted on {self.input_dim}-d embeddings, got "
                             f"{embeddings.shape[1]} columns.")
        x = embeddings.to_numpy(dtype=float)
        return embedding_frame(append_context(x, self.neighbourhoods(geometry, len(x))), embeddings.index)

    def fit_transform(self, embeddings: pd.DataFrame, geometry: Any) -> pd.DataFrame:
        """:meth:`fit` then :meth:`transform`."""
        return self.fit(embeddings, geometry).transform(embeddings, geometry)

    def neighbourhoods(self, geometry: Any, n: int) -> list[sp.csr_matrix]:
        """One sparse N x N 0/1 matrix per ring (1..rings) then per distance band (self excluded)."""
        if geometry is None:
            raise InputError("The spatial context needs the region polygons; none are available here.")
        if len(geometry) != n:
            raise InputError(f"The spatial context got {len(geometry)} polygons for {n} embedding rows.")
        out: list[sp.csr_matrix] = []
        if self.spec.rings:
            import geopandas as gpd

            from backend.views.adjacency import adjacency_matrix

            adj = adjacency_matrix(gpd.GeoDataFrame(geometry=np.asarray(geometry)), tolerance=self.tolerance_m)
            out += _rings(adj, self.spec.rings)
        if self.spec.distances_m:
            cent = np.asarray(geometry.centroid.apply(lambda p: (p.x, p.y)).tolist(), dtype=float)
            out += _bands(cent, self.spec.distances_m)
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``context.json`` into ``folder``; returns the file."""
        path = Path(folder) / CONTEXT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"spec": asdict(self.spec), "tolerance_m": self.tolerance_m,
                                    "input_dim": self.input_dim}, indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> SpatialContext:
        """Read the stage written by :meth:`save`."""
        data = json.loads((Path(folder) / CONTEXT_FILE).read_text(encoding="utf-8"))
        stage = cls(data["spec"], tolerance_m=data.get("tolerance_m", 1.0))
        stage.input_dim = data.get("input_dim")
        return stage


def load_context(folder: str | Path) -> SpatialContext | None:
    """The context stage saved with a model in ``folder``, or None when the model has none."""
    return SpatialContext.load(folder) if (Path(folder) / CONTEXT_FILE).is_file() else None


def append_context(x: np.ndarray, neighbourhoods: list[sp.csr_matrix]) -> np.ndarray:
    """``x`` with the mean over each neighbourhood (see :meth:`SpatialContext.neighbourhoods`) appended."""
    return np.hstack([x] + [_row_mean(w, x) for w in neighbourhoods])


def _row_mean(w: sp.csr_matrix, x: np.ndarray) -> np.ndarray:
    """Mean of the rows of ``x`` selected by each row of ``w``; a row of ``w`` without entries gives its own row."""
    counts = np.asarray(w.sum(axis=1)).ravel()
    mean = w @ x
    has = counts > 0
    mean[has] /= counts[has, None]
    mean[~has] = x[~has]
    return mean


def _rings(adj: sp.csr_matrix, rings: int) -> list[sp.csr_matrix]:
    """Regions exactly 1..rings steps away in the graph ``adj`` (boolean sparse frontier expansion)."""
    n = adj.shape[0]
    a = (adj != 0).astype(np.int8).tocsr()
    reached = (sp.identity(n, dtype=np.int8, format="csr") + a).astype(bool).astype(np.int8)
    out = [a.astype(float)]
    frontier = a
    for _ in range(rings - 1):
        step = ((frontier @ a) > 0).astype(np.int8)
        new = (step - step.multiply(reached)).tocsr()
        new.eliminate_zeros()
        out.append(new.astype(float))
        reached = ((reached + new) > 0).astype(np.int8)
        frontier = new
    return out


def _bands(xy: np.ndarray, distances: list[float]) -> list[sp.csr_matrix]:
    """Regions whose centroids lie in (previous distance, distance], self excluded (k-d tree, sparse)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    n = len(xy)
    pairs = tree.sparse_distance_matrix(tree, max_distance=float(distances[-1]), output_type="coo_matrix")
    i, j, d = pairs.row, pairs.col, pairs.data
    keep = i != j
    i, j, d = i[keep], j[keep], d[keep]
    out, lo = [], -1.0
    for hi in distances:
        sel = (d > lo) & (d <= hi)
        out.append(sp.csr_matrix((np.ones(int(sel.sum())), (i[sel], j[sel])), shape=(n, n)))
        lo = hi
    return out
