"""bench/qgis_load.py: opening, styling and drawing a run's results in QGIS, timed beside QGIS alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qgis.core import QgsProject

from bench import qgis_load


def test_measures_qgis_alone_and_regionlens_on_a_run(run_gpkg: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Every step has its row, the zoomed view holds fewer regions than the run, and the table is printed."""
    out = tmp_path / "load.json"
    assert qgis_load.main([str(run_gpkg.parent), "--size", "400x300", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    steps = [(r["who"], r["step"]) for r in result["rows"]]
    assert steps == [
        ("QGIS alone", "open the clusters layer"),
        ("QGIS alone", "draw clusters, whole extent"),
        ("QGIS alone", "draw clusters, 1/16 of the extent"),
        ("RegionLens", "load and style every layer of the run"),
        ("RegionLens", "draw clusters, whole extent"),
        ("RegionLens", "draw predictions, whole extent"),
        ("RegionLens", "draw clusters, 1/16 of the extent"),
        ("RegionLens", "draw clusters with labels (label scale)"),
    ]
    assert all(r["seconds"] >= 0 and r["rss_mb"] > 0 for r in result["rows"])
    assert 0 < result["regions_in_zoomed_view"] < result["n_regions"]
    assert result["regions_in_labelled_view"] == result["n_regions"]  # a small run is labelled at every scale
    assert result["layers_loaded"] >= 4
    table = capsys.readouterr().out
    assert "load and style every layer of the run" in table and f"{result['n_regions']:,} regions" in table
    QgsProject.instance().clear()


def test_a_folder_without_a_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert qgis_load.main([str(tmp_path)]) == 2
    assert "give a RegionLens run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        qgis_load.main([str(tmp_path), "--size", "big"])
