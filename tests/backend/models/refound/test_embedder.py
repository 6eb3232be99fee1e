"""ReFound embedder: pre-training lowers the loss, determinism, checkpoint resume after a cancel, save/load,
missing POIs or imagery, ablations, inductive transform, grid samples. A tiny network on 40 real sample-city
regions with the real packaged teachers (MiniLM, EfficientNet-Lite0) and tokenizer; CPU, seeded, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.errors import Cancelled, ConfigError, InputError
from backend.models import EMBEDDERS, get_embedder, load_embedder
from backend.models.refound import RefoundEmbedder
from backend.models.refound import model as refound_model
from backend.progress import Progress
from backend.views._base import Views

#: A tiny network in place of the small preset (tests only).
TINY = dict(layers=2, width=32, heads=2, ffn=64, fusion_layers=1, max_tokens=24, image_size=32, codebook_size=8)


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tiny preset, caches under tmp_path (one torch thread: the folder's conftest)."""
    monkeypatch.setitem(refound_model.PRESETS, "small", TINY)
    monkeypatch.setenv("REGIONLENS_CACHE_DIR", str(tmp_path / "cache"))


def subset(views: Views, rows: np.ndarray, samples: Views | None = None) -> Views:
    """Some regions of the sample city with their POIs, chips and polygons."""
    ids = views.region_ids[rows]
    pts = views.poi_points
    keep = set(map(str, ids))
    return Views(
        region_ids=ids,
        poi_points=None if pts is None else pts[pts["region_id"].isin(keep)].copy(),
        chips={k: v[rows].copy() for k, v in views.chips.items()},
        chip_masks={k: v[rows].copy() for k, v in views.chip_masks.items()},
        centroids=views.centroids[rows],
        geometry=views.geometry.iloc[rows],
        samples=samples,
    )


@pytest.fixture
def city40(sf_views: Views) -> Views:
    """40 sample-city regions (POIs in most, chips in all)."""
    return subset(sf_views, np.arange(40))


def fast(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"dim": 32, "seed": 0, "device": "cpu", "steps": 6, "batch_size": 8,
                           "checkpoint_dir": "none"}
    out.update(kw)
    return out


# --------------------------------------------------------------------------------------------- registry
def test_registry_describe_and_parameter_errors() -> None:
    assert EMBEDDERS["refound"] is RefoundEmbedder
    info = RefoundEmbedder.describe()
    assert info["dim"] == 128 and "chips" in info["views"] and info["params"]["config"] == "small"
    for bad in ({"config": "huge"}, {"steps": -1}, {"batch_size": 1}, {"warmup": 1.0},
                {"masked_poi": False, "masked_image": False, "alignment": False, "distill_text": False,
                 "distill_image": False, "distill_similarity": False}):
        with pytest.raises(ConfigError):
            get_embedder("refound", **bad)


def test_needs_pois_or_imagery() -> None:
    import pandas as pd

    views = Views(region_ids=pd.Index(["a", "b"], name="region_id"))
    with pytest.raises(InputError, match="neither"):
        RefoundEmbedder(**fast()).fit(views)


def test_dim_above_width_is_an_error(city40: Views) -> None:
    with pytest.raises(ConfigError, match="network width"):
        RefoundEmbedder(**fast(dim=64, steps=1)).fit(city40)


# --------------------------------------------------------------------------------------------- training
def test_pretraining_lowers_the_loss_and_embeds(city40: Views) -> None:
    model = RefoundEmbedder(**fast(steps=40, learning_rate=3e-3, warmup=0.05))
    emb = model.fit_transform(city40)
    assert emb.shape == (40, 32) and np.isfinite(emb.to_numpy()).all()
    assert list(emb.index) == list(city40.region_ids)
    h = model.history
    assert len(h) == 40 and np.mean(h[-8:]) < np.mean(h[:8])
    assert set(model.loss_terms) == {"masked_poi", "masked_image", "alignment", "distill_text", "distill_image",
                                     "distill_similarity"}
    # every region gets its own vector
    assert np.linalg.matrix_rank(emb.to_numpy()) > 5


def test_determinism_and_seed(city40: Views) -> None:
    a = RefoundEmbedder(**fast()).fit_transform(city40)
    b = RefoundEmbedder(**fast()).fit_transform(city40)
    c = RefoundEmbedder(**fast(seed=1)).fit_transform(city40)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_pca_reduction_below_width(city40: Views) -> None:
    emb = RefoundEmbedder(**fast(dim=8)).fit_transform(city40)
    assert emb.shape == (40, 8)
    var = emb.to_numpy().var(axis=0)
    assert np.all(np.diff(var) <= 1e-9)  # principal components by decreasing variance


def test_checkpoint_resume_after_cancel_matches_an_uninterrupted_run(city40: Views, tmp_path: Path) -> None:
    params = fast(steps=12, checkpoint_every=4, checkpoint_dir=str(tmp_path / "ckpt"))
    straight = RefoundEmbedder(**{**params, "checkpoint_dir": "none"}).fit(city40)

    progress = Progress()

    def stop(stage: str, fraction: float, message: str) -> None:
        if message.startswith("step 10/"):
            progress.cancel()

    progress.callback = stop
    with pytest.raises(Cancelled):
        RefoundEmbedder(**params).fit(city40, progress)
    saved = list((tmp_path / "ckpt").glob("refound-*.pt"))
    assert len(saved) == 1  # written on cancel

    resumed = RefoundEmbedder(**params).fit(city40)
    assert resumed.resumed_from == 10
    assert resumed.history == pytest.approx(straight.history, rel=1e-5, abs=1e-6)
    for (k, v), (k2, v2) in zip(straight.network.state_dict().items(), resumed.network.state_dict().items(),
                                strict=True):
        assert k == k2
        torch.testing.assert_close(v, v2, rtol=1e-5, atol=1e-6)
    assert not list((tmp_path / "ckpt").glob("refound-*.pt"))  # removed after the run completed


def test_cancel_inside_a_pre_training_step(city40: Views, cancel_after) -> None:
    """Cancellation is checked between the network's layers, not once per step: armed at the progress report
    after step 5, the cancel stops the run inside step 6."""
    progress = cancel_after(10**9)
    event = progress.cancel_event

    def arm(stage: str, fraction: float, message: str) -> None:
        if message.startswith("step 5/"):
            event.after = event.checks + 3

    progress.callback = arm
    model = RefoundEmbedder(**fast(steps=20))
    with pytest.raises(Cancelled):
        model.fit(city40, progress)
    assert len(model.history) == 5


def test_checkpoint_of_another_job_is_not_used(city40: Views, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    progress = Progress()
    progress.callback = lambda s, f, m: progress.cancel() if m.startswith("step 5/") else None
    with pytest.raises(Cancelled):
        RefoundEmbedder(**fast(steps=10, checkpoint_every=2, checkpoint_dir=str(folder))).fit(city40, progress)
    other = RefoundEmbedder(**fast(steps=10, checkpoint_every=2, checkpoint_dir=str(folder), seed=3)).fit(city40)
    assert other.resumed_from == 0


def test_save_load_round_trip(city40: Views, tmp_path: Path) -> None:
    model = RefoundEmbedder(**fast(dim=16)).fit(city40)
    before = model.transform(city40)
    model.save(tmp_path / "m")
    inputs = json.loads((tmp_path / "m" / "config.json").read_text())["inputs"]
    assert inputs["pois"] == {"views": ["poi_points"], "fields": ["category_field"], "optional_fields": ["name_field"],
                              "required": False}
    assert inputs["rasters"]["views"] == ["chips"] and inputs["rasters"]["names"] == [model.meta["raster"]]
    loaded = load_embedder(str(tmp_path / "m"))
    assert isinstance(loaded, RefoundEmbedder)
    np.testing.assert_allclose(loaded.transform(city40).to_numpy(), before.to_numpy(), rtol=1e-6, atol=1e-8)
    assert loaded.steps_run == 6 and loaded.meta["raster"] == model.meta["raster"]


# -------------------------------------------------------------------------------------- missing parts
def test_regions_without_pois_or_imagery_still_embed(city40: Views) -> None:
    views = subset(city40, np.arange(40))
    raster = next(iter(views.chips))
    assert views.poi_points is not None
    counts = views.poi_points["region_id"].value_counts()
    with_pois = [i for i, r in enumerate(views.region_ids) if counts.get(str(r), 0) >= 2]
    no_image, no_poi = with_pois[:3], with_pois[3:6]
    views.poi_points = views.poi_points[~views.poi_points["region_id"].isin({str(views.region_ids[i]) for i in no_poi})]
    views.chips[raster][no_image] = 0.0  # no valid pixel
    views.chip_masks[raster][no_image] = False
    emb = RefoundEmbedder(**fast()).fit_transform(views)
    x = emb.to_numpy()
    assert np.isfinite(x).all()
    assert not np.allclose(x[no_image[0]], x[no_image[1]])  # POIs but no imagery: still its own vector
    assert not np.allclose(x[no_poi[0]], x[no_poi[1]])  # imagery but no POIs: too


def test_imagery_only_and_pois_only(city40: Views) -> None:
    no_pois = subset(city40, np.arange(40))
    no_pois.poi_points = None
    emb = RefoundEmbedder(**fast()).fit_transform(no_pois)
    assert np.isfinite(emb.to_numpy()).all()
    no_img = subset(city40, np.arange(40))
    no_img.chips, no_img.chip_masks = {}, {}
    log: list[str] = []
    model = RefoundEmbedder(**fast())
    emb = model.fit_transform(no_img, Progress(log_callback=log.append))
    assert np.isfinite(emb.to_numpy()).all() and set(model.loss_terms) == {"masked_poi", "distill_text"}
    assert any("image objectives are off" in line for line in log)


@pytest.mark.parametrize("switch", [{"moge": False}, {"distill_text": False, "distill_image": False,
                                                      "distill_similarity": False},
                                    {"masked_poi": False, "masked_image": False}, {"alignment": False}])
def test_ablations_train(city40: Views, switch: dict[str, bool]) -> None:
    model = RefoundEmbedder(**fast(steps=3, **switch))
    emb = model.fit_transform(city40)
    assert np.isfinite(emb.to_numpy()).all()
    off = {k for k, v in switch.items() if not v} - {"moge"}
    assert not off & set(model.loss_terms)
    if "moge" in switch:
        assert not any("ffn_poi" in k for k in model.network.state_dict())


# -------------------------------------------------------------------------------------- inductive, grid
def test_inductive_transform_of_new_regions(sf_views: Views) -> None:
    model = RefoundEmbedder(**fast()).fit(subset(sf_views, np.arange(30)))
    new = subset(sf_views, np.arange(30, 45))
    emb = model.transform(new)
    assert emb.shape == (15, 32) and list(emb.index) == list(new.region_ids)
    assert np.isfinite(emb.to_numpy()).all()


def test_grid_samples_join_pretraining(sf_views: Views) -> None:
    from backend.views.samples import pretraining_grid

    grid_src = subset(sf_views, np.arange(40, 70))
    cells = subset(sf_views, np.arange(40, 70))
    cells.region_ids = cells.region_ids.map(lambda r: f"g0_{r}")
    assert cells.poi_points is not None
    cells.poi_points = cells.poi_points.assign(region_id=cells.poi_points["region_id"].map(lambda r: f"g0_{r}"))
    views = subset(sf_views, np.arange(40), samples=cells)
    model = RefoundEmbedder(**fast()).fit(views)
    assert model.n_samples == 70 and model.meta["n_regions"] == 40
    assert model.transform(views).shape == (40, 32)
    off = RefoundEmbedder(**fast(use_grid=False)).fit(views)
    assert off.n_samples == 40
    assert len(pretraining_grid(grid_src.geometry.to_frame("geometry"))) > 0


# ----------------------------------------------------------------------------------------- fine-tuning
def test_finetuned_head_predicts_out_of_fold(city40: Views) -> None:
    from backend.models.refound.finetune import finetune_predictions

    model = RefoundEmbedder(**fast()).fit(city40)
    cls = model.cls_outputs(city40)
    assert cls.shape == (40, 2, 32) and np.isfinite(cls).all()
    np.testing.assert_allclose(cls.mean(axis=1), model.transform(city40).to_numpy(), rtol=1e-5, atol=1e-6)
    # a label carried by the pooled [CLS] outputs (synthetic, 160 regions): the head learns it out of fold
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 2, 32))
    y = x[:, :, :3].mean(axis=1).sum(axis=1) + 0.05 * rng.normal(size=160)
    folds = np.arange(160) % 4
    pred = finetune_predictions(x, y, folds, epochs=40, seed=0)
    assert np.isfinite(pred).all() and np.corrcoef(pred, y)[0, 1] > 0.6
    np.testing.assert_array_equal(pred, finetune_predictions(x, y, folds, epochs=40, seed=0))
    y_leak = y.copy()
    y_leak[folds == 0] = 1e6  # fold 0's own labels change: its predictions must not
    np.testing.assert_array_equal(finetune_predictions(x, y_leak, folds, epochs=40, seed=0)[folds == 0],
                                  pred[folds == 0])
    with pytest.raises(InputError):
        finetune_predictions(cls, np.full(40, np.nan), np.arange(40) % 4)


def test_a_local_language_model_writes_the_descriptions(city40: Views, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tt", Path(__file__).with_name("test_teachers.py"))
    assert spec is not None and spec.loader is not None
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    folder = tt.tiny_causal_lm(tmp_path / "lm")
    log: list[str] = []
    templated = RefoundEmbedder(**fast(steps=2)).fit(city40)
    written = RefoundEmbedder(**fast(steps=2, description_model=str(folder)))
    written.fit(city40, Progress(log_callback=log.append))
    assert any("region descriptions written by" in line for line in log)
    assert written.loss_terms["distill_text"] != templated.loss_terms["distill_text"]  # other teacher targets


# ------------------------------------------------------------------------------------ pipeline and apply
def test_pipeline_run_then_apply_to_another_layer(tmp_path: Path) -> None:
    """ReFound through the whole job on the sample city, then the saved model embeds
    another polygon layer from its POIs and imagery (the apply job builds no grid samples)."""
    import geopandas as gpd
    from shapely.geometry import box

    from backend.config import MethodSpec
    from backend.demo import demo_config
    from backend.jobs import run_apply_job
    from backend.pipeline import run_pipeline

    cfg = demo_config(tmp_path / "run", quick=True)
    # use_grid off keeps the teachers' work to the 579 regions (the grid is tested above)
    cfg.methods = [MethodSpec("refound", dim=16, params={"steps": 3, "batch_size": 8, "use_grid": False})]
    cfg.labels, cfg.prediction, cfg.figures = [], None, False
    cfg.clustering.k = 3
    cfg.device = "cpu"
    log: list[str] = []
    result = run_pipeline(cfg, Progress(log_callback=log.append))
    assert any("579 regions + 0 grid cells" in line for line in log)
    emb = gpd.read_file(Path(result.output_dir) / "regionlens.gpkg", layer="embeddings")
    assert len(emb) == 579 and "emb_015" in emb.columns
    model_dir = Path(result.output_dir) / "models" / "refound"
    model = load_embedder(str(model_dir))
    assert model.views_for_transform() == ["poi_points", "chips"]  # type: ignore[attr-defined]

    x0, y0 = 549_000.0, 4_180_000.0
    cells = gpd.GeoDataFrame({"cell": [f"c{k}" for k in range(4)]},
                             geometry=[box(x0 + i * 800, y0 + j * 800, x0 + (i + 1) * 800, y0 + (j + 1) * 800)
                                       for i in range(2) for j in range(2)], crs="EPSG:32610")
    cells.to_file(tmp_path / "cells.geojson", engine="pyogrio")
    sf = Path(cfg.regions.path).parent
    res = run_apply_job({"model": str(model_dir), "regions": str(tmp_path / "cells.geojson"), "id_field": "cell",
                         "pois": str(sf / "sf_pois_osm.geojson"), "category_field": "category", "name_field": "name",
                         "rasters": [str(sf / "sf_landsat7_3857_30m.tif")], "output": str(tmp_path / "a.gpkg"),
                         "device": "cpu"})
    assert res["method"] == "refound" and res["n_regions"] == 4 and res["dim"] == 16
    values = gpd.read_file(tmp_path / "a.gpkg", layer="embeddings")[[f"emb_{i:03d}" for i in range(16)]].to_numpy()
    assert np.isfinite(values).all() and not np.allclose(values[0], values[3])
