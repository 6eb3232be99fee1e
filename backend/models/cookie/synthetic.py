"""Synthetic multimodal views with known shared and unique factors (tests and benchmarks of CooKIE).

Every region has a latent *shared* factor common to all modalities and one *unique* factor per modality;
each modality is a noisy non-linear function of the two: POI category counts (Poisson), image statistics
(Gaussian), land-use shares (softmax), OD flows (Poisson gravity model with a latent interaction) and POI
texts (categories drawn from a latent-dependent distribution, written as ``"a <category>"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from backend.views._base import Views

__all__ = ["TEXT_CATEGORIES", "synthetic_views"]

#: Categories of the synthetic POI texts.
TEXT_CATEGORIES = ("cafe", "bank", "school", "park", "bar", "pharmacy", "library", "museum", "bakery", "gym")


def synthetic_views(
    n: int = 200,
    modalities: Sequence[str] = ("poi", "image", "landuse", "mobility", "poi_text"),
    seed: int = 0,
    shared_dim: int = 3,
    unique_dim: int = 2,
) -> tuple[Views, dict[str, Any]]:
    """Views of ``n`` regions for the given modalities.

    Args:
        n: Regions.
        modalities: Any of ``poi``, ``poi_text``, ``image``, ``mobility``, ``landuse``.
        seed: Random seed.
        shared_dim: Width of the shared latent factor.
        unique_dim: Width of each modality's unique latent factor.

    Returns:
        ``(views, factors)`` with ``factors = {"shared": N x shared_dim, "unique": {modality: N x unique_dim}}``.

    Raises:
        ValueError: On an unknown modality.
    """
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"r{i:05d}" for i in range(n)], name="region_id")
    shared = rng.normal(size=(n, shared_dim))
    unique: dict[str, np.ndarray] = {}
    views = Views(region_ids=ids, centroids=rng.uniform(0.0, 5000.0, (n, 2)),
                  areas_km2=pd.Series(np.full(n, 0.25), index=ids, name="area_km2"))
    k = shared_dim + unique_dim
    for m in modalities:
        z = rng.normal(size=(n, unique_dim))
        unique[m] = z
        latent = np.hstack([shared, z])
        if m == "poi":
            w = rng.normal(scale=0.6, size=(k, 20))
            counts = rng.poisson(np.exp(latent @ w / np.sqrt(k) + 0.5))
            views.tables["poi_counts"] = pd.DataFrame(counts.astype(float), index=ids,
                                                      columns=[f"cat_{j:02d}" for j in range(20)])
        elif m == "image":
            w = rng.normal(size=(k, 12))
            stats = np.tanh(latent @ w / np.sqrt(k)) * 40.0 + 100.0 + rng.normal(scale=4.0, size=(n, 12))
            views.tables["image_stats"] = pd.DataFrame(stats, index=ids,
                                                       columns=[f"img_b{j // 4}_s{j % 4}" for j in range(12)])
        elif m == "landuse":
            w = rng.normal(size=(k, 6))
            logits = latent @ w / np.sqrt(k) + rng.normal(scale=0.2, size=(n, 6))
            shares = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            views.tables["landuse"] = pd.DataFrame(shares, index=ids, columns=[f"lu_{j}" for j in range(6)])
        elif m == "mobility":
            o = latent @ rng.normal(size=k) / np.sqrt(k)
            d = latent @ rng.normal(size=k) / np.sqrt(k)
            a = rng.normal(scale=0.5, size=(k, k))
            inter = latent @ a @ latent.T / k
            views.mobility = rng.poisson(np.exp(np.clip(o[:, None] + d[None, :] + inter, -6, 6))).astype(float)
        elif m == "poi_text":
            w = rng.normal(size=(k, len(TEXT_CATEGORIES)))
            logits = latent @ w / np.sqrt(k)
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            sizes = rng.poisson(4.0, size=n) + 1
            views.poi_texts = [[f"a {TEXT_CATEGORIES[c]}" for c in rng.choice(len(TEXT_CATEGORIES), size=s, p=p)]
                               for s, p in zip(sizes, probs, strict=True)]
        else:
            raise ValueError(f"Unknown synthetic modality '{m}'.")
    return views, {"shared": shared, "unique": unique}
