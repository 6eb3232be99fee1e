"""Run configuration: what to read, which methods to run, which tasks to evaluate, where to write.

A configuration is a TOML or JSON file (or the same structure as a dict from the worker). Relative
paths are resolved against the configuration file's folder. Example (TOML)::

    output_dir = "out/my_run"
    seed = 0
    device = "auto"

    [regions]
    path = "blocks.gpkg"
    id_field = "GEO_ID"

    [pois]
    path = "pois.gpkg"
    category_field = "category"
    name_field = "name"

    [[rasters]]
    path = "image.tif"

    [[labels]]
    name = "population"
    field = "Population"
    target = "density"
    log1p = true

    [[methods]]
    name = "baseline"
    dim = 32

    [clustering]
    k = "auto"

    [prediction]
    folds = 5
    repeats = 3
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.errors import ConfigError
from regionlens_common import AUTO_K_MAX, AUTO_K_MIN, LABEL_NAME_PATTERN

__all__ = [
    "RegionsSource",
    "PoiSource",
    "RasterSource",
    "OdSource",
    "LandUseSource",
    "LabelSpec",
    "MethodSpec",
    "ClusteringSpec",
    "PredictionSpec",
    "RunConfig",
    "load_config",
]


@dataclass
class RegionsSource:
    """Region polygons."""

    path: str  # any OGR-readable file (GeoPackage, GeoJSON, shapefile, ...)
    id_field: str  # unique region identifier
    layer: str | None = None  # layer name inside a multi-layer file


@dataclass
class PoiSource:
    """Points of interest."""

    path: str
    category_field: str  # POI category (e.g. OSM amenity value)
    name_field: str | None = None  # optional POI name
    layer: str | None = None


@dataclass
class RasterSource:
    """One satellite image (GeoTIFF, any CRS)."""

    path: str
    name: str | None = None  # short name used in feature columns; defaults to the file stem
    bands: list[int] | None = None  # 1-based band indices; default: the first three (or all if fewer)


@dataclass
class OdSource:
    """Origin-destination flows between regions (CSV)."""

    path: str
    origin_field: str = "origin"
    destination_field: str = "destination"
    count_field: str = "count"


@dataclass
class LandUseSource:
    """Land-use polygons with a class field."""

    path: str
    class_field: str
    layer: str | None = None


@dataclass
class LabelSpec:
    """A quantity to predict from the embeddings (never seen by the embedders).

    Either ``field`` (a numeric field of the region layer) or ``points`` (a point layer counted per
    region) must be given.
    """

    name: str  # short name used in output columns (letters, digits, underscore)
    field: str | None = None  # numeric field of the region layer
    points: str | None = None  # path of a point layer counted per region
    points_layer: str | None = None
    points_filter_field: str | None = None  # count only points whose field ...
    points_filter_value: str | None = None  # ... equals this value
    target: str = "count"  # "count", "density" (per km2) or "rate" (per unit of ``per_field``)
    per_field: str | None = None  # denominator field for target = "rate" (e.g. Population)
    log1p: bool = False  # model log1p(target); predictions are written back in the label's units


@dataclass
class MethodSpec:
    """One embedding method and its parameters."""

    name: str  # registry name, e.g. "baseline"
    dim: int = 32  # embedding size
    params: dict[str, Any] = field(default_factory=dict)  # method-specific parameters


@dataclass
class ClusteringSpec:
    """k-means clustering of the embeddings."""

    k: int | str = "auto"  # number of clusters, or "auto" (best silhouette in [k_min, k_max])
    k_min: int = AUTO_K_MIN
    k_max: int = AUTO_K_MAX
    method: str = "kmeans"  # "kmeans" or "agglomerative"


@dataclass
class PredictionSpec:
    """Out-of-fold prediction of every label from every method's embeddings."""

    models: list[str] = field(default_factory=lambda: ["ridge", "gbm"])  # ridge = RidgeCV, gbm = gradient boosting
    folds: int = 5
    repeats: int = 3  # shuffled K-fold repeated over this many seeds
    spatial: bool = True  # also spatially blocked K-fold
    write_model: str = "ridge"  # model whose out-of-fold predictions fill the predictions layer


@dataclass
class RunConfig:
    """Everything one run needs."""

    regions: RegionsSource
    output_dir: str
    pois: PoiSource | None = None
    rasters: list[RasterSource] = field(default_factory=list)
    od: OdSource | None = None
    landuse: LandUseSource | None = None
    labels: list[LabelSpec] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec("baseline")])
    clustering: ClusteringSpec | None = field(default_factory=ClusteringSpec)
    prediction: PredictionSpec | None = field(default_factory=PredictionSpec)
    seed: int = 0
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, mps
    overwrite: bool = False  # replace an existing output folder (never done silently)
    figures: bool = True
    chip_size: int = 64  # side of the per-region image chips, in pixels, for methods that use chips

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for run.json and the worker protocol)."""
        return asdict(self)


_SECTIONS: dict[str, type] = {
    "regions": RegionsSource,
    "pois": PoiSource,
    "od": OdSource,
    "landuse": LandUseSource,
    "clustering": ClusteringSpec,
    "prediction": PredictionSpec,
}
_LISTS: dict[str, type] = {"rasters": RasterSource, "labels": LabelSpec, "methods": MethodSpec}


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table/object, got {type(data).__name__}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{where}] has unknown keys {unknown}; allowed: {sorted(known)}.")
    try:
        return cls(**data)
    except TypeError as exc:  # missing required key
        raise ConfigError(f"[{where}] is incomplete: {exc}.") from exc


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))


def config_from_dict(data: dict[str, Any], base_dir: str | Path = ".") -> RunConfig:
    """Build and validate a :class:`RunConfig` from a dict; relative paths resolve against ``base_dir``.

    Raises:
        ConfigError: On unknown keys, missing required keys or contradictory settings.
    """
    base = Path(base_dir)
    data = dict(data)
    if "regions" not in data:
        raise ConfigError("The configuration needs a [regions] section (path and id_field).")
    if "output_dir" not in data:
        raise ConfigError("The configuration needs output_dir (the folder the results go to).")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = None if value is None else _build(_SECTIONS[key], value, key)
        elif key in _LISTS:
            if not isinstance(value, list):
                raise ConfigError(f"'{key}' must be a list ([[{key}]] in TOML).")
            kwargs[key] = [_build(_LISTS[key], v, f"{key}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[key] = value
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"Unknown configuration keys {unknown}; allowed: {sorted(known)}.")
    cfg = RunConfig(**kwargs)
    cfg.output_dir = _resolve(cfg.output_dir, base) or cfg.output_dir
    cfg.regions.path = _resolve(cfg.regions.path, base) or ""
    if cfg.pois:
        cfg.pois.path = _resolve(cfg.pois.path, base) or ""
    for r in cfg.rasters:
        r.path = _resolve(r.path, base) or ""
    if cfg.od:
        cfg.od.path = _resolve(cfg.od.path, base) or ""
    if cfg.landuse:
        cfg.landuse.path = _resolve(cfg.landuse.path, base) or ""
    for lab in cfg.labels:
        lab.points = _resolve(lab.points, base)
    _validate(cfg)
    return cfg


def _validate(cfg: RunConfig) -> None:
    if not cfg.methods:
        raise ConfigError("No methods chosen; add at least one [[methods]] entry (e.g. name = \"baseline\").")
    names = [m.name for m in cfg.methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"Each method may appear once; got {names}.")
    seen: set[str] = set()
    for lab in cfg.labels:
        if not LABEL_NAME_PATTERN.fullmatch(lab.name):
            raise ConfigError(
                f"Label name '{lab.name}' must start with a letter and hold only letters, digits and "
                "underscores (at most 31 characters)."
            )
        if lab.name in seen:
            raise ConfigError(f"Label name '{lab.name}' is used twice.")
        seen.add(lab.name)
        if (lab.field is None) == (lab.points is None):
            raise ConfigError(f"Label '{lab.name}' needs exactly one of 'field' or 'points'.")
        if lab.target not in {"count", "density", "rate"}:
            raise ConfigError(f"Label '{lab.name}': target must be count, density or rate, not '{lab.target}'.")
        if lab.target == "rate" and not lab.per_field:
            raise ConfigError(f"Label '{lab.name}': target 'rate' needs per_field (e.g. Population).")
    if cfg.prediction is not None:
        bad = sorted(set(cfg.prediction.models) - {"ridge", "gbm"})
        if bad:
            raise ConfigError(f"Unknown prediction models {bad}; use ridge and/or gbm.")
        if cfg.prediction.folds < 2:
            raise ConfigError("prediction.folds must be at least 2.")
        if cfg.prediction.write_model not in cfg.prediction.models:
            raise ConfigError("prediction.write_model must be one of prediction.models.")
    if cfg.clustering is not None:
        k = cfg.clustering.k
        if not (k == "auto" or (isinstance(k, int) and k >= 2)):
            raise ConfigError(f"clustering.k must be 'auto' or an integer >= 2, not {k!r}.")
        if cfg.clustering.method not in {"kmeans", "agglomerative"}:
            raise ConfigError("clustering.method must be kmeans or agglomerative.")


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML (``.toml``) or JSON configuration file.

    Raises:
        ConfigError: If the file is missing, unparsable or invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Configuration file not found: {p}.")
    text = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot parse {p}: {exc}") from exc
    return config_from_dict(data, base_dir=p.parent.resolve())
