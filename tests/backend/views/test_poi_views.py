"""POI views: category counts (with a saved vocabulary), descriptions and coordinates."""

from __future__ import annotations

import dataclasses

import pytest

from backend.io.city import CityData
from backend.views import Views, poi_counts, poi_points, poi_text, poi_texts


def test_counts_are_aligned_with_regions_and_sum_to_the_pois_inside(sf_city: CityData, sf_views: Views) -> None:
    counts = sf_views.tables["poi_counts"]
    assert counts.index.equals(sf_city.regions.index) and counts.index.name == "region_id"
    assert counts.to_numpy().sum() == 2551
    assert int((counts.sum(axis=1) > 0).sum()) == 403
    assert list(counts.columns) == sorted(counts.columns)
    assert counts["cafe"].sum() == (sf_city.pois["category"] == "cafe").sum()  # type: ignore[index]


def test_vocabulary_fixes_the_columns(sf_city: CityData) -> None:
    counts = poi_counts(sf_city, ["bank", "cafe", "zoo"])
    assert list(counts.columns) == ["bank", "cafe", "zoo"]
    assert counts["zoo"].sum() == 0
    assert counts["bank"].sum() == (sf_city.pois["category"] == "bank").sum()  # type: ignore[index]
    assert counts.shape == (579, 3)


def test_texts(sf_city: CityData, sf_views: Views) -> None:
    texts = sf_views.poi_texts
    assert texts is not None and len(texts) == 579
    assert sum(len(t) for t in texts) == 2551
    assert sum(1 for t in texts if not t) == 176
    assert texts == poi_texts(sf_city)
    assert "Blue Bottle, a cafe" in {s for t in texts for s in t}


def test_text_format() -> None:
    assert poi_text("place_of_worship") == "a place of worship"
    assert poi_text("estate_agent", "Park North") == "Park North, an estate agent"
    assert poi_text("cafe", "  ") == "a cafe"


def test_points(sf_city: CityData, sf_views: Views) -> None:
    points = sf_views.poi_points
    assert points is not None
    assert list(points.columns) == ["x", "y", "region_id", "category", "text", "name"]
    assert points.index.name == "feature_id" and len(points) == 2551
    xmin, ymin, xmax, ymax = sf_city.regions.total_bounds
    assert points["x"].between(xmin, xmax).all() and points["y"].between(ymin, ymax).all()
    assert points.equals(poi_points(sf_city))


def test_poi_views_need_pois(sf_city: CityData) -> None:
    with pytest.raises(ValueError, match="no POI layer"):
        poi_counts(dataclasses.replace(sf_city, pois=None))
