"""Run configuration parsing and validation."""

from __future__ import annotations

import json

import pytest

from backend.config import config_from_dict, load_config
from backend.errors import ConfigError

BASE = {
    "output_dir": "out",
    "regions": {"path": "r.gpkg", "id_field": "id"},
    "pois": {"path": "p.gpkg", "category_field": "c"},
}


def test_toml_relative_paths_resolve_against_file(tmp_path) -> None:
    (tmp_path / "cfg.toml").write_text(
        'output_dir = "res"\n[regions]\npath = "data/r.gpkg"\nid_field = "id"\n'
        '[pois]\npath = "p.gpkg"\ncategory_field = "cat"\n[[labels]]\nname = "pop"\nfield = "Population"\n'
        'target = "density"\nlog1p = true\n'
    )
    cfg = load_config(tmp_path / "cfg.toml")
    assert cfg.regions.path == str(tmp_path / "data" / "r.gpkg")
    assert cfg.output_dir == str(tmp_path / "res")
    assert cfg.pois is not None and cfg.pois.category_field == "cat"
    assert cfg.labels[0].target == "density" and cfg.labels[0].log1p
    assert [m.name for m in cfg.methods] == ["baseline"]


def test_json_config(tmp_path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({**BASE, "methods": [{"name": "baseline", "dim": 8}]}))
    assert load_config(tmp_path / "c.json").methods[0].dim == 8


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"regions": {"path": "r"}}, "incomplete"),
        ({"bogus": 1}, "Unknown configuration keys"),
        ({"regions": {"path": "r", "id_field": "i", "x": 1}}, "unknown keys"),
        ({"labels": [{"name": "a b", "field": "f"}]}, "must start with a letter"),
        ({"labels": [{"name": "a", "field": "f", "points": "p"}]}, "exactly one"),
        ({"labels": [{"name": "a", "field": "f", "target": "rate"}]}, "per_field"),
        ({"labels": [{"name": "a", "field": "f"}, {"name": "a", "field": "g"}]}, "used twice"),
        ({"methods": []}, "No methods"),
        ({"clustering": {"k": 1}}, "clustering.k"),
        ({"prediction": {"models": ["svm"]}}, "Unknown prediction models"),
    ],
)
def test_invalid(patch, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BASE, **patch})


def test_missing_sections_and_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="regions"):
        config_from_dict({"output_dir": "x"})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="Cannot parse"):
        load_config(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"methods": [{"name": "baseline", "dim": "sixteen"}]}, r"'methods\[0\].dim' must be an integer"),
        ({"methods": [{"name": "baseline", "dim": True}]}, r"'methods\[0\].dim' must be an integer"),
        ({"methods": [{"name": "baseline", "params": {"neighbourhood_m": "far"}}]}, "neighbourhood_m' must be a"),
        ({"methods": [{"name": "baseline", "params": {"neighbourhood_m": float("nan")}}]}, "finite"),
        ({"methods": [{"name": "calliper", "params": {"epochs": 0}}]}, "epochs"),
        ({"methods": [{"name": "calliper"}], "pois": None}, "calliper learns from a POI layer"),
        ({"prediction": {"folds": "3"}}, "'prediction.folds' must be an integer"),
        ({"prediction": {"models": "gbm"}}, r'write models = \["gbm"\]'),
        ({"prediction": {"repeats": 1000}}, "between 1 and 100"),
        ({"clustering": {"k_min": 4, "k_max": 3}}, "k_max"),
        ({"rasters": [{"path": "a.tif", "bands": "1,2"}]}, r"'rasters\[0\].bands' must be a list of integers"),
        ({"rasters": {"path": "a.tif"}}, "must be a list"),
        ({"regions": {"path": 3, "id_field": "id"}}, "'regions.path' must be a text"),
        ({"labels": [{"name": "a", "field": "f", "log1p": 1}]}, "must be true or false"),
        ({"seed": 1.5}, "'seed' must be an integer"),
        ({"device": "tpu"}, "'device' must be one of"),
    ],
)
def test_wrong_types_and_ranges_name_the_key(patch, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BASE, **patch})


def test_integers_are_accepted_for_numbers_and_lists_for_lists() -> None:
    cfg = config_from_dict({**BASE, "methods": [{"name": "baseline", "params": {"neighbourhood_m": 500}}],
                            "prediction": {"models": ["gbm"], "write_model": "gbm"}, "device": "cuda:1"})
    assert cfg.methods[0].params["neighbourhood_m"] == 500.0 and isinstance(cfg.methods[0].params["neighbourhood_m"],
                                                                              float)
    assert cfg.prediction is not None and cfg.prediction.models == ["gbm"]


def test_a_configuration_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="must be a table/object"):
        config_from_dict(["regions"])  # type: ignore[arg-type]


def test_interval_coverage_and_primary_method() -> None:
    cfg = config_from_dict({**BASE, "prediction": {"coverage": 0.8}, "primary": "best"})
    assert cfg.prediction is not None and cfg.prediction.coverage == 0.8 and cfg.primary == "best"
    default = config_from_dict(dict(BASE))
    assert default.prediction is not None and default.prediction.coverage == 0.9 and default.primary == "auto"
    for coverage in (0.3, 1.0, 99):
        with pytest.raises(ConfigError, match=r"'prediction.coverage' must lie between 0.5 and 0.99"):
            config_from_dict({**BASE, "prediction": {"coverage": coverage}})
    with pytest.raises(ConfigError, match="'prediction.coverage' must be a number"):
        config_from_dict({**BASE, "prediction": {"coverage": "90%"}})
    with pytest.raises(ConfigError, match=r"'primary' must be 'auto', 'best' or one of the run's methods"):
        config_from_dict({**BASE, "primary": "hafusion"})
    assert config_from_dict({**BASE, "primary": "baseline"}).primary == "baseline"
