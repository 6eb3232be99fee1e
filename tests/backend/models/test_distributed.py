"""Data-parallel training (backend/models/_distributed.py) with 2 CPU processes (gloo) on a slice of the sample
city: the same seed gives the single-process loss curve (CaLLiPer and CooKIE to float precision, since their
contrastive losses are computed over the all-gathered batch; ReFound within 3 %, HAFusion ``scalable`` within
15 %, as their shards see fewer regions in attention and pair terms), the model rank 0 returns saves and
loads in one process, a cancel stops every rank, and the configuration key and CLI flag reach the methods."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess  # nosec B404 - torchrun of the backend CLI, fixed arguments
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.cli import main as cli_main
from backend.config import config_from_dict
from backend.errors import Cancelled, ConfigError
from backend.io.city import CityData
from backend.models import get_embedder, load_embedder
from backend.models._distributed import Ranks, check_nproc_device, run_data_parallel
from backend.pipeline import _make_methods
from backend.progress import Progress
from backend.views import Views, build_views
from tests.backend.models.tiny_city import (
    SHORT_RUNS,
    fast_training,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.usefixtures("fast_training")

#: Largest relative difference per epoch (step) between the 2-process and the 1-process loss curve.
TOLERANCE = {"calliper": 1e-5, "cookie": 1e-5, "refound": 0.03, "hafusion": 0.15}
#: CaLLiPer without dropout: the two runs then draw no different random numbers at all.
OVERRIDES = {"calliper": {"dropout": 0.0}}




@pytest.fixture(scope="module")
def sf_slice(sf_city: CityData) -> Views:
    """40 block groups of the sample city with their POIs (counts, points, names) and image statistics."""
    views = build_views(sf_city, report=[])
    rows = np.arange(40)
    ids = views.region_ids[rows]
    keep = set(map(str, ids))
    pts = views.poi_points
    return Views(region_ids=ids, tables={k: v.loc[ids] for k, v in views.tables.items()},
                 poi_points=pts[pts["region_id"].astype(str).isin(keep)].copy(), centroids=views.centroids[rows],
                 geometry=views.geometry.iloc[rows])


@pytest.mark.parametrize("method", ["calliper", "cookie", "hafusion", "refound"])
def test_two_processes_follow_the_single_process_loss_curve(method: str, sf_slice: Views, tmp_path: Path) -> None:
    kw = {**SHORT_RUNS[method], **OVERRIDES.get(method, {})}
    if method == "cookie":
        kw["modalities"] = "poi,image"
    one = get_embedder(method, **kw).fit(sf_slice)
    progress = Progress()
    two = get_embedder(method, nproc=2, **kw).fit(sf_slice, progress)
    assert any("2 processes (gloo" in m for m in progress.log_messages)
    h1, h2 = np.asarray(one.history), np.asarray(two.history)
    assert h1.shape == h2.shape and np.isfinite(h2).all()
    assert np.max(np.abs(h2 - h1) / np.abs(h1)) <= TOLERANCE[method]
    if TOLERANCE[method] > 1e-3:  # sharded: the curves differ, but not by nothing
        assert not np.allclose(h1, h2, rtol=1e-6)
    assert not multiprocessing.active_children()

    want = two.transform(sf_slice).to_numpy()
    loaded = load_embedder(str(two.save(tmp_path / method)))  # saved by rank 0, loaded in this one process
    np.testing.assert_allclose(loaded.transform(sf_slice).to_numpy(), want, rtol=1e-5, atol=1e-6)


def test_cancel_reaches_every_rank(sf_slice: Views) -> None:
    seen: list[str] = []

    def cancel_on_first_epoch(stage: str, fraction: float, message: str) -> None:
        seen.append(message)
        if "epoch" in message:
            progress.cancel()

    progress = Progress(callback=cancel_on_first_epoch)
    kw = {**SHORT_RUNS["cookie"], "modalities": "poi,image", "stage1_epochs": 50, "stage2_epochs": 50}
    model = get_embedder("cookie", nproc=2, **kw)
    with pytest.raises(Cancelled):
        model.fit(sf_slice, progress)
    assert len(model.history) < 5  # stopped at the next batch, not after 100 epochs
    assert not multiprocessing.active_children()  # the helper rank left too


def _rank_sum(ranks: Ranks, job: int, progress: Progress) -> list[float]:
    """Every rank contributes rank + job; rank 0 also reports its shard of a batch of 5."""
    return [ranks.mean(float(ranks.rank + job)) * ranks.world, float(len(ranks.shard(np.arange(5))))]


def test_runner_in_one_and_two_processes() -> None:
    assert run_data_parallel(_rank_sum, 10, 1, "cpu", Progress()) == [10.0, 5.0]
    assert run_data_parallel(_rank_sum, 10, 2, "cpu", Progress()) == [21.0, 3.0]  # 10 + 11; positions 0, 2, 4
    assert Ranks(rank=1, world=2).gathered_order(5).tolist() == [0, 2, 4, 1, 3]


def test_devices_data_parallel_training_does_not_run_on() -> None:
    more_than_gpus = max(2, torch.cuda.device_count() + 1)
    with pytest.raises(ConfigError, match="one process per GPU"):
        run_data_parallel(_rank_sum, 0, more_than_gpus, "cuda", Progress())
    with pytest.raises(ConfigError, match="one process per GPU"):  # what the pipeline checks before any work
        check_nproc_device(more_than_gpus, "cuda")
    with pytest.raises(ConfigError, match="not on 'mps'"):
        run_data_parallel(_rank_sum, 0, 2, "mps", Progress())
    check_nproc_device(2, "cpu")
    check_nproc_device(1, "mps")  # one process: any device


def test_configuration_key_and_cli_flag(sf_config_dict: dict, sf_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_from_dict({**sf_config_dict, "nproc": 2,
                            "methods": [{"name": "cookie"}, {"name": "calliper", "ensemble": 2}]}, base_dir=sf_dir)
    assert cfg.nproc == 2
    cookie, calliper = _make_methods(cfg, "cpu")
    assert cookie.nproc == 2 and [m.nproc for m in calliper.members] == [2, 2]
    assert config_from_dict(sf_config_dict, base_dir=sf_dir).nproc == 1  # the default
    for bad in (0, 65, "2", 1.5):
        with pytest.raises(ConfigError, match="nproc"):
            config_from_dict({**sf_config_dict, "nproc": bad}, base_dir=sf_dir)
    data = dict(sf_config_dict, output_dir=str(tmp_path / "out"))
    for key in ("regions", "pois"):
        data[key] = dict(data[key], path=str(sf_dir / data[key]["path"]))
    config = tmp_path / "run.json"
    config.write_text(json.dumps({k: v for k, v in data.items() if k in ("output_dir", "regions", "pois")}))
    assert cli_main(["run", str(config), "--nproc", "0"]) == 2
    assert "'--nproc' must lie between 1 and 64" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _slice_city(sf_dir: Path, folder: Path, n: int = 40) -> dict[str, Any]:
    """The first ``n`` block groups of the sample city, their POIs and the Landsat raster, as files, with a
    configuration running CooKIE (the tests' short run, POIs and image statistics)."""
    import geopandas as gpd

    folder.mkdir(parents=True, exist_ok=True)
    regions = gpd.read_file(sf_dir / "sf_block_groups_crime_pop.geojson").iloc[:n]
    regions.to_file(folder / "regions.gpkg")
    pois = gpd.read_file(sf_dir / "sf_pois_osm.geojson")
    pois = pois[pois.within(regions.to_crs(pois.crs).union_all())]
    pois.to_file(folder / "pois.gpkg")
    params = {k: v for k, v in SHORT_RUNS["cookie"].items() if k not in ("dim", "seed", "device")}
    return {"seed": SHORT_RUNS["cookie"]["seed"],
            "regions": {"path": str(folder / "regions.gpkg"), "id_field": "GEO_ID"},
            "pois": {"path": str(folder / "pois.gpkg"), "category_field": "category", "name_field": "name"},
            "rasters": [{"path": str(sf_dir / "sf_landsat7_3857_30m.tif")}],
            "labels": [{"name": "population", "field": "Population", "target": "density"}],
            "methods": [{"name": "cookie", "dim": SHORT_RUNS["cookie"]["dim"],
                         "params": {**params, "modalities": "poi,image"}}],
            "clustering": {"k": 3}, "prediction": {"models": ["ridge"], "folds": 3, "repeats": 1, "spatial": False},
            "figures": False}


def test_backend_run_under_torchrun_joins_its_process_group(sf_dir: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m backend run`` (gloo): both processes join torchrun's group instead of
    starting ranks of their own; rank 0 runs the job and writes the outputs once, rank 1 trains its shard;
    the loss curve is the single-process one (CooKIE: to float precision)."""
    root = Path(__file__).resolve().parents[3]
    city = _slice_city(sf_dir, tmp_path / "city")
    for name in ("torchrun", "single"):
        (tmp_path / f"{name}.json").write_text(json.dumps({**city, "output_dir": str(tmp_path / name)}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(  # nosec B603 - this interpreter, fixed arguments
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "backend", "run", str(tmp_path / "torchrun.json"), "--device", "cpu", "--quiet"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RegionLens finished") == 1  # rank 0 alone runs the job and prints
    assert cli_main(["run", str(tmp_path / "single.json"), "--device", "cpu", "--quiet"]) == 0

    runs = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in ("torchrun", "single")}
    assert any("2 processes started by torchrun" in line for line in runs["torchrun"]["log"])
    assert not any("processes" in line for line in runs["single"]["log"])
    histories = {name: np.asarray(json.loads(next((tmp_path / name).rglob("cookie*/config.json")).read_text())
                                  ["history"]) for name in runs}
    assert len(histories["single"]) == 5 and histories["torchrun"].shape == histories["single"].shape
    np.testing.assert_allclose(histories["torchrun"], histories["single"], rtol=TOLERANCE["cookie"])


def test_torchrun_environment_and_a_conflicting_nproc(sf_config_dict: dict, sf_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from backend.models._distributed import torchrun_launch

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_launch() is None  # a plain run
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_launch() == (1, 2, 1)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_launch() is None  # torchrun with one process: the single-process path
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ConfigError, match="must be integers"):
        torchrun_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK < WORLD_SIZE"):
        torchrun_launch()
    monkeypatch.setenv("RANK", "0")
    data = {"output_dir": str(tmp_path / "out"),
            **{k: dict(sf_config_dict[k], path=str(sf_dir / sf_config_dict[k]["path"])) for k in ("regions", "pois")}}
    (tmp_path / "run.json").write_text(json.dumps(data))
    assert cli_main(["run", str(tmp_path / "run.json"), "--nproc", "3"]) == 2  # refused before joining any group
    assert "--nproc 3, but torchrun started 2 processes" in capsys.readouterr().err
    assert not torch.distributed.is_initialized() and not (tmp_path / "out").exists()


def _never_called(ranks: Ranks, job: Any, progress: Progress) -> None:
    raise AssertionError("the training job started although the run was cancelled")


def test_loading_torchs_optimiser_machinery_keeps_reporting_and_can_be_cancelled(
        monkeypatch: pytest.MonkeyPatch, cancel_at_message) -> None:
    """The first optimiser of a process imports torch._dynamo (1.5 s of CPU in one call): the first training
    job imports it under Progress.wait, so heartbeats come meanwhile and a cancel stops the run there."""
    import threading

    from backend import progress as progress_mod
    from backend.models import _distributed

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    monkeypatch.delitem(sys.modules, "torch._dynamo", raising=False)  # as in a fresh process (restored after)
    release = threading.Event()
    imported: list[str] = []
    monkeypatch.setattr(_distributed, "_load_torch_compiler",
                        lambda: imported.append("torch._dynamo") or release.wait(5.0))
    progress, messages = cancel_at_message("loading torch", 3)
    with pytest.raises(Cancelled):
        run_data_parallel(_never_called, None, 1, "cpu", progress)
    release.set()
    assert imported == ["torch._dynamo"] and messages.count("loading torch") >= 3
