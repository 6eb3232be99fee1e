"""bench/leaderboard.py's protocol pieces: the public code's folds (SPEC 4.1), the cache and the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import leaderboard as lb


def _city(n: int) -> lb.City:
    y = np.arange(n, dtype=float) % 7  # zeros at every 7th region
    return lb.City("c", None, {"checkIn": (np.arange(n), y), "crime": (np.arange(n), y + 1)}, None, folds=10,
                   fold_seeds=5, models=("ridge",))


@pytest.mark.parametrize(("n", "folds", "drops_zero_checkins", "contiguous"),
                         [(180, 10, False, True), (77, 25, True, False), (175, 10, True, False)])
def test_reference_folds_follow_the_public_code(n: int, folds: int, drops_zero_checkins: bool,
                                                contiguous: bool) -> None:
    city = _city(n)
    keep, fold_of = lb.reference_plan(city, "checkIn")
    assert int(keep.sum()) == (n - len(range(0, n, 7)) if drops_zero_checkins else n)
    assert len(fold_of) == int(keep.sum()) and set(fold_of) == set(range(folds))
    assert (np.all(np.diff(fold_of) >= 0)) == contiguous  # Manhattan: KFold without shuffle
    keep_crime, _ = lb.reference_plan(city, "crime")
    assert keep_crime.all()  # only check-ins drop zeros


def test_cache_resumes_without_recomputing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lb, "CACHE", tmp_path)
    calls = []

    def make() -> np.ndarray:
        calls.append(1)
        return np.ones((3, 2))

    first, _ = lb.cached("city", "m", 0, make)
    again, _ = lb.cached("city", "m", 0, make)
    assert len(calls) == 1 and np.array_equal(first, again)
    assert (tmp_path / "city" / "m" / "seed0.npy").is_file()


def test_board_pools_seeds_with_sample_std_and_keys_protocols() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = x @ np.array([1.0, 0.5, 0.0]) + 0.3 * rng.normal(size=60)
    city = lb.City("c", type("V", (), {"region_ids": pd.RangeIndex(60)})(), {"t": (np.arange(60), y)}, None,
                   folds=5, fold_seeds=2, models=("ridge", "ridge1"))
    board = lb.Board(city, reference=False)
    board.score("m", [x, x + 0.1 * rng.normal(size=x.shape)])
    summary = board.summary()
    assert set(summary) == {"m", "m@ridge_alpha1"}
    recs = board.scores["m"][("shuffled", "ridge")]["t"]
    assert len(recs) == 4  # 2 training seeds x 2 fold seeds, pooled
    assert summary["m"]["t"]["r2"][1] == pytest.approx(np.std([r["r2"] for r in recs], ddof=1))
    assert "| m |" in lb.render("c", summary, {"m": 1.0})


def test_pretrained_row_and_fusion_block_when_the_city_has_an_embedding_raster() -> None:
    from backend.views._base import Views

    rng = np.random.default_rng(1)
    ids = pd.Index([f"r{i}" for i in range(60)], name="region_id")
    emb = rng.normal(size=(60, 8))
    views = Views(region_ids=ids, tables={
        "embedding": pd.DataFrame(emb, index=ids, columns=[f"e_b{b}_mean" for b in range(8)]),
        "poi_counts": pd.DataFrame(rng.poisson(2.0, size=(60, 4)).astype(float), index=ids, columns=list("abcd"))})
    y = emb[:, 0] + 0.1 * rng.normal(size=60)
    city = lb.City("c", views, {"t": (np.arange(60), y)}, None, folds=5, fold_seeds=1, models=("ridge",))
    board = lb.run_city(city, ["baseline", "pretrained", "fusion"], [0], False, Path("unused"), lambda b: None)
    assert {"baseline", "pretrained", "fusion"} <= set(board.summary())
    assert "pretrained" in board.notes["fusion_blocks"] and "embedding" in board.notes["fusion_blocks"]
    del views.tables["embedding"]
    board = lb.run_city(city, ["baseline", "pretrained"], [0], False, Path("unused"), lambda b: None)
    assert "pretrained" not in board.summary() and "pretrained" in board.notes["not_applicable"]
