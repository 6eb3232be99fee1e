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
