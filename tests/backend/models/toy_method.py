"""A toy region embedder that exists only for the tests: adding a method is this module plus one
``register`` line (in the backend itself: one line in ``backend.models.EMBEDDERS``).

The tests make the worker load it with ``REGIONLENS_EXTRA_METHODS=tests.backend.models.toy_method``
(``backend.models.EXTRA_METHODS_ENV``) and check that the run dock, the Processing toolbox and the Apply
dialog offer it with the parameters it describes here, without any change to the plugin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.models import register
from backend.models._base import Embedder, EmbedderParams, param
from backend.progress import Progress
from backend.views._base import Views

__all__ = ["TOY_MODULE", "ToyEmbedder", "ToyParams"]

#: This module's name, as the environment variable names it.
TOY_MODULE = "tests.backend.models.toy_method"


@dataclass
class ToyParams(EmbedderParams):
    """Parameters of the toy method: one of each kind a menu offers."""

    scale: float = param(2.0, "Scale", "Multiplies every category share.", minimum=0.5, maximum=10.0)
    norm: str = param("l1", "Normalisation", "How each region's counts become shares.", choices=("l1", "l2"))
    repeats: int = param(3, "Repeats", "How many times the shares are tiled to fill the embedding.", minimum=1)
    centre: bool = param(False, "Centre", "Subtract the mean share of every category.")


class ToyEmbedder(Embedder[ToyParams]):
    """POI category shares, tiled to ``dim`` columns: nothing learned."""

    name = "toy"
    title = "Toy (POI category shares, tests only)"
    uses_views = ("poi_counts",)
    deterministic = True
    default_dim = 6

    def _fit(self, views: Views, progress: Progress) -> None:
        self.vocabulary = {"poi_counts": [str(c) for c in views.tables["poi_counts"].columns]}
        progress.update(1.0, "toy: vocabulary")

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        table = views.tables.get("poi_counts")
        cols = self.vocabulary["poi_counts"]
        counts = np.zeros((len(views), len(cols))) if table is None else (
            table.reindex(columns=cols, fill_value=0.0).to_numpy(dtype=np.float64))
        order = 1 if self.params.norm == "l1" else 2
        norms = np.linalg.norm(counts, ord=order, axis=1, keepdims=True)
        shares = self.params.scale * counts / np.where(norms > 0, norms, 1.0)
        if self.params.centre:
            shares = shares - shares.mean(axis=0)
        tiled = np.tile(shares, (1, max(self.params.repeats, -(-self.dim // max(len(cols), 1)))))
        return tiled[:, : self.dim]

    def _save_weights(self, folder: Path) -> None:
        (folder / "toy.json").write_text(json.dumps({"columns": self.vocabulary["poi_counts"]}), encoding="utf-8")

    def _load_weights(self, folder: Path) -> None:
        json.loads((folder / "toy.json").read_text(encoding="utf-8"))


register(ToyEmbedder)
