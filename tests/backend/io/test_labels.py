"""Labels: numeric fields of the region layer (raw values), rate denominators, point counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from backend.config import LabelSpec, RegionsSource
from backend.errors import InputError
from backend.io.city import CityData
from backend.io.labels import read_labels
from backend.io.vectors import read_regions


def test_sf_labels_hold_raw_values(sf_city: CityData) -> None:
    labels = sf_city.labels
    assert labels is not None and labels.index.equals(sf_city.regions.index)
    assert list(labels.columns) == ["population", "robbery_rate", "robbery_rate__per", "robbery_points"]
    assert (labels.dtypes == np.float64).all()
    assert labels["population"].sum() == 805_235  # README: no missing, sum 805,235
    np.testing.assert_array_equal(labels["robbery_rate"], sf_city.regions["Robbery"].astype(float))
    np.testing.assert_array_equal(labels["robbery_rate__per"], labels["population"])


@pytest.fixture
def toy_read(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> gpd.GeoDataFrame:
    """Toy regions with a text field holding numbers, gaps and words, read like a run reads them."""
    toy_regions["crime"] = ["3", "x", None, "7.5"]
    toy_regions["notes"] = ["a", "b", "c", "d"]
    regions, _ = read_regions(RegionsSource(str(write_gpkg(toy_regions, "r.gpkg")), "rid"), [])
    return regions


def test_non_numeric_and_missing_values_are_nan_and_counted(toy_read: gpd.GeoDataFrame) -> None:
    report: list[str] = []
    labels = read_labels([LabelSpec("crime", field="crime")], toy_read, toy_read.crs, report)
    assert labels["crime"].tolist()[0] == 3.0 and labels["crime"].tolist()[3] == 7.5
    assert labels["crime"].isna().tolist() == [False, True, True, False]
    assert report == ["Label 'crime': 2 regions have no finite numeric value in 'crime' (empty, text, NaN or "
                      "infinite) and are left out of this task."]


def test_unknown_field_lists_numeric_fields(toy_read: gpd.GeoDataFrame) -> None:
    with pytest.raises(
        InputError,
        match=r"Label 'pop': the field 'Population' is not a field of the regions "
        r"layer\. Numeric fields: \['rid', 'pop'\]",
    ):
        read_labels([LabelSpec("pop", field="Population")], toy_read, toy_read.crs, [])


def test_field_without_any_number_is_an_error(toy_read: gpd.GeoDataFrame) -> None:
    with pytest.raises(InputError, match=r"Label 'n': the field 'notes' holds no numeric value"):
        read_labels([LabelSpec("n", field="notes")], toy_read, toy_read.crs, [])


def test_rate_denominator_is_stored_and_checked(toy_read: gpd.GeoDataFrame) -> None:
    toy_read = toy_read.copy()
    toy_read.loc["2", "pop"] = 0.0
    report: list[str] = []
    spec = LabelSpec("crime_rate", field="crime", target="rate", per_field="pop")
    labels = read_labels([spec], toy_read, toy_read.crs, report)
    assert labels["crime_rate__per"].tolist() == [10.0, 0.0, 30.0, 40.0]
    assert "1 regions have no positive 'pop'" in report[-1]
    bad = LabelSpec("crime_rate", field="crime", target="rate", per_field="people")
    with pytest.raises(InputError, match=r"per_field \(rate denominator\) 'people' is not a field"):
        read_labels([bad], toy_read, toy_read.crs, [])
    words = LabelSpec("crime_rate", field="crime", target="rate", per_field="notes")
    with pytest.raises(InputError, match=r"'notes' holds no numeric value"):
        read_labels([words], toy_read, toy_read.crs, [])


def test_no_labels_gives_an_empty_frame(toy_read: gpd.GeoDataFrame) -> None:
    labels = read_labels([], toy_read, toy_read.crs, [])
    assert labels.shape == (4, 0) and labels.index.equals(pd.Index(["1", "2", "3", "4"], name="region_id"))
