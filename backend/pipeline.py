"""The whole RegionLens job: read inputs, build views, learn embeddings with every chosen method,
cluster them, predict every label out of fold, and write the outputs atomically.

Used by the CLI (``python -m backend run``) and the worker (``python -m backend.worker``).
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from backend import __version__
from backend.config import RunConfig, input_paths
from backend.device import resolve_device
from backend.errors import ConfigError, InputError
from backend.io.outputs import GPKG_NAME, OutputFolder, write_json, write_layer, write_table
from backend.progress import Progress
from regionlens_common import CLUSTER_NAME_FIELD

__all__ = ["RunResult", "run_pipeline", "package_versions"]

METRIC_COLUMNS = [
    "method", "label", "target", "units", "model", "protocol", "n_regions",
    "mae_mean", "mae_std", "rmse_mean", "rmse_std", "r2_mean", "r2_std", "combination",
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
            return get_embedder(m.name, dim=m.dim, seed=seed, device=device, **m.params)

        methods.append(SeedEnsemble.of(make, m.ensemble, cfg.seed) if m.ensemble > 1 else make(cfg.seed))
    if "fusion" in {m.name for m in methods} and len(methods) == 1 and not cfg.pois and not cfg.rasters \
            and not cfg.od and not cfg.landuse:
        raise InputError("fusion combines the run's other methods and raw views; add another method or inputs.")
    return sorted(methods, key=lambda m: m.name != "fusion")


def model_params(methods: list[Any], name: str) -> Any:
    """The parameters of the run's method ``name``."""
    return next(m for m in methods if m.name == name).params


def _suffix(method: str, primary: str) -> str:
    return "" if method == primary else f"_{method}"


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


def run_pipeline(cfg: RunConfig, progress: Progress | None = None, protect: tuple[str, ...] = ()) -> RunResult:
    """Run the whole job described by ``cfg``.

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
    from backend.io.city import read_city
    from backend.io.labels import label_areas, unreported_drops
    from backend.tasks.clustering import cluster, cluster_names, cluster_profiles, profile_features
    from backend.tasks.context import SpatialContext, parse_context
    from backend.tasks.fusion import evaluate_fusion, select_rows
    from backend.tasks.prediction import evaluate_ensemble, evaluate_label
    from backend.tasks.targets import make_target
    from backend.views.build import build_views

    progress = progress or Progress()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    report: list[str] = []

    def timed(stage: str, t0: float) -> None:
        timings[stage] = round(time.perf_counter() - t0, 3)

    def note(message: str) -> None:
        report.append(message)
        progress.log(message)

    # Fail on an unusable output folder or device before any work.
    with OutputFolder(cfg.output_dir, overwrite=cfg.overwrite, protect=[*input_paths(cfg), *protect]) as out:
        for stale in out.removed_stale:
            progress.log(f"removed {stale.name}, the unfinished output of a run that was stopped")
        device = resolve_device(cfg.device)
        progress.log(f"device: {device}")
        methods = _make_methods(cfg, device)
        primary = methods[0].name
        context = parse_context(cfg.context)

        t0 = time.perf_counter()
        progress.stage("read inputs", 0.0, 0.10)
        city = read_city(cfg, progress, check_regions=lambda n: check_region_count(cfg, n))
        report.extend(city.report)
        for line in city.report:
            progress.log(line)
        timed("read", t0)

        t0 = time.perf_counter()
        progress.stage("build views", 0.10, 0.25)
        needs: set[str] = set()
        for m in methods:
            needs.update(m.uses_views)
        views = build_views(city, needs=needs, chip_size=cfg.chip_size, progress=progress, report=report)
        timed("views", t0)
        progress.log(f"views: {', '.join(sorted(views.available()))} for {len(views)} regions")

        embeddings: dict[str, pd.DataFrame] = {}  # what is written and clustered (with the run's context)
        learned: dict[str, pd.DataFrame] = {}  # as each method learned it (fusion's sources)
        members: dict[str, list[pd.DataFrame]] = {}  # seed ensembles: every member's embedding (with context)
        learned_members: dict[str, list[pd.DataFrame]] = {}  # seed ensembles' members as learned (for fusion)
        fusion_blocks: dict[str, Any] = {}
        span = 0.35 / len(methods)
        # fusion combines the others, so it is fitted last (it stays first in the outputs when primary)
        for i, model in enumerate(sorted(methods, key=lambda m: m.name == "fusion")):
            t0 = time.perf_counter()
            progress.stage(f"embed: {model.name}", 0.25 + i * span, 0.25 + (i + 1) * span)
            folder = out.path("models", model.name)
            if model.name == "fusion":
                model.set_sources(learned, members=learned_members)
                emb = model.fit_transform(views, progress)
                fusion_blocks = model.prediction_blocks(views)
            elif hasattr(model, "fit_members"):  # seed ensemble
                members[model.name] = learned_members[model.name] = model.fit_members(views, progress)
                emb = model.combine(members[model.name])
            else:
                emb = model.fit_transform(views, progress)
            if not np.isfinite(emb.to_numpy()).all():
                raise InputError(f"{model.name} produced non-finite embeddings; check the inputs for extreme values.")
            model.save(folder)
            learned[model.name] = emb
            if context is not None and model.name != "fusion":  # fusion applies its own context per block
                stage = SpatialContext(context).fit(emb)
                emb = stage.transform(emb, views.geometry)
                members[model.name] = [stage.transform(m, views.geometry) for m in members.get(model.name, [])]
                stage.save(folder)
            embeddings[model.name] = emb
            timed(f"embed_{model.name}", t0)
            progress.log(f"{model.name}: {emb.shape[1]}-d embeddings in {timings[f'embed_{model.name}']:.1f} s")
        embeddings = {m.name: embeddings[m.name] for m in methods}  # output order: primary first

        # Clustering
        t0 = time.perf_counter()
        progress.stage("cluster", 0.60, 0.65)
        features = profile_features(views)
        clusters: dict[str, tuple[np.ndarray, dict[int, str], pd.DataFrame]] = {}
        if cfg.clustering is not None:
            for i, (name, emb) in enumerate(embeddings.items()):
                try:
                    res = cluster(emb.to_numpy(), k=cfg.clustering.k, method=cfg.clustering.method,
                                  k_min=cfg.clustering.k_min, k_max=cfg.clustering.k_max, seed=cfg.seed,
                                  progress=progress.sub("cluster", i / len(embeddings), (i + 1) / len(embeddings)))
                except InputError as exc:
                    note(f"{name}: no clusters ({exc})")
                    continue
                for line in res.warnings:
                    note(f"{name}: {line}")
                profiles = cluster_profiles(res.labels, features)
                if profiles.empty:
                    note(f"{name}: no interpretable input feature (POI categories, image, land use, region area) "
                         "to profile clusters with; profiles use the embedding dimensions and clusters are named "
                         "by their most typical regions")
                    profiles = cluster_profiles(res.labels, emb.reset_index(drop=True))
                names = cluster_names(profiles, res.labels, emb.to_numpy(), views.region_ids)
                profiles.insert(1, "cluster_name", profiles["cluster"].map(names))
                clusters[name] = (res.labels, names, profiles)
                progress.log(f"{name}: {res.k} clusters (silhouette {res.silhouette:.3f} over "
                             f"{res.n_distinct} distinct embeddings)")
                progress.update(1.0)
        timed("cluster", t0)

        # Prediction
        t0 = time.perf_counter()
        progress.stage("predict", 0.65, 0.90)
        metric_rows: list[dict[str, Any]] = []
        predictions: dict[str, pd.DataFrame] = {name: pd.DataFrame(index=views.region_ids) for name in embeddings}
        obs_pred: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {name: {} for name in embeddings}
        label_units: dict[str, str] = {}
        fusion_choices: dict[str, dict[str, Any]] = {}
        if cfg.prediction is not None and cfg.labels:
            if city.labels is None:
                raise InputError("Labels were configured but none could be read.")
            areas = label_areas(views.areas_km2)
            n_jobs = len(cfg.labels) * len(embeddings)
            job = 0
            for spec in cfg.labels:
                raw = city.labels[spec.name].reindex(views.region_ids)
                per = city.labels.get(f"{spec.name}__per")
                per = None if per is None else per.reindex(views.region_ids)
                target = make_target(raw, spec, areas, per)
                label_units[spec.name] = target.units
                dropped = unreported_drops(spec, raw, per, areas, target)
                if dropped:
                    note(dropped)
                keep = target.y.index
                rows = views.region_ids.get_indexer(keep)
                for name, emb in embeddings.items():
                    sub = progress.sub(f"predict {spec.name} ({name})", job / n_jobs, (job + 1) / n_jobs)
                    job += 1
                    cv = {"models": tuple(cfg.prediction.models), "folds": cfg.prediction.folds,
                          "repeats": cfg.prediction.repeats, "spatial": cfg.prediction.spatial, "seed": cfg.seed,
                          "progress": sub}
                    y, coords = target.y.to_numpy(), np.asarray(views.centroids)[rows]
                    combination: dict[str, str] = {}
                    if name == "fusion":
                        result, choices = evaluate_fusion(select_rows(fusion_blocks, rows), y, coords,
                                                          inner_folds=model_params(methods, "fusion").inner_folds,
                                                          **cv)
                        fusion_choices[spec.name] = {p: c.summary() for p, c in choices.items()}
                        combination = {p: c.describe() for p, c in choices.items()}
                        for p, text in combination.items():
                            progress.log(f"fusion, {spec.name}, {p} folds: {text}")
                    elif len(members.get(name, [])) > 1:
                        result = evaluate_ensemble([m.to_numpy()[rows] for m in members[name]], y, coords, **cv)
                    else:
                        result = evaluate_label(emb.to_numpy()[rows], y, coords, **cv)
                    table = result.metrics.copy()
                    table.insert(0, "units", target.units)
                    table["combination"] = [combination.get(p, "") for p in table["protocol"]]
                    table.insert(0, "target", target.description)
                    table.insert(0, "label", spec.name)
                    table.insert(0, "method", name)
                    metric_rows.extend(table[METRIC_COLUMNS].to_dict("records"))
                    pred_model = pd.Series(result.oof[cfg.prediction.write_model], index=keep)
                    pred = target.inverse(pred_model).reindex(views.region_ids)
                    frame = predictions[name]
                    frame[f"{spec.name}_obs"] = raw.astype(float)
                    frame[f"{spec.name}_pred"] = pred
                    frame[f"{spec.name}_res"] = raw.astype(float) - pred
                    obs_pred[name][spec.name] = (target.y.to_numpy(), pred_model.to_numpy())
        timed("predict", t0)

        # Outputs
        t0 = time.perf_counter()
        progress.stage("write outputs", 0.90, 1.0)
        gpkg = out.path(GPKG_NAME)
        geometry = city.regions.geometry
        layers: list[str] = []
        figures: list[str] = []

        def add_layer(frame: pd.DataFrame, layer: str) -> None:
            gdf = gpd.GeoDataFrame(frame.copy(), geometry=geometry.reindex(frame.index).values, crs=city.crs)
            gdf.index = gdf.index.astype(str).rename("region_id")
            write_layer(gdf, gpkg, layer, progress)
            layers.append(layer)

        for name, emb in embeddings.items():
            sfx = _suffix(name, primary)
            add_layer(emb, f"embeddings{sfx}")
            if name in clusters:
                labels, texts, profiles = clusters[name]
                cl = pd.DataFrame({"cluster": labels.astype(int)}, index=views.region_ids)
                cl[CLUSTER_NAME_FIELD] = [texts.get(int(c), "") for c in labels]
                add_layer(cl, f"clusters{sfx}")
                if len(profiles):
                    write_table(profiles, gpkg, f"cluster_profiles{sfx}")
                    layers.append(f"cluster_profiles{sfx}")
            if predictions[name].shape[1]:
                add_layer(predictions[name], f"predictions{sfx}")
        metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
        write_table(metrics, gpkg, "metrics")
        layers.append("metrics")
        progress.update(0.4, "layers written")

        if cfg.figures:
            from backend.viz.figures import (
                plot_cluster_profiles,
                plot_embedding_2d,
                plot_pred_vs_obs,
                plot_training_loss,
            )

            for model in methods:
                name = model.name
                sfx = _suffix(name, primary)
                labels = clusters[name][0] if name in clusters else np.zeros(len(views), dtype=int)
                figures.append(str(plot_embedding_2d(embeddings[name].to_numpy(), labels,
                                                     out.path("figures", f"embedding_2d{sfx}.png"),
                                                     title=f"{name}: embeddings (PCA), coloured by cluster",
                                                     names=clusters[name][1] if name in clusters else None)))
                if name in clusters and len(clusters[name][2]):
                    figures.append(str(plot_cluster_profiles(clusters[name][2],
                                                             out.path("figures", f"cluster_profiles{sfx}.png"))))
                if obs_pred[name]:
                    figures.append(str(plot_pred_vs_obs(obs_pred[name], out.path("figures", f"pred_vs_obs{sfx}.png"),
                                                        title=f"{name}: out-of-fold predictions (model space)")))
                if model.history:
                    figures.append(str(plot_training_loss(model.history,
                                                          out.path("figures", f"training_loss{sfx}.png"))))
            figures = [str(out.final_path(*Path(f).relative_to(out.staging).parts)) for f in figures]
        timed("write", t0)

        seconds = round(time.perf_counter() - t_start, 3)
        manifest = {
            "regionlens": __version__,
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "device_requested": cfg.device,
            "device": device,
            "methods": [m.name for m in methods],
            "primary_method": primary,
            "n_regions": len(views),
            "views": sorted(views.available()),
            "timings_s": timings,
            "total_s": seconds,
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "versions": package_versions(),
            "report": report,
            "log": [line for line in progress.log_messages if line not in report],  # each note once
            "layers": layers,
            "metrics": metric_rows,
            "label_units": label_units,
            "context": None if context is None else {"rings": context.rings, "distances_m": context.distances_m},
            "ensembles": {m.name: len(m.members) for m in methods if hasattr(m, "members")},
            "fusion": fusion_choices,
        }
        write_json(manifest, out.path("run.json"))
        final = out.commit()
        progress.update(1.0, f"outputs in {final}")

    return RunResult(
        output_dir=str(final),
        gpkg=str(final / GPKG_NAME),
        run_json=str(final / "run.json"),
        figures=figures,
        metrics=metric_rows,
        device=device,
        seconds=seconds,
        primary_method=primary,
        layers=layers,
        report=report,
    )
