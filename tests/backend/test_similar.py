"""Find similar regions: the ``similar`` job (backend/jobs.py), its CLI and worker action."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from backend.errors import ConfigError, InputError, OutputError
from backend.jobs import run_similar_job
from backend.tasks.similar import similarity_to, top_n_mask
from regionlens_common import (
    SIMILAR_CHOSEN_FIELD,
    SIMILAR_GPKG,
    SIMILAR_TOP_FIELD,
    SIMILARITY_FIELD,
    SIMILARITY_LAYER,
)

ROOT = Path(__file__).resolve().parents[2]


def test_similarity_is_cosine_to_the_mean_of_the_centred_chosen_rows() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]]) + 50.0  # a common offset
    sim = similarity_to(x, np.array([0]))
    xc = x - x.mean(axis=0)
    expected = xc @ xc[0] / (np.linalg.norm(xc, axis=1) * np.linalg.norm(xc[0]))
    np.testing.assert_allclose(sim, expected)
    assert sim[0] == pytest.approx(1.0) and sim.min() >= -1.0
    two = similarity_to(x, np.array([0, 1]))
    assert two[2] == pytest.approx(1.0)  # (1, 1) - mean points where the mean of rows 0 and 1 does
    flat = similarity_to(np.ones((4, 3)), np.array([1]))
    assert (flat == 0).all()  # no direction: similarity 0, never NaN
    mask = top_n_mask(np.array([0.9, 1.0, 0.5, 0.8, 0.95]), np.array([1]), 2)
    assert mask.tolist() == [True, False, False, False, True]


def test_similar_on_a_run_folder(quick_run, tmp_path: Path) -> None:
    layer = gpd.read_file(quick_run.gpkg, layer="embeddings")
    chosen = layer["region_id"].iloc[[5, 17]].tolist()
    out = tmp_path / "sim.gpkg"
    res = run_similar_job({"run": quick_run.output_dir, "ids": chosen, "top": 7, "output": str(out)})
    assert res["output"] == str(out) and res["method"] == "baseline" and res["n_regions"] == 579
    sim = gpd.read_file(out, layer=SIMILARITY_LAYER).set_index("region_id")
    assert list(sim.columns) == [SIMILARITY_FIELD, SIMILAR_TOP_FIELD, SIMILAR_CHOSEN_FIELD, "geometry"]
    assert sim[SIMILARITY_FIELD].between(-1, 1).all()
    assert sim[SIMILAR_CHOSEN_FIELD].sum() == 2 and set(sim.index[sim[SIMILAR_CHOSEN_FIELD] == 1]) == set(chosen)
    top = sim[sim[SIMILAR_TOP_FIELD] == 1]
    assert len(top) == 7 and not set(top.index) & set(chosen)
    others = sim.drop(index=chosen)
    assert top[SIMILARITY_FIELD].min() >= others.drop(index=top.index)[SIMILARITY_FIELD].max()
    assert [t["region_id"] for t in res["top"]] == top[SIMILARITY_FIELD].sort_values(ascending=False).index.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.gpkg"]  # atomic: no temporary file left


def test_similar_default_output_is_in_the_run_folder_and_never_replaced_silently(quick_run, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(quick_run.output_dir, run)
    ids = gpd.read_file(run / "regionlens.gpkg", layer="embeddings")["region_id"].iloc[:1].tolist()
    res = run_similar_job({"run": str(run), "ids": ids, "method": "baseline"})
    assert res["output"] == str(run / SIMILAR_GPKG)
    with pytest.raises(OutputError, match="exists"):
        run_similar_job({"run": str(run), "ids": ids})
    assert run_similar_job({"run": str(run), "ids": ids, "overwrite": True, "top": 3})["top"][2]


def test_bad_ids_methods_and_parameters_are_clear_errors(quick_run, tmp_path: Path) -> None:
    out = tmp_path / "s.gpkg"
    with pytest.raises(InputError, match=r"Unknown region ids: nowhere, 42\. The layer has 579 regions"):
        run_similar_job({"run": quick_run.output_dir, "ids": ["nowhere", 42], "output": str(out)})
    with pytest.raises(InputError, match="no embeddings of method 'hafusion'; its methods: baseline"):
        run_similar_job({"run": quick_run.output_dir, "ids": ["x"], "method": "hafusion", "output": str(out)})
    with pytest.raises(ConfigError, match="'ids' is empty"):
        run_similar_job({"run": quick_run.output_dir, "ids": [], "output": str(out)})
    with pytest.raises(ConfigError, match="'top'"):
        run_similar_job({"run": quick_run.output_dir, "ids": ["x"], "top": -1, "output": str(out)})
    with pytest.raises(InputError, match="does not exist"):
        run_similar_job({"run": str(tmp_path / "missing"), "ids": ["x"], "output": str(out)})
    assert not out.exists()


def test_similar_cli_and_worker(quick_run, tmp_path: Path) -> None:
    rid = gpd.read_file(quick_run.gpkg, layer="embeddings")["region_id"].iloc[0]
    out = tmp_path / "cli.gpkg"
    cmd = [sys.executable, "-m", "backend", "similar", "--run", quick_run.output_dir, "--ids", rid, "--top", "3",
           "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and len(done.stdout.strip().splitlines()) == 4
    bad = subprocess.run([*cmd[:-1], str(tmp_path / "bad.gpkg"), "--ids", "nope"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Unknown region ids: nope" in bad.stderr
    assert not (tmp_path / "bad.gpkg").exists()
    worker = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert json.loads(worker.stdout.readline())["event"] == "ready"
        request = {"id": 1, "action": "similar",
                   "params": {"run": quick_run.output_dir, "ids": [rid], "output": str(tmp_path / "w.gpkg")}}
        worker.stdin.write((json.dumps(request) + "\n").encode())
        worker.stdin.flush()
        while (event := json.loads(worker.stdout.readline()))["event"] not in ("result", "error"):
            pass
        assert event["event"] == "result", event
        assert event["result"]["layer"] == SIMILARITY_LAYER and len(event["result"]["top"]) == 10
    finally:
        worker.stdin.close()
        worker.wait(timeout=30)
