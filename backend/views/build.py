"""Turning a :class:`~backend.io.city.CityData` into :class:`~backend.views.Views`.

Each input kind (a section of the run configuration and the :class:`~backend.io.city.CityData` field of the
same name: ``regions``, ``pois``, ``landuse``, ``od``, ``rasters``) has one :class:`ViewBuilder` in
:data:`VIEW_BUILDERS`, which names the views it gives and fills them in. Adding an input kind adds an entry
there (docs/development.md, "Adding an input kind"); :data:`VIEW_SOURCES` (view -> input kind), which
methods and the configuration check use, is derived from it.

The cheap views are always built from whichever inputs the city has; image chips and the pre-training
samples, the costly views, only when a method asks for them. A saved model's vocabulary aligns the table
columns so that new regions get exactly the columns the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend.io.city import CityData
from backend.io.rasters import raster_name
from backend.progress import Progress
from backend.views._base import Views
from backend.views.adjacency import adjacency_matrix
from backend.views.embedding import embedding_table, is_embedding
from backend.views.imagery import image_chips, image_stats
from backend.views.landuse import UNCOVERED, landuse_shares
from backend.views.mobility import mobility_matrix
from backend.views.poi import poi_counts, poi_points, texts_by_region
from backend.views.samples import pretraining_grid, sample_views

__all__ = ["VIEW_BUILDERS", "VIEW_SOURCES", "BuildContext", "ViewBuilder", "build_views", "view_input"]


def _align(table: pd.DataFrame, columns: list[str], view: str, report: list[str]) -> pd.DataFrame:
    """Reindex a table to a saved vocabulary; absent columns become 0 (reported)."""
    absent = [c for c in columns if c not in table.columns]
    if absent:
        report.append(
            f"{view}: {len(absent):,} columns of the saved model are absent here and set to 0 "
            f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''})."
        )
    return table.reindex(columns=columns, fill_value=0.0)


@dataclass
class BuildContext:
    """What every view builder may use besides the city and the views it fills."""

    needs: set[str]  # costly views to build as well ("chips", "samples")
    chip_size: int
    vocabulary: dict[str, list[str]]  # a saved model's columns per view
    report: list[str]
    step: Callable[[str], Progress]  # start the builder's next step (message); returns its sub-progress
    only_needed: bool = False  # POI points and texts only when in ``needs`` (a run and an apply job)


@dataclass(frozen=True)
class ViewBuilder:
    """How one input kind becomes views.

    Attributes:
        views: The views it can give (names a method lists in ``uses_views``).
        build: ``build(city, views, context)`` fills those views from the city's input of this kind; called
            only when the city has it.
        steps: ``steps(city, needs)``: how many progress steps ``build`` takes (each starts with
            ``context.step``).
    """

    views: tuple[str, ...]
    build: Callable[[CityData, Views, BuildContext], None]
    steps: Callable[[CityData, set[str]], int] = lambda city, needs: 1


def _regions(city: CityData, views: Views, ctx: BuildContext) -> None:
    regions = city.regions
    sub = ctx.step("areas, centroids and adjacency")
    views.areas_km2 = pd.Series(regions.geometry.area.to_numpy() / 1e6, index=views.region_ids, name="area_km2")
    centroids = regions.geometry.centroid
    views.centroids = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])
    views.geometry = regions.geometry.rename_axis("region_id")
    # the long single calls (a spatial join over 250,000 polygons, 10 M POIs) run under Progress.wait:
    # heartbeat and cancel keep working
    views.adjacency = sub.wait(lambda: adjacency_matrix(regions), "areas, centroids and adjacency")


def _pois(city: CityData, views: Views, ctx: BuildContext) -> None:
    sub = ctx.step("POI views")
    views.tables["poi_counts"] = sub.wait(lambda: poi_counts(city, ctx.vocabulary.get("poi_counts")), "POI counts")
    if ctx.only_needed and not {"poi_points", "poi_texts"} & ctx.needs:
        return  # one description per POI and their lists per region: a minute and GBs at 10 M POIs
    views.poi_points = sub.wait(lambda: poi_points(city), "POI descriptions")
    points = views.poi_points
    if ctx.only_needed and "poi_texts" not in ctx.needs:
        return
    views.poi_texts = sub.wait(lambda: texts_by_region(points, city.regions.index), "POI texts")


def _landuse(city: CityData, views: Views, ctx: BuildContext) -> None:
    sub = ctx.step("land use")
    classes = ctx.vocabulary.get("landuse")
    classes = None if classes is None else [c for c in classes if c != UNCOVERED]
    views.tables["landuse"] = sub.wait(lambda: landuse_shares(city.regions, city.landuse, classes, ctx.report),
                                       "land-use shares")


def _od(city: CityData, views: Views, ctx: BuildContext) -> None:
    ctx.step("mobility")
    views.mobility = mobility_matrix(city.od, views.region_ids)


def _rasters(city: CityData, views: Views, ctx: BuildContext) -> None:
    """Imagery rasters give image statistics (and chips); embedding rasters the ``embedding`` view."""
    stats, embeddings = [], []
    for raster in city.rasters:
        name = raster_name(raster)
        if is_embedding(raster):
            embeddings.append(embedding_table(city.regions, raster, ctx.report, ctx.step(f"embedding ({name})")))
        else:
            stats.append(image_stats(city.regions, raster, ctx.report, ctx.step(f"image statistics ({name})")))
    for view, tables in (("image_stats", stats), ("embedding", embeddings)):
        if tables:
            table = pd.concat(tables, axis=1)
            if view in ctx.vocabulary:
                table = _align(table, ctx.vocabulary[view], view, ctx.report)
            views.tables[view] = table
    if "chips" in ctx.needs:
        for raster in _imagery(city):
            name = raster_name(raster)
            chips, masks = image_chips(city.regions, raster, ctx.chip_size, ctx.step(f"image chips ({name})"))
            views.chips[name], views.chip_masks[name] = chips, masks


def _imagery(city: CityData) -> list:
    """The city's imagery rasters (not satellite-embedding rasters)."""
    return [r for r in city.rasters if not is_embedding(r)]


#: Input kind -> its view builder, in building order (``regions`` first: every city has it). The pre-training
#: ``samples`` (the views of a grid of cells over the regions) are built after all of them.
VIEW_BUILDERS: dict[str, ViewBuilder] = {
    "regions": ViewBuilder(("adjacency", "samples"), _regions),
    "pois": ViewBuilder(("poi_counts", "poi_texts", "poi_points"), _pois),
    "landuse": ViewBuilder(("landuse",), _landuse),
    "od": ViewBuilder(("mobility",), _od),
    "rasters": ViewBuilder(("image_stats", "chips", "embedding"), _rasters,
                           lambda city, needs: len(city.rasters) + (len(_imagery(city)) if "chips" in needs else 0)),
}
#: View -> the input kind (configuration section) it is built from.
VIEW_SOURCES: dict[str, str] = {view: kind for kind, builder in VIEW_BUILDERS.items() for view in builder.views}


def view_input(view: str) -> str:
    """The input that gives ``view``: its input kind (:data:`VIEW_SOURCES`), for a raster view the raster kind it
    needs (``embedding``: an embedding raster gives that view only; ``imagery`` the other raster views)."""
    source = VIEW_SOURCES.get(view, "regions")
    if source != "rasters":
        return source
    return "embedding" if view == "embedding" else "imagery"


def build_views(
    city: CityData,
    needs: Iterable[str] = frozenset(),
    chip_size: int = 64,
    vocabulary: dict[str, list[str]] | None = None,
    progress: Progress | None = None,
    report: list[str] | None = None,
    only_needed: bool = False,
) -> Views:
    """Build every view the city's inputs allow (each input kind through its :data:`VIEW_BUILDERS` entry).

    Always (when the input exists; ``poi_texts`` and ``poi_points`` only if needed with ``only_needed``):
    ``poi_counts``, ``poi_texts``, ``poi_points``, ``image_stats``
    (all imagery rasters side by side), ``embedding`` (all embedding rasters side by side), ``landuse``,
    ``mobility``, ``adjacency``, ``areas_km2``, ``centroids`` and ``geometry``. Image chips (one array per
    imagery raster, keyed by raster name) only if ``"chips"`` is in
    ``needs``; the pre-training samples (:attr:`Views.samples`: the views of
    :func:`~backend.views.samples.pretraining_grid` with its defaults, chips of ``chip_size`` included)
    only if ``"samples"`` is. A missing input simply means fewer views.

    Args:
        city: The inputs, read by :func:`~backend.io.read_city`.
        needs: Costly views to build as well (``"chips"``, ``"samples"``).
        chip_size: Side of the image chips in pixels.
        vocabulary: View name -> columns to align to (``poi_counts`` categories, ``landuse`` classes
            with or without ``uncovered``, ``image_stats`` and ``embedding`` columns), from a saved model.
        progress: Progress of this stage (cancellation is checked between and inside the steps).
        report: Notes for the user (imputed statistics, absent columns); default: ``city.report``.
        only_needed: Build ``poi_points`` and ``poi_texts`` only when ``needs`` names them (``needs`` is then
            every view the methods use, as a run and an apply job pass it).

    Returns:
        The views, rows aligned with ``city.regions``.

    Raises:
        InputError: If a raster can no longer be read.
        ValueError: If ``"samples"`` is needed but the regions have no polygon with an extent.
        Cancelled: If the run is cancelled.
    """
    progress = progress or Progress()
    needs = set(needs)
    views = Views(region_ids=pd.Index(city.regions.index, name="region_id"))
    present = [builder for kind, builder in VIEW_BUILDERS.items() if _has(city, kind)]
    n_sample_steps = 1 + len(_imagery(city)) if "samples" in needs else 0
    n_steps = sum(builder.steps(city, needs) for builder in present) + n_sample_steps
    done = 0

    def step(message: str, width: int = 1) -> Progress:
        nonlocal done
        progress.update(done / n_steps, message)
        sub = progress.sub(message, done / n_steps, (done + width) / n_steps)
        done += width
        return sub

    ctx = BuildContext(needs=needs, chip_size=chip_size, vocabulary=vocabulary or {},
                       report=city.report if report is None else report, step=step, only_needed=only_needed)
    for builder in present:
        builder.build(city, views, ctx)
    if "samples" in needs:
        sub = step("pre-training samples", n_sample_steps)
        views.samples = sample_views(city, pretraining_grid(city.regions), chip_size, sub)
    progress.update(1.0, "views built")
    return views


def _has(city: CityData, kind: str) -> bool:
    """Whether the city holds an input of ``kind`` (its field of that name is set and not empty)."""
    value = getattr(city, kind)
    return value is not None and not (isinstance(value, list) and not value)
