"""Fusion's prediction: stack the blocks (method embeddings, raw views) per label with nested cross-validation.

A fusion run has several blocks of region features: the embedding of every other method of the run and
the raw views (log1p POI counts, image statistics, land-use shares, OD rows), each with its spatial
context appended (:mod:`backend.tasks.context`). Which block predicts a label best differs by label and
city, so fusion decides per label, and it decides inside every outer training fold using that fold's
rows only (nested cross-validation), so the outer-fold figures stay honest:

1. inner K-fold (``inner_folds``, shuffled) on the training rows: every block's regressor and that of the
   concatenation of all blocks (the same :func:`~backend.tasks.prediction.make_model` as every other method)
   predict the inner test rows;
2. stacking weights: non-negative least squares of the training labels on those inner out-of-fold
   predictions (with an intercept). A block with weight 0 is not used; weights concentrated on one block
   mean that block alone was chosen;
3. every block with a positive weight is refitted on the whole training fold; the test fold's prediction
   is the weighted sum (for ``gbm``, scale-free and slow, one model is fitted on the concatenation of the
   blocks with positive weight instead).

A block may be a seed ensemble (``ensemble = k`` on its method): a list of its members' matrices. Its
regressor is then the ensemble's own (:func:`~backend.tasks.prediction.evaluate_ensemble`): one model per
member, predictions averaged; the concatenation of all blocks is likewise k concatenations (member ``i`` of
every ensemble block), averaged.

The test fold's labels are never read by steps 1 to 3. The weights of every outer fold are recorded and
summarised per label (mean weight per block and how often each block was used), which the metrics table
and ``run.json`` report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.model_selection import KFold

from backend.tasks.prediction import (
    CVSettings,
    FitPredict,
    PredictionResult,
    _checked,
    _waited,
    cross_validate,
    fold_plans,
    make_model,
)

__all__ = ["ALL_BLOCKS", "INNER_FOLDS", "Block", "FusionChoices", "candidates", "stack_weights",
           "fusion_fit_predict", "evaluate_fusion", "select_rows"]

#: A block of features: one N x d matrix, or the members of a seed ensemble (a list of N x d matrices).
Block = np.ndarray | Sequence[np.ndarray]

#: Inner folds of the nested stacking (on each outer training fold).
INNER_FOLDS = 5
#: Regressors that are refitted per block and stacked; others are fitted on the concatenation of the used blocks.
_STACKED = ("ridge", "ridge1")


@dataclass
class FusionChoices:
    """The stacking weights chosen in every outer training fold (block name -> weight)."""

    blocks: list[str]
    weights: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean weight and share of folds using each block, and the most frequent combination."""
        if not self.weights:
            return {"blocks": {}, "combination": ""}
        w = np.vstack(self.weights)
        used = w > 0
        combos: dict[str, int] = {}
        for row in used:
            key = " + ".join(b for b, u in zip(self.blocks, row, strict=True) if u) or "(intercept only)"
            combos[key] = combos.get(key, 0) + 1
        return {
            "blocks": {b: {"mean_weight": round(float(w[:, i].mean()), 4),
                           "used_share": round(float(used[:, i].mean()), 3)} for i, b in enumerate(self.blocks)},
            "combination": max(combos, key=lambda k: combos[k]),
            "combination_share": round(max(combos.values()) / len(w), 3),
        }

    def describe(self) -> str:
        """One line, e.g. ``baseline 0.61, poi_counts 0.30 (most often: baseline + poi_counts)``."""
        s = self.summary()
        parts = [f"{b} {v['mean_weight']:.2f}" for b, v in s["blocks"].items() if v["used_share"] > 0]
        return f"{', '.join(parts) or 'none'} (most often: {s['combination']})" if s["blocks"] else ""


def stack_weights(preds: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights ``w`` and intercept ``a`` minimising ``|y - a - preds @ w|`` (centred NNLS).

    Args:
        preds: N x B out-of-fold predictions, one column per block.
        y: N observed values.
    """
    pm, ym = preds.mean(axis=0), float(y.mean())
    w, _ = nnls(preds - pm, y - ym)
    return w, ym - float(pm @ w)


#: Name of the candidate that concatenates every block.
ALL_BLOCKS = "all blocks"


def _members(block: Block) -> list[np.ndarray]:
    """A block as its list of member matrices (one for a plain block)."""
    if isinstance(block, np.ndarray):
        return [np.asarray(block, dtype=float)]
    members = [np.asarray(m, dtype=float) for m in block]
    if not members:
        raise ValueError("A seed-ensemble block needs at least one member.")
    return members


def select_rows(blocks: Mapping[str, Block], rows: np.ndarray) -> dict[str, Block]:
    """The blocks restricted to ``rows`` (members of an ensemble block each restricted)."""
    return {b: (x[rows] if isinstance(x, np.ndarray) else [m[rows] for m in x]) for b, x in blocks.items()}


def candidates(blocks: Mapping[str, Block]) -> list[str]:
    """The candidates fusion stacks: every block and, with more than one, their concatenation."""
    return [*blocks, ALL_BLOCKS] if len(blocks) > 1 else list(blocks)


def fusion_fit_predict(
    blocks: Mapping[str, Block],
    y: np.ndarray,
    inner_folds: int = INNER_FOLDS,
    record: FusionChoices | None = None,
) -> FitPredict:
    """The fold fit of fusion (see the module docstring) for :func:`~backend.tasks.prediction.cross_validate`.

    Args:
        blocks: Block name -> N x d_b matrix, or the list of a seed ensemble's member matrices.
        y: N target values (only the ``train`` rows of each call are read).
        inner_folds: Folds of the inner cross-validation.
        record: Receives the weights of every outer training fold (once per fold, shared by all models), one per
            :func:`candidates` entry.
    """
    cands = [_members(blocks[b]) for b in blocks]
    if len(cands) > 1:  # the concatenation of all blocks is a candidate too (member i of every block)
        k = max(len(c) for c in cands)
        cands.append([np.hstack([c[i % len(c)] for c in cands]) for i in range(k)])
    ya = np.asarray(y, dtype=float).ravel()
    cache: dict[tuple[bytes, int], tuple[np.ndarray, float]] = {}

    def predict(model_name: str, seed: int, members: list[np.ndarray], fit_rows: np.ndarray,
                test_rows: np.ndarray) -> np.ndarray:
        """One candidate's prediction: the mean over its members' models."""
        out = np.zeros(len(test_rows))
        for x in members:
            est = make_model(model_name, seed)
            est.fit(x[fit_rows], ya[fit_rows])
            out += est.predict(x[test_rows])
        return out / len(members)

    def choose(train_idx: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        key = (np.packbits(np.isin(np.arange(len(ya)), train_idx)).tobytes(), seed)
        if key in cache:
            return cache[key]
        yt = ya[train_idx]
        oof = np.zeros((len(train_idx), len(cands)))
        k = min(inner_folds, len(train_idx))
        for inner_train, inner_test in KFold(k, shuffle=True, random_state=seed).split(train_idx):
            for j, members in enumerate(cands):
                oof[inner_test, j] = predict("ridge", seed, members, train_idx[inner_train], train_idx[inner_test])
        w, a = stack_weights(oof, yt)
        cache[key] = (w, a)
        if record is not None:
            record.weights.append(w)
        return w, a

    def predict_with(model_name: str, seed: int, train: np.ndarray, test: np.ndarray, w: np.ndarray,
                     a: float) -> np.ndarray:
        train_idx, test_idx = np.flatnonzero(train), np.flatnonzero(test)
        used = [j for j in range(len(cands)) if w[j] > 0] or [int(np.argmax(w))]
        if model_name not in _STACKED:
            k = max(len(cands[j]) for j in used)
            joined = [np.hstack([cands[j][i % len(cands[j])] for j in used]) for i in range(k)]
            return np.asarray(predict(model_name, seed, joined, train_idx, test_idx), dtype=float)
        pred = np.full(len(test_idx), a)
        for j in used:
            pred += w[j] * predict(model_name, seed, cands[j], train_idx, test_idx)
        return _finish(model_name, pred)

    def fit_predict(model_name: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return predict_with(model_name, seed, train, test, *choose(np.flatnonzero(train), seed))

    def outer_fit(outer_train: np.ndarray) -> FitPredict:
        """The fold fit inside one outer training fold: its stacking weights (chosen on ``outer_train`` only,
        cached from the outer fit) with the blocks refitted on each call's ``train`` rows (CV+ intervals)."""

        def fit(model_name: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
            return predict_with(model_name, seed, train, test, *choose(np.flatnonzero(outer_train), seed))

        return fit

    fit_predict.outer_fit = outer_fit  # type: ignore[attr-defined]  # read by backend.tasks.intervals.cv_plus
    return fit_predict


def _finish(model_name: str, pred: np.ndarray) -> np.ndarray:
    """``ridge1`` (the public code's regressor) clips negative predictions; so does its stack."""
    return np.clip(pred, 0.0, None) if model_name == "ridge1" else pred


def evaluate_fusion(
    blocks: Mapping[str, Block],
    y: np.ndarray,
    coords: np.ndarray | None,
    inner_folds: int = INNER_FOLDS,
    plans: Mapping[str, Sequence[np.ndarray]] | None = None,
    **settings: Any,
) -> tuple[PredictionResult, dict[str, FusionChoices]]:
    """Out-of-fold scores of fusion, on the same folds as :func:`~backend.tasks.prediction.evaluate_label`.

    Args:
        blocks: Block name -> N x d_b feature matrix (finite), or a seed ensemble's member matrices.
        inner_folds: Folds of the nested cross-validation that chooses the stacking weights.
        plans: Fold plans to use instead of the shuffled/spatial ones (e.g. the public code's folds).
        **settings: The fields of :class:`~backend.tasks.prediction.CVSettings`. With ``coverage``, the CV+
            interval fits inside outer fold ``k`` keep the stacking weights chosen on fold ``k``'s training rows
            and refit the blocks (:func:`backend.tasks.intervals.cv_plus`).
        Others: as :func:`~backend.tasks.prediction.evaluate_label`.

    Returns:
        The scores and, per protocol, the stacking weights chosen in its outer training folds.

    Raises:
        ValueError: As :func:`~backend.tasks.prediction.evaluate_label`, or with no blocks.
    """
    cv = CVSettings(**settings)
    if not blocks:
        raise ValueError("Fusion needs at least one block of features.")
    ya = np.asarray(y, dtype=float).ravel()
    progress = cv.progress

    def check() -> None:
        for block in blocks.values():
            for x in _members(block):
                _checked(x, ya, cv.models, cv.repeats, cv.spatial and plans is None, coords)

    _waited(progress, check, "checking the fusion blocks")
    if plans is None:
        plans = _waited(progress, lambda: fold_plans(len(ya), coords, cv.folds, cv.repeats, cv.spatial, cv.seed),
                        "building the folds")
    result_parts = []
    choices: dict[str, FusionChoices] = {}
    for i, (protocol, protocol_plans) in enumerate(plans.items()):
        record = FusionChoices(blocks=candidates(blocks))
        # each protocol its own share of the progress range, so the bar never steps back
        sub = None if progress is None else progress.sub(protocol, i / len(plans), (i + 1) / len(plans))
        fp = _waited(sub, lambda record=record: fusion_fit_predict(blocks, ya, inner_folds, record),
                     "joining the fusion blocks")
        result_parts.append(cross_validate(fp, ya, {protocol: protocol_plans}, cv.models, sub, seed=cv.seed,
                                           coverage=cv.coverage, interval_model=cv.interval_model))
        choices[protocol] = record
    return _merge(result_parts, cv.models), choices


def _merge(parts: list[PredictionResult], models: Sequence[str]) -> PredictionResult:
    """One result from per-protocol results (rows in model, protocol order as evaluate_label's)."""
    import pandas as pd

    from backend.tasks.prediction import metrics_table

    rows = pd.concat([p.metrics for p in parts], ignore_index=True)
    order = {m: i for i, m in enumerate(models)}
    rows = rows.assign(_o=rows["model"].map(order)).sort_values("_o", kind="stable").drop(columns="_o")
    oof: dict[str, np.ndarray] = {}
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for p in parts:
        for m, v in p.oof.items():
            oof.setdefault(m, v)
        for m, b in p.intervals.items():
            intervals.setdefault(m, b)
    per = pd.concat([p.per_repeat for p in parts], ignore_index=True)
    return PredictionResult(metrics=metrics_table(rows.to_dict("records")), oof=oof, per_repeat=per,
                            intervals=intervals)
