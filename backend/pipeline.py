"""The whole RegionLens job as stages: read inputs, build views, learn embeddings with every chosen method,
cluster them, predict every label out of fold, and write the outputs atomically.

Each stage is a function of the run's :class:`RunState` that returns its own small result (:class:`Embedded`,
:class:`Clusters`, :class:`Predicted`, :class:`Written`); :data:`STAGES` lists them in order. The steps a
stage shares with the jobs on existing layers (``backend.jobs``: cluster, predict, apply) are functions here
too (:func:`read_inputs`, :func:`cluster_embedding`, :func:`label_target`, :func:`metrics_table`,
:func:`region_layer`, :func:`check_finite`).

Used by the CLI (``python -m backend run``) and the worker (``python -m backend.worker``).
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd

from backend import __version__
from backend.config import LabelSpec, RunConfig, input_paths
from backend.device import resolve_device
from backend.errors import ConfigError, InputError
from backend.io.outputs import OutputFolder, prediction_columns, write_json, write_layer, write_table
from backend.progress import Progress
from regionlens_common import (
    CLUSTER_CARDS_JSON,
    CLUSTER_FIELD,
    CLUSTER_NAME_FIELD,
    GPKG_NAME,
    ID_FIELD,
    LAYER_CLUSTERS,
    LAYER_EMBEDDINGS,
    LAYER_PREDICTIONS,
    REPORT_HTML,
    RUN_JSON,
    TABLE_CLUSTER_PROFILES,
    TABLE_METRICS,
    method_layer,
)

if TYPE_CHECKING:
    from backend.io.city import CityData
    from backend.models._base import Embedder
    from backend.views import Views

__all__ = [
    "STAGES", "Clusters", "Embedded", "Predicted", "RunResult", "RunState", "Written", "check_finite",
    "cluster_embedding", "cluster_stage", "embed_stage", "label_target", "label_values", "manifest",
    "views_to_build",
    "metrics_table", "package_versions", "predict_stage", "read_inputs", "read_stage",
    "region_layer", "run_pipeline", "start", "views_stage", "write_stage",
]

METRIC_COLUMNS = [
    "method", "label", "target", "units", "model", "protocol", "n_regions",
    "mae_mean", "mae_std", "rmse_mean", "rmse_std", "r2_mean", "r2_std", "combination", "coverage", "interval_width",
]


@dataclass
class RunResult:
    """What a finished run produced (paths are final, after the atomic rename)."""

    output_dir: str
    gpkg: str
    run_json: str
    figures: list[str]
    metrics: list[dict[str, Any]]
    device: str
    seconds: float
    primary_method: str
    layers: list[str]
    report: list[str] = field(default_factory=list)
    report_html: str = ""  # the run's report.html
    cluster_cards: str = ""  # the run's clusters.json ("" without clusters)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the worker's result event."""
        return asdict(self)


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a run depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "regionlens": __version__, "platform": platform.platform()}
    for pkg in ("torch", "numpy", "pandas", "geopandas", "pyogrio", "shapely", "rasterio", "pyproj",
                "scikit-learn", "scipy", "matplotlib", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    import pyogrio

    out["gdal"] = str(getattr(pyogrio, "__gdal_version_string__", "unknown"))
    return out


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0 / 1024.0


def _make_methods(cfg: RunConfig, device: str) -> list[Any]:
    """The run's embedders (seed ensembles where ``ensemble`` > 1), fusion first when it is in the run."""
    from backend.models import get_embedder
    from backend.models.ensemble import SeedEnsemble

    methods: list[Any] = []
    for m in cfg.methods:
        def make(seed: int, m: Any = m) -> Any:
            return get_embedder(m.name, dim=m.dim, seed=seed, device=device, nproc=cfg.nproc, **m.params)

        methods.append(SeedEnsemble.of(make, m.ensemble, cfg.seed) if m.ensemble > 1 else make(cfg.seed))
    if "fusion" in {m.name for m in methods} and len(methods) == 1 and not cfg.pois and not cfg.rasters \
            and not cfg.od and not cfg.landuse:
        raise InputError("fusion combines the run's other methods and raw views; add another method or inputs.")
    first = cfg.primary if cfg.primary not in ("auto", "best") else "fusion"
    return sorted(methods, key=lambda m: m.name != first)


def model_params(methods: list[Any], name: str) -> Any:
    """The parameters of the run's method ``name``."""
    return next(m for m in methods if m.name == name).params


def check_region_count(cfg: RunConfig, n_regions: int) -> None:
    """Fail before any training when there are too few regions for the configured clusters or predictions.

    Raises:
        ConfigError: If ``k`` (or ``k_min`` with ``k = "auto"``) is not below the number of regions.
        InputError: If there are too few regions to cluster or to predict a label at all.
    """
    from backend.tasks.targets import MIN_REGIONS

    if cfg.prediction is not None and cfg.labels and n_regions < MIN_REGIONS:
        raise InputError(
            f"The regions layer holds {n_regions} region{'s' if n_regions != 1 else ''}; predicting a label needs "
            f"at least {MIN_REGIONS}. Choose a layer with more regions, or leave out the labels."
        )
    clu = cfg.clustering
    if clu is None:
        return
    if n_regions < 3:
        raise InputError(
            f"The regions layer holds {n_regions} region{'s' if n_regions != 1 else ''}; clustering needs at least "
            "3 (and prediction at least 10). Choose a layer with more regions, or leave out [clustering]."
        )
    largest = n_regions - 1
    if isinstance(clu.k, int) and clu.k > largest:
        raise ConfigError(
            f"'clustering.k' = {clu.k}, but the regions layer holds only {n_regions} regions: choose k between 2 "
            f"and {largest}, or k = \"auto\"."
        )
    if clu.k == "auto" and clu.k_min > largest:
        raise ConfigError(
            f"'clustering.k_min' = {clu.k_min}, but the regions layer holds only {n_regions} regions: choose k_min "
            f"between 2 and {largest}."
        )


# ------------------------------------------------------------------------------------------- stage states
@dataclass
class Embedded:
    """The embed stage's result: every method's embedding and what prediction needs of it."""

    embeddings: dict[str, pd.DataFrame]  # what is written and clustered (with the run's context), output order
    learned: dict[str, pd.DataFrame]  # as each method learned it (fusion's sources)
    members: dict[str, list[pd.DataFrame]]  # seed ensembles: every member's embedding (with context)
    learned_members: dict[str, list[pd.DataFrame]]  # seed ensembles' members as learned (for fusion)
    fusion_blocks: dict[str, Any]


@dataclass
class Clusters:
    """One embedding's clusters: labels, names and profiles (the cluster stage and the ``cluster`` job)."""

    labels: np.ndarray
    names: dict[int, str]
    profiles: pd.DataFrame
    result: Any  # backend.tasks.clustering.ClusterResult
    profiled_on_fallback: bool  # the features gave no profile; the fallback features did

    def layer(self, index: pd.Index) -> pd.DataFrame:
        """The ``clusters`` layer's attributes (cluster number and name) for regions ``index``."""
        frame = pd.DataFrame({CLUSTER_FIELD: self.labels.astype(int)}, index=index)
        frame[CLUSTER_NAME_FIELD] = [self.names.get(int(c), "") for c in self.labels]
        return frame


@dataclass
class Predicted:
    """The predict stage's result."""

    metric_rows: list[dict[str, Any]]
    predictions: dict[str, pd.DataFrame]  # per method: <label>_obs/_pred/_res columns
    obs_pred: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # per method and label, in model space
    label_units: dict[str, str]
    fusion_choices: dict[str, dict[str, Any]]


@dataclass
class Written:
    """The write stage's result: layers and tables written, figure paths (final, after the commit)."""

    layers: list[str]
    figures: list[str]
    cluster_cards: bool = False  # clusters.json written (some method has clusters)


@dataclass
class RunState:
    """What the stages of one run pass on: its setup, then each stage's result in turn."""

    cfg: RunConfig
    progress: Progress
    out: OutputFolder
    device: str
    methods: list[Any]
    context: Any  # backend.tasks.context.ContextSpec or None
    timings: dict[str, float] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    city: CityData | None = None
    views: Views | None = None
    embedded: Embedded | None = None
    clusters: dict[str, Clusters] = field(default_factory=dict)
    predicted: Predicted | None = None
    written: Written | None = None

    @property
    def primary(self) -> str:
        """The primary method (its layers carry no suffix)."""
        return self.methods[0].name

    def note(self, message: str) -> None:
        """A line for the run's report (and the log)."""
        self.report.append(message)
        self.progress.log(message)


# ------------------------------------------------------------------------ steps shared with backend.jobs
def read_inputs(cfg: RunConfig, progress: Progress, report: list[str],
                check_regions: Callable[[int], None] | None = None) -> CityData:
    """Read every input of ``cfg`` (the read stage; the ``apply`` job): the city, its report lines appended."""
    from backend.io.city import read_city

    city = read_city(cfg, progress, check_regions=check_regions)
    report.extend(city.report)
    return city


def check_finite(name: str, emb: pd.DataFrame, hint: str) -> None:
    """Raise InputError naming ``name`` when ``emb`` holds a non-finite value."""
    if not np.isfinite(emb.to_numpy()).all():
        raise InputError(f"{name} produced non-finite embeddings{hint}")


def region_layer(frame: pd.DataFrame, geometry: gpd.GeoSeries, crs: Any) -> gpd.GeoDataFrame:
    """``frame`` (indexed by region id) with the regions' geometry, ready for :func:`write_layer`.

    ``frame`` is not copied (pandas' copy-on-write keeps it unchanged): a deep copy of a 250,000 x 432
    embedding took 12 s without a progress event.
    """
    gdf = gpd.GeoDataFrame(frame, geometry=geometry.reindex(frame.index).values, crs=crs)
    gdf.index = gdf.index.astype(str).rename(ID_FIELD)
    return gdf


def cluster_embedding(x: np.ndarray, region_ids: pd.Index, features: pd.DataFrame, fallback: pd.DataFrame, *,
                      k: int | str, method: str, k_min: int, k_max: int, seed: int,
                      progress: Progress | None = None) -> Clusters:
    """Cluster ``x``, profile the clusters over ``features`` (over ``fallback`` if those give none) and name them.

    Raises:
        InputError: If the embedding cannot be clustered (e.g. too few distinct rows).
    """
    from backend.tasks.clustering import cluster, cluster_names, cluster_profiles

    res = cluster(x, k=k, method=method, k_min=k_min, k_max=k_max, seed=seed, progress=progress)

    def profile_and_name() -> tuple[pd.DataFrame, bool, dict[int, str]]:
        profiles = cluster_profiles(res.labels, features)
        fell_back = profiles.empty
        if fell_back:
            profiles = cluster_profiles(res.labels, fallback)
        return profiles, fell_back, cluster_names(profiles, res.labels, x, region_ids)

    # seconds at 250,000 regions (each cluster's typical regions over a 384-column embedding): under wait
    profiles, fell_back, names = (profile_and_name() if progress is None
                                  else progress.wait(profile_and_name, "cluster profiles and names"))
    profiles.insert(1, CLUSTER_NAME_FIELD, profiles[CLUSTER_FIELD].map(names))
    return Clusters(labels=res.labels, names=names, profiles=profiles, result=res, profiled_on_fallback=fell_back)


def label_values(labels: pd.DataFrame, name: str, index: pd.Index) -> tuple[pd.Series, pd.Series | None]:
    """A label's raw values and its ``per`` field (rates) for regions ``index``, as :func:`read_labels` wrote them."""
    from backend.io.labels import PER_SUFFIX

    raw = labels[name].reindex(index)
    per = labels.get(f"{name}{PER_SUFFIX}")
    return raw, None if per is None else per.reindex(index)


def label_target(spec: LabelSpec, raw: pd.Series, per: pd.Series | None, areas: pd.Series,
                 note: Callable[[str], None]) -> Any:
    """The modelling target of a label (:func:`make_target`); values it drops unreported are noted."""
    from backend.io.labels import unreported_drops
    from backend.tasks.targets import make_target

    target = make_target(raw, spec, areas, per)
    dropped = unreported_drops(spec, raw, per, areas, target)
    if dropped:
        note(dropped)
    return target


def metrics_table(metrics: pd.DataFrame, method: str, label: str, target: Any,
                  combination: dict[str, str] | None = None) -> pd.DataFrame:
    """Prediction metrics with the method, label, target and units in front (and fusion's combination)."""
    table = metrics.copy()
    table.insert(0, "units", target.units)
    if combination is not None:
        table["combination"] = [combination.get(p, "") for p in table["protocol"]]
    table.insert(0, "target", target.description)
    table.insert(0, "label", label)
    table.insert(0, "method", method)
    return table


# ------------------------------------------------------------------------------------------------ stages
def start(cfg: RunConfig, progress: Progress, out: OutputFolder) -> RunState:
    """Resolve the device and make the run's methods (fails before any work on a bad device or method)."""
    from backend.tasks.context import parse_context

    for stale in out.removed_stale:
        progress.log(f"removed {stale.name}, the unfinished output of a run that was stopped")
    device = resolve_device(cfg.device)
    progress.log(f"device: {device}")
    if cfg.nproc > 1:  # more processes than GPUs, or a device they cannot share: say so before any work
        from backend.models._distributed import check_nproc_device

        check_nproc_device(cfg.nproc, device)
        progress.log(f"training processes: {cfg.nproc} (data-parallel where the method supports it)")
    methods = _make_methods(cfg, device)
    return RunState(cfg=cfg, progress=progress, out=out, device=device, methods=methods,
                    context=parse_context(cfg.context))


def read_stage(state: RunState) -> CityData:
    """Read the inputs (regions first; their count is checked before anything else is read)."""
    cfg, progress = state.cfg, state.progress
    progress.stage("read inputs", 0.0, 0.10)
    city = read_inputs(cfg, progress, state.report, check_regions=lambda n: check_region_count(cfg, n))
    for line in city.report:
        progress.log(line)
    return city


def views_to_build(methods: Iterable[Embedder]) -> set[str]:
    """The views a run (or an apply job) builds for ``methods``: each method's views as configured
    (:meth:`Embedder.views_to_build`: CooKIE with image statistics builds no chips)."""
    return {view for method in methods for view in method.views_to_build()}


def views_stage(state: RunState) -> Views:
    """Build the views the run's methods use."""
    from backend.views.build import build_views

    progress = state.progress
    progress.stage("build views", 0.10, 0.25)
    needs = views_to_build(state.methods)
    views = build_views(state.city, needs=needs, chip_size=state.cfg.chip_size, progress=progress,
                        report=state.report, only_needed=True)
    progress.log(f"views: {', '.join(sorted(views.available()))} for {len(views)} regions")
    return views


def embed_stage(state: RunState) -> Embedded:
    """Learn every method's embedding (fusion last, over the others) and save each model."""
    from backend.tasks.context import SpatialContext

    views, progress, methods, context = state.views, state.progress, state.methods, state.context
    done = Embedded(embeddings={}, learned={}, members={}, learned_members={}, fusion_blocks={})
    span = 0.35 / len(methods)
    # fusion combines the others, so it is fitted last (it stays first in the outputs when primary)
    for i, model in enumerate(sorted(methods, key=lambda m: m.name == "fusion")):
        t0 = time.perf_counter()
        progress.stage(f"embed: {model.name}", 0.25 + i * span, 0.25 + (i + 1) * span)
        folder = state.out.path("models", model.name)
        if model.name == "fusion":
            model.set_sources(done.learned, members=done.learned_members)
            emb = model.fit_transform(views, progress)
            done.fusion_blocks = progress.wait(lambda fusion=model: fusion.prediction_blocks(views),
                                               "fusion prediction blocks")
        elif hasattr(model, "fit_members"):  # seed ensemble
            done.members[model.name] = done.learned_members[model.name] = model.fit_members(views, progress)
            emb = model.combine(done.members[model.name])
        else:
            emb = model.fit_transform(views, progress)
        check_finite(model.name, emb, "; check the inputs for extreme values.")
        model.save(folder)
        done.learned[model.name] = emb
        if context is not None and model.name != "fusion":  # fusion applies its own context per block
            def with_context(emb: pd.DataFrame = emb, name: str = model.name) -> tuple[Any, pd.DataFrame, list]:
                stage = SpatialContext(context).fit(emb)
                return (stage, stage.transform(emb, views.geometry),
                        [stage.transform(m, views.geometry) for m in done.members.get(name, [])])

            # neighbourhoods and their means: seconds at 250,000 regions, so under Progress.wait (heartbeat, cancel)
            stage, emb, done.members[model.name] = progress.wait(with_context, "spatial context")
            stage.save(folder)
        done.embeddings[model.name] = emb
        state.timings[f"embed_{model.name}"] = seconds = round(time.perf_counter() - t0, 3)
        progress.log(f"{model.name}: {emb.shape[1]}-d embeddings in {seconds:.1f} s")
    done.embeddings = {m.name: done.embeddings[m.name] for m in methods}  # output order: primary first
    return done


def cluster_stage(state: RunState) -> dict[str, Clusters]:
    """Cluster every method's embedding; profiles over the interpretable input features."""
    from backend.tasks.clustering import profile_features

    cfg, views, progress = state.cfg, state.views, state.progress
    progress.stage("cluster", 0.60, 0.65)
    features = profile_features(views)
    clusters: dict[str, Clusters] = {}
    if cfg.clustering is None:
        return clusters
    embeddings = state.embedded.embeddings
    for i, (name, emb) in enumerate(embeddings.items()):
        try:
            found = cluster_embedding(emb.to_numpy(), views.region_ids, features, emb.reset_index(drop=True),
                                      k=cfg.clustering.k, method=cfg.clustering.method, k_min=cfg.clustering.k_min,
                                      k_max=cfg.clustering.k_max, seed=cfg.seed,
                                      progress=progress.sub("cluster", i / len(embeddings),
                                                            (i + 1) / len(embeddings)))
        except InputError as exc:
            state.note(f"{name}: no clusters ({exc})")
            continue
        res = found.result
        for line in res.warnings:
            state.note(f"{name}: {line}")
        if found.profiled_on_fallback:
            state.note(f"{name}: no interpretable input feature (POI categories, image, land use, region area) "
                       "to profile clusters with; profiles use the embedding dimensions and clusters are named "
                       "by their most typical regions")
        clusters[name] = found
        progress.log(f"{name}: {res.k} clusters (silhouette {res.silhouette:.3f} over "
                     f"{res.n_distinct} distinct embeddings)")
        progress.update(1.0)
    return clusters


def predict_stage(state: RunState) -> Predicted:
    """Predict every label from every method's embedding out of fold."""
    from backend.io.labels import label_areas

    cfg, city, views, progress = state.cfg, state.city, state.views, state.progress
    embeddings = state.embedded.embeddings
    progress.stage("predict", 0.65, 0.90)
    done = Predicted(metric_rows=[], predictions={name: pd.DataFrame(index=views.region_ids) for name in embeddings},
                     obs_pred={name: {} for name in embeddings}, label_units={}, fusion_choices={})
    if cfg.prediction is None or not cfg.labels:
        return done
    if city.labels is None:
        raise InputError("Labels were configured but none could be read.")
    areas = label_areas(views.areas_km2)
    n_jobs = len(cfg.labels) * len(embeddings)
    job = 0
    for spec in cfg.labels:
        raw, per = label_values(city.labels, spec.name, views.region_ids)
        target = label_target(spec, raw, per, areas, state.note)
        done.label_units[spec.name] = target.units
        for name in embeddings:
            sub = progress.sub(f"predict {spec.name} ({name})", job / n_jobs, (job + 1) / n_jobs)
            job += 1
            _predict_one(state, done, name, spec, raw, target, sub)
    if cfg.primary == "best":  # by the run's own cross-validated R2 only (no held-out test)
        from backend.tasks.leaderboard import best_method

        best = best_method(done.metric_rows, [m.name for m in state.methods], cfg.prediction.write_model)
        if best:
            state.methods.sort(key=lambda m: m.name != best)
            state.embedded.embeddings = {m.name: state.embedded.embeddings[m.name] for m in state.methods}
            progress.log(f"primary method: {best} (highest mean cross-validated R2 of the run)")
    return done


def _predict_one(state: RunState, done: Predicted, name: str, spec: LabelSpec, raw: pd.Series, target: Any,
                 sub: Progress) -> None:
    """Predict one label from one method's embedding; adds its metric rows and prediction columns to ``done``."""
    from backend.tasks.fusion import evaluate_fusion, select_rows
    from backend.tasks.intervals import add_interval_columns
    from backend.tasks.prediction import evaluate_ensemble, evaluate_label

    cfg, views, embedded = state.cfg, state.views, state.embedded
    keep = target.y.index
    rows = views.region_ids.get_indexer(keep)
    cv = {"models": tuple(cfg.prediction.models), "folds": cfg.prediction.folds,
          "repeats": cfg.prediction.repeats, "spatial": cfg.prediction.spatial, "seed": cfg.seed,
          "progress": sub, "coverage": cfg.prediction.coverage, "interval_model": cfg.prediction.write_model}
    y, coords = target.y.to_numpy(), np.asarray(views.centroids)[rows]
    combination: dict[str, str] = {}
    members = embedded.members.get(name, [])
    if name == "fusion":
        blocks = sub.wait(lambda: select_rows(embedded.fusion_blocks, rows), "fusion blocks of the labelled regions")
        result, choices = evaluate_fusion(blocks, y, coords,
                                          inner_folds=model_params(state.methods, "fusion").inner_folds, **cv)
        done.fusion_choices[spec.name] = {p: c.summary() for p, c in choices.items()}
        combination = {p: c.describe() for p, c in choices.items()}
        for p, text in combination.items():
            state.progress.log(f"fusion, {spec.name}, {p} folds: {text}")
    elif len(members) > 1:
        mats = sub.wait(lambda: [m.to_numpy()[rows] for m in members], "embeddings of the labelled regions")
        result = evaluate_ensemble(mats, y, coords, **cv)
    else:
        x = sub.wait(lambda: embedded.embeddings[name].to_numpy()[rows], "embedding of the labelled regions")
        result = evaluate_label(x, y, coords, **cv)
    table = metrics_table(result.metrics, name, spec.name, target, combination)
    done.metric_rows.extend(table[METRIC_COLUMNS].to_dict("records"))
    pred_model = pd.Series(result.oof[cfg.prediction.write_model], index=keep)
    pred = target.inverse(pred_model).reindex(views.region_ids)
    frame = done.predictions[name]
    for column, values in prediction_columns(spec.name, raw, pred).items():
        frame[column] = values
    done.predictions[name] = add_interval_columns(frame, spec.name, result, cfg.prediction.write_model, target, keep)
    done.obs_pred[name][spec.name] = (target.y.to_numpy(), pred_model.to_numpy())


def write_stage(state: RunState) -> Written:
    """Write the layers, tables and figures into the staging folder."""
    from backend.viz.report import write_cluster_cards

    progress, city, out = state.progress, state.city, state.out
    progress.stage("write outputs", 0.90, 1.0)
    gpkg = out.path(GPKG_NAME)
    layers: list[str] = []

    def add_layer(frame: pd.DataFrame, layer: str) -> None:
        write_layer(region_layer(frame, city.regions.geometry, city.crs), gpkg, layer, progress)
        layers.append(layer)

    for name, emb in state.embedded.embeddings.items():
        add_layer(emb, method_layer(LAYER_EMBEDDINGS, name, state.primary))
        if name in state.clusters:
            found = state.clusters[name]
            add_layer(found.layer(state.views.region_ids), method_layer(LAYER_CLUSTERS, name, state.primary))
            if len(found.profiles):
                profiles_table = method_layer(TABLE_CLUSTER_PROFILES, name, state.primary)
                write_table(found.profiles, gpkg, profiles_table)
                layers.append(profiles_table)
        if state.predicted.predictions[name].shape[1]:
            add_layer(state.predicted.predictions[name], method_layer(LAYER_PREDICTIONS, name, state.primary))
    metrics = pd.DataFrame(state.predicted.metric_rows, columns=METRIC_COLUMNS)
    write_table(metrics, gpkg, TABLE_METRICS)
    layers.append(TABLE_METRICS)
    progress.update(0.4, "layers written")
    figures = _write_figures(state) if state.cfg.figures else []
    clusters = {name: (c.labels, c.names, c.profiles) for name, c in state.clusters.items()}
    # every method's embedding read once more (seconds for 250,000 x 384): under wait
    cards = progress.wait(lambda: write_cluster_cards(out.path(CLUSTER_CARDS_JSON), clusters,
                                                      state.embedded.embeddings, state.views.region_ids),
                          "cluster cards")
    return Written(layers=layers, figures=figures, cluster_cards=cards is not None)


def _write_figures(state: RunState) -> list[str]:
    """Every method's figures; returns their final paths."""
    from backend.viz.figures import plot_cluster_profiles, plot_embedding_2d, plot_pred_vs_obs, plot_training_loss
    from backend.viz.report import plot_run_figures

    out, clusters, views = state.out, state.clusters, state.views
    figures: list[str] = []
    for model in state.methods:
        name = model.name
        sfx = method_layer("", name, state.primary)  # "" or "_<method>", as the layers
        found = clusters.get(name)
        labels = found.labels if found is not None else np.zeros(len(views), dtype=int)
        figures.append(str(plot_embedding_2d(state.embedded.embeddings[name].to_numpy(), labels,
                                             out.path("figures", f"embedding_2d{sfx}.png"),
                                             title=f"{name}: embeddings (PCA), coloured by cluster",
                                             names=found.names if found is not None else None)))
        if found is not None and len(found.profiles):
            figures.append(str(plot_cluster_profiles(found.profiles,
                                                     out.path("figures", f"cluster_profiles{sfx}.png"))))
        obs_pred = state.predicted.obs_pred[name]
        if obs_pred:
            figures.append(str(plot_pred_vs_obs(obs_pred, out.path("figures", f"pred_vs_obs{sfx}.png"),
                                                title=f"{name}: out-of-fold predictions (model space)")))
        if model.history:
            figures.append(str(plot_training_loss(model.history, out.path("figures", f"training_loss{sfx}.png"))))
    cfg, primary, found = state.cfg, state.primary, clusters.get(state.primary)
    figures += plot_run_figures(out.path("figures", "x").parent, state.predicted.metric_rows,
                                cfg.prediction and cfg.prediction.write_model, primary,
                                None if found is None else (found.labels, found.names, found.profiles),
                                state.predicted.predictions[primary], state.city.regions.geometry, state.city.crs,
                                state.predicted.label_units)
    return [str(out.final_path(*Path(f).relative_to(out.staging).parts)) for f in figures]


def manifest(state: RunState, seconds: float) -> dict[str, Any]:
    """The run manifest (``run.json``)."""
    cfg, views, context, predicted = state.cfg, state.views, state.context, state.predicted
    return {
        "regionlens": __version__,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "device_requested": cfg.device,
        "device": state.device,
        "methods": [m.name for m in state.methods],
        "primary_method": state.primary,
        "n_regions": len(views),
        "views": sorted(views.available()),
        "timings_s": state.timings,
        "total_s": seconds,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "versions": package_versions(),
        "report": state.report,
        "log": [line for line in state.progress.log_messages if line not in state.report],  # each note once
        "layers": state.written.layers,
        "metrics": predicted.metric_rows,
        "label_units": predicted.label_units,
        "context": None if context is None else {"rings": context.rings, "distances_m": context.distances_m},
        "ensembles": {m.name: len(m.members) for m in state.methods if hasattr(m, "members")},
        "fusion": predicted.fusion_choices,
    }


#: The run's stages in order: (timing key, function of the state, the state field it fills). The embed
#: stage times each method itself (``embed_<method>``).
STAGES: tuple[tuple[str | None, Callable[[RunState], Any], str], ...] = (
    ("read", read_stage, "city"),
    ("views", views_stage, "views"),
    (None, embed_stage, "embedded"),
    ("cluster", cluster_stage, "clusters"),
    ("predict", predict_stage, "predicted"),
    ("write", write_stage, "written"),
)


def run_pipeline(cfg: RunConfig, progress: Progress | None = None, protect: tuple[str, ...] = ()) -> RunResult:
    """Run the whole job described by ``cfg``: the :data:`STAGES` in order, then the manifest and the commit.

    Args:
        cfg: The run configuration.
        progress: Progress reporter and cancel flag.
        protect: Further paths the run must never replace (the configuration file); the inputs and the
            current directory are always protected.

    Returns:
        The final output paths, metrics and the device that ran.

    Raises:
        InputError, ConfigError, OutputError: On bad input, configuration or output folder (nothing written).
        Cancelled: If cancelled through ``progress`` (nothing written).
    """
    progress = progress or Progress()
    t_start = time.perf_counter()
    # Fail on an unusable output folder or device before any work.
    with OutputFolder(cfg.output_dir, overwrite=cfg.overwrite, protect=[*input_paths(cfg), *protect]) as out:
        state = start(cfg, progress, out)
        for key, stage, slot in STAGES:
            t0 = time.perf_counter()
            setattr(state, slot, stage(state))
            if key is not None:
                state.timings[key] = round(time.perf_counter() - t0, 3)
        seconds = round(time.perf_counter() - t_start, 3)
        write_json(manifest(state, seconds), out.path(RUN_JSON))
        from backend.viz.report import write_report

        write_report(out.staging)
        final = out.commit()
        progress.update(1.0, f"outputs in {final}")
    return RunResult(output_dir=str(final), gpkg=str(final / GPKG_NAME), run_json=str(final / RUN_JSON),
                     figures=state.written.figures, metrics=state.predicted.metric_rows, device=state.device,
                     seconds=seconds, primary_method=state.primary, layers=state.written.layers,
                     report=state.report, report_html=str(final / REPORT_HTML),
                     cluster_cards=str(final / CLUSTER_CARDS_JSON) if state.written.cluster_cards else "")
