"""Atomic output folder: nothing half-written, nothing overwritten silently, unwritable folders refused."""

from __future__ import annotations

import os
import sqlite3

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from backend.errors import OutputError
from backend.io.outputs import OutputFolder, check_output_dir, write_layer, write_table


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


def test_existing_output_is_kept_unless_overwrite(tmp_path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    (target / "mine.txt").write_text("user data")
    with pytest.raises(OutputError, match="already holds files"):
        OutputFolder(target)
    assert (target / "mine.txt").read_text() == "user data"
    with OutputFolder(target, overwrite=True) as out:
        out.path("new.txt").write_text("y")
        out.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


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
