"""Tests of backend.tasks.fusion (nested stacking) and the seed-ensemble evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from backend.tasks.fusion import (
    FusionChoices,
    candidates,
    evaluate_fusion,
    fusion_fit_predict,
    select_rows,
    stack_weights,
)
from backend.tasks.prediction import evaluate_ensemble, evaluate_label, shuffled_folds


def _blocks(n: int = 160, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 3))
    y = signal @ np.array([1.0, -0.5, 0.3]) + 0.1 * rng.normal(size=n)
    return {"useful": signal + 0.05 * rng.normal(size=(n, 3)), "noise": rng.normal(size=(n, 6))}, y


def test_stack_weights_recover_a_known_mix() -> None:
    rng = np.random.default_rng(1)
    preds = rng.normal(size=(200, 3))
    w, a = stack_weights(preds, 2.0 + preds @ np.array([0.7, 0.0, 0.3]))
    np.testing.assert_allclose(w, [0.7, 0.0, 0.3], atol=1e-8)
    assert a == pytest.approx(2.0)


def test_fusion_picks_the_useful_block_and_scores_like_it() -> None:
    blocks, y = _blocks()
    res, choices = evaluate_fusion(blocks, y, None, models=("ridge",), folds=4, repeats=2, spatial=False, seed=0)
    alone = evaluate_label(blocks["useful"], y, None, models=("ridge",), folds=4, repeats=2, spatial=False, seed=0)
    summary = choices["shuffled"].summary()
    assert summary["blocks"]["useful"]["mean_weight"] > 0.6
    assert summary["blocks"]["noise"]["mean_weight"] < 0.1
    assert set(summary["blocks"]) == {"useful", "noise", "all blocks"}
    assert len(choices["shuffled"].weights) == 8  # one choice per outer training fold
    assert res.metrics["r2_mean"].iloc[0] == pytest.approx(alone.metrics["r2_mean"].iloc[0], abs=0.02)


def test_nested_selection_never_reads_the_outer_test_labels() -> None:
    """Poisoning one outer fold's test labels leaves that fold's chosen weights unchanged."""
    blocks, y = _blocks(seed=2)
    n = len(y)
    fold_of = shuffled_folds(n, 4, seed=5)
    test = fold_of == 0
    poisoned = y.copy()
    poisoned[test] = np.random.default_rng(9).permutation(poisoned[test]) * 100.0 - 50.0
    picked = []
    for labels in (y, poisoned):
        record = FusionChoices(blocks=candidates(blocks))
        pred = fusion_fit_predict(blocks, labels, record=record)("ridge", 5, ~test, test)
        picked.append((record.weights[0], pred))
    np.testing.assert_array_equal(picked[0][0], picked[1][0])
    np.testing.assert_array_equal(picked[0][1], picked[1][1])
    # ... while poisoning a training row does change the weights (the check can fail)
    other = y.copy()
    other[np.flatnonzero(~test)[:40]] *= -3.0
    record = FusionChoices(blocks=candidates(blocks))
    fusion_fit_predict(blocks, other, record=record)("ridge", 5, ~test, test)
    assert not np.array_equal(record.weights[0], picked[0][0])


def test_gbm_uses_the_chosen_blocks_and_shares_the_choice() -> None:
    blocks, y = _blocks(n=90)
    res, choices = evaluate_fusion(blocks, y, None, models=("ridge", "gbm"), folds=3, repeats=1, spatial=False)
    assert list(res.metrics["model"]) == ["ridge", "gbm"]
    assert len(choices["shuffled"].weights) == 3  # gbm reuses ridge's choice per fold


def test_ensemble_averages_member_predictions_and_reduces_noise() -> None:
    rng = np.random.default_rng(3)
    n = 150
    truth = rng.normal(size=(n, 4))
    y = truth @ np.ones(4)
    members = [truth + 1.0 * rng.normal(size=(n, 4)) for _ in range(5)]
    one = evaluate_label(members[0], y, None, models=("ridge",), folds=5, repeats=2, spatial=False)
    ens = evaluate_ensemble(members, y, None, models=("ridge",), folds=5, repeats=2, spatial=False)
    assert ens.metrics["r2_mean"].iloc[0] > one.metrics["r2_mean"].iloc[0] + 0.05
    # a one-member ensemble is the single model, exactly
    same = evaluate_ensemble(members[:1], y, None, models=("ridge",), folds=5, repeats=2, spatial=False)
    np.testing.assert_allclose(same.metrics["r2_mean"], one.metrics["r2_mean"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ensemble([members[0], np.full((n, 4), np.nan)], y, None, spatial=False)


def test_an_ensemble_block_predicts_as_its_ensemble() -> None:
    """A seed-ensemble block (a list of member matrices) is one candidate whose regressor averages one model
    per member: one member is the plain block exactly; noisy members beat any one of them."""
    rng = np.random.default_rng(4)
    n = 150
    truth = rng.normal(size=(n, 4))
    y = truth @ np.ones(4)
    members = [truth + 1.0 * rng.normal(size=(n, 4)) for _ in range(5)]
    other = rng.normal(size=(n, 3))
    kw = {"models": ("ridge",), "folds": 5, "repeats": 2, "spatial": False}
    plain, _ = evaluate_fusion({"m": members[0], "x": other}, y, None, **kw)
    single, choices = evaluate_fusion({"m": members[:1], "x": other}, y, None, **kw)
    np.testing.assert_allclose(single.metrics["r2_mean"], plain.metrics["r2_mean"])
    ens, choices = evaluate_fusion({"m": members, "x": other}, y, None, **kw)
    assert set(choices["shuffled"].summary()["blocks"]) == {"m", "x", "all blocks"}
    assert ens.metrics["r2_mean"].iloc[0] > plain.metrics["r2_mean"].iloc[0] + 0.05
    # rows are selected member by member
    sub = select_rows({"m": members, "x": other}, np.arange(10))
    assert [a.shape for a in sub["m"]] == [(10, 4)] * 5 and sub["x"].shape == (10, 3)


def test_nested_selection_with_an_ensemble_block_never_reads_the_outer_test_labels() -> None:
    blocks, y = _blocks(seed=6)
    rng = np.random.default_rng(7)
    blocks["useful"] = [blocks["useful"] + 0.3 * rng.normal(size=blocks["useful"].shape) for _ in range(3)]
    test = shuffled_folds(len(y), 4, seed=1) == 0
    poisoned = y.copy()
    poisoned[test] = -poisoned[test] * 40.0
    out = []
    for labels in (y, poisoned):
        record = FusionChoices(blocks=candidates(blocks))
        out.append((fusion_fit_predict(blocks, labels, record=record)("ridge", 3, ~test, test), record.weights[0]))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", 21])
def test_ensemble_size_is_validated(bad: object, sf_config_dict: dict, sf_dir) -> None:
    from backend.config import config_from_dict
    from backend.errors import ConfigError

    sf_config_dict["methods"] = [{"name": "calliper", "ensemble": bad}]
    with pytest.raises(ConfigError, match="ensemble"):
        config_from_dict(sf_config_dict, base_dir=sf_dir)


def test_a_deterministic_method_refuses_an_ensemble() -> None:
    from backend.errors import ConfigError
    from backend.models import get_embedder
    from backend.models.ensemble import SeedEnsemble

    with pytest.raises(ConfigError, match="deterministic"):
        SeedEnsemble.of(lambda s: get_embedder("baseline", seed=s), 2, 0)
    assert len(SeedEnsemble.of(lambda s: get_embedder("calliper", seed=s), 3, 5).members) == 3
    assert [m.seed for m in SeedEnsemble.of(lambda s: get_embedder("calliper", seed=s), 3, 5).members] == [5, 6, 7]


def test_worker_info_describes_fusion_ensembles_and_context() -> None:
    """What the plugin reads to offer fusion, ``ensemble`` and ``context``."""
    from backend.worker import info

    got = info()
    assert got["methods"]["fusion"]["combines_methods"] is True
    assert got["methods"]["fusion"]["ensemble"] is False and got["methods"]["baseline"]["ensemble"] is False
    assert got["methods"]["hafusion"]["ensemble"] is True
    assert got["context_presets"]["standard"] == {"rings": 1, "distances_m": [1000.0]}


def test_fusion_embedder_hands_an_ensemble_source_to_prediction_as_its_members() -> None:
    """The written embedding uses the ensemble's combined embedding; prediction gets its members."""
    import pandas as pd

    from backend.models.fusion import FusionEmbedder
    from backend.views._base import Views

    ids = pd.Index([f"r{i}" for i in range(12)], name="region_id")
    rng = np.random.default_rng(0)
    frame = lambda: pd.DataFrame(rng.normal(size=(12, 3)), index=ids)  # noqa: E731
    combined, members = frame(), [frame(), frame()]
    views = Views(region_ids=ids)
    fusion = FusionEmbedder(dim=2, context="none", raw_views=False)
    fusion.set_sources({"a": combined, "b": frame()}, members={"a": members, "b": [frame()]})
    fusion.fit(views)
    np.testing.assert_array_equal(fusion.blocks(views)["a"], combined.to_numpy())
    blocks = fusion.prediction_blocks(views)
    assert isinstance(blocks["b"], np.ndarray)  # one member: a plain block
    assert [m.tolist() for m in blocks["a"]] == [m.to_numpy().tolist() for m in members]


def test_fusion_progress_never_steps_back() -> None:
    """Both protocols report into one range: the fraction only grows (a bar stepped back 67 -> 65 %)."""
    from backend.progress import Progress

    seen: list[float] = []
    progress = Progress(callback=lambda stage, fraction, message: seen.append(fraction))
    progress.stage("predict", 0.5, 0.9)
    blocks, y = _blocks(n=80)
    coords = np.random.default_rng(0).uniform(size=(80, 2))
    evaluate_fusion(blocks, y, coords, models=("ridge",), folds=3, repeats=1, spatial=True, progress=progress)
    assert len(seen) > 3 and all(b >= a for a, b in zip(seen, seen[1:], strict=False))
    assert 0.5 <= min(seen) and max(seen) <= 0.9


@pytest.mark.parametrize("slow", ["fusion blocks", "fusion blocks balanced", "fusion PCA"])
def test_fusion_embedder_keeps_reporting_and_can_be_cancelled_in_a_long_call(
        slow: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the blocks (with their spatial context), balancing them and the SVD are single long calls at
    250,000 regions:
    they run under Progress.wait (heartbeats come, a cancel stops the fit)."""
    import threading

    import pandas as pd

    from backend import progress as progress_mod
    from backend.errors import Cancelled
    from backend.models import fusion as fusion_mod
    from backend.progress import Progress
    from backend.views._base import Views

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    if slow == "fusion blocks":
        real_blocks = fusion_mod.FusionEmbedder.blocks
        monkeypatch.setattr(fusion_mod.FusionEmbedder, "blocks",
                            lambda self, views: release.wait(5.0) or real_blocks(self, views))
    elif slow == "fusion blocks balanced":  # the block means, scales and their balanced concatenation
        real_balanced = fusion_mod.FusionEmbedder._balanced
        monkeypatch.setattr(fusion_mod.FusionEmbedder, "_balanced",
                            lambda self, blocks: release.wait(5.0) or real_balanced(self, blocks))
    else:
        real_svd = np.linalg.svd
        monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: release.wait(5.0) and real_svd(*a, **k))
    ids = pd.Index([f"r{i}" for i in range(12)], name="region_id")
    rng = np.random.default_rng(0)
    fusion = fusion_mod.FusionEmbedder(dim=2, context="none", raw_views=False)
    fusion.set_sources({"a": pd.DataFrame(rng.normal(size=(12, 3)), index=ids)})
    messages: list[str] = []
    progress = Progress()

    def cancel_on_heartbeat(stage: str, fraction: float, message: str) -> None:
        messages.append(message)
        if messages.count(slow) >= 3:
            progress.cancel()

    progress.callback = cancel_on_heartbeat
    with pytest.raises(Cancelled):
        fusion.fit(Views(region_ids=ids), progress)
    release.set()
    assert messages.count(slow) >= 3
