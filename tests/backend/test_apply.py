"""The ``apply`` job: a saved model embeds another region layer (inductive use; worker action ``apply``).

The CaLLiPer models here are trained with a fake sentence encoder (a fixed vector per text; see
``tests/backend/models/calliper/test_calliper.py``) so that the tests need seconds, not the real MiniLM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import torch
from shapely.geometry import box

from backend.config import MethodSpec
from backend.demo import SAMPLE_DIR, demo_config
from backend.encoders import text as text_mod
from backend.errors import InputError, OutputError
from backend.io.city import CityData
from backend.jobs import run_apply_job
from backend.models import get_embedder
from backend.pipeline import run_pipeline
from backend.views import build_views

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"hidden": 32, "blocks": 2, "scales": 8, "epochs": 2, "batch_size": 512, "names": "no",
         "cache_dir": "none", "region_points": 8}


class FakeEncoder:
    def encode(self, texts, **_kwargs) -> np.ndarray:
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=16) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def quick_run(folder: Path, configure) -> Path:
    """A quick demo run in ``folder`` (fake sentence encoder, one thread, k = 3, CPU, no figures) after
    ``configure(cfg)`` chose its methods and inputs; returns its output folder."""
    patch = pytest.MonkeyPatch()
    patch.setattr(text_mod, "load_text_encoder", lambda name, device: FakeEncoder())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = demo_config(folder, quick=True)
        configure(cfg)
        cfg.figures, cfg.clustering.k, cfg.device = False, 3, "cpu"
        return Path(run_pipeline(cfg).output_dir)
    finally:
        torch.set_num_threads(threads)
        patch.undo()


@pytest.fixture(scope="module")
def calliper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick demo run with CaLLiPer alone, without imagery or labels; returns its output folder."""

    def configure(cfg) -> None:
        cfg.methods = [MethodSpec("calliper", dim=8, params=dict(SMALL))]
        cfg.rasters, cfg.labels, cfg.prediction = [], [], None

    return quick_run(tmp_path_factory.mktemp("apply") / "run", configure)


def grid_layer(path: Path, crs: str = "EPSG:4326") -> Path:
    """Six 1 km cells in central San Francisco (id field ``cell``), written in ``crs``."""
    x0, y0 = 549_000.0, 4_180_000.0
    cells = [box(x0 + i * 1000, y0 + j * 1000, x0 + (i + 1) * 1000, y0 + (j + 1) * 1000)
             for i in range(3) for j in range(2)]
    gdf = gpd.GeoDataFrame({"cell": [f"c{k}" for k in range(6)]}, geometry=cells, crs="EPSG:32610").to_crs(crs)
    gdf.to_file(path, engine="pyogrio")
    return path


def test_pipeline_saves_the_model_and_apply_embeds_a_new_layer(calliper_run: Path, tmp_path: Path) -> None:
    model_dir = calliper_run / "models" / "calliper"
    assert {"config.json", "weights.pt", "calliper.json"} <= {p.name for p in model_dir.iterdir()}
    out = tmp_path / "applied" / "grid.gpkg"
    res = run_apply_job({"model": str(model_dir), "regions": str(grid_layer(tmp_path / "grid.geojson")),
                         "id_field": "cell", "output": str(out), "device": "cpu"})
    assert res["method"] == "calliper" and res["n_regions"] == 6 and res["dim"] == 8 and res["device"] == "cpu"
    assert res["gpkg"] == str(out.resolve())
    assert dict(pyogrio.list_layers(out)) == {"embeddings": "MultiPolygon"}  # repaired regions are multi
    emb = gpd.read_file(out, layer="embeddings")
    assert list(emb.columns) == ["region_id"] + [f"emb_{i:03d}" for i in range(8)] + ["geometry"]
    assert emb["region_id"].tolist() == [f"c{k}" for k in range(6)]
    assert emb.crs.to_epsg() == 32610  # the working CRS of a layer given in degrees
    values = emb[[f"emb_{i:03d}" for i in range(8)]].to_numpy()
    assert np.isfinite(values).all() and not np.allclose(values[0], values[5])
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.gpkg"]  # no temporary file left
    with pytest.raises(OutputError, match="exists"):
        run_apply_job({"model": str(model_dir), "regions": str(tmp_path / "grid.geojson"), "id_field": "cell",
                       "output": str(out)})


def test_similar_regions_in_another_city_embedded_by_apply(calliper_run: Path, tmp_path: Path) -> None:
    from backend.jobs import run_similar_job

    applied = tmp_path / "grid.gpkg"
    run_apply_job({"model": str(calliper_run / "models" / "calliper"), "id_field": "cell", "output": str(applied),
                   "regions": str(grid_layer(tmp_path / "grid.geojson"))})
    res = run_similar_job({"run": str(applied), "ids": ["c0"], "top": 2})
    assert res["output"] == str(tmp_path / "grid_similar.gpkg") and res["n_regions"] == 6
    sim = gpd.read_file(res["output"], layer="similarity").set_index("region_id")
    assert sim.loc["c0", "chosen"] == 1 and sim["top_n"].sum() == 2 and sim.loc["c0", "top_n"] == 0
    assert sim.loc["c0", "similarity"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="Unknown region ids: GEO1"):
        run_similar_job({"run": str(applied), "ids": ["GEO1"], "output": str(tmp_path / "x.gpkg")})


def test_apply_reproduces_the_run_embeddings_of_the_same_regions(calliper_run: Path, tmp_path: Path) -> None:
    run_emb = gpd.read_file(calliper_run / "regionlens.gpkg", layer="embeddings").set_index("region_id")
    blocks = gpd.read_file(SAMPLE_DIR / "sf_block_groups_crime_pop.geojson").iloc[[3, 50, 400]]
    blocks.to_file(tmp_path / "three.gpkg", engine="pyogrio")
    out = tmp_path / "three_emb.gpkg"
    run_apply_job({"model": str(calliper_run / "models" / "calliper"), "regions": str(tmp_path / "three.gpkg"),
                   "id_field": "GEO_ID", "output": str(out)})
    emb = gpd.read_file(out, layer="embeddings").set_index("region_id").drop(columns="geometry")
    np.testing.assert_allclose(emb.to_numpy(), run_emb.loc[emb.index, emb.columns].to_numpy(), rtol=1e-4, atol=1e-5)


def test_apply_baseline_aligns_the_saved_vocabulary(sf_city: CityData, tmp_path: Path) -> None:
    views = build_views(sf_city, report=[])
    model = get_embedder("baseline", dim=6).fit(views)
    full = model.transform(views)
    folder = model.save(tmp_path / "models" / "baseline")
    picked = [3, 50, 400]
    gpd.read_file(SAMPLE_DIR / "sf_block_groups_crime_pop.geojson").iloc[picked].to_file(tmp_path / "three.gpkg")
    params = {"model": str(folder), "regions": str(tmp_path / "three.gpkg"), "id_field": "GEO_ID",
              "output": str(tmp_path / "b.gpkg")}
    with pytest.raises(InputError, match="lack"):  # the model learned from POIs and imagery
        run_apply_job(params)
    assert not (tmp_path / "b.gpkg").exists()
    params.update(pois=str(SAMPLE_DIR / "sf_pois_osm.geojson"), category_field="category",
                  rasters=[str(SAMPLE_DIR / "sf_landsat7_3857_30m.tif")])  # named like the run's raster
    res = run_apply_job(params)
    emb = gpd.read_file(tmp_path / "b.gpkg", layer="embeddings").set_index("region_id").drop(columns="geometry")
    # Same POI counts and image statistics in the saved columns: the same vectors as in the full fit.
    np.testing.assert_allclose(emb.to_numpy(), full.loc[emb.index].to_numpy(), rtol=1e-6, atol=1e-8)
    assert res["n_regions"] == 3


def test_apply_rejects_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no saved RegionLens model"):
        run_apply_job({"model": str(tmp_path), "regions": "x.gpkg", "output": str(tmp_path / "o.gpkg")})
    assert list(tmp_path.iterdir()) == []


def test_worker_apply_action(calliper_run: Path, tmp_path: Path) -> None:
    grid = grid_layer(tmp_path / "grid.gpkg", crs="EPSG:3857")
    request = {"id": 7, "action": "apply", "params": {"model": str(calliper_run / "models" / "calliper"),
                                                       "regions": str(grid), "id_field": "cell",
                                                       "output": str(tmp_path / "out.gpkg")}}
    proc = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    events = []
    try:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        while not events or events[-1]["event"] not in {"result", "error"} or events[-1]["id"] != 7:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            events.append(json.loads(line))
        proc.stdin.write(json.dumps({"action": "shutdown"}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert events[0]["event"] == "ready"
    assert events[-1]["event"] == "result", events[-1]
    assert events[-1]["result"]["n_regions"] == 6
    assert any(e["event"] == "progress" and e["stage"] == "embed: calliper" for e in events)
    assert (tmp_path / "out.gpkg").is_file()


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick demo run: baseline, CaLLiPer as a 2-seed ensemble (fake encoder) and fusion, context 'standard'."""

    def configure(cfg) -> None:
        cfg.methods = [MethodSpec("baseline", dim=6), MethodSpec("calliper", dim=8, params=dict(SMALL), ensemble=2),
                       MethodSpec("fusion", dim=8)]  # fmt: skip
        cfg.context = "standard"
        cfg.labels = cfg.labels[:1]

    return quick_run(tmp_path_factory.mktemp("fusion") / "run", configure)


def test_fusion_run_outputs_say_what_was_combined(fusion_run: Path) -> None:
    manifest = json.loads((fusion_run / "run.json").read_text())
    assert manifest["primary_method"] == "fusion"
    assert manifest["ensembles"] == {"calliper": 2}
    assert manifest["context"] == {"rings": 1, "distances_m": [1000.0]}
    chosen = manifest["fusion"]["population"]["shuffled"]
    assert set(chosen["blocks"]) == {"baseline", "calliper", "poi_counts", "image_stats", "all blocks"}
    rows = [r for r in manifest["metrics"] if r["method"] == "fusion"]
    assert rows and all(r["combination"] for r in rows)
    assert all(r["combination"] == "" for r in manifest["metrics"] if r["method"] != "fusion")
    metrics = gpd.read_file(fusion_run / "regionlens.gpkg", layer="metrics")
    assert "combination" in metrics.columns
    layers = {name for name, _ in pyogrio.list_layers(fusion_run / "regionlens.gpkg")}
    assert {"embeddings", "embeddings_baseline", "embeddings_calliper"} <= layers
    models = fusion_run / "models"
    assert (models / "calliper" / "member_1" / "config.json").is_file()
    assert (models / "calliper" / "context.json").is_file() and (models / "baseline" / "context.json").is_file()
    assert not (models / "fusion" / "context.json").exists()  # fusion applies its own context per block
    # the run's context triples the width: the embedding, its ring-1 mean, its 1 km mean
    emb = gpd.read_file(fusion_run / "regionlens.gpkg", layer="embeddings_calliper")
    assert len([c for c in emb.columns if c.startswith("emb_")]) == 3 * 8


@pytest.mark.parametrize(("method", "layer"), [("calliper", "embeddings_calliper"), ("fusion", "embeddings")])
def test_apply_reproduces_ensemble_context_and_fusion_embeddings(fusion_run: Path, tmp_path: Path, method: str,
                                                                 layer: str) -> None:
    """Applying a saved seed ensemble (with the run's context) or fusion to the run's own regions reproduces the
    embeddings the run wrote: members, PCA, neighbour means and fusion's sources are all saved."""
    patch = pytest.MonkeyPatch()
    patch.setattr(text_mod, "load_text_encoder", lambda name, device: FakeEncoder())
    try:
        res = run_apply_job({"model": str(fusion_run / "models" / method),
                             "regions": str(SAMPLE_DIR / "sf_block_groups_crime_pop.geojson"), "id_field": "GEO_ID",
                             "output": str(tmp_path / "a.gpkg"), "device": "cpu",
                             "pois": str(SAMPLE_DIR / "sf_pois_osm.geojson"), "category_field": "category",
                             "name_field": "name", "rasters": [str(SAMPLE_DIR / "sf_landsat7_3857_30m.tif")]})
    finally:
        patch.undo()
    got = gpd.read_file(tmp_path / "a.gpkg", layer="embeddings").set_index("region_id").drop(columns="geometry")
    run = gpd.read_file(fusion_run / "regionlens.gpkg", layer=layer).set_index("region_id")
    assert res["method"] == method and list(got.columns) == [c for c in run.columns if c.startswith("emb_")]
    np.testing.assert_allclose(got.to_numpy(), run.loc[got.index, got.columns].to_numpy(), rtol=1e-4, atol=1e-4)


def test_a_saved_ensemble_describes_itself_like_a_single_model(fusion_run: Path) -> None:
    """The worker's ``info`` with ``model`` reads a seed ensemble's folder like any saved model's."""
    from backend.models import describe_saved_model

    got = describe_saved_model(str(fusion_run / "models" / "calliper"))
    assert got["name"] == "calliper" and got["params"]["hidden"] == SMALL["hidden"]
    member = json.loads((fusion_run / "models" / "calliper" / "member_0" / "config.json").read_text())
    assert got["inputs"] == member["inputs"] and got["inputs"]["regions"]["required"] is True


def test_primary_best_is_the_method_with_the_highest_cv_score(tmp_path: Path) -> None:
    from backend.tasks.leaderboard import method_scores

    patch = pytest.MonkeyPatch()
    patch.setattr(text_mod, "load_text_encoder", lambda name, device: FakeEncoder())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = demo_config(tmp_path / "run", quick=True)
        cfg.methods = [MethodSpec("calliper", dim=8, params=dict(SMALL)), MethodSpec("baseline", dim=6)]
        cfg.labels, cfg.figures, cfg.primary, cfg.device = cfg.labels[:2], False, "best", "cpu"
        result = run_pipeline(cfg)
    finally:
        torch.set_num_threads(threads)
        patch.undo()
    scores = method_scores(result.metrics, "ridge")
    best = max(scores, key=scores.get)
    other = ({"calliper", "baseline"} - {best}).pop()
    assert result.primary_method == best
    assert best == "baseline"  # second in the configuration: "auto" would have kept calliper
    manifest = json.loads(Path(result.run_json).read_text())
    assert manifest["primary_method"] == best and manifest["methods"][0] == best
    dims = {"calliper": 8, "baseline": 6}
    layers = dict(pyogrio.list_layers(result.gpkg))
    assert f"embeddings_{other}" in layers and f"predictions_{other}" in layers
    emb = gpd.read_file(result.gpkg, layer="embeddings")
    assert len([c for c in emb.columns if c.startswith("emb_")]) == dims[best]
