"""Reader of the labels: the quantities predicted from the embeddings (never seen by the embedders).

A label is a numeric field of the region layer (population, crime counts) or a point layer counted
per region (crime incidents). The raw values are returned; densities and rates are computed by the
prediction task from the areas and the ``<name>__per`` denominator column.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS

from backend.config import LabelSpec
from backend.errors import InputError
from backend.io._layers import numeric_fields
from backend.io.vectors import read_label_points, tiny_regions

__all__ = ["read_labels", "PER_SUFFIX", "label_areas", "unreported_drops"]

#: Suffix of the column holding the denominator of a ``rate`` label.
PER_SUFFIX = "__per"


def _numeric_field(regions: gpd.GeoDataFrame, field: str, label: str, role: str) -> pd.Series:
    """A field of the region layer as floats (non-numbers become NaN).

    Raises:
        InputError: If the field is missing or holds no number at all.
    """
    if field not in regions.columns or field == regions.geometry.name:
        raise InputError(
            f"Label '{label}': the {role} '{field}' is not a field of the regions layer. Numeric fields: "
            f"{numeric_fields(regions)}. Choose one of them (names are case-sensitive)."
        )
    raw = regions[field]
    if pd.api.types.is_bool_dtype(raw):
        raw = raw.astype(float)
    elif not pd.api.types.is_numeric_dtype(raw):
        raw = raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    values[~np.isfinite(values)] = np.nan  # inf and -inf count as missing (reported by the caller)
    if values.isna().all():
        raise InputError(
            f"Label '{label}': the {role} '{field}' holds no numeric value. Choose a numeric field: "
            f"{numeric_fields(regions)}."
        )
    return values


def read_labels(labels: list[LabelSpec], regions: gpd.GeoDataFrame, crs: CRS, report: list[str]) -> pd.DataFrame:
    """Read every label's raw values per region.

    Args:
        labels: The label specifications.
        regions: Region polygons in ``crs`` with the region layer's fields, indexed by ``region_id``.
        crs: The run's metric CRS (for point layers).
        report: Notes for the user: regions without a numeric value, points outside the regions.

    Returns:
        Index ``region_id`` (region order), one float column per label name (the field value or the
        point count; NaN = missing), plus ``<name>__per`` for ``rate`` labels (the denominator field).

    Raises:
        InputError: If a field is missing or holds no number, or a point layer cannot be used (see
            :func:`~backend.io.vectors.read_label_points`).
        ConfigError: If a point label's filter is half given.
    """
    out = pd.DataFrame(index=regions.index.copy())
    for spec in labels:
        if spec.field is not None:
            values = _numeric_field(regions, spec.field, spec.name, "field")
            missing = int(values.isna().sum())
            if missing:
                report.append(
                    f"Label '{spec.name}': {missing:,} regions have no finite numeric value in '{spec.field}' "
                    "(empty, text, NaN or infinite) and are left out of this task."
                )
            out[spec.name] = values.to_numpy()
        else:
            out[spec.name] = read_label_points(spec, regions, crs, report).astype(float).to_numpy()
        if spec.target == "rate" and spec.per_field:
            per = _numeric_field(regions, spec.per_field, spec.name, "per_field (rate denominator)")
            undefined = int((per.isna() | (per <= 0)).sum())
            if undefined:
                report.append(
                    f"Label '{spec.name}': {undefined:,} regions have no positive '{spec.per_field}', "
                    "so their rate is undefined and they are left out of this task."
                )
            out[spec.name + PER_SUFFIX] = per.to_numpy()
    return out


def label_areas(areas_km2: pd.Series) -> pd.Series:
    """Region areas for density labels: regions far smaller than the others (see
    :func:`~backend.io.vectors.tiny_regions`, reported when the regions are read) get none, so they get no
    density and are left out of density tasks."""
    out = areas_km2.astype(float).copy()
    out[tiny_regions(areas_km2)] = np.nan
    return out


def unreported_drops(spec: LabelSpec, raw: pd.Series, per: pd.Series | None, areas: pd.Series, target) -> str | None:  # noqa: ANN001
    """A note on the regions a label's target left out beyond those already reported when reading.

    Missing values and undefined denominators are reported by :func:`read_labels`, regions too small for a
    density by the region reader; this names only the rest (values that overflow when divided by the area
    or denominator), so each dropped region is reported once.

    Args:
        spec: The label.
        raw: Its raw values (NaN = missing), indexed by ``region_id``.
        per: The rate denominator, or None.
        areas: The areas passed to the target (NaN for regions too small for a density).
        target: The :class:`~backend.tasks.targets.Target` built from them.

    Returns:
        The note, or None when every dropped region was reported already.
    """
    known = raw.isna()
    if spec.target == "density":
        known |= areas.reindex(raw.index).isna()
    if spec.target == "rate" and per is not None:
        known |= per.isna() | ~(per > 0)
    extra = int(target.n_dropped) - int(known.sum())
    if extra <= 0:
        return None
    return (f"Label '{spec.name}': {extra:,} regions have a {target.description} that is not a finite number "
            f"(an extreme value such as 1e308) and are left out of this task.")
