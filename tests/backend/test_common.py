"""The dependency-free module both sides import (regionlens_common.py): label rules, and that it is
importable the three ways it is used (repository root, the backend, the installed plugin zip)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import regionlens_common as common

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Crime incidents 2012 H2 (SFPD)", "crime_incidents"),
        ("Population", "population"),
        ("CarTheft", "cartheft"),
        ("sf_crime_incidents_2012h2", "sf_crime_incidents_2012h2"),  # a field or file name is kept
        ("emb_003", "emb_003"),
        ("2012 Q1", "label_2012_q1"),
        ("Très grande densité de population urbaine", "tr_s_grande"),
    ],
)
def test_label_name_is_short_and_readable(text: str, name: str) -> None:
    assert common.label_name(text) == name
    assert common.LABEL_NAME_PATTERN.fullmatch(name)


def test_label_name_avoids_taken_names() -> None:
    assert common.label_name("Population", ["population"]) == "population_2"
    assert common.label_name("Population", ["population", "population_2"]) == "population_3"
    assert len(common.label_name("x" * 60, ["x" * 31])) <= common.LABEL_NAME_MAX


@pytest.mark.parametrize(
    "field", ["GEOID", "GEO_ID", "fid", "OBJECTID", "tract_id", "STATEFP", "CENSUSAREA", "Shape_Area", "left",
              "top", "right", "bottom", "ALAND", "ogc_fid"],
)  # fmt: skip
def test_id_and_geometry_fields_are_not_labels(field: str) -> None:
    assert not common.is_label_field(field)


def test_measured_fields_are_labels_but_unique_integers_are_not() -> None:
    for field in ("Population", "Robbery", "CarTheft", "median_income", "paid_parking"):
        assert common.is_label_field(field)
    assert not common.is_label_field("BLOCK", integer=True, n_values=579, n_distinct=579)  # numbers the rows
    assert not common.is_label_field("BLOCK", integer=True, n_values=579, n_distinct=579, span=579)  # 1..579
    assert common.is_label_field("households", integer=True, n_values=36, n_distinct=36, span=240)  # a count
    assert common.is_label_field("Robbery", integer=True, n_values=579, n_distinct=40)
    assert common.is_label_field("Population", integer=False, n_values=579, n_distinct=579)  # real values


def test_label_units() -> None:
    assert common.label_units("count") == "count"
    assert common.label_units("density", log1p=True) == "log1p(per km\u00b2)"
    assert common.label_units("rate", per_field="Population") == "per Population"


def test_version_is_read_from_metadata_txt() -> None:
    import configparser

    import backend

    meta = configparser.ConfigParser(interpolation=None)
    meta.read(ROOT / "metadata.txt", encoding="utf-8")
    assert common.VERSION == meta.get("general", "version") and common.VERSION[0].isdigit()
    assert backend.__version__ == common.VERSION  # the worker's ping and run.json report it


def test_per_method_layer_names() -> None:
    assert common.method_layer(common.LAYER_CLUSTERS, "baseline", "baseline") == "clusters"
    assert common.method_layer(common.LAYER_CLUSTERS, "calliper", "baseline") == "clusters_calliper"
    assert common.method_layer(common.TABLE_CLUSTER_PROFILES, "my_method", "baseline") == "cluster_profiles_my_method"
    assert common.method_layer("", "calliper", "baseline") == "_calliper"  # the figures' file-name suffix
    for base in common.METHOD_TABLES:
        for method in ("", "calliper", "my_method"):
            name = common.method_layer(base, method, "")
            assert common.split_method_layer(name) == (base, method)
    assert common.split_method_layer("cluster_profiles") == ("cluster_profiles", "")  # not clusters + "profiles"
    assert common.split_method_layer("metrics") == ("", "")
    assert common.split_method_layer("embeddings_") == ("", "")


def test_prediction_columns() -> None:
    assert [common.prediction_column("population", s) for s in common.PREDICTION_SUFFIXES] == [
        "population_obs", "population_pred", "population_res", "population_lo", "population_hi"]  # fmt: skip
    with pytest.raises(ValueError, match="_obs, _pred, _res, _lo, _hi"):
        common.prediction_column("population", "_std")
    assert common.prediction_labels(["region_id", "pop_obs", "pop_pred", "crime_2012_pred", "_pred"]) == [
        "pop", "crime_2012"]  # fmt: skip


def test_run_choices_are_the_backends() -> None:
    from backend.config import LabelSpec, PredictionSpec, RegionsSource, RunConfig
    from backend.tasks.prediction import MODELS
    from backend.tasks.targets import TARGET_KINDS

    assert MODELS == common.PREDICTION_MODELS and list(PredictionSpec().models) == list(common.PREDICTION_MODELS)
    assert TARGET_KINDS == common.TARGETS and set(common.OFFERED_TARGETS) <= set(common.TARGETS)
    assert LabelSpec(name="x").target in common.TARGETS
    config = RunConfig(regions=RegionsSource(path="regions.gpkg", id_field="id"), output_dir="out")
    assert config.methods[0].name == common.DEFAULT_METHOD and config.device in common.DEVICES


def test_plugin_zip_ships_the_shared_module(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "scripts/package_plugin.py", "--out", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    (archive,) = tmp_path.glob("regionlens-*.zip")
    with zipfile.ZipFile(archive) as zf:
        assert "regionlens/regionlens_common.py" in zf.namelist()
        zf.extractall(tmp_path / "plugins")
    # Installed, the plugin package is ``regionlens``: plugin/common.py finds the module relative to it.
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import regionlens.plugin.common as c; "
             "print(c.common.__name__, c.common.cluster_colour(1))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "plugins")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["regionlens.regionlens_common", "#ff7f0e"]
