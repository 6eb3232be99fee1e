"""``make screenshots`` (scripts/screenshots.py) pictures the demo run: it says to run ``make demo`` first when there
is none, and sets the run dock up from the run's own run.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from .conftest import REPO_ROOT


@pytest.fixture(scope="module")
def screenshots():
    spec = importlib.util.spec_from_file_location("screenshots", REPO_ROOT / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_run_it_says_to_run_make_demo(screenshots, tmp_path: Path, capsys) -> None:
    assert screenshots.main(["--run", str(tmp_path / "demo")]) == 2
    assert "run `make demo` first" in capsys.readouterr().err
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "regionlens.gpkg").write_bytes(b"")
    with pytest.raises(RuntimeError, match="run.json"):
        screenshots.read_run(tmp_path / "demo")


def test_the_dock_choices_are_the_runs(screenshots, sample, qgis_new_project, tmp_path: Path) -> None:
    sf = REPO_ROOT / "resources" / "sample_data" / "sf"
    config = {
        "output_dir": str(tmp_path / "demo"),
        "regions": {"path": str(sf / "sf_block_groups_crime_pop.geojson"), "id_field": "GEO_ID"},
        "pois": {"path": str(sf / "sf_pois_osm.geojson"), "category_field": "category", "name_field": "name"},
        "rasters": [{"path": str(sf / "sf_landsat7_3857_30m.tif"), "name": "landsat"}],
        "labels": [{"name": "robbery", "field": "Robbery", "target": "density", "log1p": True},
                   {"name": "incidents", "points": str(sf / "sf_crime_incidents_2012h2.geojson"),
                    "target": "count", "log1p": False}],
        "methods": [{"name": "baseline", "dim": 32, "params": {}},
                    {"name": "calliper", "dim": 128, "params": {"epochs": 40}}],
        "clustering": {"k": "auto"},
        "prediction": {"models": ["ridge"], "folds": 5, "repeats": 2, "spatial": True, "coverage": 0.9},
        "seed": 0,
    }
    choices = screenshots.demo_choices(qgis_new_project, sample, json.loads(json.dumps({"config": config})))
    assert choices.region_layer_id == sample["block_groups"].id() and choices.region_id_field == "GEO_ID"
    assert choices.poi_layer_id == sample["pois"].id() and choices.raster_layer_ids == [sample["landsat"].id()]
    field, points = choices.labels
    assert (field.field, field.name, field.target, field.log1p) == ("Robbery", "robbery", "density", True)
    assert (points.points_layer_id, points.target, points.log1p) == (sample["crime_incidents"].id(), "count", False)
    assert [(m.name, m.dim, m.params) for m in choices.methods] == [("baseline", 32, {}),
                                                                   ("calliper", 128, {"epochs": 40})]
    assert (choices.cluster_k, choices.repeats, choices.spatial) == (0, 2, True)
    assert Path(choices.output_dir).name.startswith("demo")
    config["regions"]["path"] = str(tmp_path / "elsewhere.gpkg")
    with pytest.raises(RuntimeError, match="not one of the sample city's layers"):
        screenshots.demo_choices(qgis_new_project, sample, {"config": config})
