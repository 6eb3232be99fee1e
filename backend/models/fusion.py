"""Method ``fusion``: the other methods of the run and the raw views, each with its spatial context, combined per label.

Blocks: the embedding of every other method of the run (as that method learned it, before any run-level
context; ``pretrained`` gives the satellite embedding as such a block) and every raw view the run has (log1p POI
counts, image statistics, satellite-embedding means, land-use shares, OD rows,
each standardised and scaled to total variance 1 exactly as the baseline does), each with the mean over
its neighbourhoods appended (``context``, default ``"standard"``: adjacency ring 1 and centroids within
1 km; see :mod:`backend.tasks.context`).

* Prediction (the reason fusion exists): per label, nested cross-validation stacks the blocks, choosing
  the weights inside every training fold only (:mod:`backend.tasks.fusion`); the metrics table and
  ``run.json`` say which blocks each label used.
* The written embedding (layer ``embeddings``; clustering): every block centred and scaled to total
  variance 1, concatenated, PCA to ``dim``.
* ``apply``: the sibling models of the same run embed the new regions, then the saved standardisation,
  context and PCA give fusion's embedding.

No training and no random choice: fusion is deterministic given its blocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import InputError
from backend.models._base import WEIGHTS_FILE, Embedder, EmbedderParams, param
from backend.models.baseline import BaselineEmbedder
from backend.progress import Progress
from backend.tasks.context import CONTEXT_PRESETS, ContextSpec, SpatialContext, append_context, parse_context
from backend.views._base import Views

__all__ = ["FusionEmbedder", "FusionParams", "FUSION_FILE"]

#: Which sources a saved fusion model combines (next to config.json).
FUSION_FILE = "fusion.json"


@dataclass
class FusionParams(EmbedderParams):
    """Parameters of fusion."""

    context: str = param("standard", "Spatial context",
                         "Neighbour means appended to every block: adjacent = touching regions, 1km = regions "
                         "within 1 km, standard = both, none = off", choices=tuple(CONTEXT_PRESETS))
    raw_views: bool = param(True, "Raw views", "Use the raw views (POI counts, image statistics, satellite "
                            "embedding, land use, OD rows) as blocks too, beside the other methods' embeddings")
    inner_folds: int = param(5, "Inner folds", "Folds of the nested cross-validation that chooses the blocks "
                             "inside each training fold", minimum=2, maximum=20)

    def checks(self) -> list[tuple[bool, str]]:
        return [(isinstance(self.inner_folds, int) and self.inner_folds >= 2,
                 f"inner_folds must be an integer of at least 2, not {self.inner_folds!r}")]


class FusionEmbedder(Embedder[FusionParams]):
    """Blocks of the other methods and the raw views with spatial context; stacked per label."""

    name = "fusion"
    title = "Fusion (the run's other methods and raw views, spatial context, chosen per label)"
    uses_views = ("poi_counts", "image_stats", "landuse", "mobility", "embedding")
    min_views = 0
    combines_methods = True
    default_dim = 64
    deterministic = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context_spec: ContextSpec | None = parse_context(self.params.context, "fusion: context")
        self.sources: dict[str, pd.DataFrame] = {}
        self.source_members: dict[str, list[pd.DataFrame]] = {}
        self.source_names: list[str] = []
        self._views: dict[str, BaselineEmbedder] = {}
        self._block_mean: dict[str, np.ndarray] = {}
        self._block_scale: dict[str, float] = {}
        self._components = np.zeros((0, 0))

    # ------------------------------------------------------------------------------------------ API
    def set_sources(self, embeddings: dict[str, pd.DataFrame],
                    members: dict[str, list[pd.DataFrame]] | None = None) -> FusionEmbedder:
        """The other methods' embeddings of the regions to fit or transform (method name -> frame), and, for
        a method trained as a seed ensemble, its members' embeddings (used by :meth:`prediction_blocks`)."""
        self.sources = {k: v for k, v in embeddings.items() if k != self.name}
        self.source_members = {k: list(v) for k, v in (members or {}).items() if k in self.sources and len(v) > 1}
        return self

    def blocks(self, views: Views) -> dict[str, np.ndarray]:
        """Block name -> N x d matrix: sources then raw views, each with its context appended (after fit)."""
        if sorted(self.sources) != self.source_names:
            raise InputError(f"fusion combines {self.source_names}; got embeddings of {sorted(self.sources)}.")
        out: dict[str, np.ndarray] = {}
        for name in self.source_names:
            out[name] = self.sources[name].reindex(views.region_ids).to_numpy(dtype=float)
        for view, model in self._views.items():
            sub = _only(views, view)
            out[view] = model.standardised(sub)  # a view missing for new regions counts as average
        hoods = self._neighbourhoods(views)
        if hoods is not None:
            out = {k: append_context(x, hoods) for k, x in out.items()}
        if not out:
            raise InputError("fusion has nothing to combine: run it with other methods or with POIs, imagery, "
                             "land use or an OD table.")
        return out

    def prediction_blocks(self, views: Views) -> dict[str, np.ndarray | list[np.ndarray]]:
        """The blocks prediction stacks: as :meth:`blocks`, but a source trained as a seed ensemble is the
        list of its members' matrices (each with its context), so it predicts as that ensemble does (one
        regressor per member, averaged) rather than through the PCA of its members."""
        out: dict[str, np.ndarray | list[np.ndarray]] = dict(self.blocks(views))
        hoods = self._neighbourhoods(views)
        for name, frames in self.source_members.items():
            mats = [f.reindex(views.region_ids).to_numpy(dtype=float) for f in frames]
            out[name] = [append_context(x, hoods) for x in mats] if hoods is not None else mats
        return out

    def _neighbourhoods(self, views: Views) -> Any:
        if self.context_spec is None or views.geometry is None:
            return None
        return SpatialContext(self.context_spec).neighbourhoods(views.geometry, len(views))

    # ------------------------------------------------------------------------------- implementation
    def _fit(self, views: Views, progress: Progress) -> None:
        self.source_names = sorted(self.sources)
        self._views = {}

        def make_blocks() -> dict[str, np.ndarray]:
            if self.params.raw_views:
                for view in self.views_used(views):
                    self._views[view] = BaselineEmbedder(dim=1).fit(_only(views, view))
            self.vocabulary = {v: list(m.vocabulary[v]) for v, m in self._views.items()}
            return self.blocks(views)

        # the blocks (with their spatial context) and the SVD are single long calls at 250,000 regions: they run
        # under Progress.wait, so progress (a heartbeat) and cancel keep working meanwhile
        blocks = progress.wait(make_blocks, "fusion blocks", 0.0)
        progress.update(0.5, f"fusion blocks: {', '.join(blocks)}")

        def balance() -> np.ndarray:
            for k, x in blocks.items():
                self._block_mean[k] = x.mean(axis=0)
                self._block_scale[k] = max(float(np.sqrt(x.var(axis=0).sum())), 1e-12)
            return self._balanced(blocks)

        z = progress.wait(balance, "fusion blocks balanced", 0.5)
        _, _, vt = progress.wait(lambda: np.linalg.svd(z, full_matrices=False), "fusion PCA", 0.5)
        k = min(self.dim, vt.shape[0])
        comps = vt[:k]
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        self._components = comps * np.where(signs == 0, 1.0, signs)[:, None]
        progress.update(1.0, f"fusion: {len(blocks)} blocks, PCA to {k} dimensions")

    def _balanced(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        return np.hstack([(blocks[k] - self._block_mean[k]) / self._block_scale[k] for k in self._block_mean])

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        out = progress.wait(lambda: self._balanced(self.blocks(views)) @ self._components.T, "fusion embeddings", 0.0)
        progress.update(1.0, "fusion embeddings")
        return out

    def _save_weights(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        for view, model in self._views.items():
            model.save(folder / f"view_{view}")
        tensors = {"components": self._components}
        for k in self._block_mean:
            tensors[f"mean.{k}"] = self._block_mean[k]
            tensors[f"scale.{k}"] = np.array([self._block_scale[k]])
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
        (folder / FUSION_FILE).write_text(json.dumps({"sources": self.source_names, "views": list(self._views),
                                                      "blocks": list(self._block_mean)}, indent=2), encoding="utf-8")

    def _load_weights(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        meta = json.loads((folder / FUSION_FILE).read_text(encoding="utf-8"))
        self.source_names = list(meta["sources"])
        self._views = {v: BaselineEmbedder.load(folder / f"view_{v}") for v in meta["views"]}
        t = load_file(str(folder / WEIGHTS_FILE))
        self._components = t["components"]
        self._block_mean = {k: t[f"mean.{k}"] for k in meta["blocks"]}
        self._block_scale = {k: float(t[f"scale.{k}"][0]) for k in meta["blocks"]}


def _only(views: Views, view: str) -> Views:
    """The views reduced to one view (for a per-view baseline standardisation)."""
    if view == "mobility":
        return Views(region_ids=views.region_ids, mobility=views.mobility)
    tables = {view: views.tables[view]} if view in views.tables else {}
    return Views(region_ids=views.region_ids, tables=tables)
