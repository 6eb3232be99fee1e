"""Find similar regions: cosine similarity of every region's embedding to the mean embedding of chosen regions.

The embeddings are centred first (each dimension minus its mean over the layer's regions), as clustering
does: a method whose embeddings all lie in one orthant (non-negative activations, a common offset) would
otherwise give every pair of regions a cosine near 1. The query is the mean of the chosen regions'
centred embeddings; a region (or query) at the centre, with no direction, has similarity 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from backend.errors import InputError

__all__ = ["similarity_to", "top_n_mask", "resolve_ids"]


def resolve_ids(region_ids: pd.Index, chosen: Sequence[str]) -> np.ndarray:
    """Row positions of the chosen region ids (compared as text).

    Raises:
        InputError: If no id is given or some ids are not regions of the layer (they are named, with examples
            of valid ids).
    """
    wanted = [str(c).strip() for c in chosen if str(c).strip()]
    if not wanted:
        raise InputError("No region ids given; choose at least one region to compare the others with.")
    ids = pd.Index([str(r) for r in region_ids])
    positions = ids.get_indexer(pd.Index(list(dict.fromkeys(wanted))))
    missing = [w for w, p in zip(dict.fromkeys(wanted), positions, strict=True) if p < 0]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        examples = ", ".join(ids[:3])
        raise InputError(f"Unknown region ids: {shown}. The layer has {len(ids)} regions with ids like "
                         f"{examples}; use the region id field of the embedding layer.")
    return positions


def similarity_to(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine similarity (-1..1) of every row of ``x`` (centred) to the mean of the centred rows ``rows``.

    Raises:
        ValueError: If ``x`` is not a finite N x d matrix or ``rows`` is empty.
    """
    xa = np.asarray(x, dtype=float)
    if xa.ndim != 2 or not np.isfinite(xa).all():
        raise ValueError(f"Embeddings must be a finite N x d matrix; got shape {xa.shape}.")
    if len(rows) == 0:
        raise ValueError("No chosen rows.")
    xc = xa - xa.mean(axis=0)
    query = xc[np.asarray(rows)].mean(axis=0)
    norms = np.linalg.norm(xc, axis=1) * np.linalg.norm(query)
    dots = xc @ query
    out = np.zeros(len(xc))
    ok = norms > 1e-12 * max(1.0, float(np.abs(xc).max(initial=0.0)) ** 2)
    out[ok] = dots[ok] / norms[ok]
    return np.clip(out, -1.0, 1.0)


def top_n_mask(similarity: np.ndarray, chosen: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the ``n`` most similar rows that are not chosen (ties: the earlier row)."""
    sim = np.asarray(similarity, dtype=float)
    candidates = np.setdiff1d(np.arange(len(sim)), chosen)
    order = candidates[np.argsort(-sim[candidates], kind="stable")]
    mask = np.zeros(len(sim), dtype=bool)
    mask[order[: max(0, n)]] = True
    return mask
