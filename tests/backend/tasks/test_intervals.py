"""CV+ prediction intervals (backend/tasks/intervals.py) and their place in the cross-validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backend.tasks.intervals import add_interval_columns, cv_plus, interval_scores
from backend.tasks.prediction import evaluate_label, shuffled_folds, single_fit_predict


def _synthetic(n: int = 500, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + rng.standard_t(5, size=n)  # heavy-ish tails
    coords = rng.uniform(0, 5000, size=(n, 2))
    return x, y, coords


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_cv_plus_coverage_is_near_the_nominal_level(coverage: float) -> None:
    x, y, coords = _synthetic()
    res = evaluate_label(x, y, coords, models=("ridge",), folds=5, repeats=2, coverage=coverage)
    for protocol in ("shuffled", "spatial"):
        row = res.metrics.set_index("protocol").loc[protocol]
        assert abs(row["coverage"] - coverage) < 0.04, (protocol, row["coverage"])
        assert row["interval_width"] > 0
    lo, hi = res.intervals["ridge"]
    assert np.all(lo < hi)
    assert abs(interval_scores(y, lo, hi)["coverage"] - coverage) < 0.05


def test_higher_coverage_gives_wider_intervals() -> None:
    x, y, coords = _synthetic()
    widths = [evaluate_label(x, y, coords, models=("ridge",), folds=5, repeats=1, spatial=False, coverage=c)
              .metrics["interval_width"].iloc[0] for c in (0.6, 0.9)]
    assert widths[0] < widths[1]


def test_intervals_never_see_the_held_out_folds_labels() -> None:
    x, y, _ = _synthetic(n=200)
    fold_of = shuffled_folds(len(y), 5, seed=3)
    lo, hi = cv_plus(single_fit_predict(x, y), y, fold_of, "ridge", 0, 0.9)
    held = fold_of == 2
    y2 = y.copy()
    y2[held] += np.random.default_rng(1).normal(0, 100, size=held.sum())  # wild labels in fold 2 only
    lo2, hi2 = cv_plus(single_fit_predict(x, y2), y2, fold_of, "ridge", 0, 0.9)
    np.testing.assert_allclose(lo2[held], lo[held])
    np.testing.assert_allclose(hi2[held], hi[held])
    assert not np.allclose(hi2[~held], hi[~held])  # the other folds' intervals did learn from fold 2


def test_intervals_only_for_the_interval_model_and_none_with_two_folds() -> None:
    x, y, coords = _synthetic(n=120)
    res = evaluate_label(x, y, coords, models=("ridge", "gbm"), folds=3, repeats=1, coverage=0.9,
                         interval_model="ridge")
    table = res.metrics.set_index(["model", "protocol"])
    assert table.loc["ridge", "coverage"].notna().all() and table.loc["gbm", "coverage"].isna().all()
    assert set(res.intervals) == {"ridge"}
    two = evaluate_label(x, y, coords, models=("ridge",), folds=2, repeats=1, coverage=0.9)
    assert two.metrics["coverage"].isna().all() and two.intervals == {}
    assert cv_plus(single_fit_predict(x, y), y, shuffled_folds(len(y), 2, 0), "ridge", 0, 0.9) is None
    none = evaluate_label(x, y, coords, models=("ridge",), folds=3, repeats=1)
    assert none.metrics["coverage"].isna().all() and none.intervals == {}


def test_interval_columns_in_label_units_clipped_at_zero() -> None:
    from backend.config import LabelSpec
    from backend.tasks.targets import make_target

    ids = pd.Index([f"r{i}" for i in range(12)], name="region_id")
    raw = pd.Series([np.nan, *np.arange(1.0, 12.0)], index=ids)
    target = make_target(raw, LabelSpec(name="crime", field="c", log1p=True), pd.Series(1.0, index=ids), None)
    low = np.linspace(-1.0, 2.0, 11)

    class Result:
        intervals = {"ridge": (low, low + 2.0)}

    frame = pd.DataFrame({"crime_obs": raw}, index=ids)
    out = add_interval_columns(frame, "crime", Result(), "ridge", target, target.y.index)
    np.testing.assert_allclose(out["crime_lo"].iloc[1:], np.clip(np.expm1(low), 0.0, None))
    np.testing.assert_allclose(out["crime_hi"].iloc[1:], np.expm1(low + 2.0))
    assert np.isnan(out.loc["r0", "crime_lo"]) and np.isnan(out.loc["r0", "crime_hi"])
    missing = add_interval_columns(pd.DataFrame({"crime_obs": raw}, index=ids), "crime", Result(), "gbm", target,
                                   target.y.index)
    assert missing["crime_lo"].isna().all() and missing["crime_hi"].isna().all()


def test_fusion_intervals_never_see_the_held_out_fold_and_leave_its_choices_alone() -> None:
    from backend.tasks.fusion import evaluate_fusion, fusion_fit_predict

    x, y, coords = _synthetic(n=240)
    blocks = {"first": x[:, :3], "second": x[:, 3:]}
    fold_of = shuffled_folds(len(y), 4, seed=0)
    lo, hi = cv_plus(fusion_fit_predict(blocks, y, inner_folds=3), y, fold_of, "ridge", 0, 0.9)
    held = fold_of == 1
    y2 = y.copy()
    y2[held] = -y2[held] * 50
    lo2, hi2 = cv_plus(fusion_fit_predict(blocks, y2, inner_folds=3), y2, fold_of, "ridge", 0, 0.9)
    np.testing.assert_allclose(lo2[held], lo[held])
    np.testing.assert_allclose(hi2[held], hi[held])
    res, choices = evaluate_fusion(blocks, y, coords, models=("ridge",), folds=5, repeats=1, inner_folds=3,
                                   coverage=0.9)
    assert len(choices["shuffled"].weights) == 5  # one stacking choice per outer fold, none from the intervals
    for protocol in ("shuffled", "spatial"):
        assert abs(res.metrics.set_index("protocol").loc[protocol, "coverage"] - 0.9) < 0.06
    assert set(res.intervals) == {"ridge"}


def _dense_bound(centres: np.ndarray, resids: list[np.ndarray], sign: float, rank: int) -> np.ndarray:
    """The definition: every value c + sign * R of a row in one matrix, its rank-th smallest."""
    values = np.hstack([centres[:, [m]] + sign * r[None, :] for m, r in enumerate(resids)])
    return np.partition(values, rank - 1, axis=1)[:, rank - 1]


@pytest.mark.parametrize("ties", [False, True])
def test_bounds_without_the_matrix_equal_the_definition(ties: bool) -> None:
    from backend.tasks import intervals

    rng = np.random.default_rng(7)
    sizes = (37, 41, 29, 40)
    draw = (lambda size: rng.integers(-5, 6, size=size).astype(float)) if ties else (lambda size: rng.normal(size=size))
    centres = draw((53, len(sizes))) + (0.0 if ties else 3.0)
    resids = [np.sort(np.abs(draw(s))) for s in sizes]
    count = sum(sizes)
    for sign in (-1.0, 1.0):
        for rank in (1, 2, 7, count // 2, count - 3, count):
            got = intervals._kth_smallest(centres, resids, sign, rank)
            np.testing.assert_array_equal(got, _dense_bound(centres, resids, sign, rank))
    zero = [np.zeros(5), np.zeros(3)]  # every value is a centre: values at 0 and below need no denormal walk
    np.testing.assert_array_equal(intervals._kth_smallest(np.zeros((4, 2)), zero, -1.0, 3), np.zeros(4))


def test_cv_plus_memory_is_linear_in_the_regions() -> None:
    """10,000 regions in 5 folds: the definition's matrices are 2,000 x 8,000 values (128 MB each); CV+ here
    never holds more than a few arrays of N values, and polls the progress as it goes."""
    import tracemalloc

    n = 10_000
    rng = np.random.default_rng(0)
    y = rng.normal(size=n)
    fold_of = shuffled_folds(n, 5, seed=1)

    def fit_predict(model: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return np.full(int(test.sum()), y[train].mean()) + 0.01 * np.arange(int(test.sum())) / n

    polls: list[int] = []
    tracemalloc.start()
    try:
        lo, hi = cv_plus(fit_predict, y, fold_of, "mean", 0, 0.9, poll=lambda: polls.append(1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert len(polls) > 2 * 5  # heartbeat and cancel between the steps of every bound
    assert np.all(lo < hi) and abs(interval_scores(y, lo, hi)["coverage"] - 0.9) < 0.02
