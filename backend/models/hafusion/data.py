"""Inputs and training targets of HAFusion from RegionLens views.

HAFusion (Sun et al., "Urban Region Representation Learning with Attentive Fusion", ICDE 2024,
arXiv 2312.04606) learns from one matrix per view (rows = regions) and reconstructs relations and
similarities between regions. This module turns :class:`~backend.views.Views` into both:

Inputs (:class:`InputTransform`, fitted once and stored with the model so ``transform`` repeats it):

* ``poi_counts``, ``landuse``: the rows as they are (``scaling="raw"``, as the public code feeds counts), or
  log1p and column standardisation (``"log1p"``).
* ``image_stats``, ``embedding`` (a satellite-embedding raster's band means): always column-standardised.
* ``mobility``: the OD row of a region (trips to every region). Reference configuration: the row itself (N
  columns; ``"log1p_mobility"`` and ``"log1p"`` take log1p of the heavy-tailed counts). Scalable
  configuration: a truncated SVD of the (log1p) OD matrix gives every region ``k`` out-flow and ``k`` in-flow
  coordinates (``M V_k`` and ``M^T U_k``), standardised, so the input width does not grow with N.

Targets:

* Relations (cross-entropy, :func:`~backend.models.hafusion.losses.relation_loss`): ``mobility`` (the OD
  matrix) and, when asked or when there is no OD table, ``adjacency`` (shared boundaries), each divided by
  its mean as in the reference code.
* Similarities (cosine MSE): one per table view: TF-IDF cosine of POI counts (MVURE/HAFusion build their
  POI similarity from category frequencies weighted by rarity), cosine of land-use rows, cosine of
  standardised image statistics. Similarities are kept as unit-row factors ``F`` (``S = F F^T``), so a
  mini-batch's block costs ``B^2 k`` and no N x N matrix is stored unless one is given.

Benchmarks with published target matrices pass them in ``overrides`` (see :func:`build_targets`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from backend.errors import InputError
from backend.views._base import Views

__all__ = [
    "INPUT_VIEWS",
    "SIMILARITY_VIEWS",
    "RELATION_VIEWS",
    "SCALINGS",
    "ADJACENCY_MODES",
    "InputTransform",
    "RelationTarget",
    "SimilarityTarget",
    "Targets",
    "input_views",
    "view_matrix",
    "fit_inputs",
    "apply_inputs",
    "build_targets",
]

#: Views HAFusion can take as inputs, in the order the network stacks them.
INPUT_VIEWS = ("poi_counts", "landuse", "image_stats", "mobility", "embedding")
#: Table views that also give a similarity target.
SIMILARITY_VIEWS = ("poi_counts", "landuse", "image_stats", "embedding")
#: Views that give a relation target.
RELATION_VIEWS = ("mobility", "adjacency")
#: Input scalings: counts as they are, log1p of mobility only, or log1p of every count view + standardisation.
SCALINGS = ("raw", "log1p_mobility", "log1p")
#: When spatial adjacency is a relation target: without an OD table (auto), always, or never.
ADJACENCY_MODES = ("auto", "always", "never")

_COUNT_VIEWS = {"poi_counts", "landuse", "mobility"}  # non-negative; log1p applies under "log1p"
_STANDARDISED = {"image_stats", "embedding"}  # continuous views on their own scales: always column-standardised


def input_views(views: Views, allowed: Sequence[str] = INPUT_VIEWS) -> list[str]:
    """The input views present in ``views``, in network order."""
    have = views.available()
    return [v for v in INPUT_VIEWS if v in allowed and v in have]


def view_matrix(views: Views, view: str, columns: Sequence[str] | None = None) -> np.ndarray:
    """The raw ``N x C`` float64 matrix of a view (tables aligned to ``columns`` when given).

    Raises:
        InputError: If the view is absent or holds non-finite values.
    """
    if view == "mobility":
        if views.mobility is None:
            raise InputError("HAFusion was fitted with an OD (mobility) view, but the inputs have none.")
        mat = np.asarray(views.mobility, dtype=np.float64)
        if mat.shape != (len(views), len(views)):
            raise InputError(f"The mobility view must be N x N ({len(views)} regions), got {mat.shape}.")
    else:
        table = views.tables.get(view)
        if table is None:
            raise InputError(f"HAFusion was fitted with the '{view}' view, but the inputs have none.")
        if columns is not None:
            table = table.reindex(columns=list(columns), fill_value=0.0)
        mat = table.to_numpy(dtype=np.float64)
    if not np.isfinite(mat).all():
        raise InputError(f"The '{view}' view holds missing or infinite values; HAFusion needs finite inputs.")
    return mat


@dataclass
class InputTransform:
    """How one view's matrix becomes a network input (fitted on the training regions).

    Attributes:
        view: View name.
        log1p: Take ``log1p`` of the (non-negative) matrix first.
        basis_out: Scalable mobility only: ``N x k`` right singular vectors (out-flow coordinates ``M V``).
        basis_in: Scalable mobility only: ``N x k`` left singular vectors (in-flow coordinates ``M^T U``).
        mean: Column means for standardisation (None: no standardisation).
        std: Column scales for standardisation.
    """

    view: str
    log1p: bool = False
    basis_out: np.ndarray | None = None
    basis_in: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def features(self, mat: np.ndarray) -> np.ndarray:
        """Features before standardisation."""
        x = np.log1p(np.clip(mat, 0.0, None)) if self.log1p else mat
        if self.basis_out is not None and self.basis_in is not None:
            x = np.hstack([x @ self.basis_out, x.T @ self.basis_in])
        return x

    def apply(self, mat: np.ndarray) -> np.ndarray:
        """The ``N x C`` float32 network input of ``mat``."""
        x = self.features(mat)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return np.ascontiguousarray(x, dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays by name (for saving)."""
        out = {}
        for key in ("basis_out", "basis_in", "mean", "std"):
            val = getattr(self, key)
            if val is not None:
                out[key] = np.ascontiguousarray(val, dtype=np.float64)
        return out


def fit_inputs(views: Views, names: Sequence[str], variant: str, scaling: str, width: int = 128,
               seed: int = 0) -> list[InputTransform]:
    """Fit the input transform of every view in ``names`` (see the module docstring).

    Args:
        views: The training views.
        names: Input views (from :func:`input_views`).
        variant: ``"reference"`` or ``"scalable"``.
        scaling: One of :data:`SCALINGS`.
        width: Scalable only: hidden width; the mobility SVD keeps ``min(width // 2, N - 1)`` components.
        seed: Seed of the randomised SVD.

    Returns:
        One :class:`InputTransform` per view, in the order of ``names``.

    Raises:
        ValueError: On an unknown scaling.
        InputError: If a view is missing or not finite.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"Unknown input scaling '{scaling}'; use one of {SCALINGS}.")
    out = []
    for name in names:
        mat = view_matrix(views, name)
        log = name in _COUNT_VIEWS and (scaling == "log1p" or (scaling == "log1p_mobility" and name == "mobility"))
        tr = InputTransform(view=name, log1p=log)
        if name == "mobility" and variant == "scalable":
            from sklearn.utils.extmath import randomized_svd

            k = max(1, min(width // 2, len(mat) - 1))
            u, _, vt = randomized_svd(tr.features(mat), n_components=k, random_state=seed)
            tr.basis_out, tr.basis_in = vt.T.copy(), u.copy()
        standardise = name in _STANDARDISED or (scaling == "log1p" and name != "mobility") or (
            name == "mobility" and variant == "scalable")
        if standardise:
            x = tr.features(mat)
            std = x.std(axis=0)
            tr.mean, tr.std = x.mean(axis=0), np.where(std > 1e-12, std, 1.0)
        out.append(tr)
    return out


def apply_inputs(views: Views, transforms: Sequence[InputTransform],
                 vocabulary: Mapping[str, Sequence[str]]) -> list[np.ndarray]:
    """Network inputs of ``views`` (tables aligned to the fitted columns in ``vocabulary``)."""
    return [tr.apply(view_matrix(views, tr.view, None if tr.view == "mobility" else vocabulary[tr.view]))
            for tr in transforms]


@dataclass
class RelationTarget:
    """A non-negative ``N x N`` relation divided by its mean (dense array or sparse matrix)."""

    matrix: np.ndarray | sp.csr_matrix

    @classmethod
    def from_matrix(cls, mat: np.ndarray | sp.spmatrix, name: str) -> RelationTarget:
        """Check ``mat`` and divide it by its mean over all ``N x N`` entries.

        Raises:
            InputError: If ``mat`` is not square, has negative or non-finite entries, or is all zero.
        """
        if sp.issparse(mat):
            m = sp.csr_matrix(mat, dtype=np.float32)
            values = m.data
        else:
            m = np.asarray(mat, dtype=np.float32)
            values = m
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise InputError(f"The {name} target must be a square N x N matrix, got {m.shape}.")
        if not np.isfinite(values).all() or (values < 0).any():
            raise InputError(f"The {name} target must hold finite, non-negative values.")
        total = float(values.sum(dtype=np.float64))
        if total <= 0:
            raise InputError(f"The {name} target is all zero; nothing to learn from it.")
        return cls(m * np.float32(m.shape[0] * m.shape[1] / total))

    def block(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The dense block of rows and columns ``idx`` (all regions when None), float32."""
        m = self.matrix
        if idx is not None:
            m = m[idx][:, idx] if sp.issparse(m) else m[np.ix_(idx, idx)]
        return m.toarray() if sp.issparse(m) else np.asarray(m)


@dataclass
class SimilarityTarget:
    """An ``N x N`` similarity, given densely or as unit-row factors ``F`` with ``S = F F^T``."""

    dense: np.ndarray | None = None
    factors: np.ndarray | None = None

    @classmethod
    def cosine_of(cls, x: np.ndarray) -> SimilarityTarget:
        """Cosine similarity of the rows of ``x`` (zero rows are similar to nothing)."""
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return cls(factors=np.ascontiguousarray(x / np.where(norm > 0, norm, 1.0), dtype=np.float32))

    @classmethod
    def given(cls, mat: np.ndarray, name: str) -> SimilarityTarget:
        """A given dense similarity matrix.

        Raises:
            InputError: If it is not square or holds non-finite values.
        """
        m = np.asarray(mat, dtype=np.float32)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.isfinite(m).all():
            raise InputError(f"The {name} similarity target must be a finite N x N matrix, got {m.shape}.")
        return cls(dense=m)

    def block(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The dense block of rows and columns ``idx`` (all regions when None), float32."""
        if self.dense is not None:
            return self.dense if idx is None else self.dense[np.ix_(idx, idx)]
        assert self.factors is not None
        f = self.factors if idx is None else self.factors[idx]
        return f @ f.T


@dataclass
class Targets:
    """Relation and similarity targets by name."""

    relations: dict[str, RelationTarget] = field(default_factory=dict)
    similarities: dict[str, SimilarityTarget] = field(default_factory=dict)


def _tfidf(counts: np.ndarray) -> np.ndarray:
    """TF-IDF rows of category counts (smooth idf, as scikit-learn's default)."""
    c = np.clip(counts, 0.0, None)
    total = c.sum(axis=1, keepdims=True)
    tf = c / np.where(total > 0, total, 1.0)
    df = (c > 0).sum(axis=0)
    idf = np.log((1.0 + len(c)) / (1.0 + df)) + 1.0
    return tf * idf


def build_targets(
    views: Views,
    names: Sequence[str],
    adjacency: str = "auto",
    overrides: Mapping[str, np.ndarray | sp.spmatrix] | None = None,
) -> Targets:
    """Relation and similarity targets of the training regions.

    Args:
        views: The training views.
        names: Input views (their table views give similarity targets; ``mobility`` a relation target).
        adjacency: One of :data:`ADJACENCY_MODES`: use ``views.adjacency`` as a relation target when there is no
            mobility view (auto), always, or never.
        overrides: Target matrices that replace (or add) targets by name: relations ``mobility``/``adjacency``,
            similarities ``poi_counts``/``landuse``/``image_stats``.

    Returns:
        The :class:`Targets`.

    Raises:
        ValueError: On an unknown adjacency mode or override name.
        InputError: If a target matrix is unusable, or no target can be built.
    """
    if adjacency not in ADJACENCY_MODES:
        raise ValueError(f"Unknown adjacency mode '{adjacency}'; use one of {ADJACENCY_MODES}.")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(RELATION_VIEWS) - set(SIMILARITY_VIEWS))
    if unknown:
        raise ValueError(f"Unknown target names {unknown}; use {RELATION_VIEWS + SIMILARITY_VIEWS}.")
    t = Targets()
    n = len(views)
    if "mobility" in names or "mobility" in overrides:
        mat = overrides.get("mobility", views.mobility)
        t.relations["mobility"] = RelationTarget.from_matrix(mat, "mobility")
    use_adj = adjacency == "always" or (adjacency == "auto" and "mobility" not in t.relations)
    if "adjacency" in overrides:
        t.relations["adjacency"] = RelationTarget.from_matrix(overrides["adjacency"], "adjacency")
    elif use_adj and views.adjacency is not None and views.adjacency.nnz > 0:
        t.relations["adjacency"] = RelationTarget.from_matrix(views.adjacency, "adjacency")
    for name in SIMILARITY_VIEWS:
        if name in overrides:
            t.similarities[name] = SimilarityTarget.given(overrides[name], name)
        elif name in names:
            x = view_matrix(views, name)
            if name == "poi_counts":
                x = _tfidf(x)
            elif name in _STANDARDISED:
                std = x.std(axis=0)
                x = (x - x.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
            t.similarities[name] = SimilarityTarget.cosine_of(x)
    for name, target in [*t.relations.items(), *t.similarities.items()]:
        size = (target.matrix.shape[0] if isinstance(target, RelationTarget)
                else len(target.dense if target.dense is not None else target.factors))  # type: ignore[arg-type]
        if size != n:
            raise InputError(f"The {name} target covers {size} regions, the views {n}.")
    if not (t.relations or t.similarities):
        raise InputError("HAFusion found nothing to learn from: give POI counts, land use, imagery or OD flows.")
    return t
