"""Cluster and predict jobs on an existing embedding layer (what Processing and the worker call)."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import pytest

from backend.demo import demo_config
from backend.errors import InputError, OutputError
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
