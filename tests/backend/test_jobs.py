"""Cluster and predict jobs on an existing embedding layer (what Processing and the worker call)."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import pytest

from backend.demo import demo_config
from backend.errors import ConfigError, InputError, OutputError
from backend.jobs import run_cluster_job, run_predict_job
from backend.pipeline import run_pipeline


@pytest.fixture(scope="module")
def run_gpkg(tmp_path_factory):
    cfg = demo_config(tmp_path_factory.mktemp("jobs") / "run", quick=True)
    cfg.labels, cfg.prediction, cfg.figures = [], None, False
    return run_pipeline(cfg).gpkg


def test_cluster_job_writes_layer_atomically_and_refuses_overwrite(run_gpkg, tmp_path) -> None:
    out = tmp_path / "c.gpkg"
    res = run_cluster_job({"embeddings": run_gpkg, "layer": "embeddings", "k": 4, "output": str(out)})
    assert res["k"] == 4 and sum(res["sizes"]) == 579
    assert dict(pyogrio.list_layers(out)) == {"clusters": "MultiPolygon", "cluster_profiles": None}
    clusters = gpd.read_file(out, layer="clusters")
    assert sorted(clusters["cluster"].unique()) == [0, 1, 2, 3]
    with pytest.raises(OutputError, match="exists"):
        run_cluster_job({"embeddings": run_gpkg, "layer": "embeddings", "k": 4, "output": str(out)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gpkg"]


def test_predict_job_with_label_from_another_layer(run_gpkg, tmp_path) -> None:
    from backend.demo import SAMPLE_DIR

    out = tmp_path / "p.gpkg"
    res = run_predict_job({
        "embeddings": run_gpkg, "layer": "embeddings", "output": str(out),
        "labels": str(SAMPLE_DIR / "sf_block_groups_crime_pop.geojson"), "labels_id_field": "GEO_ID",
        "label_field": "Population", "label_name": "population", "target": "density", "log1p": True,
        "folds": 3, "repeats": 1,
    })
    assert {m["protocol"] for m in res["metrics"]} == {"shuffled", "spatial"}
    assert res["metrics"][0]["r2_mean"] > 0.1
    pred = gpd.read_file(out, layer="predictions")
    assert {"population_obs", "population_pred", "population_res"} <= set(pred.columns)
    assert pred["population_obs"].sum() == pytest.approx(805235)


def test_jobs_reject_layers_without_embeddings(tmp_path) -> None:
    from backend.demo import SAMPLE_DIR

    with pytest.raises(InputError, match="no embedding columns"):
        run_cluster_job({"embeddings": str(SAMPLE_DIR / "sf_block_groups_crime_pop.geojson"), "id_field": "GEO_ID",
                         "output": str(tmp_path / "x.gpkg")})
    assert list(tmp_path.iterdir()) == []


def test_job_output_never_replaces_an_input(run_gpkg, tmp_path) -> None:
    import shutil

    layer = tmp_path / "emb.gpkg"
    shutil.copy(run_gpkg, layer)
    before = layer.read_bytes()
    with pytest.raises(OutputError, match="also an input"):
        run_cluster_job({"embeddings": str(layer), "layer": "embeddings", "k": 3, "output": str(layer),
                         "overwrite": True})
    assert layer.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["emb.gpkg"]


def test_job_parameters_of_the_wrong_type_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"'k' must be an integer or a text, not \[3\]"):
        run_cluster_job({"embeddings": "e.gpkg", "output": str(tmp_path / "c.gpkg"), "k": [3]})
    with pytest.raises(ConfigError, match="'folds' must be an integer"):
        run_predict_job({"embeddings": "e.gpkg", "output": str(tmp_path / "p.gpkg"), "label_field": "x",
                         "folds": "3"})
    with pytest.raises(ConfigError, match="'folds' must lie between 2 and 100, not 1"):
        run_predict_job({"embeddings": "e.gpkg", "output": str(tmp_path / "p.gpkg"), "label_field": "x", "folds": 1})
    with pytest.raises(ConfigError, match="'models' must be"):
        run_predict_job({"embeddings": "e.gpkg", "output": str(tmp_path / "p.gpkg"), "label_field": "x",
                         "models": ["svm"]})
    with pytest.raises(ConfigError, match="'k' must lie between 2"):
        run_cluster_job({"embeddings": "e.gpkg", "output": str(tmp_path / "c.gpkg"), "k": 1})
    with pytest.raises(ConfigError, match="must be an object"):
        run_cluster_job(["e.gpkg"])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_geopackage_of_a_dead_job_is_removed(run_gpkg, tmp_path) -> None:
    stale = tmp_path / ".c.tmp-999999999.gpkg"  # no process has this pid
    stale.write_text("half-written")
    run_cluster_job({"embeddings": run_gpkg, "layer": "embeddings", "k": 3, "output": str(tmp_path / "c.gpkg")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gpkg"]
