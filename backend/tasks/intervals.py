"""Prediction intervals from out-of-fold residuals: CV+ (Barber, Candès, Ramdas and Tibshirani, 2021,
"Predictive inference with the jackknife+", Annals of Statistics 49(1)), nested in the outer folds.

Every region of outer fold ``k`` gets its interval from models that never saw fold ``k``'s labels: for
every other fold ``l`` one model is fitted on the rows outside folds ``k`` and ``l`` (the same fitting as the
outer folds, :data:`~backend.tasks.prediction.FitPredict`); its absolute residuals ``R_j`` on fold ``l``
and its prediction ``mu_kl(x_i)`` of the held-out region ``i`` give the ``2 * n_train`` values
``mu_kl(x_i) - R_j`` and ``mu_kl(x_i) + R_j``. The interval is

    lower = the floor(alpha * (n_train + 1))-th smallest of ``mu_kl(x_i) - R_j``,
    upper = the ceil((1 - alpha) * (n_train + 1))-th smallest of ``mu_kl(x_i) + R_j``,

with ``alpha = 1 - coverage`` and ``n_train`` the rows outside fold ``k``: CV+ run on the outer training
fold with the other outer folds as its inner folds. So the inner folds follow the outer protocol (spatial
blocks stay whole), a model is shared by the pair ``{k, l}`` (``K (K - 1) / 2`` extra fits per repeat),
and changing a held-out fold's labels changes none of its intervals. A predictor that chooses something on
the outer training fold (fusion's stacking weights) exposes ``fit_predict.outer_fit(outer_train)``; its pair
models are then fitted per direction (``K (K - 1)`` fits) with the choice made on fold ``k``'s training
rows. CV+ guarantees a coverage of at least ``1 - 2 alpha`` for exchangeable regions and reaches
``1 - alpha`` in practice; spatially blocked folds measure how the intervals hold where the regions are not
exchangeable (docs/analysis.md).

Intervals are computed in model space (e.g. log1p density); the target's inverse is increasing, so they
map to the label's units bound by bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from backend.tasks.prediction import FitPredict
from regionlens_common import HI, LO, OBS

__all__ = ["MIN_FOLDS", "cv_plus", "interval_scores", "add_interval_columns"]

#: CV+ nested in the folds needs a third fold to fit on.
MIN_FOLDS = 3


def _rank(count: int, q: float, upper: bool) -> int:
    """1-based rank of the CV+ bound among ``count`` values (clipped to ``1..count``: a finite interval)."""
    r = math.ceil(q * (count + 1)) if upper else math.floor(q * (count + 1))
    return min(max(r, 1), count)


def cv_plus(
    fit_predict: FitPredict,
    y: np.ndarray,
    fold_of: np.ndarray,
    model_name: str,
    seed: int,
    coverage: float,
    tick: Callable[[], None] | None = None,
    poll: Callable[[], None] | None = None,
    wait: Callable[[Callable[[], Any]], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """CV+ interval of every row, each from models that never saw its fold's labels (module docstring).

    Args:
        fit_predict: The fold fit of the predictor (the outer folds' own).
        y: N model-space targets.
        fold_of: Fold of every row (one repeat of a protocol's plan).
        model_name: Regressor name passed to ``fit_predict``.
        seed: Seed passed to ``fit_predict`` (the repeat's).
        coverage: Nominal coverage, ``1 - alpha``.
        tick: Called after every fit (progress and cancel).
        poll: Called between the short steps of the bounds (heartbeat and cancel; see :meth:`Progress.poll`).
        wait: Runs every fit, ``wait(call) -> call()`` (e.g. :meth:`Progress.wait`: one fit can take minutes).

    Returns:
        ``(lower, upper)`` arrays of length N, or None with fewer than :data:`MIN_FOLDS` non-empty folds.

    Raises:
        ValueError: If ``coverage`` is not between 0 and 1 or the lengths differ.
    """
    ya = np.asarray(y, dtype=float).ravel()
    fold_of = np.asarray(fold_of).ravel()
    if len(ya) != len(fold_of):
        raise ValueError(f"{len(ya)} targets for {len(fold_of)} fold numbers.")
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie between 0 and 1, not {coverage}.")
    folds = [int(f) for f in np.unique(fold_of)]
    if len(folds) < MIN_FOLDS:
        return None
    n = len(ya)
    alpha = 1.0 - coverage
    outer_fit = getattr(fit_predict, "outer_fit", None)
    pair_pred: dict[tuple[int, int], np.ndarray] = {}  # (held-out fold, inner fold) -> predictions on both
    for i, a in enumerate(folds):
        for b in folds[i + 1:]:
            test = (fold_of == a) | (fold_of == b)
            for held, inner in ((a, b), (b, a)) if outer_fit is not None else ((a, b),):
                run = wait if wait is not None else (lambda call: call())

                def pair_fit(held: int = held, test: np.ndarray = test) -> np.ndarray:
                    fit = outer_fit(fold_of != held) if outer_fit is not None else fit_predict
                    return fit(model_name, seed, ~test, test)

                full = np.full(n, np.nan)
                full[test] = run(pair_fit)
                pair_pred[(held, inner)] = full
                if outer_fit is None:
                    pair_pred[(inner, held)] = full
                if tick is not None:
                    tick()
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    for k in folds:
        held = np.flatnonzero(fold_of == k)
        centres, resids = [], []
        for m in folds:
            if m == k:
                continue
            pred = pair_pred[(k, m)]
            rows = fold_of == m
            resids.append(np.sort(np.abs(ya[rows] - pred[rows])))
            centres.append(pred[held])
        count = sum(len(r) for r in resids)
        r_lo, r_hi = _rank(count, alpha, upper=False), _rank(count, 1.0 - alpha, upper=True)
        lower[held] = _kth_smallest(np.stack(centres, axis=1), resids, -1.0, r_lo, poll)
        upper[held] = _kth_smallest(np.stack(centres, axis=1), resids, 1.0, r_hi, poll)
    return lower, upper


def _count_at_most(t: np.ndarray, centres: np.ndarray, resids: list[np.ndarray], sign: float) -> np.ndarray:
    """Per row ``i``: how many of the values ``centres[i, m] + sign * resids[m][j]`` (as computed in floats)
    are <= ``t[i]``.

    ``c + R <= t`` is ``R <= t - c`` up to rounding; the binary search on ``t - c`` is corrected by looking
    at the computed values next to the boundary (rounding is monotone, so they are sorted as ``R`` is).
    """
    total = np.zeros(len(t), dtype=np.int64)
    for m, r in enumerate(resids):
        n, c = len(r), centres[:, m]
        if not n:
            continue
        if sign > 0:  # the first j with c + R_j > t
            j = np.searchsorted(r, t - c, side="right")
            for _ in range(_ROUNDING_STEPS):
                up = (j < n) & (c + r[np.minimum(j, n - 1)] <= t)
                j = np.where(up, np.searchsorted(r, r[np.minimum(j, n - 1)], side="right"), j)
                down = (j > 0) & (c + r[np.maximum(j - 1, 0)] > t)
                j = np.where(down, np.searchsorted(r, r[np.maximum(j - 1, 0)], side="left"), j)
            total += j
        else:  # the first j with c - R_j <= t
            j = np.searchsorted(r, c - t, side="left")
            for _ in range(_ROUNDING_STEPS):
                down = (j > 0) & (c - r[np.maximum(j - 1, 0)] <= t)
                j = np.where(down, np.searchsorted(r, r[np.maximum(j - 1, 0)], side="left"), j)
                up = (j < n) & (c - r[np.minimum(j, n - 1)] > t)
                j = np.where(up, np.searchsorted(r, r[np.minimum(j, n - 1)], side="right"), j)
            total += n - j
    return total


#: Distinct residuals by which the rounding of ``t - c`` can move the boundary of :func:`_count_at_most`.
_ROUNDING_STEPS = 3


def _smallest_above(lo: np.ndarray, centres: np.ndarray, resids: list[np.ndarray], sign: float) -> np.ndarray:
    """Per row ``i``: the smallest of the values ``centres[i, m] + sign * resids[m][j]`` above ``lo[i]``
    (inf where none is)."""
    best = np.full(len(lo), np.inf)
    for m, r in enumerate(resids):
        if not len(r):
            continue
        c = centres[:, m]
        if sign > 0:  # smallest c + R > lo: the first R > lo - c
            j = np.searchsorted(r, lo - c, side="right")
            cand = np.where(j < len(r), c + r[np.minimum(j, len(r) - 1)], np.inf)
        else:  # smallest c - R > lo: the last R < c - lo
            j = np.searchsorted(r, c - lo, side="left") - 1
            cand = np.where(j >= 0, c - r[np.maximum(j, 0)], np.inf)
        best = np.minimum(best, np.where(cand > lo, cand, np.inf))
    return best


def _kth_smallest(centres: np.ndarray, resids: list[np.ndarray], sign: float, rank: int,
                  poll: Callable[[], None] | None = None) -> np.ndarray:
    """Per row ``i``: the ``rank``-th smallest (1-based) of the values ``centres[i, m] + sign * resids[m][j]``
    over every inner fold ``m`` and its rows ``j``, without forming them.

    Forming them is a held-out-rows x training-rows matrix per fold (20 GB at 50,000 regions; quadratic in
    time and memory). Instead each row's value is bracketed by bisection (counting the values at most a
    threshold by binary search in each fold's sorted residuals: O(log n) per row and fold) until the
    smallest value above the lower end is the ``rank``-th one; that value is read off the residuals, so it
    is the very number the matrix holds. ``poll`` is called at every step (a few seconds in all at 250,000
    regions).
    """
    spread = max((float(r[-1]) for r in resids if len(r)), default=0.0) + 1.0
    lo = centres.min(axis=1) - spread  # no value is <= lo
    hi = centres.max(axis=1) + spread  # every value is <= hi
    out = np.full(len(lo), np.nan)
    todo = np.arange(len(lo))
    for step in range(2200):  # adjacent floats after at most ~2,100 halvings (fewer than 70 in practice)
        if poll is not None:
            poll()
        if step % 8 == 7 or step == 2199:
            cand = _smallest_above(lo[todo], centres[todo], resids, sign)
            done = np.isfinite(cand) & (_count_at_most(cand, centres[todo], resids, sign) >= rank)
            if step == 2199:  # unreachable for finite values: the bracket closed long before
                done = np.ones(len(todo), dtype=bool)
                cand = np.where(np.isfinite(cand), cand, hi[todo])
            out[todo[done]] = cand[done]
            todo = todo[~done]
            if not len(todo):
                break
        mid = lo[todo] + (hi[todo] - lo[todo]) / 2.0
        mid = np.where((mid > lo[todo]) & (mid < hi[todo]), mid, hi[todo])  # adjacent floats: stay put
        enough = _count_at_most(mid, centres[todo], resids, sign) >= rank
        hi[todo[enough]] = mid[enough]
        lo[todo[~enough]] = mid[~enough]
    return out


def interval_scores(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, float]:
    """Empirical coverage (share of ``y`` inside ``[lower, upper]``) and mean width ``upper - lower``."""
    ya = np.asarray(y, dtype=float).ravel()
    inside = (ya >= lower) & (ya <= upper)
    return {"coverage": float(np.mean(inside)), "interval_width": float(np.mean(upper - lower))}


def add_interval_columns(
    frame: pd.DataFrame, label: str, result: Any, model: str, target: Any, rows: pd.Index
) -> pd.DataFrame:
    """Add ``<label>_lo`` and ``<label>_hi`` (the label's own units) to a predictions frame.

    Args:
        frame: The predictions frame, indexed by region id (holds ``<label>_obs``).
        label: The label's name.
        result: The :class:`~backend.tasks.prediction.PredictionResult` (its ``intervals``).
        model: The regressor whose intervals are written (the one whose predictions are written).
        target: The :class:`~backend.tasks.targets.Target` (its ``inverse``).
        rows: Region ids of the result's rows.

    Returns:
        ``frame`` with the two columns (NULL where a region has no label or no interval could be computed). A
        label that is never negative (counts, densities, rates) has its lower bound clipped at 0, which only
        ever adds coverage.
    """
    lo_col, hi_col = f"{label}{LO}", f"{label}{HI}"
    bounds = result.intervals.get(model)
    if bounds is None:
        frame[lo_col] = np.nan
        frame[hi_col] = np.nan
        return frame
    lo = target.inverse(pd.Series(bounds[0], index=rows)).reindex(frame.index)
    hi = target.inverse(pd.Series(bounds[1], index=rows)).reindex(frame.index)
    observed = frame.get(f"{label}{OBS}")
    if observed is not None and (observed.dropna() >= 0).all():
        lo = lo.clip(lower=0.0)
    frame[lo_col] = lo
    frame[hi_col] = hi
    return frame
