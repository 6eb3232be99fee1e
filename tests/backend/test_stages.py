"""The run as stages: the sample city's outputs stay what they were, the stages run one by one, and the
cluster and predict jobs reuse the run's own steps (same seed, same numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest

from backend.demo import SAMPLE_DIR, demo_config
from backend.io.outputs import OutputFolder
from backend.jobs import run_cluster_job, run_predict_job
from backend.pipeline import STAGES, Clusters, Embedded, Predicted, Written, run_pipeline, start
from backend.progress import Progress

LABELS = ("population", "vandalism", "robbery", "drugs", "cartheft", "incidents")
#: What the baseline run on the sample city wrote before the pipeline became stages.
EXPECTED_FILES = {
    "figures/cluster_profiles.png", "figures/embedding_2d.png", "figures/pred_vs_obs.png",
    "models/baseline/config.json", "models/baseline/weights.safetensors", "regionlens.gpkg", "run.json",
}
EXPECTED_COLUMNS = {
    "embeddings": ["region_id", *[f"emb_{i:03d}" for i in range(16)]],
    "clusters": ["region_id", "cluster", "cluster_name"],
    "predictions": ["region_id", *[f"{label}_{part}" for label in LABELS for part in ("obs", "pred", "res")]],
    "cluster_profiles": ["cluster", "cluster_name", "n_regions", "feature", "mean", "zscore"],
    "metrics": ["method", "label", "target", "units", "model", "protocol", "n_regions", "mae_mean", "mae_std",
                "rmse_mean", "rmse_std", "r2_mean", "r2_std", "combination"],
}
EXPECTED_MANIFEST = {
    "config", "context", "device", "device_requested", "ensembles", "fusion", "label_units", "layers", "log",
    "methods", "metrics", "n_regions", "peak_rss_mb", "primary_method", "regionlens", "report", "seed",
    "timings_s", "total_s", "versions", "views",
}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    return run_pipeline(demo_config(tmp_path_factory.mktemp("stages") / "run", quick=True))


def test_sample_run_writes_the_same_files_layers_and_columns(sample_run) -> None:
    root = Path(sample_run.output_dir)
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == EXPECTED_FILES
    assert {name for name, _ in pyogrio.list_layers(sample_run.gpkg)} == set(EXPECTED_COLUMNS)
    assert sample_run.layers == ["embeddings", "clusters", "cluster_profiles", "predictions", "metrics"]
    for layer, columns in EXPECTED_COLUMNS.items():
        frame = pyogrio.read_dataframe(sample_run.gpkg, layer=layer, read_geometry=False)
        assert list(frame.columns) == columns, layer
        assert len(frame) == (579 if layer in ("embeddings", "clusters", "predictions") else len(frame))
    manifest = json.loads(Path(sample_run.run_json).read_text(encoding="utf-8"))
    assert set(manifest) == EXPECTED_MANIFEST
    assert list(manifest["timings_s"]) == ["read", "views", "embed_baseline", "cluster", "predict", "write"]
    assert sorted(Path(f).relative_to(root).as_posix() for f in sample_run.figures) == sorted(
        f for f in EXPECTED_FILES if f.startswith("figures/"))


def test_stages_one_by_one_fill_the_state_and_give_the_run_s_embeddings(sample_run, tmp_path) -> None:
    cfg = demo_config(tmp_path / "by_stage", quick=True)
    with OutputFolder(cfg.output_dir) as out:
        state = start(cfg, Progress(), out)
        assert [slot for _, _, slot in STAGES] == ["city", "views", "embedded", "clusters", "predicted", "written"]
        for _, stage, slot in STAGES:
            assert getattr(state, slot) in (None, {})
            setattr(state, slot, stage(state))
        assert isinstance(state.embedded, Embedded) and isinstance(state.predicted, Predicted)
        assert isinstance(state.written, Written) and isinstance(state.clusters["baseline"], Clusters)
        assert state.written.layers == sample_run.layers
        run = pyogrio.read_dataframe(sample_run.gpkg, layer="embeddings", read_geometry=False).set_index("region_id")
        np.testing.assert_allclose(state.embedded.embeddings["baseline"].to_numpy(), run.to_numpy(), atol=1e-6)
        clusters = pyogrio.read_dataframe(sample_run.gpkg, layer="clusters", read_geometry=False)
        np.testing.assert_array_equal(state.clusters["baseline"].labels, clusters["cluster"].to_numpy())
        assert {line for line in state.report} <= set(sample_run.report)


def test_cluster_job_gives_the_run_s_clusters(sample_run, tmp_path) -> None:
    out = tmp_path / "c.gpkg"
    run_cluster_job({"embeddings": sample_run.gpkg, "layer": "embeddings", "output": str(out), "k": "auto"})
    job = pyogrio.read_dataframe(out, layer="clusters", read_geometry=False)
    run = pyogrio.read_dataframe(sample_run.gpkg, layer="clusters", read_geometry=False)
    np.testing.assert_array_equal(job["cluster"].to_numpy(), run["cluster"].to_numpy())


def test_predict_job_gives_the_run_s_predictions(sample_run, tmp_path) -> None:
    out = tmp_path / "p.gpkg"
    res = run_predict_job({
        "embeddings": sample_run.gpkg, "layer": "embeddings", "output": str(out),
        "labels": str(SAMPLE_DIR / "sf_block_groups_crime_pop.geojson"), "labels_id_field": "GEO_ID",
        "label_field": "Population", "label_name": "population", "target": "density", "log1p": True,
        "folds": 3, "repeats": 1,
    })
    job = pyogrio.read_dataframe(out, layer="predictions", read_geometry=False).set_index("region_id")
    run = pyogrio.read_dataframe(sample_run.gpkg, layer="predictions", read_geometry=False).set_index("region_id")
    for part in ("obs", "pred", "res"):
        np.testing.assert_allclose(job[f"population_{part}"], run.loc[job.index, f"population_{part}"], rtol=1e-6)
    run_rows = [m for m in sample_run.metrics if m["label"] == "population"]
    assert [m["r2_mean"] for m in res["metrics"]] == pytest.approx([m["r2_mean"] for m in run_rows])
