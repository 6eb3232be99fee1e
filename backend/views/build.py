"""Turning a :class:`~backend.io.city.CityData` into :class:`~backend.views.Views`.

The cheap views are always built from whichever sources the city has; image chips and the
pre-training samples, the costly views, only when a method asks for them. A saved model's vocabulary
aligns the table columns so that new regions get exactly the columns the model was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from backend.io.city import CityData
from backend.io.rasters import raster_name
from backend.progress import Progress
from backend.views._base import Views
from backend.views.adjacency import adjacency_matrix
from backend.views.imagery import image_chips, image_stats
from backend.views.landuse import UNCOVERED, landuse_shares
from backend.views.mobility import mobility_matrix
from backend.views.poi import poi_counts, poi_points, texts_by_region
from backend.views.samples import pretraining_grid, sample_views

__all__ = ["build_views"]


def _align(table: pd.DataFrame, columns: list[str], view: str, report: list[str]) -> pd.DataFrame:
    """Reindex a table to a saved vocabulary; absent columns become 0 (reported)."""
    absent = [c for c in columns if c not in table.columns]
    if absent:
        report.append(
            f"{view}: {len(absent):,} columns of the saved model are absent here and set to 0 "
            f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''})."
        )
    return table.reindex(columns=columns, fill_value=0.0)


def build_views(
    city: CityData,
    needs: Iterable[str] = frozenset(),
    chip_size: int = 64,
    vocabulary: dict[str, list[str]] | None = None,
    progress: Progress | None = None,
    report: list[str] | None = None,
) -> Views:
    """Build every view the city's sources allow.

    Always (when the source exists): ``poi_counts``, ``poi_texts``, ``poi_points``, ``image_stats``
    (all rasters side by side), ``landuse``, ``mobility``, ``adjacency``, ``areas_km2``, ``centroids``
    and ``geometry``. Image chips (one array per raster, keyed by raster name) only if ``"chips"`` is in
    ``needs``; the pre-training samples (:attr:`Views.samples`: the views of
    :func:`~backend.views.samples.pretraining_grid` with its defaults, chips of ``chip_size`` included)
    only if ``"samples"`` is. A missing source simply means fewer views.

    Args:
        city: The inputs, read by :func:`~backend.io.read_city`.
        needs: Costly views to build as well (``"chips"``, ``"samples"``).
        chip_size: Side of the image chips in pixels.
        vocabulary: View name -> columns to align to (``poi_counts`` categories, ``landuse`` classes
            with or without ``uncovered``, ``image_stats`` columns), from a saved model.
        progress: Progress of this stage (cancellation is checked between and inside the steps).
        report: Notes for the user (imputed statistics, absent columns); default: ``city.report``.

    Returns:
        The views, rows aligned with ``city.regions``.

    Raises:
        InputError: If a raster can no longer be read.
        ValueError: If ``"samples"`` is needed but the regions have no polygon with an extent.
        Cancelled: If the run is cancelled.
    """
    progress = progress or Progress()
    report = city.report if report is None else report
    vocabulary = vocabulary or {}
    needs = set(needs)
    regions = city.regions
    ids = pd.Index(regions.index, name="region_id")
    views = Views(region_ids=ids)
    n_sample_steps = 1 + len(city.rasters) if "samples" in needs else 0
    n_steps = 3 + len(city.rasters) * (2 if "chips" in needs else 1) + n_sample_steps
    done = 0

    def step(message: str, width: int = 1) -> Progress:
        nonlocal done
        progress.update(done / n_steps, message)
        sub = progress.sub(message, done / n_steps, (done + width) / n_steps)
        done += width
        return sub

    step("areas, centroids and adjacency")
    views.areas_km2 = pd.Series(regions.geometry.area.to_numpy() / 1e6, index=ids, name="area_km2")
    centroids = regions.geometry.centroid
    views.centroids = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])
    views.geometry = regions.geometry.rename_axis("region_id")
    # the long single calls (a spatial join over 250,000 polygons, 10 M POIs) run under Progress.wait:
    # heartbeat and cancel keep working
    views.adjacency = progress.wait(lambda: adjacency_matrix(regions), "areas, centroids and adjacency")

    step("POI views")
    if city.pois is not None:
        views.tables["poi_counts"] = progress.wait(lambda: poi_counts(city, vocabulary.get("poi_counts")),
                                                   "POI counts")
        views.poi_points = progress.wait(lambda: poi_points(city), "POI descriptions")
        points = views.poi_points
        views.poi_texts = progress.wait(lambda: texts_by_region(points, city.regions.index), "POI texts")

    step("land use and mobility")
    if city.landuse is not None:
        classes = vocabulary.get("landuse")
        classes = None if classes is None else [c for c in classes if c != UNCOVERED]
        landuse = city.landuse
        views.tables["landuse"] = progress.wait(lambda: landuse_shares(regions, landuse, classes, report),
                                                "land-use shares")
    if city.od is not None:
        views.mobility = mobility_matrix(city.od, ids)

    stats = []
    for raster in city.rasters:
        stats.append(image_stats(regions, raster, report, step(f"image statistics ({raster_name(raster)})")))
    if stats:
        table = pd.concat(stats, axis=1)
        if "image_stats" in vocabulary:
            table = _align(table, vocabulary["image_stats"], "image_stats", report)
        views.tables["image_stats"] = table

    if "chips" in needs:
        for raster in city.rasters:
            name = raster_name(raster)
            chips, masks = image_chips(regions, raster, chip_size, step(f"image chips ({name})"))
            views.chips[name], views.chip_masks[name] = chips, masks
    if "samples" in needs:
        sub = step("pre-training samples", n_sample_steps)
        views.samples = sample_views(city, pretraining_grid(regions), chip_size, sub)
    progress.update(1.0, "views built")
    return views
