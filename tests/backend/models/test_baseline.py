"""Baseline embedder: shapes, determinism, vocabulary alignment, save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backend.errors import ConfigError, InputError
from backend.models import EMBEDDERS, BaselineEmbedder, describe_saved_model, get_embedder, load_embedder
from backend.views._base import Views


def make_views(n: int = 40, seed: int = 0, mobility: bool = True) -> Views:
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"r{i}" for i in range(n)], name="region_id")
    counts = pd.DataFrame(rng.poisson(2.0, size=(n, 6)), index=ids, columns=[f"cat{j}" for j in range(6)])
    stats = pd.DataFrame(rng.normal(size=(n, 4)), index=ids, columns=[f"img_b{j}_mean" for j in range(4)])
    return Views(
        region_ids=ids,
        tables={"poi_counts": counts, "image_stats": stats},
        mobility=rng.poisson(1.0, size=(n, n)).astype(float) if mobility else None,
        centroids=rng.uniform(0, 5000, size=(n, 2)),
    )


def test_registry_has_baseline() -> None:
    assert EMBEDDERS["baseline"] is BaselineEmbedder
    with pytest.raises(ConfigError, match="Unknown method"):
        get_embedder("nope")


def test_fit_transform_shape_index_and_columns() -> None:
    views = make_views()
    emb = get_embedder("baseline", dim=5, seed=0).fit_transform(views)
    assert emb.shape == (40, 5)
    assert emb.index.name == "region_id"
    assert list(emb.columns) == [f"emb_{i:03d}" for i in range(5)]
    assert np.isfinite(emb.to_numpy()).all()
    # PCA scores are centred and ordered by variance.
    np.testing.assert_allclose(emb.mean().to_numpy(), 0.0, atol=1e-9)
    var = emb.var().to_numpy()
    assert (np.diff(var) <= 1e-9).all()


def test_deterministic() -> None:
    a = BaselineEmbedder(dim=4, seed=3).fit_transform(make_views())
    b = BaselineEmbedder(dim=4, seed=3).fit_transform(make_views())
    pd.testing.assert_frame_equal(a, b)


def test_dim_larger_than_rank_is_clipped_and_logged() -> None:
    from backend.progress import Progress

    progress = Progress()
    views = make_views(n=6, mobility=False)
    emb = BaselineEmbedder(dim=50).fit_transform(views, progress)
    assert emb.shape == (6, 6)
    assert any("only 6 components" in m for m in progress.log_messages)


def test_equal_view_weights() -> None:
    # Duplicating a view's columns must not change how much that view counts.
    views = make_views(mobility=False)
    wide = views.tables["poi_counts"]
    views2 = make_views(mobility=False)
    views2.tables["poi_counts"] = pd.concat([wide, wide.add_suffix("_copy")], axis=1)
    e1 = BaselineEmbedder(dim=3).fit_transform(views)
    e2 = BaselineEmbedder(dim=3).fit_transform(views2)
    np.testing.assert_allclose(np.abs(e1.to_numpy()), np.abs(e2.to_numpy()), atol=1e-8)


def test_save_load_round_trip_and_new_regions(tmp_path) -> None:
    views = make_views()
    model = BaselineEmbedder(dim=4, seed=1, neighbourhood_m=800.0).fit(views)
    before = model.transform(views)
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file()
    assert (tmp_path / "m" / "weights.safetensors").is_file()
    loaded = load_embedder(str(tmp_path / "m"))
    pd.testing.assert_frame_equal(before, loaded.transform(views))
    # The saved config says what new regions need: POIs (categories only), the raster and the OD table.
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["inputs"] == {
        "regions": {"views": [], "fields": ["id_field"], "optional_fields": [], "required": True},
        "pois": {"views": ["poi_counts"], "fields": ["category_field"], "optional_fields": [], "required": False},
        "rasters": {"views": ["image_stats"], "fields": [], "optional_fields": [], "names": ["img"],
                   "required": False},
        "od": {"views": ["mobility"], "fields": ["origin_field", "destination_field", "count_field"],
               "optional_fields": [], "required": False},
    }
    described = describe_saved_model(str(tmp_path / "m"))
    assert described["name"] == "baseline" and described["inputs"] == saved["inputs"] and described["dim"] == 4
    del saved["inputs"]  # a model saved before ``inputs`` existed: computed from the loaded model
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    assert describe_saved_model(str(tmp_path / "m"))["inputs"] == loaded.inputs()
    with pytest.raises(InputError, match="no saved RegionLens model"):
        describe_saved_model(str(tmp_path / "nothing"))
    # New regions with shuffled category columns, an unseen category and no mobility: same columns used.
    new = make_views(n=10, seed=9, mobility=False)
    counts = new.tables["poi_counts"]
    new.tables["poi_counts"] = counts[counts.columns[::-1]].assign(unseen=1)
    out = loaded.transform(new)
    assert out.shape == (10, 4) and np.isfinite(out.to_numpy()).all()
    reordered = make_views(n=10, seed=9, mobility=False)
    pd.testing.assert_frame_equal(out, loaded.transform(reordered))


def test_needs_a_view() -> None:
    ids = pd.Index(["a", "b"], name="region_id")
    with pytest.raises(InputError, match="needs at least 1"):
        BaselineEmbedder().fit(Views(region_ids=ids))


def test_unknown_param() -> None:
    with pytest.raises(ConfigError, match="unknown parameters"):
        BaselineEmbedder(foo=1)


def test_a_long_pca_keeps_reporting_and_can_be_cancelled(monkeypatch: pytest.MonkeyPatch, cancel_at_message) -> None:
    """The PCA's SVD (one LAPACK call, seconds at 250,000 regions) runs under Progress.wait."""
    import threading

    from backend import progress as progress_mod
    from backend.progress import Cancelled

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: release.wait(5.0) and real(*a, **k))
    progress, messages = cancel_at_message("PCA", 3)
    with pytest.raises(Cancelled):
        BaselineEmbedder(dim=2).fit(make_views(), progress)
    release.set()
    assert messages.count("PCA") >= 3
