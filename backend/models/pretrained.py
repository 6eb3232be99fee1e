"""Method ``pretrained``: a satellite-embedding raster's per-region vectors used as the embedding.

Pretrained satellite embeddings (AlphaEarth Foundations / Google Satellite Embedding, TESSERA) are already
region features: the ``embedding`` view (:mod:`backend.views.embedding`) holds, per region, the
L2-normalised mean of every band. This method passes that view through unchanged (``pca = false``, the
default: the embedding has as many columns as the view, whatever ``dim`` says), or reduces it by PCA to
``dim`` (``pca = true``; fitted on the regions it is fitted on, so it is inductive like the baseline: new
regions are projected on the saved components). It trains nothing and never sees a label, and it sits in
the leaderboard and in ``fusion`` (as a block) beside the learned methods, so a planner sees whether a
POI method adds anything on top of the satellite embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import InputError
from backend.models._base import WEIGHTS_FILE, Embedder, EmbedderParams, param
from backend.progress import Progress
from backend.views._base import Views

__all__ = ["PretrainedEmbedder", "PretrainedParams"]


@dataclass
class PretrainedParams(EmbedderParams):
    """Parameters of ``pretrained``."""

    pca: bool = param(False, "Reduce with PCA",
                      "Reduce the satellite embedding to the embedding size by PCA (off: every band's mean is kept)")


class PretrainedEmbedder(Embedder[PretrainedParams]):
    """The satellite-embedding view as the embedding (optionally PCA to ``dim``)."""

    name = "pretrained"
    title = "Pretrained (satellite-embedding raster such as AlphaEarth or TESSERA: region means, no training)"
    uses_views = ("embedding",)
    default_dim = 64
    deterministic = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mean = np.zeros(0)
        self._components: np.ndarray | None = None

    def _check_views(self, views: Views) -> None:
        if "embedding" not in views.tables:
            raise InputError(
                "pretrained uses a satellite-embedding raster, and the inputs have none. Add the raster with "
                'kind = "embedding" ([[rasters]]; in the run dock: raster kind "embedding"), or choose another method.'
            )

    def _matrix(self, views: Views) -> np.ndarray:
        table = views.tables.get("embedding")
        if table is None:
            raise InputError("pretrained: the regions to embed have no satellite-embedding raster; add the raster "
                             "the model was fitted with (kind = \"embedding\").")
        return np.nan_to_num(table.reindex(columns=self.vocabulary["embedding"], fill_value=0.0)
                             .to_numpy(dtype=np.float64))

    def _fit(self, views: Views, progress: Progress) -> None:
        self.vocabulary = {"embedding": [str(c) for c in views.tables["embedding"].columns]}
        x = self._matrix(views)
        self._mean = x.mean(axis=0)
        self._components = None
        if self.params.pca:
            _, _, vt = np.linalg.svd(x - self._mean, full_matrices=False)
            k = min(self.dim, vt.shape[0])
            comps = vt[:k]
            signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
            self._components = comps * np.where(signs == 0, 1.0, signs)[:, None]
            progress.update(1.0, f"pretrained: PCA of {x.shape[1]} bands to {k} dimensions")
        else:
            if self.dim != x.shape[1]:
                progress.log(f"pretrained: the embedding keeps the {x.shape[1]} columns of the satellite embedding "
                             f"(dim {self.dim} applies with pca = true).")
            progress.update(1.0, f"pretrained: {x.shape[1]} columns")

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        x = self._matrix(views)
        out = x if self._components is None else (x - self._mean) @ self._components.T
        progress.update(1.0, "pretrained embeddings")
        return out

    def _save_weights(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"mean": np.ascontiguousarray(self._mean)}
        if self._components is not None:
            tensors["components"] = np.ascontiguousarray(self._components)
        save_file(tensors, str(folder / WEIGHTS_FILE))

    def _load_weights(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        t = load_file(str(folder / WEIGHTS_FILE))
        self._mean = t["mean"]
        self._components = t.get("components")
