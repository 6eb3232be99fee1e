"""2-D projections of an N x d embedding matrix: PCA always, t-SNE and UMAP when installed.

- PCA: singular value decomposition of the centred matrix (numpy only). Signs are fixed so that the
  largest loading of each component is positive, which makes the picture deterministic.
- t-SNE (van der Maaten and Hinton, JMLR 2008): ``sklearn.manifold.TSNE``, PCA initialisation.
- UMAP (McInnes et al., arXiv 1802.03426): ``umap.UMAP``.

QGIS's Python rarely has scikit-learn or umap-learn; :func:`available_projections` lists only what
imports. Everything runs on the calling (main) thread: fine below about 20,000 regions (PCA is fast
at any size; t-SNE and UMAP are refused above :data:`MAIN_THREAD_LIMIT`).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

import numpy as np

__all__ = ["MAIN_THREAD_LIMIT", "PROJECTIONS", "Projection", "available_projections", "pca", "project"]

#: Projection name -> module that must be importable (None: always available).
PROJECTIONS = {"PCA": None, "t-SNE": "sklearn.manifold", "UMAP": "umap"}
#: Largest N for which t-SNE / UMAP run on QGIS's main thread.
MAIN_THREAD_LIMIT = 20_000


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of the regions and how to label the axes."""

    coords: np.ndarray  # N x 2
    method: str
    axis_labels: tuple[str, str]


def available_projections() -> list[str]:
    """The projections that can run in this Python, PCA first."""
    names = []
    for name, module in PROJECTIONS.items():
        if module is None:
            names.append(name)
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing or broken
            found = False
        if found:
            names.append(name)
    return names


def pca(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of ``matrix`` (rows = regions).

    Returns:
        ``(coords, explained)``: N x 2 scores (zeros where there is no second component) and the
        fraction of the variance each component explains.
    """
    x = np.asarray(matrix, dtype=float)
    n = x.shape[0]
    coords = np.zeros((n, 2))
    explained = np.zeros(2)
    if n < 2 or x.ndim != 2 or x.shape[1] == 0:
        return coords, explained
    centred = x - x.mean(axis=0)
    _u, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    coords[:, :k] = centred @ components.T
    total = float((s**2).sum())
    if total > 0:
        explained[:k] = s[:k] ** 2 / total
    return coords, explained


def project(matrix: np.ndarray, method: str = "PCA", seed: int = 0) -> Projection:
    """Project the rows of ``matrix`` to 2-D.

    Args:
        matrix: N x d embeddings (finite values).
        method: ``PCA``, ``t-SNE`` or ``UMAP`` (see :func:`available_projections`).
        seed: Random seed of t-SNE / UMAP.

    Returns:
        The coordinates with axis labels.

    Raises:
        ValueError: If ``method`` is unknown, or t-SNE / UMAP get fewer than 5 or more than
            :data:`MAIN_THREAD_LIMIT` regions.
        ImportError: If the package behind ``method`` is not installed.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"Unknown projection '{method}'; use one of {', '.join(PROJECTIONS)}.")
    x = np.asarray(matrix, dtype=float)
    if method == "PCA":
        coords, explained = pca(x)
        return Projection(
            coords, method, (f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%} of variance)")
        )
    n = x.shape[0]
    if n < 5:
        raise ValueError(f"{method} needs at least 5 regions; this layer has {n}. Use PCA.")
    if n > MAIN_THREAD_LIMIT:
        raise ValueError(
            f"{method} of {n:,} regions would block QGIS for a long time (it runs on the main thread); "
            f"use PCA, or the backend's figures, above {MAIN_THREAD_LIMIT:,} regions."
        )
    module_name = PROJECTIONS[method]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = {"t-SNE": "scikit-learn", "UMAP": "umap-learn"}[method]
        raise ImportError(f"{method} needs the Python package {package} in QGIS's Python.") from exc
    if method == "t-SNE":
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        model = module.TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    else:
        model = module.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
    coords = np.asarray(model.fit_transform(x), dtype=float)
    return Projection(coords, method, (f"{method} 1", f"{method} 2"))
