"""POI views: category counts per region, POI descriptions and POI coordinates.

The counts are the classic bag-of-categories region features (as in srai's ``CountEmbedder``); the
texts are the short descriptions that CaLLiPer and ReFound feed to a sentence encoder
("Blue Bottle Coffee, a cafe"); the points give POI-level methods the metric coordinates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from backend.io.city import CityData

__all__ = ["poi_counts", "poi_texts", "poi_points", "poi_text", "texts_by_region"]


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
    regions = city.regions.index
    row = _positions(pd.Index(regions.astype(str)), pois["region_id"])
    if vocabulary is None:
        present: set[str] = set()
        for start in range(0, len(pois), POI_CHUNK):
            present.update(pd.unique(pois["category"].iloc[start:start + POI_CHUNK].astype(str)))
        columns = sorted(present)
    else:
        columns = [str(c) for c in vocabulary]
    col = _positions(pd.Index(columns, dtype=object), pois["category"])
    keep = (row >= 0) & (col >= 0)
    # one sparse accumulation (duplicates summed), linear in the number of POIs
    counts = sp.coo_matrix((np.ones(int(keep.sum())), (row[keep], col[keep])), shape=(len(regions), len(columns)))
    frame = pd.DataFrame(counts.toarray(), index=pd.Index(regions, name="region_id"),
                         columns=pd.Index(columns, dtype=object))
    return frame


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
    # in chunks: every step below is one call over its rows that holds the GIL (about 1.5 s each for 10 M POIs,
    # too long for the progress heartbeat of the Progress.wait this runs under)
    parts = [_poi_rows(pois.iloc[start:start + POI_CHUNK]) for start in range(0, max(len(pois), 1), POI_CHUNK)]
    return parts[0] if len(parts) == 1 else pd.concat(parts)


#: POIs described per call of :func:`_poi_rows`.
POI_CHUNK = 500_000


def _poi_rows(pois: pd.DataFrame) -> pd.DataFrame:
    """:func:`poi_points` of some POIs."""
    raw = pd.Series(pois["name"].to_numpy(dtype=object), dtype=object)
    stripped = raw.where(raw.map(lambda v: isinstance(v, str)).astype(bool)).str.strip()
    names = stripped.to_numpy(dtype=object).copy()
    names[~(stripped.str.len() > 0).to_numpy(dtype=bool)] = None  # no name, not a string, or only blanks
    category = pois["category"].astype(str).to_numpy(dtype=object)
    # each distinct (category, name) is described once; POIs share the text object
    cat_codes, cats = pd.factorize(category)
    name_codes, uniq_names = pd.factorize(np.where(pd.isna(names), "", names).astype(object))
    codes, pairs = pd.factorize(cat_codes.astype(np.int64) * max(len(uniq_names), 1) + name_codes)
    pair_cat, pair_name = np.divmod(pairs, max(len(uniq_names), 1))
    texts = np.array([poi_text(cats[c], uniq_names[n] or None) for c, n in zip(pair_cat, pair_name, strict=True)],
                     dtype=object)[codes]
    return pd.DataFrame(
        {
            "x": pois.geometry.x.to_numpy(),
            "y": pois.geometry.y.to_numpy(),
            "region_id": pois["region_id"].astype(str).to_numpy(),
            "category": category,
            "text": texts,
            "name": names,
        },
        index=pd.Index(pois.index, name="feature_id"),
    )


def poi_texts(city: CityData) -> list[list[str]]:
    """The descriptions of the POIs of each region, in region order (an empty list for a region without POIs).

    Raises:
        ValueError: If the city has no POIs.
    """
    return texts_by_region(poi_points(city), city.regions.index)


def _positions(index: pd.Index, values: pd.Series) -> np.ndarray:
    """Position in ``index`` of every value as a string (-1 where absent), :data:`POI_CHUNK` values per call (one
    call over 10 M POIs holds the GIL for about a second)."""
    parts = [index.get_indexer(values.iloc[start:start + POI_CHUNK].astype(str))
             for start in range(0, len(values), POI_CHUNK)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)


def texts_by_region(points: pd.DataFrame, regions: pd.Index) -> list[list[str]]:
    """The ``text`` column of ``points`` grouped by region (region order; POI order kept within a region)."""
    row = _positions(pd.Index(regions.astype(str)), points["region_id"])
    keep = np.flatnonzero(row >= 0)
    order = keep[np.argsort(row[keep], kind="stable")]
    bounds = np.searchsorted(row[order], np.arange(len(regions) + 1))
    texts = points["text"].to_numpy(dtype=object)[order]
    return [texts[bounds[i]:bounds[i + 1]].tolist() for i in range(len(regions))]
