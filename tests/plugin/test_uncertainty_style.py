"""Prediction layers of a run with intervals get an interval-width style (plugin/styling.py, plugin/results.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsGraduatedSymbolRenderer, QgsProject

from plugin.common import common
from plugin.results import load_run_outputs
from plugin.styling import INTERVAL_STYLE, add_interval_width_style, style_interval_width


def add_intervals(gpkg: Path, label: str = "population", table: str = "predictions") -> dict[str, float]:
    """Write ``<label>_lo`` / ``_hi`` around each prediction (width 10 * (i + 1)); region id -> width."""
    ds = ogr.Open(str(gpkg), 1)
    layer = ds.GetLayerByName(table)
    for suffix in (common.LO, common.HI):
        assert layer.CreateField(ogr.FieldDefn(f"{label}{suffix}", ogr.OFTReal)) == 0
    widths = {}
    for i, feature in enumerate(list(layer)):
        pred = feature.GetField(f"{label}_pred")
        if i == 3:  # no interval for this region
            feature.SetFieldNull(f"{label}{common.LO}")
            feature.SetFieldNull(f"{label}{common.HI}")
        else:
            width = 10.0 * (i + 1)
            feature.SetField(f"{label}{common.LO}", pred - width / 2)
            feature.SetField(f"{label}{common.HI}", pred + width / 2)
            widths[feature.GetField("region_id")] = width
        assert layer.SetFeature(feature) == 0
    ds = None  # noqa: F841 - flush
    return widths


def test_predictions_get_an_interval_width_style(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    widths = add_intervals(run_gpkg)
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    population = layers.layer("predictions", label="population")
    robbery = layers.layer("predictions", label="robbery")
    manager = population.styleManager()
    assert INTERVAL_STYLE in manager.styles()
    assert population.renderer().classAttribute() == "population_pred"  # still shows the predictions
    assert INTERVAL_STYLE not in robbery.styleManager().styles()  # no intervals for robbery in this run
    assert manager.setCurrentStyle(INTERVAL_STYLE)
    renderer = population.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer)
    assert renderer.classAttribute() == '"population_hi" - "population_lo"'
    ranges = renderer.ranges()
    assert len(ranges) == 5
    assert ranges[0].lowerValue() == pytest.approx(min(widths.values()))
    assert ranges[-1].upperValue() == pytest.approx(max(widths.values()))
    assert ranges[0].label().endswith("(narrow: surer)") and ranges[-1].label().endswith("(wide: less sure)")
    assert manager.setCurrentStyle("default")
    assert population.renderer().classAttribute() == "population_pred"


def test_interval_width_needs_the_columns(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    predictions = layers["predictions"]
    assert add_interval_width_style(predictions, "population") is False
    with pytest.raises(ValueError, match="population_lo"):
        style_interval_width(predictions, "population")


def test_interval_widths_are_read_by_qgis_not_feature_by_feature(qgis_new_project: QgsProject, run_gpkg: Path,
                                                                 count_feature_reads) -> None:
    """The widths come from one QGIS pass over the expression (a Python loop took 2.2 s on the main thread for
    250,000 regions): Python sees no feature, and the classes span the widths."""
    widths = add_intervals(run_gpkg)
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    population = layers.layer("predictions", label="population")
    seen = count_feature_reads(population)
    renderer = style_interval_width(population, "population")
    assert seen == []
    assert renderer.ranges()[0].lowerValue() == pytest.approx(min(widths.values()))
    assert renderer.ranges()[-1].upperValue() == pytest.approx(max(widths.values()))
