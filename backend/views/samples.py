"""Pre-training samples: a grid of square cells over the city, as :class:`~backend.views.Views`.

ReFound (Xiao et al., KDD 2024) pre-trains on many more urban areas than there are regions: square
cells covering the city, each with its POIs and its satellite image. :func:`pretraining_grid` lays
such grids over the regions' extent (several grids shifted by a fraction of a cell, so one city gives
several times more samples than regions) and :func:`sample_views` builds the views of the cells
(POI points and image chips) exactly as :func:`~backend.views.build_views` builds them for regions.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from backend.io.city import CityData
from backend.io.rasters import raster_name
from backend.progress import Progress
from backend.views._base import Views
from backend.views.embedding import is_embedding
from backend.views.imagery import image_chips
from backend.views.poi import poi_points

__all__ = ["pretraining_grid", "sample_views"]

#: Tolerance (in cells) when counting the cells that cover an extent, so an exact fit adds no empty cell.
_EPS = 1e-9


def _cell_side(regions: gpd.GeoDataFrame) -> float:
    """Median side of the regions' bounding squares (regions without geometry are left out)."""
    b = regions.geometry.bounds.to_numpy(dtype=float)
    sides = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    sides = sides[np.isfinite(sides) & (sides > 0)]
    if not sides.size:
        raise ValueError("The regions have no polygon with an extent; a pre-training grid needs one.")
    return float(np.median(sides))


def _grid_candidates(
    bounds: np.ndarray, x0: float, y_top: float, side: float, n_rows: int, n_cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the cells of one grid that meet some region's bounding box, sorted, unique.

    The grid's cell ``(row, col)`` covers ``[x0 + col * side, x0 + (col + 1) * side]`` by
    ``[y_top - (row + 1) * side, y_top - row * side]`` (row 0 is the north edge).
    """
    c0 = np.clip(np.floor((bounds[:, 0] - x0) / side + _EPS), 0, n_cols - 1).astype(np.int64)
    c1 = np.clip(np.ceil((bounds[:, 2] - x0) / side - _EPS) - 1, 0, n_cols - 1).astype(np.int64)
    r0 = np.clip(np.floor((y_top - bounds[:, 3]) / side + _EPS), 0, n_rows - 1).astype(np.int64)
    r1 = np.clip(np.ceil((y_top - bounds[:, 1]) / side - _EPS) - 1, 0, n_rows - 1).astype(np.int64)
    c1, r1 = np.maximum(c1, c0), np.maximum(r1, r0)
    width, height = c1 - c0 + 1, r1 - r0 + 1
    total = width * height
    if int(total.sum()) >= n_rows * n_cols:  # big regions: every cell is a candidate
        keys = np.arange(n_rows * n_cols, dtype=np.int64)
    else:  # enumerate the cells of each region's box without a Python loop
        owner = np.repeat(np.arange(len(bounds)), total)
        j = np.arange(int(total.sum()), dtype=np.int64) - np.repeat(np.cumsum(total) - total, total)
        rows = r0[owner] + j // width[owner]
        cols = c0[owner] + j % width[owner]
        keys = np.unique(rows * n_cols + cols)
    return keys // n_cols, keys % n_cols


def pretraining_grid(
    regions: gpd.GeoDataFrame,
    cell_side: float | None = None,
    offsets: int = 2,
    max_cells: int = 4000,
    seed: int = 0,
) -> gpd.GeoDataFrame:
    """Square pre-training cells over the regions' extent.

    Grid ``k`` (``k = 0 .. offsets - 1``) starts ``k / offsets`` of a cell west and north of the
    north-west corner of the regions' total bounds and has as many rows and columns as needed to cover
    them. A cell is kept when its interior meets the interior of some region (found with a spatial
    index; cells that only touch a region's border are dropped).

    Args:
        regions: Region polygons in a metric CRS.
        cell_side: Side of the cells in CRS units; default: the median side of the regions' bounding
            squares (see :func:`~backend.views.imagery.image_chips`), so a cell is about a region.
        offsets: Number of grids, each shifted by ``1 / offsets`` of a cell in x and y.
        max_cells: Keep at most this many cells: a random subset (seeded) when there are more.
        seed: Seed of that subset.

    Returns:
        Cells indexed by ``region_id`` (``'g{k}_r{row}_c{col}'``, row 0 at the north), in grid, row,
        column order, with integer columns ``grid``, ``row``, ``col`` and square polygon geometry in
        the regions' CRS.

    Raises:
        ValueError: If ``offsets`` or ``max_cells`` is below 1, ``cell_side`` is not positive, or the
            regions have no polygon with an extent.
    """
    if offsets < 1:
        raise ValueError(f"offsets must be at least 1, got {offsets}.")
    if max_cells < 1:
        raise ValueError(f"max_cells must be at least 1, got {max_cells}.")
    if cell_side is not None and not (math.isfinite(cell_side) and cell_side > 0):
        raise ValueError(f"cell_side must be a positive number, got {cell_side}.")
    side = _cell_side(regions) if cell_side is None else float(cell_side)
    geoms = regions.geometry.to_numpy(dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms = geoms[present]
    if not geoms.size:
        raise ValueError("The regions have no polygon with an extent; a pre-training grid needs one.")
    bounds = shapely.bounds(geoms)
    minx, miny = bounds[:, 0].min(), bounds[:, 1].min()
    maxx, maxy = bounds[:, 2].max(), bounds[:, 3].max()

    parts = []
    for k in range(offsets):
        shift = k * side / offsets
        x0, y_top = minx - shift, maxy + shift
        n_cols = max(1, math.ceil((maxx - x0) / side - _EPS))
        n_rows = max(1, math.ceil((y_top - miny) / side - _EPS))
        rows, cols = _grid_candidates(bounds, x0, y_top, side, n_rows, n_cols)
        parts.append(
            pd.DataFrame({"grid": k, "row": rows, "col": cols, "x0": x0 + cols * side, "y1": y_top - rows * side})
        )
    cand = pd.concat(parts, ignore_index=True)
    x_lo, y_hi = cand["x0"].to_numpy(), cand["y1"].to_numpy()
    boxes = shapely.box(x_lo, y_hi - side, x_lo + side, y_hi)

    tree = shapely.STRtree(geoms)
    cell_i, region_i = tree.query(boxes, predicate="intersects")
    overlap = ~shapely.touches(boxes[cell_i], geoms[region_i])
    keep = np.zeros(len(boxes), dtype=bool)
    keep[cell_i[overlap]] = True
    idx = np.flatnonzero(keep)
    if len(idx) > max_cells:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_cells, replace=False))
    cand = cand.iloc[idx]
    ids = [f"g{g}_r{r}_c{c}" for g, r, c in zip(cand["grid"], cand["row"], cand["col"], strict=True)]
    return gpd.GeoDataFrame(
        {
            "grid": cand["grid"].to_numpy(dtype=np.int64),
            "row": cand["row"].to_numpy(dtype=np.int64),
            "col": cand["col"].to_numpy(dtype=np.int64),
        },
        geometry=boxes[idx],
        crs=regions.crs,
        index=pd.Index(ids, dtype="str", name="region_id"),
    )


def _cell_points(city: CityData, cells: gpd.GeoDataFrame) -> pd.DataFrame:
    """The city's POI points joined to the cells: one row per (cell, POI in it), cells in order."""
    points = poi_points(city)
    tree_pts = city.pois.geometry.to_numpy()  # type: ignore[union-attr]
    cell_i, poi_i = shapely.STRtree(tree_pts).query(cells.geometry.to_numpy(), predicate="intersects")
    order = np.lexsort((poi_i, cell_i))
    cell_i, poi_i = cell_i[order], poi_i[order]
    out = points.iloc[poi_i].copy()
    out["region_id"] = cells.index.to_numpy(dtype=object)[cell_i]
    return out


def sample_views(city: CityData, cells: gpd.GeoDataFrame, chip_size: int, progress: Progress | None = None) -> Views:
    """The views of pre-training cells: their POI points and image chips.

    The POIs are the city's (``city.pois``), which holds only POIs inside some region: a cell that
    reaches beyond the regions sees no POI there. A POI inside several overlapping cells (of the
    shifted grids) appears once per cell; a POI on the border between two cells is in both. The chips
    cover each cell's square and are built for every raster of the city, as for regions.

    Args:
        city: The city (POIs and rasters are used when present).
        cells: Cell polygons indexed by ``region_id`` (see :func:`pretraining_grid`); reprojected to
            ``city.crs`` if in another CRS.
        chip_size: Side of the image chips in pixels.
        progress: Progress of this step (cancellation is checked between and inside the steps).

    Returns:
        Views of the cells: ``region_ids``, ``poi_points`` (columns of
        :func:`~backend.views.poi_points`, ``region_id`` = cell id; None without POIs), ``chips`` and
        ``chip_masks`` per raster, ``centroids``, ``areas_km2`` and ``geometry``. No tables, mobility
        or adjacency.

    Raises:
        ValueError: If ``chip_size`` is below 1.
        InputError: If a raster can no longer be read.
        Cancelled: If the run is cancelled.
    """
    if chip_size < 1:
        raise ValueError(f"Chip size must be at least 1 pixel, got {chip_size}.")
    progress = progress or Progress()
    if cells.crs is not None and city.crs is not None and not city.crs.equals(cells.crs):
        cells = cells.to_crs(city.crs)
    imagery = [r for r in city.rasters if not is_embedding(r)]  # embedding rasters give no chips
    n_steps = 1 + len(imagery)
    ids = pd.Index(cells.index, name="region_id")
    views = Views(region_ids=ids)
    progress.update(0.0, "pre-training samples: POIs")
    geometry = cells.geometry.rename_axis("region_id")
    views.geometry = geometry
    views.areas_km2 = pd.Series(geometry.area.to_numpy() / 1e6, index=ids, name="area_km2")
    centroids = geometry.centroid
    views.centroids = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])
    if city.pois is not None:
        views.poi_points = _cell_points(city, cells)
    for i, raster in enumerate(imagery):
        name = raster_name(raster)
        message = f"pre-training samples: image chips ({name})"
        progress.update((1 + i) / n_steps, message)
        sub = progress.sub(message, (1 + i) / n_steps, (2 + i) / n_steps)
        views.chips[name], views.chip_masks[name] = image_chips(cells, raster, chip_size, sub)
    progress.update(1.0, f"{len(cells):,} pre-training samples")
    return views
