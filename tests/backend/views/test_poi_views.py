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


def test_vectorised_views_match_the_per_poi_definition(sf_city: CityData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts, texts and names equal their one-POI-at-a-time definitions; each distinct text is built once."""
    import numpy as np
    import pandas as pd

    pois = sf_city.pois.copy()  # type: ignore[union-attr]
    pois["name"] = np.where(np.arange(len(pois)) % 4 == 0, None, pois["name"].to_numpy(dtype=object))
    pois.loc[pois.index[1::7], "name"] = "  Corner Shop  "
    pois.loc[pois.index[2::11], "name"] = "   "
    city = dataclasses.replace(sf_city, pois=pois)

    counts = poi_counts(city)
    expected = pd.crosstab(pois["region_id"], pois["category"]).reindex(
        index=city.regions.index, columns=sorted(pois["category"].unique()), fill_value=0)
    np.testing.assert_array_equal(counts.to_numpy(), expected.to_numpy(dtype=float))

    from backend.views import poi as poi_mod

    calls: list[tuple[str, str | None]] = []
    monkeypatch.setattr(poi_mod, "poi_text", lambda c, n=None: calls.append((c, n)) or poi_text(c, n))
    points = poi_points(city)
    distinct = {(c, n.strip() if isinstance(n, str) and n.strip() else None)
                for c, n in zip(pois["category"], pois["name"], strict=True)}
    assert len(calls) == len(distinct) < len(pois)  # one description per distinct (category, name)
    assert list(points["text"]) == [poi_text(c, n) for c, n in zip(pois["category"], pois["name"], strict=True)]
    stripped = [n.strip() if isinstance(n, str) and n.strip() else None for n in pois["name"]]
    assert [None if pd.isna(n) else n for n in points["name"]] == stripped

    by_region: dict[str, list[str]] = {}
    for region, text in zip(points["region_id"], points["text"], strict=True):
        by_region.setdefault(region, []).append(text)
    assert poi_texts(city) == [by_region.get(str(r), []) for r in city.regions.index]


def test_poi_views_in_chunks_equal_one_pass(sf_city: CityData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built in chunks (short calls under the progress heartbeat), the POI frame, counts and texts are the same."""
    import pandas as pd

    from backend.views import poi as poi_mod

    whole, counts = poi_points(sf_city), poi_counts(sf_city)
    texts = poi_mod.texts_by_region(whole, sf_city.regions.index)
    monkeypatch.setattr(poi_mod, "POI_CHUNK", 97)
    chunked = poi_points(sf_city)
    pd.testing.assert_frame_equal(poi_counts(sf_city), counts)
    assert poi_mod.texts_by_region(whole, sf_city.regions.index) == texts
    assert len(sf_city.pois) > 3 * 97  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(chunked, whole)
    empty = dataclasses.replace(sf_city, pois=sf_city.pois.iloc[:0])  # type: ignore[union-attr]
    assert poi_points(empty).empty
