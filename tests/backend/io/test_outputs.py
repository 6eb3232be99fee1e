"""Atomic output folder: nothing half-written, nothing overwritten silently, unwritable folders refused."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from backend.errors import OutputError
from backend.io.outputs import (
    STAGING_MARKER,
    OutputFolder,
    check_output_dir,
    remove_active_staging,
    remove_stale_temporary_files,
    replace_atomically,
    write_layer,
    write_table,
)


def test_commit_moves_staging_into_place(tmp_path) -> None:
    target = tmp_path / "run"
    with OutputFolder(target) as out:
        out.path("a.txt").write_text("x")
        assert not target.exists()
        out.commit()
    assert (target / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_failure_leaves_nothing(tmp_path) -> None:
    target = tmp_path / "run"
    with pytest.raises(RuntimeError), OutputFolder(target) as out:
        out.path("a.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _previous_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"regionlens": "0.1.0"}))
    (folder / "regionlens.gpkg").write_text("old results")
    return folder


def test_existing_output_is_kept_unless_overwrite(tmp_path) -> None:
    target = _previous_run(tmp_path / "run")
    with pytest.raises(OutputError, match="already holds files"):
        OutputFolder(target)
    assert (target / "regionlens.gpkg").read_text() == "old results"
    with OutputFolder(target, overwrite=True) as out:
        out.path("new.txt").write_text("y")
        out.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_refuses_a_folder_without_run_json(tmp_path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    (target / "mine.txt").write_text("user data")
    (target / "run.json").write_text("[1, 2]")  # not a RegionLens manifest
    with pytest.raises(OutputError, match=r"no RegionLens run \(run.json\)"):
        OutputFolder(target, overwrite=True)
    assert (target / "mine.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_refuses_a_run_folder_holding_an_input(tmp_path) -> None:
    target = _previous_run(tmp_path / "run")
    (target / "inputs").mkdir()
    regions = target / "inputs" / "regions.gpkg"
    regions.write_text("input")
    with pytest.raises(OutputError, match="contains an input or the configuration file"):
        OutputFolder(target, overwrite=True, protect=[str(regions)])
    assert regions.read_text() == "input" and (target / "run.json").is_file()


def test_overwrite_refuses_the_current_directory_and_its_parents(tmp_path, monkeypatch) -> None:
    target = _previous_run(tmp_path / "run")
    (target / "sub").mkdir()
    monkeypatch.chdir(target / "sub")
    for folder in (target, target / "sub"):
        with pytest.raises(OutputError, match="contains the current directory"):
            check_output_dir(folder, overwrite=True)
    assert (target / "run.json").is_file()


def test_stale_staging_of_dead_process_is_removed_live_and_foreign_kept(tmp_path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / ".run.tmp-dead"
    stale.mkdir()
    (stale / "regionlens.gpkg").write_text("half")
    (stale / STAGING_MARKER).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname()}))
    live = tmp_path / ".other.tmp-live"
    live.mkdir()
    (live / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    foreign = tmp_path / ".run.tmp-nomarker"
    foreign.mkdir()
    elsewhere = tmp_path / ".run.tmp-host"
    elsewhere.mkdir()
    (elsewhere / STAGING_MARKER).write_text(json.dumps({"pid": dead_pid, "host": "another-machine"}))
    with OutputFolder(tmp_path / "run") as out:
        assert out.removed_stale == [stale]
        assert (out.staging / STAGING_MARKER).is_file()
        out.commit()
    assert not stale.exists() and live.is_dir() and foreign.is_dir() and elsewhere.is_dir()
    assert not (tmp_path / "run" / STAGING_MARKER).exists()


def test_remove_active_staging(tmp_path) -> None:
    out = OutputFolder(tmp_path / "run")
    out.path("a.txt").write_text("x")
    assert remove_active_staging() == [out.staging]
    assert list(tmp_path.iterdir()) == []
    assert remove_active_staging() == []


def test_stale_temporary_geopackages(tmp_path) -> None:
    mine = tmp_path / f".c.tmp-{os.getpid()}.gpkg"
    dead = tmp_path / ".c.tmp-999999999.gpkg"
    journal = tmp_path / ".c.tmp-999999999.gpkg-journal"
    other = tmp_path / ".d.tmp-999999999.gpkg"
    for p in (mine, dead, journal, other):
        p.write_text("x")
    assert sorted(remove_stale_temporary_files(tmp_path / "c.gpkg")) == [dead, journal]
    assert mine.exists() and other.exists()


def test_empty_existing_folder_is_fine_and_file_is_refused(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False)
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "f", overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent(tmp_path) -> None:  # pragma: no cover - runs as non-root only
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputError, match="permission denied|Cannot"):
        check_output_dir(ro / "run", overwrite=False)


def test_unwritable_parent_path_under_a_file(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="Cannot create"):
        check_output_dir(tmp_path / "file" / "sub" / "run", overwrite=False)


def test_geopackage_is_version_1_3_with_layers_and_table(tmp_path) -> None:
    gpkg = tmp_path / "x.gpkg"
    idx = pd.Index(["a", "b"], name="region_id")
    gdf = gpd.GeoDataFrame({"v": [1.0, 2.0]}, geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)],
                           crs=32610, index=idx)
    write_layer(gdf, gpkg, "embeddings")
    write_table(pd.DataFrame({"metric": ["r2"], "value": [0.5]}), gpkg, "metrics")
    with sqlite3.connect(gpkg) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10300
        tables = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    assert tables == {"embeddings": "features", "metrics": "attributes"}
    back = gpd.read_file(gpkg, layer="embeddings")
    assert list(back["region_id"]) == ["a", "b"]


def test_replace_atomically_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "features.npy"
    replace_atomically(target, lambda fh: fh.write(b"first"))
    assert target.read_bytes() == b"first"

    def fail(fh) -> None:
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, fail)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["features.npy"]
    replace_atomically(target, lambda fh: fh.write(b"second"))
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["features.npy"]
def test_large_layers_are_written_in_batches_with_a_spatial_index(tmp_path, monkeypatch, poll_log: Any) -> None:
    from backend.io import outputs as outputs_mod

    monkeypatch.setattr(outputs_mod, "WRITE_BATCH", 4)
    n = 10
    idx = pd.Index([f"r{i}" for i in range(n)], name="region_id")
    gdf = gpd.GeoDataFrame({"v": [float(i) for i in range(n)]},
                           geometry=[shapely.box(i, 0, i + 1, 1) for i in range(n)], crs=32610, index=idx)
    gpkg = tmp_path / "x.gpkg"
    write_layer(gdf, gpkg, "clusters", poll_log)
    write_layer(gdf.iloc[:3], gpkg, "embeddings")
    assert len(poll_log.polls) == 3  # batches of 4, 4 and 2 rows, progress polled before each
    back = gpd.read_file(gpkg, layer="clusters")
    assert list(back["region_id"]) == list(idx) and list(back["v"]) == list(gdf["v"])  # every batch, in order
    with sqlite3.connect(gpkg) as con:
        extensions = {r[0] for r in con.execute("SELECT table_name FROM gpkg_extensions "
                                                "WHERE extension_name = 'gpkg_rtree_index'")}
        assert extensions == {"clusters", "embeddings"}
        rtree_rows = con.execute("SELECT COUNT(*) FROM rtree_clusters_geom").fetchone()[0]
        hits = con.execute("SELECT id FROM rtree_clusters_geom WHERE minx >= 4.5 AND maxx <= 6.5").fetchall()
    assert rtree_rows == n  # the index holds the appended batches too
    assert len(hits) == 1


def test_wide_layers_are_written_in_smaller_batches(tmp_path, monkeypatch) -> None:
    """One write holds the GIL: a wide layer (an embedding with its context) gets fewer rows per write, so the
    progress heartbeat runs as often as for a narrow one."""
    from backend.io import outputs as outputs_mod

    assert outputs_mod.write_batch_rows(5) == outputs_mod.WRITE_BATCH
    assert outputs_mod.write_batch_rows(194) == outputs_mod.WRITE_CELLS // 194 < outputs_mod.WRITE_BATCH
    assert outputs_mod.write_batch_rows(10**9) == 1_000
    monkeypatch.setattr(outputs_mod, "WRITE_CELLS", 30_000)  # 30 columns + id + geometry: 1,000 rows a write
    writes: list[int] = []
    real = pyogrio.write_dataframe
    monkeypatch.setattr(pyogrio, "write_dataframe", lambda df, *a, **k: writes.append(len(df)) or real(df, *a, **k))
    n = 2_500
    idx = pd.Index([f"r{i}" for i in range(n)], name="region_id")
    gdf = gpd.GeoDataFrame({f"e{j}": np.full(n, float(j)) for j in range(30)},
                           geometry=[shapely.box(i, 0, i + 1, 1) for i in range(n)], crs=32610, index=idx)
    write_layer(gdf, tmp_path / "x.gpkg", "embeddings")
    assert writes == [1_000, 1_000, 500]
    back = gpd.read_file(tmp_path / "x.gpkg", layer="embeddings")
    assert list(back["region_id"]) == list(idx) and back["e29"].eq(29.0).all()
