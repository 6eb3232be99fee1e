"""The whole job on the real San Francisco sample city, the CLI, cancellation and bad input; the run as stages
(the outputs stay what they were, the stages run one by one, and the cluster and predict jobs reuse the run's
own steps: same seed, same numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest

from backend.demo import SAMPLE_DIR, demo_config, demo_config_dict
from backend.errors import Cancelled
from backend.io.outputs import OutputFolder
from backend.jobs import run_cluster_job, run_predict_job
from backend.pipeline import STAGES, Clusters, Embedded, Predicted, Written, run_pipeline, start
from backend.progress import Progress

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    events = []
    progress = Progress(callback=lambda s, f, m: events.append((s, f)))
    result = run_pipeline(demo_config(out, quick=True), progress)
    return result, events


def test_layers_and_schema(demo_run) -> None:
    result, _ = demo_run
    layers = dict(pyogrio.list_layers(result.gpkg))
    assert {"embeddings", "clusters", "predictions", "metrics", "cluster_profiles"} <= set(layers)
    assert layers["metrics"] is None
    emb = gpd.read_file(result.gpkg, layer="embeddings")
    assert len(emb) == 579 and emb.crs.to_epsg() == 32610
    assert list(emb.columns) == ["region_id"] + [f"emb_{i:03d}" for i in range(16)] + ["geometry"]
    assert emb["region_id"].is_unique
    clusters = gpd.read_file(result.gpkg, layer="clusters")
    assert clusters["cluster"].min() == 0 and clusters["cluster_name"].str.len().gt(0).all()
    # Names a planner reads: no raster band codes, embedding dimensions or +/- signs.
    for name in clusters["cluster_name"].unique():
        assert "_mean" not in name and "emb_" not in name and "+" not in name, name
    assert clusters["cluster"].nunique() >= 4
    pred = gpd.read_file(result.gpkg, layer="predictions")
    for label in ("population", "vandalism", "robbery", "drugs", "cartheft", "incidents"):
        assert {f"{label}_obs", f"{label}_pred", f"{label}_res"} <= set(pred.columns)
    # Predictions are written back in the label's own units (people, not log1p people per km2).
    assert pred["population_obs"].sum() == pytest.approx(805235)
    assert 0.2 < pred["population_pred"].median() / pred["population_obs"].median() < 5


def test_metrics_are_honest_and_complete(demo_run) -> None:
    result, _ = demo_run
    metrics = pyogrio.read_dataframe(result.gpkg, layer="metrics")
    assert set(metrics["protocol"]) == {"shuffled", "spatial"}
    assert set(metrics["label"]) == {"population", "vandalism", "robbery", "drugs", "cartheft", "incidents"}
    pop = metrics[(metrics.label == "population") & (metrics.protocol == "shuffled")].iloc[0]
    assert pop["target"].startswith("log1p") and pop["n_regions"] == 579
    assert pop["units"] == "log1p(per km\u00b2)"  # the space every score is computed in
    manifest = json.loads(Path(result.run_json).read_text())
    assert manifest["label_units"]["population"] == "log1p(per km\u00b2)"
    # Image statistics carry signal for log1p population density (SPEC: about 0.4 from image stats alone).
    assert pop["r2_mean"] > 0.2


def test_manifest_figures_and_progress(demo_run) -> None:
    result, events = demo_run
    manifest = json.loads(Path(result.run_json).read_text())
    assert manifest["device"] == result.device == "cpu"
    assert manifest["seed"] == 0 and manifest["versions"]["torch"].startswith("2.13")
    assert {"read", "views", "embed_baseline", "cluster", "predict", "write"} <= set(manifest["timings_s"])
    assert any("outside every region" in line for line in manifest["report"])
    names = sorted(Path(f).name for f in result.figures)
    assert names == ["cluster_map.png", "cluster_profiles.png", "embedding_2d.png", "leaderboard.png",
                     "pred_vs_obs.png", "prediction_maps.png"]
    assert all(Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in result.figures)
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (Path(result.output_dir) / "models" / "baseline" / "config.json").is_file()


def test_cancel_writes_nothing(tmp_path) -> None:
    progress = Progress()
    out = tmp_path / "run"

    def cancel_when_embedding(stage, fraction, message):
        if stage.startswith("build views"):
            progress.cancel()

    progress.callback = cancel_when_embedding
    with pytest.raises(Cancelled):
        run_pipeline(demo_config(out, quick=True), progress)
    assert list(tmp_path.iterdir()) == []


def test_cli_run_config_and_refuses_overwrite(tmp_path) -> None:
    cfg = demo_config_dict(tmp_path / "out", quick=True)
    cfg["labels"] = cfg["labels"][:1]
    cfg["prediction"]["spatial"] = False
    cfg["figures"] = False
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "backend", "run", str(tmp_path / "c.json"), "--quiet"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "finished on cpu" in first.stdout
    assert "primary:  baseline (fusion, else the first method)" in first.stdout
    assert f"report:   {tmp_path / 'out' / 'report.html'}" in first.stdout and "embed: baseline" in first.stdout
    before = (tmp_path / "out" / "run.json").read_text()
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and "already holds files" in second.stderr
    assert (tmp_path / "out" / "run.json").read_text() == before


def test_cli_bad_input_exits_nonzero_and_writes_nothing(tmp_path) -> None:
    cfg = demo_config_dict(tmp_path / "out", quick=True)
    cfg["regions"]["id_field"] = "NOPE"
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    res = subprocess.run([sys.executable, "-m", "backend", "run", str(tmp_path / "c.json"), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "NOPE" in res.stderr and "GEO_ID" in res.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_cancel_from_another_thread_is_prompt(tmp_path) -> None:
    progress = Progress()
    timer = threading.Timer(0.5, progress.cancel)
    timer.start()
    with pytest.raises(Cancelled):
        run_pipeline(demo_config(tmp_path / "run", quick=True), progress)
    timer.cancel()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ imperfect labels and regions
def _run_small(small_city: dict, tmp_path: Path, regions: gpd.GeoDataFrame | None = None) -> dict:
    """Run the small city (optionally with other regions) through the CLI in-process; returns run.json."""
    from backend.cli import main

    if regions is not None:
        (tmp_path / "regions.gpkg").unlink()
        regions.to_file(tmp_path / "regions.gpkg", engine="pyogrio")
    (tmp_path / "config.json").write_text(json.dumps(small_city))
    assert main(["run", str(tmp_path / "config.json"), "--quiet"]) == 0
    return json.loads((tmp_path / "out" / "run.json").read_text())


def test_extreme_label_values_are_dropped_counted_and_reported_once(small_city, tmp_path) -> None:
    regions = gpd.read_file(tmp_path / "regions.gpkg")
    regions.loc[:4, "pop"] = 1e308  # finite, but 1e308 per 0.01 km2 overflows to infinity
    manifest = _run_small(small_city, tmp_path, regions)
    notes = [line for line in manifest["report"] if "'pop'" in line]
    assert len(notes) == 1 and "5 regions" in notes[0] and "not a finite number" in notes[0], notes
    assert {m["n_regions"] for m in manifest["metrics"]} == {11}


def test_missing_label_values_are_reported_once(small_city, tmp_path) -> None:
    regions = gpd.read_file(tmp_path / "regions.gpkg")
    regions.loc[:2, "pop"] = float("nan")
    manifest = _run_small(small_city, tmp_path, regions)
    notes = [line for line in manifest["report"] if "'pop'" in line]
    assert len(notes) == 1 and "3 regions" in notes[0], notes
    assert json.dumps(manifest).count("3 regions have no finite numeric value") == 1  # once in all of run.json
    assert {m["n_regions"] for m in manifest["metrics"]} == {13}


def test_tiny_region_gets_no_density_and_is_reported(small_city, tmp_path) -> None:
    from shapely.geometry import box

    from tests.backend.conftest import TOY_X0, TOY_Y0

    regions = gpd.read_file(tmp_path / "regions.gpkg")
    sliver = gpd.GeoDataFrame({"rid": [17], "pop": [5.0], "kind": ["e"]},
                              geometry=[box(TOY_X0 + 400, TOY_Y0, TOY_X0 + 400.01, TOY_Y0 + 0.01)], crs=regions.crs)
    manifest = _run_small(small_city, tmp_path, pd.concat([regions, sliver], ignore_index=True))
    assert any("far smaller than the others" in line and "'17'" in line for line in manifest["report"])
    assert manifest["n_regions"] == 17
    assert {m["n_regions"] for m in manifest["metrics"]} == {16}  # the sliver's density is left out
    pred = gpd.read_file(tmp_path / "out" / "regionlens.gpkg", layer="predictions").set_index("region_id")
    assert pd.isna(pred.loc["17", "pop_pred"]) and pred.loc["1", "pop_pred"] > 0


def test_sparse_pois_without_raster_run_to_the_end(tmp_path, sf_dir) -> None:
    """Issue 11 item 4: a POI layer with two rare categories and no raster (every category under the 5%
    support that POI shares need in a profile) used to end in "features has no numeric column"."""
    from backend.config import config_from_dict

    regions = gpd.read_file(sf_dir / "sf_block_groups_crime_pop.geojson")[["GEO_ID", "geometry"]]
    pois = gpd.read_file(sf_dir / "sf_pois_osm.geojson")
    pois = pois[pois["category"].isin(["diplomatic", "ngo"])][["category", "geometry"]]
    regions.to_file(tmp_path / "regions.gpkg", layer="regions", driver="GPKG")
    pois.to_file(tmp_path / "pois.gpkg", layer="pois", driver="GPKG")
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "regions": {"path": str(tmp_path / "regions.gpkg"), "id_field": "GEO_ID"},
            "pois": {"path": str(tmp_path / "pois.gpkg"), "category_field": "category"},
            "methods": [{"name": "baseline", "dim": 4}],
            "prediction": None,
        }
    )
    result = run_pipeline(cfg, Progress())
    clusters = gpd.read_file(result.gpkg, layer="clusters")
    assert len(clusters) == 579 and clusters["cluster_name"].str.len().gt(0).all()
    profiles = pyogrio.read_dataframe(result.gpkg, layer="cluster_profiles")
    assert "cluster_name" in profiles.columns and len(profiles)
    assert "cluster_profiles.png" in [Path(f).name for f in result.figures]
    manifest = json.loads(Path(result.run_json).read_text())
    # Most block groups hold none of these POIs: one shared embedding, said in the log and run.json.
    assert any("regions share one embedding" in line for line in manifest["report"])


# ------------------------------------------------------------------------------------------------ stages
LABELS = ("population", "vandalism", "robbery", "drugs", "cartheft", "incidents")
#: What the baseline run on the sample city wrote before the pipeline became stages, plus the run report, its
#: cluster cards and figures, and the prediction intervals (issue 15).
EXPECTED_FILES = {
    "figures/cluster_profiles.png", "figures/embedding_2d.png", "figures/pred_vs_obs.png",
    "models/baseline/config.json", "models/baseline/weights.safetensors", "regionlens.gpkg", "run.json",
    "report.html", "clusters.json", "figures/cluster_map.png", "figures/leaderboard.png",
    "figures/prediction_maps.png",
}
EXPECTED_COLUMNS = {
    "embeddings": ["region_id", *[f"emb_{i:03d}" for i in range(16)]],
    "clusters": ["region_id", "cluster", "cluster_name"],
    "predictions": ["region_id", *[f"{label}_{part}" for label in LABELS for part in ("obs", "pred", "res", "lo",
                                                                                       "hi")]],
    "cluster_profiles": ["cluster", "cluster_name", "n_regions", "feature", "mean", "zscore"],
    "metrics": ["method", "label", "target", "units", "model", "protocol", "n_regions", "mae_mean", "mae_std",
                "rmse_mean", "rmse_std", "r2_mean", "r2_std", "combination", "coverage", "interval_width"],
}
EXPECTED_MANIFEST = {
    "config", "context", "device", "device_requested", "ensembles", "fusion", "label_units", "layers", "log",
    "methods", "metrics", "n_regions", "peak_rss_mb", "primary_method", "regionlens", "report", "seed",
    "timings_s", "total_s", "versions", "views",
}


@pytest.fixture(scope="module")
def sample_run(demo_run):
    """The demo run's result (the baseline on the sample city, quick settings)."""
    return demo_run[0]


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


def test_the_spatial_context_of_an_embedding_keeps_reporting_and_can_be_cancelled(
        small_city: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancel_at_message) -> None:
    """Appending the spatial context (neighbourhoods and their means: seconds at 250,000 regions) runs under
    Progress.wait: heartbeats come while it runs, and a cancel stops the run with nothing written."""
    from backend import progress as progress_mod
    from backend.config import config_from_dict
    from backend.tasks import context as context_mod

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = context_mod.SpatialContext.transform
    monkeypatch.setattr(context_mod.SpatialContext, "transform",
                        lambda self, *a, **k: release.wait(5.0) or real(self, *a, **k))
    progress, messages = cancel_at_message("spatial context", 3)
    cfg = config_from_dict({**small_city, "context": "standard"}, base_dir=tmp_path)
    with pytest.raises(Cancelled):
        run_pipeline(cfg, progress)
    release.set()
    assert messages.count("spatial context") >= 3 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("encoder", "chips"), [("stats", False), (None, True)])
def test_the_views_stage_builds_image_chips_only_for_a_method_that_uses_them(
        encoder: str | None, chips: bool, sf_city, sf_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CooKIE with image statistics needs no chips (about 11 GB at 250,000 regions): the views stage skips them."""
    from backend.models import get_embedder
    from backend.pipeline import RunState, views_stage
    from backend.views import build as build_mod

    built: list[str] = []
    real = build_mod.image_chips
    monkeypatch.setattr(build_mod, "image_chips", lambda *a, **k: built.append("chips") or real(*a, **k))
    from backend.pipeline import views_to_build

    cookie = get_embedder("cookie", device="cpu", **({} if encoder is None else {"image_encoder": encoder}))
    assert ("chips" in cookie.views_to_build()) is chips
    assert ("chips" in views_to_build([cookie])) is chips  # the rule the run and the apply job share
    state = RunState(cfg=sf_config, progress=Progress(), out=None, device="cpu", methods=[cookie], context=None,
                     city=sf_city)
    views = views_stage(state)
    assert bool(views.chips) is chips and bool(built) is chips
    assert "image_stats" in views.available()


@pytest.mark.parametrize("method, points, texts", [("baseline", False, False), ("calliper", True, False),
                                                   ("cookie", True, True)])
def test_the_views_stage_builds_poi_points_and_texts_only_for_a_method_that_uses_them(
        method: str, points: bool, texts: bool, sf_city, sf_config) -> None:
    """One description per POI and their lists per region cost a minute and GBs at 10 M POIs: a run builds them
    only when one of its methods learns from them (the counts always)."""
    from backend.models import get_embedder
    from backend.pipeline import RunState, views_stage

    model = get_embedder(method, device="cpu")
    state = RunState(cfg=sf_config, progress=Progress(), out=None, device="cpu", methods=[model], context=None,
                     city=sf_city)
    views = views_stage(state)
    assert "poi_counts" in views.available()
    assert (views.poi_points is not None) is points
    assert (views.poi_texts is not None) is texts


def test_fusion_prediction_blocks_keep_reporting_and_can_be_cancelled(
        small_city: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancel_at_message) -> None:
    """fusion's prediction blocks (the blocks again, with their spatial context: an 8 s call at 250,000 regions)
    are built under Progress.wait."""
    from backend import progress as progress_mod
    from backend.config import config_from_dict
    from backend.models import fusion as fusion_mod

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = fusion_mod.FusionEmbedder.prediction_blocks
    monkeypatch.setattr(fusion_mod.FusionEmbedder, "prediction_blocks",
                        lambda self, views: release.wait(5.0) or real(self, views))
    progress, messages = cancel_at_message("fusion prediction blocks", 3)
    methods = [{"name": "fusion", "dim": 4}, {"name": "baseline", "dim": 4}]
    cfg = config_from_dict({**small_city, "methods": methods}, base_dir=tmp_path)
    with pytest.raises(Cancelled):
        run_pipeline(cfg, progress)
    release.set()
    assert messages.count("fusion prediction blocks") >= 3 and not (tmp_path / "out").exists()
