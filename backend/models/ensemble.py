"""Seed ensembles: one learned method trained with ``k`` seeds, used as one model.

A learned embedding moves with its training seed (HAFusion's crime R2 on Manhattan spans 0.65 to 0.76
between seeds). ``ensemble = k`` in a method's configuration trains the method ``k`` times, with seeds
``seed, seed + 1, ..., seed + k - 1``:

* prediction: in every training fold one regressor is fitted on each member's embedding and the test
  fold's prediction is their mean (:func:`backend.tasks.prediction.evaluate_ensemble`);
* the written embedding (layer ``embeddings``, clustering, the embedding explorer): the members'
  embeddings, each centred and scaled to total variance 1, concatenated and reduced to ``dim`` by PCA
  (fitted on the training regions; the components' signs fixed for reproducibility);
* ``apply``: every member embeds the new regions and the saved PCA combines them, so the ensemble is
  inductive wherever its method is.

Saved as ``config.json`` (method name, ``ensemble``: k) with one sub-folder ``member_<i>`` per member and
the PCA in ``ensemble.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import ConfigError
from backend.models._base import CONFIG_FILE, Embedder, embedding_frame
from backend.progress import Progress
from backend.views._base import Views

__all__ = ["SeedEnsemble", "ENSEMBLE_WEIGHTS", "fit_combination", "combine_seeds"]

ENSEMBLE_WEIGHTS = "ensemble.safetensors"


def fit_combination(blocks: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, per-column scale and PCA components that combine member embeddings into one of ``dim`` columns.

    Every member is centred and scaled to total variance 1 (so every seed weighs the same), the members are
    concatenated, and the leading ``dim`` principal directions are kept, each signed so that its largest
    loading is positive (reproducible across runs).
    """
    x = np.hstack(blocks)
    mean = x.mean(axis=0)
    scale = np.concatenate([np.full(b.shape[1], max(float(np.sqrt(b.var(axis=0).sum())), 1e-12)) for b in blocks])
    _, _, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    k = min(dim, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    return mean, scale, comps * np.where(signs == 0, 1.0, signs)[:, None]


def combine_seeds(blocks: list[np.ndarray], dim: int) -> np.ndarray:
    """The embedding a seed ensemble writes, from its members' embeddings (see :func:`fit_combination`)."""
    mean, scale, comps = fit_combination(blocks, dim)
    return ((np.hstack(blocks) - mean) / scale) @ comps.T


class SeedEnsemble:
    """``k`` seeds of one method (see the module docstring).

    Args:
        members: The unfitted (or loaded) member embedders, one per seed, all of the same method.

    Raises:
        ConfigError: If there are no members, they mix methods, or the method is deterministic.
    """

    def __init__(self, members: list[Embedder]) -> None:
        if not members:
            raise ConfigError("An ensemble needs at least one member.")
        if len({m.name for m in members}) != 1:
            raise ConfigError("All members of an ensemble must be the same method.")
        if len(members) > 1 and getattr(members[0], "deterministic", False):
            raise ConfigError(f"{members[0].name} is deterministic: every seed gives the same embedding, so "
                              "ensemble must be 1 for it.")
        self.members = members
        first = members[0]
        self.name = first.name
        self.dim = first.dim
        self.seed = first.seed
        self.uses_views = first.uses_views
        self.history: list[float] = []
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._components: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        """Anything else (``raster_names``, ``inputs``, ``params``, ...) is the first member's."""
        if name == "members":  # not set yet (during unpickling or a failed __init__)
            raise AttributeError(name)
        return getattr(self.members[0], name)

    @classmethod
    def of(cls, make: Any, k: int, seed: int) -> SeedEnsemble:
        """An ensemble of ``make(seed + i)`` for ``i < k``."""
        return cls([make(seed + i) for i in range(int(k))])

    @property
    def vocabulary(self) -> dict[str, list[str]]:
        """The first member's vocabulary (the views it learned from)."""
        return self.members[0].vocabulary

    def views_for_transform(self) -> list[str]:
        """Views the members need to embed new regions."""
        first = self.members[0]
        return getattr(first, "views_for_transform", lambda: list(first.vocabulary))()

    @property
    def device_used(self) -> str | None:
        return self.members[0].device_used

    @device_used.setter
    def device_used(self, value: str | None) -> None:
        for m in self.members:
            m.device_used = value

    @property
    def device(self) -> str:
        return self.members[0].device

    @device.setter
    def device(self, value: str) -> None:
        for m in self.members:
            m.device = value

    # ------------------------------------------------------------------------------------------ API
    def fit_members(self, views: Views, progress: Progress | None = None) -> list[pd.DataFrame]:
        """Fit every member and the combining PCA; returns the members' embeddings of ``views``."""
        progress = progress or Progress()
        k = len(self.members)
        out = []
        for i, member in enumerate(self.members):
            sub = progress.sub(f"seed {member.seed} ({i + 1}/{k})", i / k, (i + 1) / k)
            out.append(member.fit_transform(views, sub))
        self.history = list(self.members[0].history)
        self._fit_pca(out)
        return out

    def member_embeddings(self, views: Views, progress: Progress | None = None) -> list[pd.DataFrame]:
        """Every member's embedding of ``views``."""
        return [m.transform(views, progress) for m in self.members]

    def combine(self, members: list[pd.DataFrame]) -> pd.DataFrame:
        """The written embedding: PCA (to ``dim``) of the standardised, concatenated member embeddings."""
        if self._components is None:
            raise RuntimeError("SeedEnsemble: fit or load it before combining embeddings.")
        x = np.hstack([m.to_numpy(dtype=float) for m in members])
        return embedding_frame(((x - self._mean) / self._scale) @ self._components.T, members[0].index)

    def transform(self, views: Views, progress: Progress | None = None) -> pd.DataFrame:
        """Embed the regions of ``views`` (every member, then the saved PCA)."""
        return self.combine(self.member_embeddings(views, progress))

    def _fit_pca(self, members: list[pd.DataFrame]) -> None:
        self._mean, self._scale, self._components = fit_combination(
            [m.to_numpy(dtype=float) for m in members], self.dim)

    def save(self, path: str | Path) -> Path:
        """Write the members (``member_<i>``), the PCA and ``config.json`` into folder ``path``."""
        from safetensors.numpy import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.members):
            m.save(folder / f"member_{i}")
        assert self._components is not None and self._mean is not None and self._scale is not None
        save_file({"mean": np.ascontiguousarray(self._mean), "scale": np.ascontiguousarray(self._scale),
                   "components": np.ascontiguousarray(self._components)}, str(folder / ENSEMBLE_WEIGHTS))
        first = self.members[0]
        config = {"name": self.name, "ensemble": len(self.members), "dim": self.dim, "seed": self.seed,
                  "members": [f"member_{i}" for i in range(len(self.members))],
                  "params": asdict(first.params), "inputs": first.inputs(),  # as a single model's config.json
                  "vocabulary": self.vocabulary, "history": self.history}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> SeedEnsemble:
        """Load an ensemble written by :meth:`save`."""
        from safetensors.numpy import load_file

        from backend.models import load_embedder

        folder = Path(path)
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        members = [load_embedder(str(folder / sub)) for sub in config["members"]]
        ens = cls(members)
        ens.history = list(config.get("history", []))
        t = load_file(str(folder / ENSEMBLE_WEIGHTS))
        ens._mean, ens._scale, ens._components = t["mean"], t["scale"], t["components"]
        return ens
