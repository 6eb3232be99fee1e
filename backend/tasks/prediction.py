"""Out-of-fold prediction of a label from region embeddings, under shuffled and spatially blocked CV.

Two regressors: ``ridge`` (a feature guard, then ridge regression whose penalty is chosen by RidgeCV's
efficient leave-one-out on the training fold only, computed by :class:`LooRidge`) and ``gbm`` (histogram
gradient boosting with fixed, modest settings; nothing is tuned). Nothing is ever fitted or selected on a test fold.

Two protocols (SPEC section 5, "honest protocol"):

* ``shuffled``: K-fold with shuffled rows, repeated over ``repeats`` seeds (``seed + r``).
* ``spatial``: spatially blocked K-fold. Region coordinates are clustered into ``4 * folds`` blocks with
  k-means, and whole blocks are dealt to the folds (scikit-learn's ``GroupKFold`` with a shuffled
  block-to-fold assignment), again repeated over ``repeats`` seeds, so neighbouring regions, which
  leak into each other, mostly fall in the same fold (Roberts et al., 2017, "Cross-validation
  strategies for data with temporal, spatial, hierarchical, or phylogenetic structure", Ecography).

**Feature guard** (:class:`FeatureGuard`, the first step of the ridge pipeline, so it is fitted on the
training fold only and never sees a test label): a column that differs from its training median in fewer
than :data:`MIN_SUPPORT` training regions (a POI category present in one region, an embedding dimension
carried by one outlier) is dropped, and the remaining columns are standardised with the training mean and
standard deviation and clipped to +-:data:`CLIP_Z`. Without it a region whose value on such a column is
far outside what the training fold saw gets a z-score of 24 or 1,000 and an extrapolated prediction that
alone pushes R2 to -3 or -1000. Gradient boosting splits on thresholds and does not extrapolate.

For every (model, protocol, repeat) each region gets one out-of-fold prediction; MAE, RMSE and R2 are
computed over all regions for that repeat and reported as mean and standard deviation over repeats.
Metrics are in model space (e.g. log1p density); the caller adds the ``target`` column that says which.

**Prediction intervals** (``coverage``, ``interval_model``): for one regressor, CV+ intervals nested in the
same folds (:mod:`backend.tasks.intervals`); their empirical ``coverage`` and mean ``interval_width`` per
protocol join the metrics (NaN for the other regressors), and the shuffled protocol's bounds averaged over
repeats fill :attr:`PredictionResult.intervals`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline

from backend.errors import InputError
from backend.progress import Progress
from regionlens_common import PREDICTION_MODELS

__all__ = [
    "MODELS",
    "REFERENCE_MODELS",
    "PROTOCOLS",
    "METRIC_COLUMNS",
    "RIDGE_ALPHAS",
    "MIN_SUPPORT",
    "CLIP_Z",
    "FeatureGuard",
    "LooRidge",
    "BLOCKS_PER_FOLD",
    "PredictionResult",
    "CVSettings",
    "make_model",
    "regression_metrics",
    "shuffled_folds",
    "spatial_folds",
    "evaluate_label",
    "metrics_table",
    "FitPredict",
    "fold_plans",
    "cross_validate",
    "single_fit_predict",
    "ensemble_fit_predict",
    "evaluate_ensemble",
]

T = TypeVar("T")

#: Regressors :func:`evaluate_label` knows.
MODELS = PREDICTION_MODELS
#: Cross-validation protocols, in the order they are reported.
PROTOCOLS = ("shuffled", "spatial")
#: Columns of :attr:`PredictionResult.metrics` (the metrics layer adds ``method``, ``label``, ``target``).
METRIC_COLUMNS = (
    "model",
    "protocol",
    "n_regions",
    "mae_mean",
    "mae_std",
    "rmse_mean",
    "rmse_std",
    "r2_mean",
    "r2_std",
    "coverage",
    "interval_width",
)
#: Regressors for benchmarks only (not offered to users): ``ridge1`` is the public HAFusion code's regressor,
#: Ridge(alpha=1) on the unscaled features with negative predictions clipped to 0 (non-negative targets).
REFERENCE_MODELS = ("ridge1",)
#: Ridge penalties searched by RidgeCV's leave-one-out on each training fold.
RIDGE_ALPHAS = np.logspace(-3, 4, 15)
#: Spatial blocks per fold in the blocked protocol.
BLOCKS_PER_FOLD = 4
#: Ridge uses a feature only if it differs from its training median in at least this many training regions.
MIN_SUPPORT = 3
#: Standardised ridge features are clipped to +-CLIP_Z.
CLIP_Z = 5.0


class FeatureGuard(TransformerMixin, BaseEstimator):
    """Drop features with too little support, standardise the rest, clip to +-``clip``.

    Args:
        min_support: Fewest training rows whose value differs from the column's training median.
        clip: Bound of the standardised values.
    """

    def __init__(self, min_support: int = MIN_SUPPORT, clip: float = CLIP_Z) -> None:
        self.min_support = min_support
        self.clip = clip

    def fit(self, X: np.ndarray, y: Any = None) -> FeatureGuard:  # noqa: N803
        """Learn which columns to keep and their mean and standard deviation from the training rows."""
        xa = np.asarray(X, dtype=float)
        median = np.median(xa, axis=0)
        tol = 1e-9 * np.maximum(1.0, np.abs(median))
        support = (np.abs(xa - median) > tol).sum(axis=0)
        std = xa.std(axis=0)
        self.keep_ = np.flatnonzero((support >= self.min_support) & (std > 0))
        self.mean_ = xa.mean(axis=0)[self.keep_]
        self.scale_ = std[self.keep_]
        self.n_dropped_ = xa.shape[1] - len(self.keep_)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """The kept columns, standardised and clipped (one zero column when none is kept)."""
        xa = np.asarray(X, dtype=float)
        if not len(self.keep_):
            return np.zeros((len(xa), 1))
        return np.clip((xa[:, self.keep_] - self.mean_) / self.scale_, -self.clip, self.clip)


class LooRidge(RegressorMixin, BaseEstimator):
    """Ridge regression with the penalty chosen by efficient leave-one-out: scikit-learn's ``RidgeCV`` (same
    penalties, same criterion, the mean squared leave-one-out error, same solution), faster when there are
    more rows than columns.

    Both decompose the centred ``X^T X = V diag(lam) V^T`` once. For every penalty ``a`` the leave-one-out
    residuals need the hat matrix's diagonal ``diag(X (X^T X + a I)^-1 X^T) + 1/n``; ``RidgeCV`` forms
    ``X (X^T X + a I)^-1`` for it (n p^2 per penalty, 15 penalties), this class forms ``X V`` once and reads the
    diagonal as ``(X V)^2 @ 1 / (lam + a)`` (n p per penalty). With ridge the most frequent fit of a run
    (every fold, protocol, repeat, CV+ pair and fusion's stacking), that was most of the prediction stage at
    national scale. With no more rows than columns ``RidgeCV`` itself runs (its Gram mode is cheap there).

    Args:
        alphas: Penalties searched (the first of equally good ones is kept, as ``RidgeCV`` does).
    """

    def __init__(self, alphas: Sequence[float] = tuple(RIDGE_ALPHAS)) -> None:
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> LooRidge:  # noqa: N803
        """Choose the penalty on ``X``, ``y`` by leave-one-out and fit with it."""
        xa = np.asarray(X, dtype=float)
        ya = np.asarray(y, dtype=float).ravel()
        n, p = xa.shape
        alphas = [float(a) for a in np.atleast_1d(self.alphas)]
        if not alphas:
            raise ValueError("LooRidge needs at least one penalty in alphas.")
        self.n_features_in_ = p
        if n <= p:
            ref = RidgeCV(alphas=np.asarray(alphas)).fit(xa, ya)
            self.alpha_, self.coef_, self.intercept_ = float(ref.alpha_), ref.coef_, float(ref.intercept_)
            self.best_score_ = float(ref.best_score_)
            return self
        x_mean, y_mean = xa.mean(axis=0), float(ya.mean())
        xc = xa - x_mean
        yc = ya - y_mean
        lam, v = np.linalg.eigh(xc.T @ xc)
        xv = xc @ v
        vty = xv.T @ yc  # V^T X^T y
        xv2 = np.multiply(xv, xv, out=xc)  # xc is not needed any more: reuse its memory
        best = (-np.inf, float("nan"), np.zeros(p))
        for i, alpha in enumerate(alphas):
            d = 1.0 / (lam + alpha)
            w = d * vty
            hat = xv2 @ d + 1.0 / n
            score = -float(np.mean(((yc - xv @ w) / (1.0 - hat)) ** 2))
            if i == 0 or score > best[0]:
                best = (score, alpha, w)
        self.best_score_, self.alpha_ = best[0], best[1]
        self.coef_ = v @ best[2]
        self.intercept_ = y_mean - float(x_mean @ self.coef_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Predictions of the fitted model."""
        return np.asarray(X, dtype=float) @ self.coef_ + self.intercept_


@dataclass(frozen=True)
class CVSettings:
    """How a label is cross-validated: the keyword arguments of :func:`evaluate_label` (and of
    :func:`~backend.tasks.fusion.evaluate_fusion`, :func:`evaluate_ensemble`).

    Attributes:
        models: Names from :data:`MODELS`.
        folds: Folds per repeat.
        repeats: Repeats (seeds ``seed``, ``seed + 1``, ...) of each protocol.
        spatial: Also run the spatially blocked protocol.
        seed: Base seed of the fold assignment, the blocking and the gradient boosting.
        progress: Reported once per fitted fold; its cancel event stops the evaluation.
        coverage: Nominal coverage of CV+ prediction intervals for ``interval_model`` (None: no intervals).
        interval_model: The regressor whose intervals are computed (default: the first of ``models``).
    """

    models: Sequence[str] = MODELS
    folds: int = 5
    repeats: int = 3
    spatial: bool = True
    seed: int = 0
    progress: Progress | None = None
    coverage: float | None = None
    interval_model: str | None = None


@dataclass
class PredictionResult:
    """Cross-validated scores of one label.

    Attributes:
        metrics: One row per (model, protocol), columns :data:`METRIC_COLUMNS`; model-space metrics.
        oof: Model name -> out-of-fold predictions of the shuffled protocol averaged over repeats
            (model space, in the order of the input rows). Used to fill the predictions layer.
        per_repeat: One row per (model, protocol, repeat) with ``mae``, ``rmse``, ``r2`` (for reports).
        intervals: Model name -> ``(lower, upper)`` CV+ bounds of the shuffled protocol averaged over repeats
            (model space, input row order); only for the interval model, when intervals were asked for.
    """

    metrics: pd.DataFrame
    oof: dict[str, np.ndarray] = field(default_factory=dict)
    per_repeat: pd.DataFrame = field(default_factory=pd.DataFrame)
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def make_model(name: str, seed: int = 0) -> RegressorMixin:
    """A fresh, unfitted regressor.

    Args:
        name: ``"ridge"`` or ``"gbm"``.
        seed: Random state of the gradient boosting (ridge is deterministic).

    Returns:
        A scikit-learn regressor.

    Raises:
        ValueError: If ``name`` is not one of :data:`MODELS`.
    """
    if name == "ridge":
        return Pipeline([("guard", FeatureGuard()), ("ridge", LooRidge())])
    if name == "gbm":
        return HistGradientBoostingRegressor(
            max_iter=200,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=10,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        )
    if name == "ridge1":
        return _ClippedRidge(alpha=1.0)
    raise ValueError(f"Unknown prediction model '{name}'; use one of {MODELS}.")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R2 (coefficient of determination) over all samples.

    Args:
        y_true: Observed values.
        y_pred: Predicted values, same length.

    Returns:
        ``{"mae": ..., "rmse": ..., "r2": ...}``; R2 is NaN when ``y_true`` is constant.

    Raises:
        ValueError: If the lengths differ or the arrays are empty.
    """
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(f"Need equally long, non-empty arrays; got {len(t)} and {len(p)}.")
    err = t - p
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan")
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))), "r2": r2}


def shuffled_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold number of every sample for shuffled K-fold.

    Args:
        n: Number of samples.
        folds: Number of folds.
        seed: Random state of the shuffle.

    Returns:
        Integer array of length ``n`` with values in ``[0, folds)``.

    Raises:
        ValueError: If ``folds < 2`` or ``n < folds``.
    """
    _check_folds(n, folds)
    fold_of = np.empty(n, dtype=int)
    for f, (_, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(np.zeros((n, 1)))):
        fold_of[test] = f
    return fold_of


def spatial_folds(coords: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold number of every sample for spatially blocked K-fold.

    The coordinates are clustered into ``BLOCKS_PER_FOLD * folds`` blocks (k-means, fewer if there are
    fewer distinct locations) and whole blocks are assigned to folds in a seeded random order, the same
    number of blocks per fold.

    Args:
        coords: N x 2 region coordinates (metric CRS, e.g. centroids).
        folds: Number of folds.
        seed: Random state of the blocking and of the block-to-fold assignment.

    Returns:
        ``(fold_of, block_of)``: fold number and block number of every sample.

    Raises:
        ValueError: If ``coords`` is not N x 2 (or more columns) of finite numbers, or ``folds < 2``.
        InputError: If there are fewer distinct locations than folds.
    """
    xy = np.asarray(coords, dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.isfinite(xy).all():
        raise ValueError(f"coords must be an N x 2 array of finite coordinates; got shape {xy.shape}.")
    n = len(xy)
    _check_folds(n, folds)
    n_distinct = len(np.unique(xy, axis=0))
    if n_distinct < folds:
        raise InputError(
            f"Spatial cross-validation needs at least {folds} distinct region locations, found {n_distinct}; "
            "turn spatial folds off or use fewer folds."
        )
    n_blocks = min(BLOCKS_PER_FOLD * folds, n_distinct)
    block_of = KMeans(n_clusters=n_blocks, n_init=4, random_state=seed).fit_predict(xy)
    fold_of = np.empty(n, dtype=int)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(splitter.split(xy, groups=block_of)):
        fold_of[test] = f
    return fold_of, block_of


def _check_folds(n: int, folds: int) -> None:
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}.")
    if n < folds:
        raise InputError(f"Only {n} regions for {folds}-fold cross-validation; need at least {folds}.")


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation over repeats; NaN for a single repeat (spread unknown)."""
    arr = np.asarray(values, dtype=float)
    return float(np.std(arr, ddof=1)) if len(arr) > 1 else float("nan")


def metrics_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Frame of metric rows with the columns of :data:`METRIC_COLUMNS` first, in order.

    Args:
        rows: Dicts holding at least the keys of :data:`METRIC_COLUMNS` (extra keys, such as
            ``method``, ``label`` and ``target``, are kept in front of them).

    Returns:
        The metrics frame (empty with the right columns when there are no rows).

    Raises:
        ValueError: If a row lacks one of :data:`METRIC_COLUMNS`.
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"Metric rows lack columns {missing}.")
    extra = [c for c in frame.columns if c not in METRIC_COLUMNS]
    return frame[extra + list(METRIC_COLUMNS)].reset_index(drop=True)


def _waited(progress: Progress | None, call: Callable[[], T], message: str) -> T:
    """``call()``, under ``progress.wait`` when there is a progress (a national run's checks and spatial folds are
    single calls of seconds)."""
    return call() if progress is None else progress.wait(call, message)


def _checked(
    X: np.ndarray,  # noqa: N803
    y: np.ndarray,
    models: Sequence[str],
    repeats: int,
    spatial: bool,
    coords: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The checks of :func:`evaluate_label`; returns X as N x d floats and y as N floats."""
    xa = np.asarray(X, dtype=float)
    if xa.ndim == 1:
        xa = xa[:, None]
    ya = np.asarray(y, dtype=float).ravel()
    if xa.ndim != 2 or len(xa) != len(ya):
        raise ValueError(f"X must be N x d with one row per target value; got X {xa.shape}, y {ya.shape}.")
    if not np.isfinite(xa).all():
        raise ValueError("X holds NaN or infinite values; embeddings must be finite.")
    if not np.isfinite(ya).all():
        raise ValueError("y holds NaN or infinite values; drop regions without a label first.")
    models = list(models)
    if not models:
        raise ValueError("No prediction models given.")
    for m in models:
        if m not in MODELS + REFERENCE_MODELS:
            raise ValueError(f"Unknown prediction model '{m}'; use one of {MODELS}.")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    if spatial and coords is None:
        raise ValueError("Spatial folds need region coordinates (coords).")
    return xa, ya


def evaluate_label(
    X: np.ndarray | list[np.ndarray],  # noqa: N803 (scikit-learn convention)
    y: np.ndarray,
    coords: np.ndarray | None,
    **settings: Any,
) -> PredictionResult:
    """Out-of-fold scores of every model under shuffled (and spatially blocked) repeated K-fold.

    Args:
        X: N x d feature matrix (embeddings), or a list of them: the members of a seed ensemble (the same
            method trained with other seeds), where every training fold fits one model per member and the
            test fold's prediction is their mean (:func:`evaluate_ensemble`).
        y: N model-space target values (no NaN: drop missing labels first, see
            :func:`backend.tasks.targets.make_target`).
        coords: N x 2 region coordinates for the spatial protocol; may be None when ``spatial`` is False.
        **settings: The fields of :class:`CVSettings` (models, folds, repeats, spatial, seed, progress, coverage,
            interval_model).

    Returns:
        The :class:`PredictionResult`.

    Raises:
        ValueError: On mismatched shapes, non-finite values, unknown models, no models, ``folds < 2``,
            ``repeats < 1`` or missing ``coords`` with ``spatial`` on.
        InputError: If there are fewer regions (or distinct locations) than folds.
        Cancelled: If ``progress`` is cancelled.
        TypeError: On a keyword that is not a field of :class:`CVSettings`.
    """
    cv = CVSettings(**settings)
    models, repeats, spatial, seed = cv.models, cv.repeats, cv.spatial, cv.seed
    if isinstance(X, list):
        if not X:
            raise ValueError("An ensemble needs at least one member embedding.")
        if len(X) > 1:
            members = X
            mats = _waited(cv.progress, lambda: [_checked(m, y, models, repeats, spatial, coords)[0]
                                                 for m in members], "checking the embeddings")
            ya = np.asarray(y, dtype=float).ravel()
            plans = _waited(cv.progress, lambda: fold_plans(len(ya), coords, cv.folds, repeats, spatial, seed),
                            "building the folds")
            return cross_validate(ensemble_fit_predict(mats, ya), ya, plans, list(models), cv.progress, seed=seed,
                                  coverage=cv.coverage, interval_model=cv.interval_model)
        X = X[0]  # noqa: N806
    single = X
    xa, ya = _waited(cv.progress, lambda: _checked(single, y, models, repeats, spatial, coords),
                     "checking the embedding")
    n = len(ya)
    _check_folds(n, cv.folds)
    plans = _waited(cv.progress, lambda: fold_plans(n, coords, cv.folds, repeats, spatial, seed), "building the folds")
    return cross_validate(single_fit_predict(xa, ya), ya, plans, list(models), cv.progress, seed=seed,
                          coverage=cv.coverage, interval_model=cv.interval_model)


# ------------------------------------------------------------------------------------------------------
# One cross-validation loop for every predictor: a single embedding (evaluate_label), a seed ensemble
# (evaluate_ensemble) and fusion's nested block selection (backend.tasks.fusion) differ only in how one
# training fold is fitted and its test fold predicted; folds, repeats, metrics and spread are shared.

#: ``fit_predict(model_name, seed, train_mask, test_mask)`` -> predictions for the ``test_mask`` rows,
#: fitted on the ``train_mask`` rows only.
FitPredict = Callable[[str, int, np.ndarray, np.ndarray], np.ndarray]


class _ClippedRidge(Ridge):
    """Ridge whose negative predictions are clipped to 0 (the public HAFusion evaluation's regressor)."""

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return np.clip(super().predict(X), 0.0, None)


def fold_plans(
    n: int, coords: np.ndarray | None, folds: int, repeats: int, spatial: bool, seed: int
) -> dict[str, list[np.ndarray]]:
    """Fold number of every sample, per protocol and repeat (``seed + r``), shared by all predictors.

    Raises:
        ValueError: If ``coords`` is missing or has the wrong length with ``spatial`` on.
    """
    _check_folds(n, folds)
    plans: dict[str, list[np.ndarray]] = {"shuffled": [shuffled_folds(n, folds, seed + r) for r in range(repeats)]}
    if spatial:
        if coords is None:
            raise ValueError("Spatial folds need region coordinates (coords).")
        if len(np.asarray(coords)) != n:
            raise ValueError(f"coords has {len(np.asarray(coords))} rows for {n} regions.")
        plans["spatial"] = [spatial_folds(coords, folds, seed + r)[0] for r in range(repeats)]
    return plans


def single_fit_predict(x: np.ndarray, y: np.ndarray) -> FitPredict:
    """The fold fit of one feature matrix: a fresh :func:`make_model` per fold."""

    def fit_predict(model_name: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        est = make_model(model_name, seed)
        est.fit(x[train], y[train])
        return np.asarray(est.predict(x[test]), dtype=float)

    return fit_predict


def ensemble_fit_predict(members: Sequence[np.ndarray], y: np.ndarray) -> FitPredict:
    """The fold fit of a seed ensemble: one model per member embedding, predictions averaged."""
    fits = [single_fit_predict(x, y) for x in members]

    def fit_predict(model_name: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return np.mean([f(model_name, seed, train, test) for f in fits], axis=0)

    return fit_predict


def cross_validate(
    fit_predict: FitPredict,
    y: np.ndarray,
    plans: Mapping[str, Sequence[np.ndarray]],
    models: Sequence[str],
    progress: Progress | None = None,
    seed: int = 0,
    coverage: float | None = None,
    interval_model: str | None = None,
) -> PredictionResult:
    """Out-of-fold scores of every model under the given fold plans (see :func:`fold_plans`).

    For every (model, protocol, repeat) each sample gets one out-of-fold prediction; metrics are computed
    over all samples of that repeat and summarised as mean and sample standard deviation (ddof 1) over
    repeats. Every fold's fit runs under :meth:`Progress.wait`, so progress keeps coming and a cancel stops
    the evaluation at once, however long one fit takes. The shuffled protocol's predictions averaged over
    repeats fill :attr:`PredictionResult.oof` (for a single plan of another name, that plan's). Repeat ``r``
    fits its models with seed ``seed + r``.

    With ``coverage``, ``interval_model`` (default: the first model) also gets CV+ intervals on every plan
    (:func:`backend.tasks.intervals.cv_plus`): the metrics' ``coverage`` and ``interval_width`` and
    :attr:`PredictionResult.intervals`.

    Raises:
        Cancelled: If ``progress`` is cancelled.
    """
    from backend.tasks.intervals import cv_plus, interval_scores

    ya = np.asarray(y, dtype=float).ravel()
    n = len(ya)
    models = list(models)
    if coverage is not None and interval_model is None:
        interval_model = models[0]
    n_folds = {p: int(max(fp.max() for fp in plans_)) + 1 for p, plans_ in plans.items()}
    total = sum(len(models) * len(fp) * n_folds[p] for p, fp in plans.items())
    if coverage is not None:
        per_pair = 2 if hasattr(fit_predict, "outer_fit") else 1  # fits per pair of folds (1: shared)
        total += sum(len(fp) * n_folds[p] * (n_folds[p] - 1) * per_pair // 2 for p, fp in plans.items())
    total = max(1, total)
    oof_protocol = "shuffled" if "shuffled" in plans else next(iter(plans))
    done = 0
    rows: list[dict[str, Any]] = []
    repeat_rows: list[dict[str, Any]] = []
    oof: dict[str, np.ndarray] = {}
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress.update(done / total, "prediction intervals (CV+)")

    for model_name in models:
        for protocol, fold_plans_ in plans.items():
            scores: list[dict[str, float]] = []
            interval_rows: list[dict[str, float]] = []
            bounds_sum = np.zeros((2, n))
            preds_sum = np.zeros(n)
            repeats = len(fold_plans_)
            for r, fold_of in enumerate(fold_plans_):
                pred = np.full(n, np.nan)
                for f in range(n_folds[protocol]):
                    test = fold_of == f
                    if not test.any():
                        continue
                    if progress is None:
                        pred[test] = fit_predict(model_name, seed + r, ~test, test)
                    else:  # one fold's fit can take minutes at 100,000+ regions: heartbeat and cancel meanwhile
                        step = f"repeat {r + 1}/{repeats}, fold {f + 1}/{n_folds[protocol]}"
                        pred[test] = progress.wait(
                            lambda: fit_predict(model_name, seed + r, ~test, test),  # noqa: B023 - awaited here
                            f"{model_name}, {protocol} folds: {step}", fraction=done / total)
                    done += 1
                s = regression_metrics(ya, pred)
                scores.append(s)
                if coverage is not None and model_name == interval_model:
                    bounds = cv_plus(fit_predict, ya, fold_of, model_name, seed + r, coverage, tick,
                                     poll=None if progress is None else progress.poll,
                                     wait=None if progress is None else
                                     (lambda call: progress.wait(call, "prediction intervals (CV+)")))
                    if bounds is not None:
                        interval_rows.append(interval_scores(ya, *bounds))
                        bounds_sum += np.vstack(bounds)
                repeat_rows.append({"model": model_name, "protocol": protocol, "repeat": r, **s})
                preds_sum += pred
            if protocol == oof_protocol:
                oof[model_name] = preds_sum / repeats
                if interval_rows:
                    intervals[model_name] = (bounds_sum[0] / repeats, bounds_sum[1] / repeats)
            row: dict[str, Any] = {"model": model_name, "protocol": protocol, "n_regions": n}
            for key in ("mae", "rmse", "r2"):
                vals = [s[key] for s in scores]
                row[f"{key}_mean"] = float(np.mean(vals))
                row[f"{key}_std"] = _std(vals)
            for key in ("coverage", "interval_width"):
                row[key] = float(np.mean([s[key] for s in interval_rows])) if interval_rows else float("nan")
            rows.append(row)
    if progress is not None:
        progress.update(1.0, "prediction done")
    return PredictionResult(metrics=metrics_table(rows), oof=oof, per_repeat=pd.DataFrame(repeat_rows),
                            intervals=intervals)


def evaluate_ensemble(members: Sequence[np.ndarray], y: np.ndarray, coords: np.ndarray | None,
                      **settings: Any) -> PredictionResult:  # fmt: skip
    """:func:`evaluate_label` for a seed ensemble: in every training fold one model is fitted on each member
    embedding (the same method trained with another seed) and the test fold's prediction is their mean.

    Args:
        members: The member embeddings (N x d each).
        y: As :func:`evaluate_label`.
        coords: As :func:`evaluate_label`.
        **settings: The fields of :class:`CVSettings`.

    Raises:
        ValueError: As :func:`evaluate_label`, or if there are no members or they differ in row count.
    """
    return evaluate_label([np.asarray(m, dtype=float) for m in members], y, coords, **settings)
