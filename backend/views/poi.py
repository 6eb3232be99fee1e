"""POI views: category counts per region, POI descriptions and POI coordinates.

The counts are the classic bag-of-categories region features (as in srai's ``CountEmbedder``); the
texts are the short descriptions that CaLLiPer and ReFound feed to a sentence encoder
("Blue Bottle Coffee, a cafe"); the points give POI-level methods the metric coordinates.
"""

from __future__ import annotations

import pandas as pd

from backend.io.city import CityData

__all__ = ["poi_counts", "poi_texts", "poi_points", "poi_text"]


def _pois(city: CityData) -> pd.DataFrame:
    if city.pois is None:
        raise ValueError("The city has no POI layer; POI views need one.")
    return city.pois


def poi_text(category: str, name: str | None = None) -> str:
    """The description of one POI: ``"Blue Bottle, a cafe"``, or ``"a place of worship"`` without a name.

    Underscores in the category become spaces and the article is ``an`` before a vowel.
    """
    label = str(category).replace("_", " ").strip()
    article = "an" if label[:1].lower() in {"a", "e", "i", "o", "u"} else "a"
    name = name.strip() if isinstance(name, str) else None
    return f"{name}, {article} {label}" if name else f"{article} {label}"


def poi_counts(city: CityData, vocabulary: list[str] | None = None) -> pd.DataFrame:
    """Number of POIs of each category in each region.

    Args:
        city: The city (needs ``pois``).
        vocabulary: Categories to count, in this column order (a saved model's vocabulary, so new
            regions get the same columns); categories not in it are ignored. Default: every category
            present, sorted.

    Returns:
        N x C float frame indexed by ``region_id`` (region order), 0 where a region has no such POI.

    Raises:
        ValueError: If the city has no POIs.
    """
    pois = _pois(city)
    counts = pd.crosstab(pois["region_id"].astype(str), pois["category"].astype(str))
    columns = sorted(counts.columns) if vocabulary is None else [str(c) for c in vocabulary]
    counts = counts.reindex(index=city.regions.index, columns=columns, fill_value=0).astype(float)
    counts.index.name = "region_id"
    counts.columns = pd.Index(columns, dtype=object)
    return counts


def poi_points(city: CityData) -> pd.DataFrame:
    """One row per POI inside a region, with its metric coordinates and description.

    Returns:
        Frame indexed by ``feature_id`` with columns ``x``, ``y`` (in the city's metric CRS),
        ``region_id``, ``category``, ``text`` (see :func:`poi_text`) and ``name`` (str, or None where the
        POI has no name or the layer no name field).

    Raises:
        ValueError: If the city has no POIs.
    """
    pois = _pois(city)
    texts = [poi_text(c, n) for c, n in zip(pois["category"], pois["name"], strict=True)]
    return pd.DataFrame(
        {
            "x": pois.geometry.x.to_numpy(),
            "y": pois.geometry.y.to_numpy(),
            "region_id": pois["region_id"].astype(str).to_numpy(),
            "category": pois["category"].astype(str).to_numpy(),
            "text": texts,
            "name": [n.strip() if isinstance(n, str) and n.strip() else None for n in pois["name"]],
        },
        index=pd.Index(pois.index, name="feature_id"),
    )


def poi_texts(city: CityData) -> list[list[str]]:
    """The descriptions of the POIs of each region, in region order (an empty list for a region without POIs).

    Raises:
        ValueError: If the city has no POIs.
    """
    points = poi_points(city)
    by_region: dict[str, list[str]] = {}
    for region, text in zip(points["region_id"], points["text"], strict=True):
        by_region.setdefault(region, []).append(text)
    return [by_region.get(str(r), []) for r in city.regions.index]
