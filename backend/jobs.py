"""Jobs on an existing embedding layer (cluster it, predict a label from it, find regions similar to chosen
ones) and on a saved model (apply it).

The first two back the Processing algorithms ``regionlens:cluster`` and ``regionlens:predict`` and the
worker actions of the same names; ``apply`` (worker action ``apply``) embeds another region layer with a
model a run saved. The embedding layer is any polygon layer with an id field and numeric columns
``emb_000`` ... (what a RegionLens run writes); ``similar`` also takes a run folder and one of its methods.
Each job writes one new GeoPackage atomically (a temporary file renamed into place,
:class:`backend.io.outputs.OutputFile`) and never replaces an existing file unless asked to. The steps they
share with a run (clustering and naming, label targets, metrics and prediction columns, reading inputs) are
the run's own (``backend.pipeline``).
"""

from __future__ import annotations

import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from backend.config import LabelSpec, RegionsSource, check_value
from backend.errors import ConfigError, InputError
from backend.io.outputs import OutputFile, prediction_columns, write_layer, write_table
from backend.models._base import CONFIG_FILE
from backend.pipeline import (
    check_finite,
    cluster_embedding,
    label_target,
    label_values,
    metrics_table,
    read_inputs,
    region_layer,
    views_to_build,
)
from backend.progress import Progress
from regionlens_common import (
    AUTO_K_MAX,
    AUTO_K_MIN,
    COVERAGE_RANGE,
    DEFAULT_COVERAGE,
    EMBEDDING_COLUMN,
    LAYER_CLUSTERS,
    LAYER_EMBEDDINGS,
    LAYER_PREDICTIONS,
    SIMILAR_CHOSEN_FIELD,
    SIMILAR_GPKG,
    SIMILAR_TOP_FIELD,
    SIMILAR_TOP_N,
    SIMILARITY_FIELD,
    SIMILARITY_LAYER,
    TABLE_CLUSTER_PROFILES,
    TABLE_METRICS,
    label_name,
    method_layer,
)

__all__ = ["ApplyJob", "ClusterJob", "PredictJob", "ReportJob", "SimilarJob", "run_apply_job", "run_cluster_job",
           "run_predict_job", "run_report_job", "run_similar_job", "read_embedding_layer"]

_EMB = EMBEDDING_COLUMN


@dataclass
class ClusterJob:
    """Parameters of the ``cluster`` action."""

    embeddings: str  # path of the embedding layer (GeoPackage or any OGR format)
    output: str  # GeoPackage file to write (layers clusters, cluster_profiles)
    id_field: str = "region_id"
    layer: str | None = None
    k: int | str = "auto"
    k_min: int = AUTO_K_MIN
    k_max: int = AUTO_K_MAX
    method: str = "kmeans"
    seed: int = 0
    overwrite: bool = False


@dataclass
class PredictJob:
    """Parameters of the ``predict`` action."""

    embeddings: str
    output: str  # GeoPackage file to write (layers predictions, metrics)
    label_field: str  # numeric field holding the label
    labels: str | None = None  # layer holding the label field; default: the embedding layer itself
    labels_layer: str | None = None
    labels_id_field: str | None = None  # default: id_field
    label_name: str | None = None  # output column prefix; default: the label field
    id_field: str = "region_id"
    layer: str | None = None
    target: str = "count"  # count, density or rate
    per_field: str | None = None
    log1p: bool = False
    models: list[str] = field(default_factory=lambda: ["ridge"])
    folds: int = 5
    repeats: int = 3
    spatial: bool = True
    seed: int = 0
    coverage: float = DEFAULT_COVERAGE  # nominal coverage of the <label>_lo / _hi prediction interval
    overwrite: bool = False


@dataclass
class SimilarJob:
    """Parameters of the ``similar`` action: regions similar to chosen ones, by their embeddings."""

    run: str  # a run folder, or a file with an embedding layer (e.g. the GeoPackage `apply` wrote)
    ids: list[str | int]  # the chosen regions' ids
    method: str | None = None  # with a run folder: whose embeddings (default: the run's primary method)
    layer: str | None = None  # with a file: its embedding layer (default: `embeddings`, or its only layer)
    id_field: str = "region_id"
    top: int = SIMILAR_TOP_N  # how many of the most similar regions (the chosen ones excluded) get top_n = 1
    output: str | None = None  # default: <run folder>/similar.gpkg, or <file stem>_similar.gpkg beside a file
    overwrite: bool = False


@dataclass
class ReportJob:
    """Parameters of the ``report`` action: bring a finished run's report up to date with its cluster names."""

    run: str  # the run folder (or its regionlens.gpkg, or its report.html)


def _job(cls: type, params: dict[str, Any]) -> Any:
    if not isinstance(params, dict):
        raise ConfigError(f"The parameters must be an object, not {type(params).__name__}.")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"Unknown parameters {unknown}; allowed: {sorted(known)}.")
    hints = typing.get_type_hints(cls)
    params = {key: check_value(value, hints[key], key) for key, value in params.items()}
    try:
        job = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"Incomplete parameters: {exc}.") from exc
    _check_ranges(job)
    return job


def _check_ranges(job: Any) -> None:
    """The ranges of a job's numeric parameters and its choices (the run configuration's rules)."""
    from backend.config import LIMITS
    from backend.tasks.clustering import CLUSTER_METHODS
    from backend.tasks.prediction import MODELS as PREDICTION_MODELS

    def within(key: str, limit: str) -> None:
        lo, hi = LIMITS[limit]
        value = getattr(job, key)
        if not lo <= value <= hi:
            raise ConfigError(f"'{key}' must lie between {lo} and {hi}, not {value}.")

    if hasattr(job, "seed"):
        within("seed", "seed")
    if isinstance(job, ClusterJob):
        if job.k != "auto" and not isinstance(job.k, int):
            raise ConfigError(f"'k' must be 'auto' or an integer >= 2, not {job.k!r}.")
        if isinstance(job.k, int):
            within("k", "k")
        within("k_min", "k")
        within("k_max", "k")
        if job.method not in CLUSTER_METHODS:
            raise ConfigError(f"'method' must be one of {list(CLUSTER_METHODS)}, not {job.method!r}.")
    if isinstance(job, SimilarJob):
        if not 0 <= job.top <= 100_000:
            raise ConfigError(f"'top' must lie between 0 and 100000, not {job.top}.")
        if not job.ids:
            raise ConfigError("'ids' is empty; choose at least one region to compare the others with.")
    if isinstance(job, PredictJob):
        within("folds", "folds")
        within("repeats", "repeats")
        lo, hi = COVERAGE_RANGE
        if not lo <= job.coverage <= hi:
            raise ConfigError(f"'coverage' must lie between {lo} and {hi} (e.g. 0.9 for 90 % intervals), not "
                              f"{job.coverage}.")
        bad = [m for m in job.models if m not in PREDICTION_MODELS]
        if bad or not job.models:
            raise ConfigError(f"'models' must be a non-empty list of {list(PREDICTION_MODELS)}, not {job.models}.")


def read_embedding_layer(path: str, id_field: str, layer: str | None, report: list[str]) -> tuple[gpd.GeoDataFrame,
                                                                                                   np.ndarray]:
    """Read an embedding layer: the regions (metric CRS, index ``region_id``) and the N x d matrix.

    Raises:
        InputError: If the layer cannot be read as regions or has no numeric ``emb_`` columns.
    """
    from backend.io.vectors import read_regions

    regions, _ = read_regions(RegionsSource(path=path, id_field=id_field, layer=layer), report)
    cols = [c for c in regions.columns if _EMB.match(str(c))]
    if not cols:
        raise InputError(f"{path}: no embedding columns (emb_000, emb_001, ...) found. Choose a layer written by "
                         "RegionLens (the 'embeddings' layer).")
    values = regions[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} regions have missing or non-numeric embedding values.")
    return regions, values


def run_cluster_job(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Cluster an embedding layer; returns ``{"output", "k", "silhouette", "sizes", "seconds"}``."""
    job: ClusterJob = _job(ClusterJob, params)
    progress = progress or Progress()
    t0 = time.perf_counter()
    out = OutputFile(job.output, job.overwrite, (job.embeddings,))
    progress.stage("read embeddings", 0.0, 0.2)
    report: list[str] = []
    regions, x = read_embedding_layer(job.embeddings, job.id_field, job.layer, report)
    progress.stage("cluster", 0.2, 0.8)
    # Profiles over the layer's other numeric fields when it has some, else over the embedding dimensions.
    numeric = regions.drop(columns="geometry").select_dtypes("number")
    others = numeric[[c for c in numeric.columns if not _EMB.match(str(c))]]
    found = cluster_embedding(x, regions.index, others, numeric, k=job.k, method=job.method, k_min=job.k_min,
                              k_max=job.k_max, seed=job.seed)
    res = found.result
    report.extend(res.warnings)
    progress.stage("write", 0.8, 1.0)
    with out as tmp:
        write_layer(region_layer(found.layer(regions.index), regions.geometry, regions.crs), tmp, LAYER_CLUSTERS)
        write_table(found.profiles, tmp, TABLE_CLUSTER_PROFILES)
    progress.update(1.0, "done")
    return {"output": str(out.target), "k": res.k, "silhouette": float(res.silhouette),
            "sizes": np.bincount(res.labels).tolist(), "report": report,
            "seconds": round(time.perf_counter() - t0, 3), "params": asdict(job)}


def run_predict_job(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Predict a label from an embedding layer out of fold; returns output path and metrics rows."""
    from backend.io.labels import label_areas, read_labels
    from backend.io.vectors import read_regions
    from backend.tasks.intervals import add_interval_columns
    from backend.tasks.prediction import evaluate_label

    job: PredictJob = _job(PredictJob, params)
    progress = progress or Progress()
    t0 = time.perf_counter()
    out = OutputFile(job.output, job.overwrite, (job.embeddings, job.labels))
    progress.stage("read", 0.0, 0.1)
    report: list[str] = []
    regions, x = read_embedding_layer(job.embeddings, job.id_field, job.layer, report)
    name = job.label_name or label_name(job.label_field)
    spec = LabelSpec(name=name, field=job.label_field, target=job.target, per_field=job.per_field, log1p=job.log1p)
    if job.labels:
        label_regions, _ = read_regions(RegionsSource(path=job.labels, id_field=job.labels_id_field or job.id_field,
                                                      layer=job.labels_layer), report)
    else:
        label_regions = regions
    raw_all = read_labels([spec], label_regions, regions.crs, report)
    raw, per = label_values(raw_all, name, regions.index)
    unmatched = int((~regions.index.isin(raw_all.index)).sum())
    if unmatched:
        report.append(f"{unmatched} regions of the embedding layer have no row in the label layer.")
    target = label_target(spec, raw, per, label_areas(regions.geometry.area / 1e6), report.append)
    rows = regions.index.get_indexer(target.y.index)
    coords = np.column_stack([regions.geometry.centroid.x, regions.geometry.centroid.y])
    progress.stage("predict", 0.1, 0.9)
    result = evaluate_label(x[rows], target.y.to_numpy(), coords[rows], models=tuple(job.models), folds=job.folds,
                            repeats=job.repeats, spatial=job.spatial, seed=job.seed, progress=progress,
                            coverage=job.coverage, interval_model=job.models[0])
    metrics = metrics_table(result.metrics, LAYER_EMBEDDINGS, name, target)
    pred = target.inverse(pd.Series(result.oof[job.models[0]], index=target.y.index)).reindex(regions.index)
    progress.stage("write", 0.9, 1.0)
    frame = pd.DataFrame(prediction_columns(name, raw, pred), index=regions.index)
    frame = add_interval_columns(frame, name, result, job.models[0], target, target.y.index)
    with out as tmp:
        write_layer(region_layer(frame, regions.geometry, regions.crs), tmp, LAYER_PREDICTIONS)
        write_table(metrics, tmp, TABLE_METRICS)
    progress.update(1.0, "done")
    return {"output": str(out.target), "label": name, "metrics": metrics.to_dict("records"), "report": report,
            "seconds": round(time.perf_counter() - t0, 3), "params": asdict(job)}


@dataclass
class ApplyJob:
    """Parameters of the ``apply`` action: embed a region layer with a saved model."""

    model: str  # folder of a saved model (a run writes <output>/models/<method>/)
    regions: str  # region layer to embed (any polygon layer; reprojected as in a run)
    output: str  # GeoPackage file to write (layer embeddings)
    id_field: str = "region_id"
    layer: str | None = None
    pois: str | None = None  # POI layer, for models that use POIs
    poi_layer: str | None = None
    category_field: str | None = None  # required with a POI layer (not with a .osm.pbf or Overture GeoParquet)
    name_field: str | None = None
    rasters: list[Any] = field(default_factory=list)  # raster paths or {"path", "name", "bands", "kind"} dicts
    device: str = "auto"
    overwrite: bool = False


def _apply_config(job: ApplyJob, saved: list[str], embeddings: list[str] = ()) -> Any:
    """The run configuration that reads the job's inputs (rasters named like the model's image columns; a raster
    named like one of the model's satellite-embedding rasters, ``embeddings``, read as one unless its kind is given).
    """
    from backend.config import PoiSource, RasterSource, RunConfig
    from backend.io.rasters import raster_name
    from regionlens_common import poi_file_kind

    pois = None
    if job.pois:
        if not job.category_field and poi_file_kind(job.pois) is None:  # .osm.pbf / GeoParquet: see poi_files
            raise ConfigError("apply: a POI layer needs its category field (category_field).")
        pois = PoiSource(path=job.pois, category_field=job.category_field, name_field=job.name_field or None,
                         layer=job.poi_layer)
    rasters = [RasterSource(path=r) if isinstance(r, str) else RasterSource(**r) for r in job.rasters]
    if len(rasters) == 1 and rasters[0].name is None and len(saved) == 1:
        rasters[0].name = saved[0]  # named like the raster the model saw (its image columns, its chips)
    for given, raster in zip(job.rasters, rasters, strict=True):
        if not (isinstance(given, dict) and "kind" in given) and raster_name(raster) in embeddings:
            raster.kind = "embedding"
    return RunConfig(regions=RegionsSource(path=job.regions, id_field=job.id_field, layer=job.layer),
                     output_dir=str(Path(job.output).parent), pois=pois, rasters=rasters)


def _load_saved(folder: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """The saved model in ``folder`` and, for fusion, the saved models of its run it combines (beside it)."""
    from backend.models import load_embedder

    if not (folder / CONFIG_FILE).is_file():
        raise InputError(f"{folder} holds no saved RegionLens model (no {CONFIG_FILE}). Choose a folder "
                         "<run output>/models/<method>/ written by a run.")
    model = load_embedder(str(folder))
    model.device, model.device_used = device, None
    sources = {name: load_embedder(str(folder.parent / name)) for name in getattr(model, "source_names", [])}
    for src in sources.values():
        src.device, src.device_used = device, None
    return model, sources


def run_apply_job(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Embed a region layer with a saved model (inductive use); writes the ``embeddings`` layer atomically.

    The layer's views are built with the model's saved vocabulary (same POI categories, image and land-use
    columns as in training). Methods that embed locations (CaLLiPer) need only the polygons; the others need
    the inputs they learned from (a missing one is reported, all missing is an error).

    Returns:
        ``{"output", "gpkg", "method", "model", "n_regions", "dim", "device", "report", "seconds", "params"}``.

    Raises:
        InputError: If the model folder holds no saved model or the inputs cannot be used.
        ConfigError: On unknown parameters or a POI layer without category field.
        OutputError: If the output exists (and ``overwrite`` is false) or cannot be written.
        Cancelled: If cancelled (nothing written).
    """
    from backend.tasks.context import load_context
    from backend.views.build import build_views

    job: ApplyJob = _job(ApplyJob, params)
    progress = progress or Progress()
    t0 = time.perf_counter()
    out = OutputFile(job.output, job.overwrite, (job.regions, job.pois, *[r if isinstance(r, str) else
                                                                        r.get("path") for r in job.rasters]))
    folder = Path(job.model).expanduser()
    progress.stage("load model", 0.0, 0.05)
    model, sources = _load_saved(folder, job.device)
    used = [*sources.values(), model]
    vocabulary = {k: v for m in used for k, v in m.vocabulary.items()}
    rasters = list(dict.fromkeys(r for m in used for r in m.raster_names()))
    embeddings = [r for m in used for r in m.raster_names(("embedding",))]
    needed = model.views_for_transform()
    report: list[str] = []
    progress.stage("read inputs", 0.05, 0.25)
    city = read_inputs(_apply_config(job, rasters, embeddings), progress, report)
    progress.stage("build views", 0.25, 0.4)
    # New regions are only embedded: no pre-training samples.
    uses = views_to_build(used)  # as each model was configured (the run's rule)
    views = build_views(city, needs=uses - {"samples"}, vocabulary=vocabulary, progress=progress, report=report,
                        only_needed=True)
    missing = [v for v in needed if v not in views.available()]
    if needed and len(missing) == len(needed):
        raise InputError(f"The {model.name} model learned from {', '.join(needed)}, which these inputs lack. Add "
                         "the same kinds of layers it was trained with (a POI layer, imagery or a land-use layer).")
    if missing:
        report.append(f"The model learned from {', '.join(missing)} too, which these inputs lack; those "
                      "views count as average.")
    progress.stage(f"embed: {model.name}", 0.4, 0.9)
    if sources:
        model.set_sources({name: src.transform(views, progress) for name, src in sources.items()})
    emb = model.transform(views, progress)
    context = load_context(folder)  # the run's spatial context, applied to the new layer's own neighbours
    if context is not None:
        emb = context.transform(emb, views.geometry)
    check_finite(model.name, emb, " for these regions.")
    progress.stage("write", 0.9, 1.0)
    with out as tmp:
        write_layer(region_layer(emb, city.regions.geometry, city.crs), tmp, LAYER_EMBEDDINGS)
    progress.update(1.0, "done")
    return {"output": str(out.target), "gpkg": str(out.target), "method": model.name, "model": str(folder),
            "n_regions": len(emb), "dim": int(emb.shape[1]), "device": model.device_used or job.device,
            "report": report, "seconds": round(time.perf_counter() - t0, 3), "params": asdict(job)}


def _similar_source(job: SimilarJob) -> tuple[str, str | None, str, Path]:
    """``(file, layer, method, default output)`` of a similar job's ``run`` (a run folder or a layer file).

    Raises:
        InputError: If ``run`` does not exist, or a run folder lacks its GeoPackage or the method.
    """
    import json

    import pyogrio

    from regionlens_common import GPKG_NAME, RUN_JSON

    source = Path(job.run).expanduser().resolve()
    if source.is_dir():
        gpkg = source / GPKG_NAME
        if not gpkg.is_file():
            raise InputError(f"{source} is not a RegionLens run folder (no {GPKG_NAME}). Choose the output folder "
                             "of a run, or an embedding layer file.")
        try:
            manifest = json.loads((source / RUN_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
        layers = [str(n) for n, _ in pyogrio.list_layers(gpkg)]
        methods = [str(m) for m in manifest.get("methods", [])]
        primary = str(manifest.get("primary_method") or (methods[0] if methods else ""))
        method = job.method or primary
        layer = method_layer(LAYER_EMBEDDINGS, method, primary)
        if layer not in layers:
            raise InputError(f"The run in {source} has no embeddings of method '{method}'; its methods: "
                             f"{', '.join(methods) or 'unknown'}.")
        return str(gpkg), layer, method or LAYER_EMBEDDINGS, source / SIMILAR_GPKG
    if not source.is_file():
        raise InputError(f"{source} does not exist. Choose a run folder or a file holding an embedding layer.")
    layer = job.layer
    if layer is None and source.suffix.lower() == ".gpkg":
        names = [str(n) for n, _ in pyogrio.list_layers(source)]
        layer = LAYER_EMBEDDINGS if LAYER_EMBEDDINGS in names else None
    return str(source), layer, layer or LAYER_EMBEDDINGS, source.with_name(f"{source.stem}_similar.gpkg")


def run_similar_job(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Cosine similarity of every region to the mean embedding of the chosen regions (``similar`` action).

    Works on any embeddings: a run's (``run`` a run folder, ``method`` one of its methods) or a layer file's
    (e.g. the GeoPackage ``apply`` wrote for another city). Writes the layer :data:`SIMILARITY_LAYER` (region
    id, :data:`SIMILARITY_FIELD`, :data:`SIMILAR_TOP_FIELD`, :data:`SIMILAR_CHOSEN_FIELD`) to one GeoPackage
    atomically (see :mod:`backend.tasks.similar`).

    Returns:
        ``{"output", "layer", "method", "n_regions", "ids", "top": [{"region_id", "similarity"}], "report",
        "seconds", "params"}``.

    Raises:
        ConfigError: On unknown or ill-typed parameters, no ids, or ``top`` out of range.
        InputError: If the source has no embeddings (of that method) or an id is not one of its regions.
        OutputError: If the output exists (and ``overwrite`` is false) or cannot be written.
    """
    from backend.tasks.similar import resolve_ids, similarity_to, top_n_mask

    job: SimilarJob = _job(SimilarJob, params)
    progress = progress or Progress()
    t0 = time.perf_counter()
    progress.stage("read embeddings", 0.0, 0.5)
    path, layer, method, default_out = _similar_source(job)
    out = OutputFile(job.output or str(default_out), job.overwrite, (path,))
    report: list[str] = []
    regions, x = read_embedding_layer(path, job.id_field, layer, report)
    chosen = resolve_ids(regions.index, [str(i) for i in job.ids])
    progress.stage("similarity", 0.5, 0.8)
    sim = similarity_to(x, chosen)
    top = top_n_mask(sim, chosen, job.top)
    is_chosen = np.zeros(len(sim), dtype=int)
    is_chosen[chosen] = 1
    progress.stage("write", 0.8, 1.0)
    frame = gpd.GeoDataFrame({SIMILARITY_FIELD: sim, SIMILAR_TOP_FIELD: top.astype(int),
                              SIMILAR_CHOSEN_FIELD: is_chosen},
                             geometry=regions.geometry.values, crs=regions.crs, index=regions.index)
    with out as tmp:
        write_layer(frame, tmp, SIMILARITY_LAYER)
    progress.update(1.0, "done")
    order = np.flatnonzero(top)[np.argsort(-sim[top], kind="stable")]
    return {"output": str(out.target), "layer": SIMILARITY_LAYER, "method": method, "n_regions": len(sim),
            "ids": [str(regions.index[i]) for i in chosen],
            "top": [{"region_id": str(regions.index[i]), "similarity": float(sim[i])} for i in order],
            "report": report, "seconds": round(time.perf_counter() - t0, 3), "params": asdict(job)}


def run_report_job(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Redraw a run's cluster map and rewrite its ``report.html`` (``report`` action), after its clusters were
    renamed: see :func:`backend.viz.report.rewrite_report`.

    Returns:
        ``{"report", "written": [paths], "seconds", "params"}``.

    Raises:
        ConfigError: On unknown or ill-typed parameters.
        InputError: If ``run`` is not a finished run's folder with a report.
    """
    from backend.viz.report import rewrite_report
    from regionlens_common import REPORT_HTML, RUN_JSON

    job: ReportJob = _job(ReportJob, params)
    progress = progress or Progress()
    t0 = time.perf_counter()
    source = Path(job.run).expanduser().resolve()
    folder = source if source.is_dir() else source.parent
    if not (folder / RUN_JSON).is_file() or not (folder / REPORT_HTML).is_file():
        raise InputError(f"{source} is not the folder of a finished RegionLens run with a report ({RUN_JSON} and "
                         f"{REPORT_HTML}). Choose a run's output folder.")
    progress.stage("report", 0.0, 1.0)
    try:
        written = rewrite_report(folder)
    except ValueError as exc:
        raise InputError(f"The run in {folder} cannot be read: {exc}") from exc
    progress.update(1.0, "done")
    return {"report": str(folder / REPORT_HTML), "written": [str(p) for p in written],
            "seconds": round(time.perf_counter() - t0, 3), "params": asdict(job)}
