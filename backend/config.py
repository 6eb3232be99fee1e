"""Run configuration: what to read, which methods to run, which tasks to evaluate, where to write.

A configuration is a TOML or JSON file (or the same structure as a dict from the worker). Relative
paths are resolved against the configuration file's folder. Example (TOML)::

    output_dir = "out/my_run"
    seed = 0
    device = "auto"
    nproc = 1  # training processes (docs/scale.md, "Distributed training")

    [regions]
    path = "blocks.gpkg"
    id_field = "GEO_ID"

    [pois]
    path = "pois.gpkg"
    category_field = "category"
    name_field = "name"

    [[rasters]]
    path = "image.tif"

    [[rasters]]                  # a satellite-embedding raster (AlphaEarth, TESSERA): docs/sources.md
    path = "alphaearth_2024.tif"
    kind = "embedding"

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
    coverage = 0.9
"""

from __future__ import annotations

import json
import math
import re
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.errors import ConfigError
from regionlens_common import (
    AUTO_K_MAX,
    AUTO_K_MIN,
    COVERAGE_RANGE,
    DEFAULT_COVERAGE,
    DEFAULT_METHOD,
    DEVICES,
    LABEL_NAME_PATTERN,
    POI_FILE_SUFFIXES,
    PREDICTION_MODELS,
    RASTER_KINDS,
)

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
    "config_from_dict",
    "input_paths",
    "input_sources",
    "INPUT_KINDS",
    "load_config",
    "DEVICES",
    "DEQUANTIZE",
    "LIMITS",
    "check_nproc",
    "check_value",
]

#: The input kinds: each a section of the configuration (a field of :class:`RunConfig`), read by its entry in
#: ``backend.io.city.INPUT_READERS`` into the CityData field of the same name and turned into views by its entry
#: in ``backend.views.build.VIEW_BUILDERS`` (docs/development.md, "Adding an input kind").
INPUT_KINDS = ("regions", "pois", "rasters", "od", "landuse")
#: Values of a raster's ``dequantize``: auto (int8 rasters use the AlphaEarth formula), alphaearth, none.
DEQUANTIZE = ("auto", "alphaearth", "none")
#: Accepted ranges (inclusive) of the numeric settings, checked before any input is read.
LIMITS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**32 - 1),
    "chip_size": (8, 1024),
    "dim": (1, 4096),
    "folds": (2, 100),
    "repeats": (1, 100),
    "k": (2, 1000),
    "band": (1, 10_000),
    "ensemble": (1, 20),
    "nproc": (1, 64),
}


@dataclass
class RegionsSource:
    """Region polygons."""

    path: str  # any OGR-readable file (GeoPackage, GeoJSON, shapefile, ...)
    id_field: str  # unique region identifier
    layer: str | None = None  # layer name inside a multi-layer file


@dataclass
class PoiSource:
    """Points of interest: a point layer, an OpenStreetMap extract or a GeoParquet file (docs/sources.md)."""

    path: str  # a point layer; a .osm.pbf extract; or GeoParquet (.parquet: Overture places or any point layer)
    category_field: str | None = None  # POI category (e.g. OSM amenity value); not for .osm.pbf; default for
    # GeoParquet: Overture's categories.primary (a dotted name reads a field of a struct column)
    name_field: str | None = None  # optional POI name (GeoParquet default: Overture's names.primary)
    layer: str | None = None
    osm_tags: list[str] | None = None  # .osm.pbf only: tag keys (or key=value) in priority order; default in
    # backend.io.poi_files.OSM_TAGS


@dataclass
class RasterSource:
    """One satellite image or satellite-embedding raster (GeoTIFF, any CRS)."""

    path: str
    name: str | None = None  # short name used in feature columns; defaults to the file stem
    bands: list[int] | None = None  # 1-based band indices; default: imagery the first three, embedding all
    kind: str = "imagery"  # "imagery" or "embedding" (regionlens_common.RASTER_KINDS; docs/sources.md)
    std: bool = False  # embedding: add the per-region standard deviation of every band to the mean
    dequantize: str = "auto"  # embedding: "auto" (int8 -> AlphaEarth formula), "alphaearth" or "none"


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
    ensemble: int = 1  # train this many seeds; predictions average them (learned methods only)


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

    models: list[str] = field(default_factory=lambda: list(PREDICTION_MODELS))  # ridge = RidgeCV, gbm = boosting
    folds: int = 5
    repeats: int = 3  # shuffled K-fold repeated over this many seeds
    spatial: bool = True  # also spatially blocked K-fold
    write_model: str = PREDICTION_MODELS[0]  # model whose out-of-fold predictions fill the predictions layer
    coverage: float = DEFAULT_COVERAGE  # nominal coverage of the CV+ prediction intervals (<label>_lo, _hi)


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
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec(DEFAULT_METHOD)])
    clustering: ClusteringSpec | None = field(default_factory=ClusteringSpec)
    prediction: PredictionSpec | None = field(default_factory=PredictionSpec)
    seed: int = 0
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, mps
    # training processes: above 1, HAFusion (scalable), CaLLiPer, CooKIE and ReFound train data-parallel
    # (torch.distributed; one process per GPU on CUDA); docs/scale.md
    nproc: int = 1
    overwrite: bool = False  # replace an existing output folder (never done silently)
    figures: bool = True
    chip_size: int = 64  # side of the per-region image chips, in pixels, for methods that use chips
    # neighbour means appended to every method's embedding: a preset ("standard") or
    # {rings = 1, distances_m = [1000]}; see backend.tasks.context
    context: Any = None
    # whose layers are unsuffixed: "auto" (fusion when in the run, else the first method), "best" (the highest
    # cross-validated R2 of the run, see backend/tasks/leaderboard.py) or a method name of the run
    primary: str = "auto"

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


_NONE = type(None)


def _describe(hint: Any) -> str:
    """How to name a type in a message: ``an integer``, ``a list of texts``, ..."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(hint) if a is not _NONE]
        text = " or ".join(parts)
        return f"{text} (or left out)" if _NONE in typing.get_args(hint) else text
    if origin is list:
        (inner,) = typing.get_args(hint) or (Any,)
        return f"a list of {_describe(inner).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a table/object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a text"}.get(hint, "a value")


def check_value(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` of setting ``key``; returns it (integers become floats for a
    float setting).

    Raises:
        ConfigError: Naming ``key``, the expected type and the value given (a lone text where a list is
            expected gets the list form to write).
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and _NONE in args:
            return None
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return check_value(value, arg, key)
            except ConfigError:
                continue
    elif origin is list:
        if isinstance(value, list):
            (inner,) = typing.get_args(hint) or (Any,)
            return [check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):
            raise ConfigError(
                f"'{key}' must be {_describe(hint)}, not the text {value!r}: write {key.rsplit('.', 1)[-1]} = "
                f"[{json.dumps(value)}]."
            )
    elif origin is dict:
        if isinstance(value, dict):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"'{key}' must be a finite number, not {value!r}.")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    given = "a text" if isinstance(value, str) else f"a {type(value).__name__}"
    if isinstance(value, bool):
        given = "true/false"
    raise ConfigError(f"'{key}' must be {_describe(hint)}, not {value!r} ({given}).")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table/object, got {type(data).__name__}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{where}] has unknown keys {unknown}; allowed: {sorted(known)}.")
    hints = _hints(cls)
    checked = {key: check_value(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**checked)
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
    if not isinstance(data, dict):
        raise ConfigError(f"A run configuration must be a table/object, not {type(data).__name__}.")
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
    hints = _hints(RunConfig)
    for key in set(kwargs) - set(_SECTIONS) - set(_LISTS):
        kwargs[key] = check_value(kwargs[key], hints[key], key)
    cfg = RunConfig(**kwargs)
    if not cfg.output_dir.strip():
        raise ConfigError("'output_dir' is empty; give the folder the results go to.")
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
    _validate_methods(cfg)
    return cfg


def input_sources(cfg: RunConfig) -> list[Any]:
    """The configured source of every input kind (:data:`INPUT_KINDS`), rasters one by one."""
    out: list[Any] = []
    for kind in INPUT_KINDS:
        value = getattr(cfg, kind)
        out += [src for src in (value if isinstance(value, list) else [value]) if src is not None]
    return out


def input_paths(cfg: RunConfig) -> list[str]:
    """Every input file a run reads (a run must never replace or delete them)."""
    paths = [src.path for src in input_sources(cfg)]
    paths += [lab.points for lab in cfg.labels if lab.points]
    return [p for p in paths if p]


def check_nproc(value: Any, key: str = "nproc") -> int:
    """``value`` as a number of training processes (an integer within ``LIMITS["nproc"]``).

    Raises:
        ConfigError: Naming ``key`` and the accepted range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"'{key}' must be an integer (training processes), not {value!r}.")
    _in_range(value, "nproc", key)
    return value


def _in_range(value: int, name: str, key: str) -> None:
    lo, hi = LIMITS[name]
    if not lo <= value <= hi:
        raise ConfigError(f"'{key}' must lie between {lo} and {hi}, not {value}.")


def _gives(cfg: RunConfig, view: str, given: set[str]) -> bool:
    """Whether the configured inputs give ``view`` (an embedding raster gives ``embedding`` only, imagery the rest)."""
    from backend.views.build import view_input

    source = view_input(view)
    if source in RASTER_KINDS:
        return any(r.kind == source for r in cfg.rasters)
    return source in given


def _validate_methods(cfg: RunConfig) -> None:
    """Check every method's name, dim and parameters (types from its Params, ranges by its own checks)."""
    from backend.models import EMBEDDERS
    from backend.models._base import inputs_for

    given = {kind for kind in INPUT_KINDS if getattr(cfg, kind)}
    for i, spec in enumerate(cfg.methods):
        where = f"methods[{i}]"
        if spec.name not in EMBEDDERS:
            raise ConfigError(f"'{where}.name': unknown method '{spec.name}'; available: {sorted(EMBEDDERS)}.")
        _in_range(spec.dim, "dim", f"{where}.dim")
        cls = EMBEDDERS[spec.name]
        hints = _hints(cls.Params)
        unknown = sorted(set(spec.params) - set(hints))
        if unknown:
            raise ConfigError(f"'{where}.params': {spec.name} has no parameters {unknown}; allowed: {sorted(hints)}.")
        spec.params = {k: check_value(v, hints[k], f"{where}.params.{k}") for k, v in spec.params.items()}
        possible = [v for v in cls.uses_views if _gives(cfg, v, given)]
        if len(possible) < cls.min_views:
            other = "" if spec.name == DEFAULT_METHOD else ", or choose another method (baseline uses any input)"
            raise ConfigError(
                f"'{where}': {spec.name} learns from {inputs_for(cls.uses_views)}, and the configuration gives "
                f"{'too few of them' if possible else 'none'}. Add one{other}."
            )
        try:
            cls(dim=spec.dim, seed=cfg.seed, device="cpu", **spec.params)  # runs the method's own range checks
        except ConfigError as exc:
            raise ConfigError(f"'{where}' ({spec.name}): {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"'{where}' ({spec.name}): invalid parameters: {exc}.") from exc


def _validate_pois(src: PoiSource) -> None:
    """Which settings the kind of POI file (by its name's ending) takes."""
    from backend.io.poi_files import parse_osm_tags, poi_file_kind

    kind = poi_file_kind(src.path)
    if kind == "osm":
        if src.category_field or src.name_field or src.layer:
            raise ConfigError("[pois] an OpenStreetMap extract takes no category_field, name_field or layer: the "
                              "category comes from its tags (osm_tags) and the name from 'name'. Leave them out.")
        parse_osm_tags(src.osm_tags)
        return
    if src.osm_tags is not None:
        raise ConfigError(f"[pois] osm_tags applies to OpenStreetMap extracts ({', '.join(POI_FILE_SUFFIXES['osm'])})"
                          f" only, not to {src.path}; leave it out.")
    if kind is None and not src.category_field:
        raise ConfigError("[pois] needs category_field (the field holding the POI categories) for a point layer; "
                          "only OpenStreetMap extracts and Overture GeoParquet files do without.")


def _validate(cfg: RunConfig) -> None:
    from backend.tasks.clustering import CLUSTER_METHODS
    from backend.tasks.prediction import MODELS as PREDICTION_MODELS
    from backend.tasks.targets import TARGET_KINDS

    _in_range(cfg.seed, "seed", "seed")
    _in_range(cfg.chip_size, "chip_size", "chip_size")
    _in_range(cfg.nproc, "nproc", "nproc")
    device = cfg.device.lower()
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"'device' must be one of {list(DEVICES)} (or cuda:N), not '{cfg.device}'.")
    for key, path in [("regions.path", cfg.regions.path)] + [(f"rasters[{i}].path", r.path)
                                                               for i, r in enumerate(cfg.rasters)]:
        if not path.strip():
            raise ConfigError(f"'{key}' is empty; give the file to read.")
    if cfg.pois is not None:
        _validate_pois(cfg.pois)
    for i, raster in enumerate(cfg.rasters):
        if raster.kind not in RASTER_KINDS:
            raise ConfigError(f"'rasters[{i}].kind' must be one of {list(RASTER_KINDS)}, not {raster.kind!r}.")
        if raster.dequantize not in DEQUANTIZE:
            raise ConfigError(f"'rasters[{i}].dequantize' must be one of {list(DEQUANTIZE)}, not "
                              f"{raster.dequantize!r}.")
        if raster.kind != "embedding" and (raster.std or raster.dequantize != "auto"):
            raise ConfigError(f"'rasters[{i}]': std and dequantize apply to embedding rasters only; add "
                              'kind = "embedding" or leave them out.')
        for band in raster.bands or []:
            _in_range(band, "band", f"rasters[{i}].bands")
        if raster.bands is not None and not raster.bands:
            raise ConfigError(f"'rasters[{i}].bands' is empty; leave it out to use the first three bands.")
    if not cfg.methods:
        raise ConfigError("No methods chosen; add at least one [[methods]] entry (e.g. name = \"baseline\").")
    names = [m.name for m in cfg.methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"Each method may appear once; got {names}.")
    for i, m in enumerate(cfg.methods):
        _in_range(m.ensemble, "ensemble", f"methods[{i}].ensemble")  # training seeds
    from backend.tasks.context import parse_context  # numpy/scipy only, no torch

    parse_context(cfg.context)
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
        if lab.target not in TARGET_KINDS:
            raise ConfigError(f"Label '{lab.name}': target must be one of {list(TARGET_KINDS)}, not '{lab.target}'.")
        if lab.target == "rate" and not lab.per_field:
            raise ConfigError(f"Label '{lab.name}': target 'rate' needs per_field (e.g. Population).")
    if cfg.prediction is not None:
        pred = cfg.prediction
        bad = sorted(set(pred.models) - set(PREDICTION_MODELS))
        if bad:
            raise ConfigError(f"Unknown prediction models {bad}; use one or more of {list(PREDICTION_MODELS)}.")
        if not pred.models:
            raise ConfigError(f"'prediction.models' is empty; use one or more of {list(PREDICTION_MODELS)}.")
        if len(set(pred.models)) != len(pred.models):
            raise ConfigError(f"'prediction.models' names a model twice: {pred.models}.")
        _in_range(pred.folds, "folds", "prediction.folds")
        _in_range(pred.repeats, "repeats", "prediction.repeats")
        lo, hi = COVERAGE_RANGE
        if not lo <= pred.coverage <= hi:
            raise ConfigError(f"'prediction.coverage' must lie between {lo} and {hi} (e.g. 0.9 for 90 % intervals), "
                              f"not {pred.coverage}.")
        if pred.write_model not in pred.models:
            raise ConfigError(f"'prediction.write_model' ({pred.write_model!r}) must be one of prediction.models "
                              f"{pred.models}.")
    if cfg.primary not in ("auto", "best") and cfg.primary not in names:
        raise ConfigError(f"'primary' must be 'auto', 'best' or one of the run's methods {names}, not "
                          f"{cfg.primary!r}.")
    if cfg.clustering is not None:
        clu = cfg.clustering
        if not (clu.k == "auto" or isinstance(clu.k, int)):
            raise ConfigError(f"'clustering.k' must be 'auto' or an integer >= 2, not {clu.k!r}.")
        if isinstance(clu.k, int):
            _in_range(clu.k, "k", "clustering.k")
        _in_range(clu.k_min, "k", "clustering.k_min")
        _in_range(clu.k_max, "k", "clustering.k_max")
        if clu.k_max < clu.k_min:
            raise ConfigError(f"'clustering.k_max' ({clu.k_max}) is below clustering.k_min ({clu.k_min}).")
        if clu.method not in CLUSTER_METHODS:
            raise ConfigError(f"'clustering.method' must be one of {list(CLUSTER_METHODS)}, not {clu.method!r}.")


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
