"""Tests of backend.tasks.prediction: out-of-fold guarantee, metrics, folds, repeats, cancellation."""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV

from backend.errors import Cancelled, InputError
from backend.progress import Progress
from backend.tasks.prediction import (
    CLIP_Z,
    METRIC_COLUMNS,
    RIDGE_ALPHAS,
    FeatureGuard,
    LooRidge,
    evaluate_label,
    make_model,
    metrics_table,
    regression_metrics,
    shuffled_folds,
    spatial_folds,
)


def _data(n: int = 150, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.uniform(0, 10_000, size=(n, 2))


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    # errors 0, -1, 1, 0; mean y 2.5 -> ss_tot 5, ss_res 2
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["r2"] == pytest.approx(1 - 2 / 5)
    assert math.isnan(regression_metrics(np.ones(3), np.zeros(3))["r2"])
    with pytest.raises(ValueError):
        regression_metrics(np.ones(3), np.ones(2))


def test_reported_metrics_are_out_of_fold_by_hand() -> None:
    x, coords = _data(60)
    y = x[:, 0] + np.random.default_rng(1).normal(size=60)
    res = evaluate_label(x, y, coords, models=("ridge",), folds=4, repeats=2, spatial=False, seed=3)
    preds = []
    for r in range(2):
        fold_of = shuffled_folds(60, 4, 3 + r)
        pred = np.empty(60)
        for f in range(4):
            test = fold_of == f
            pred[test] = make_model("ridge").fit(x[~test], y[~test]).predict(x[test])
        preds.append(pred)
    by_hand = [regression_metrics(y, p) for p in preds]
    row = res.metrics.iloc[0]
    assert row["r2_mean"] == pytest.approx(np.mean([m["r2"] for m in by_hand]))
    assert row["mae_std"] == pytest.approx(np.std([m["mae"] for m in by_hand], ddof=1))
    np.testing.assert_allclose(res.oof["ridge"], np.mean(preds, axis=0))


@pytest.mark.parametrize("n, p", [(400, 12), (3000, 90), (50, 80), (120, 120)])
def test_loo_ridge_equals_ridgecv(n: int, p: int) -> None:
    """Same penalty, coefficients, intercept and leave-one-out score as scikit-learn's RidgeCV, with more rows
    than columns (its own path), fewer (RidgeCV's Gram mode), collinear columns and a constant column."""
    rng = np.random.default_rng(n + p)
    x = rng.normal(size=(n, p)) * rng.uniform(0.1, 30, size=p)
    x[:, 1] = 3 * x[:, 0] - 2  # collinear
    x[:, 2] = 7.0  # constant
    y = x[:, 3] - 0.5 * x[:, 4] + rng.normal(size=n) * 5 + 40
    ref = RidgeCV(alphas=RIDGE_ALPHAS).fit(x, y)
    ours = LooRidge().fit(x, y)
    assert ours.alpha_ == ref.alpha_
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-7, atol=1e-9)
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-9, abs=1e-9)
    assert ours.best_score_ == pytest.approx(ref.best_score_, rel=1e-9)
    x_new = rng.normal(size=(30, p))
    np.testing.assert_allclose(ours.predict(x_new), ref.predict(x_new), rtol=1e-7, atol=1e-7)


def test_loo_ridge_picks_each_penalty_as_ridgecv_does() -> None:
    """Across signal-to-noise ratios the chosen penalty moves over the grid, always as RidgeCV's does."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 20))
    chosen = set()
    for noise in (0.01, 1.0, 10.0, 100.0):
        y = x @ rng.normal(size=20) + rng.normal(size=600) * noise
        a = LooRidge().fit(x, y).alpha_
        assert a == RidgeCV(alphas=RIDGE_ALPHAS).fit(x, y).alpha_
        chosen.add(a)
    assert len(chosen) >= 3
    with pytest.raises(ValueError, match="penalty"):
        LooRidge(alphas=()).fit(x, x[:, 0])


def test_memorising_model_cannot_score_on_noise() -> None:
    n = 120
    rng = np.random.default_rng(5)
    y = rng.normal(size=n)
    # one indicator column per row: a perfect memoriser in sample, useless on unseen rows
    ident = np.eye(n)
    coords = rng.uniform(0, 1000, size=(n, 2))
    # (plain ridge; the pipeline's feature guard drops columns seen in one training region)
    in_sample = RidgeCV(alphas=RIDGE_ALPHAS).fit(ident, y).predict(ident)
    assert regression_metrics(y, in_sample)["r2"] > 0.9
    res = evaluate_label(ident, y, coords, models=("ridge",), folds=5, repeats=2, seed=0)
    assert (res.metrics["r2_mean"] <= 0.1).all()


def test_noise_is_not_learnable_by_either_model() -> None:
    x, coords = _data(120, 6, seed=2)
    y = np.random.default_rng(9).normal(size=120)
    res = evaluate_label(x, y, coords, models=("ridge", "gbm"), folds=3, repeats=2, spatial=False, seed=0)
    assert (res.metrics["r2_mean"] <= 0.1).all()
    gbm_in_sample = make_model("gbm").fit(x, y).predict(x)
    assert regression_metrics(y, gbm_in_sample)["r2"] > 0.5  # it could memorise, but never sees test rows


def test_linear_signal_is_learned_under_both_protocols() -> None:
    x, coords = _data(150, 8, seed=4)
    y = x @ np.linspace(-1, 1, 8) + 0.1 * np.random.default_rng(0).normal(size=150)
    res = evaluate_label(x, y, coords, models=("ridge",), folds=5, repeats=2, seed=0)
    assert list(res.metrics["protocol"]) == ["shuffled", "spatial"]
    assert (res.metrics["r2_mean"] > 0.9).all()


def test_result_shape_and_columns() -> None:
    x, coords = _data(80)
    y = x[:, 1] + np.random.default_rng(0).normal(size=80)
    res = evaluate_label(x, y, coords, models=("ridge", "gbm"), folds=2, repeats=1, seed=0)
    assert list(res.metrics.columns) == list(METRIC_COLUMNS)
    assert list(zip(res.metrics["model"], res.metrics["protocol"], strict=True)) == [
        ("ridge", "shuffled"),
        ("ridge", "spatial"),
        ("gbm", "shuffled"),
        ("gbm", "spatial"),
    ]
    assert (res.metrics["n_regions"] == 80).all()
    assert res.metrics["r2_std"].isna().all()  # one repeat: spread unknown
    assert set(res.oof) == {"ridge", "gbm"}
    assert all(v.shape == (80,) and np.isfinite(v).all() for v in res.oof.values())
    assert len(res.per_repeat) == 4


def test_folds_partition_the_samples() -> None:
    fold_of = shuffled_folds(53, 5, seed=1)
    assert sorted(np.unique(fold_of)) == [0, 1, 2, 3, 4]
    counts = np.bincount(fold_of)
    assert counts.sum() == 53 and counts.max() - counts.min() <= 1


def test_spatial_folds_keep_blocks_and_neighbours_together() -> None:
    gx, gy = np.meshgrid(np.arange(20), np.arange(20))
    coords = np.column_stack([gx.ravel(), gy.ravel()]) * 100.0
    fold_of, block_of = spatial_folds(coords, folds=5, seed=0)
    assert len(np.unique(block_of)) == 20
    for b in np.unique(block_of):
        assert len(np.unique(fold_of[block_of == b])) == 1  # no block split across folds
    assert sorted(np.unique(fold_of)) == [0, 1, 2, 3, 4]
    for f in range(5):  # four blocks per fold
        assert len(np.unique(block_of[fold_of == f])) == 4

    def same_fold_neighbours(assign: np.ndarray) -> float:
        grid = assign.reshape(20, 20)
        pairs = np.concatenate([(grid[:, 1:] == grid[:, :-1]).ravel(), (grid[1:, :] == grid[:-1, :]).ravel()])
        return float(pairs.mean())

    assert same_fold_neighbours(fold_of) > 0.7
    assert same_fold_neighbours(shuffled_folds(400, 5, seed=0)) < 0.35
    other, _ = spatial_folds(coords, folds=5, seed=1)
    assert not np.array_equal(other, fold_of)  # repeats draw other blocks/assignments


def test_spatial_folds_with_few_locations() -> None:
    coords = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 5, axis=0)
    with pytest.raises(InputError, match="distinct"):
        spatial_folds(coords, folds=5, seed=0)
    fold_of, block_of = spatial_folds(coords, folds=3, seed=0)
    assert len(np.unique(block_of)) == 3 and len(np.unique(fold_of)) == 3


def test_repeats_spread_when_noisy() -> None:
    x, coords = _data(100, 5, seed=6)
    y = x[:, 0] + np.random.default_rng(3).normal(size=100)
    res = evaluate_label(x, y, coords, models=("ridge",), folds=5, repeats=3, seed=0)
    assert (res.metrics[["mae_std", "rmse_std", "r2_std"]] > 0).all().all()


def test_deterministic_under_seed() -> None:
    x, coords = _data(70, 4, seed=8)
    y = x[:, 2] ** 2 + np.random.default_rng(4).normal(size=70)
    kwargs = {"models": ("ridge", "gbm"), "folds": 3, "repeats": 2, "seed": 11}
    a = evaluate_label(x, y, coords, **kwargs)
    b = evaluate_label(x, y, coords, **kwargs)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    for m in a.oof:
        np.testing.assert_array_equal(a.oof[m], b.oof[m])
    c = evaluate_label(x, y, coords, models=("ridge",), folds=3, repeats=2, seed=12)
    assert not np.array_equal(a.oof["ridge"], c.oof["ridge"])


def test_cancelled_progress_stops_evaluation() -> None:
    x, coords = _data(40)
    y = x[:, 0]
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        evaluate_label(x, y, coords, models=("ridge",), progress=Progress(cancel_event=event))

    calls: list[float] = []
    progress = Progress()

    def callback(stage: str, fraction: float, message: str) -> None:
        calls.append(fraction)
        if len(calls) == 3:
            progress.cancel()

    progress.callback = callback
    with pytest.raises(Cancelled):
        evaluate_label(x, y, coords, models=("ridge",), folds=5, repeats=3, progress=progress)
    assert len(calls) == 3  # stopped at the next fold


def test_progress_reports_every_fold() -> None:
    x, coords = _data(40)
    fractions: list[float] = []
    setup = {"checking the embedding", "building the folds"}  # the Progress.wait calls before the first fold
    progress = Progress(callback=lambda stage, fraction, message: None if message in setup
                        else fractions.append(fraction))
    evaluate_label(x, x[:, 0], coords, models=("ridge",), folds=4, repeats=2, progress=progress)
    assert len(fractions) == 2 * 2 * 4 + 1
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_invalid_arguments() -> None:
    x, coords = _data(30)
    y = x[:, 0].copy()
    with pytest.raises(ValueError, match="Unknown prediction model"):
        evaluate_label(x, y, coords, models=("svm",))
    with pytest.raises(ValueError, match="coords"):
        evaluate_label(x, y, None)
    bad = y.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_label(x, bad, coords)
    with pytest.raises(ValueError, match="one row per target"):
        evaluate_label(x, y[:-1], coords)
    with pytest.raises(InputError):
        evaluate_label(x[:3], y[:3], coords[:3], folds=5)
    res = evaluate_label(x, y, None, models=("ridge",), spatial=False, folds=3, repeats=1)
    assert list(res.metrics["protocol"]) == ["shuffled"]


def test_metrics_table_orders_columns() -> None:
    row = {c: 0 for c in METRIC_COLUMNS}
    frame = metrics_table([{**row, "label": "crime", "method": "baseline"}])
    assert list(frame.columns) == ["label", "method", *METRIC_COLUMNS]
    assert list(metrics_table([]).columns) == list(METRIC_COLUMNS)
    with pytest.raises(ValueError, match="lack"):
        metrics_table([{"model": "ridge"}])


def _one_region_category(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three informative columns and one that a single region carries (value 1; elsewhere noise of 1e-3
    that the label follows, as an embedding dimension made of one region's rare POI category does)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    rare = rng.normal(scale=1e-3, size=n)
    y = x @ np.array([1.0, -0.5, 0.3]) + 0.5 * rare / 1e-3 + rng.normal(scale=0.5, size=n)
    rare[7] = 1.0
    return np.column_stack([x, rare]), y


def test_one_region_category_cannot_wreck_ridge() -> None:
    x, y = _one_region_category()
    res = evaluate_label(x, y, None, models=("ridge",), spatial=False, repeats=2)
    # Plain standardisation gave R2 of about -660 here: region 7's z-score on the rare column was ~1000.
    assert res.metrics.loc[0, "r2_mean"] > 0.5
    assert np.abs(res.oof["ridge"] - y).max() < 10


def test_feature_guard_drops_unsupported_columns_and_clips() -> None:
    rng = np.random.default_rng(2)
    train = np.column_stack([rng.normal(size=50), np.zeros(50), np.zeros(50)])
    train[3, 1] = 4.0  # a category in one region
    train[[1, 2, 3], 2] = 1.0  # in three regions: kept
    guard = FeatureGuard().fit(train)
    assert guard.keep_.tolist() == [0, 2] and guard.n_dropped_ == 1
    out = guard.transform(np.array([[1e6, 5.0, 1.0], [0.0, 0.0, 0.0]]))
    assert out.shape == (2, 2) and out[0, 0] == CLIP_Z and np.abs(out).max() <= CLIP_Z
    nothing = FeatureGuard().fit(np.zeros((10, 2)))
    assert nothing.transform(np.ones((3, 2))).tolist() == [[0.0], [0.0], [0.0]]


def test_a_long_fold_fit_keeps_reporting_and_can_be_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend import progress as progress_mod
    from backend.tasks.prediction import cross_validate, fold_plans

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    started: list[int] = []
    messages: list[str] = []
    progress = Progress()

    def slow_fit(model_name: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        started.append(1)
        release.wait(5.0)  # one fit that cannot check for cancellation itself
        return np.zeros(int(test.sum()))

    def callback(stage: str, fraction: float, message: str) -> None:
        messages.append(message)
        if len(messages) == 4:  # heartbeats arrive while the first fit runs
            progress.cancel()

    progress.callback = callback
    y = np.arange(30, dtype=float)
    with pytest.raises(Cancelled):
        cross_validate(slow_fit, y, fold_plans(30, None, 3, 1, False, 0), ["ridge"], progress)
    release.set()
    assert started == [1]  # cancelled during the first fold's fit; no second fit began
    assert set(messages) == {"ridge, shuffled folds: repeat 1/1, fold 1/3"}


def test_a_long_interval_fit_keeps_reporting_and_can_be_cancelled(monkeypatch: pytest.MonkeyPatch,
                                                                   cancel_at_message) -> None:
    """The CV+ pair fits (one per pair of folds) run under Progress.wait like the fold fits: heartbeats come
    while one runs, and a cancel stops the job during it."""
    from backend import progress as progress_mod
    from backend.tasks.prediction import cross_validate, fold_plans

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    fits: list[int] = []
    progress, _messages = cancel_at_message("prediction intervals (CV+)", 4)

    def fit(model_name: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        fits.append(1)
        if len(fits) > 3:  # the 3 fold fits are quick; the first CV+ pair fit cannot check for cancellation
            release.wait(5.0)
        return np.zeros(int(test.sum()))

    y = np.arange(30, dtype=float)
    with pytest.raises(Cancelled):
        cross_validate(fit, y, fold_plans(30, None, 3, 1, False, 0), ["ridge"], progress, coverage=0.9)
    release.set()
    assert len(fits) == 4  # cancelled during the first pair fit; no second one began


@pytest.mark.parametrize("predictor", ["label", "fusion"])
def test_building_the_folds_keeps_reporting_and_can_be_cancelled(monkeypatch: pytest.MonkeyPatch, cancel_at_message,
                                                                 predictor: str) -> None:
    """The spatial folds (k-means on every centroid: seconds at 250,000 regions) and the checks run under
    Progress.wait in evaluate_label and evaluate_fusion: heartbeats while they run, a cancel stops the job."""
    from backend import progress as progress_mod
    from backend.tasks import fusion as fusion_mod
    from backend.tasks import prediction as prediction_mod

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = prediction_mod.fold_plans

    def slow_plans(*args: object) -> dict[str, list[np.ndarray]]:
        release.wait(5.0)  # one long call that cannot check for cancellation itself
        return real(*args)

    monkeypatch.setattr(prediction_mod, "fold_plans", slow_plans)
    monkeypatch.setattr(fusion_mod, "fold_plans", slow_plans)
    progress, messages = cancel_at_message("building the folds", 4)
    x, coords = _data(60, 4)
    y = x[:, 0]
    with pytest.raises(Cancelled):
        if predictor == "label":
            evaluate_label(x, y, coords, models=("ridge",), folds=3, repeats=1, progress=progress)
        else:
            fusion_mod.evaluate_fusion({"a": x[:, :2], "b": x[:, 2:]}, y, coords, models=("ridge",), folds=3,
                                       repeats=1, progress=progress)
    release.set()
    assert not any("fold 1/3" in m for m in messages)  # cancelled while the folds were built
