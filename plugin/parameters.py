"""What the planner chose in the run dock, checked before the run and turned into a run configuration.

The flow reads in one line::

    RunDock -> RunChoices -> validate() -> to_run_config() -> tasks.RunParameters -> tasks.RunTask

:class:`RunChoices` refers to layers of the current project by id and to fields by name (what the
project stores). :func:`validate` explains every invalid choice in words before anything runs, cheaply
(field types, ``uniqueValues``, feature counts, folder checks; no feature is read twice).
:func:`to_run_config` exports the chosen vector layers (see :mod:`.input_export`) and builds the dict
that ``backend/config.py`` reads.

Methods come from one registry, :data:`METHODS`: name -> default dimension and parameters. It holds the
baseline from the start and is filled from the backend's ``info`` answer when the backend answers, so a
method added to the backend appears in the dock without touching the plugin.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .common import common
from .input_export import InputExporter, raster_path, raster_problem
from .sources import poi_file_config, poi_file_problem, raster_config

__all__ = [
    "DEVICES",
    "METHODS",
    "backend_fingerprint",
    "PREDICTION_MODELS",
    "TARGETS",
    "LabelChoice",
    "MethodChoice",
    "MethodInfo",
    "MethodRegistry",
    "NO_CONTEXT",
    "RunChoices",
    "combining_problem",
    "context_presets",
    "describe_context",
    "describe_method_params",
    "describe_param",
    "method_params_problem",
    "ensemble_limit",
    "apply_request",
    "input_config",
    "inputs_dir_for",
    "label_fields",
    "info_cache_path",
    "label_name",
    "methods_config",
    "missing_input",
    "raster_path",
    "run_settings",
    "sources_of",
    "to_run_config",
    "validate",
]

#: Devices the backend accepts, targets offered for labels, regressors of the evaluation (the contract module).
DEVICES = common.DEVICES
TARGETS = common.OFFERED_TARGETS
PREDICTION_MODELS = common.PREDICTION_MODELS


# ---------------------------------------------------------------------------------------- choices


@dataclass
class LabelChoice:
    """One quantity to predict: a numeric field of the region layer, or points counted per region."""

    field: str = ""  # numeric field of the region layer ("" when points_layer_id is used)
    points_layer_id: str = ""  # id of a point layer counted per region ("" when field is used)
    target: str = "density"  # "count" or "density" (per km2)
    log1p: bool = True  # model log1p(target); predictions come back in the label's own units
    name: str = ""  # column prefix in the outputs; derived from the field or layer name when empty


@dataclass
class MethodChoice:
    """One embedding method to run."""

    name: str  # registry name, e.g. "baseline"
    dim: int = 32  # embedding size
    params: dict[str, Any] = field(default_factory=dict)  # method parameters (defaults from the registry)


@dataclass
class RunChoices:
    """Everything the run dock holds; layers by id, fields by name (stored per project)."""

    region_layer_id: str = ""  # polygon layer of the regions
    region_id_field: str = ""  # unique, non-empty region identifier
    poi_layer_id: str = ""  # point layer of POIs ("" = none)
    poi_category_field: str = ""  # POI category (e.g. amenity)
    poi_name_field: str = ""  # optional POI name ("" = none)
    poi_file: str = ""  # POIs from a .osm.pbf or GeoParquet file instead of a layer ("" = none; plugin/sources.py)
    raster_layer_ids: list[str] = field(default_factory=list)  # imagery: zero or more (non-files become GeoTIFFs)
    embedding_raster_ids: list[str] = field(default_factory=list)  # those of them that are satellite embeddings
    od_path: str = ""  # origin-destination CSV ("" = none)
    od_origin_field: str = "origin"  # CSV column of the origin region id
    od_destination_field: str = "destination"  # CSV column of the destination region id
    od_count_field: str = "count"  # CSV column of the trip count
    landuse_layer_id: str = ""  # polygon layer of land use ("" = none)
    landuse_class_field: str = ""  # land-use class field
    labels: list[LabelChoice] = field(default_factory=list)  # quantities to predict (may be empty)
    #: methods to run, the first is the primary
    methods: list[MethodChoice] = field(default_factory=lambda: [METHODS.choice(common.DEFAULT_METHOD)])
    cluster_k: int = 0  # number of clusters; 0 = auto (best silhouette)
    prediction_models: list[str] = field(default_factory=lambda: [PREDICTION_MODELS[0]])  # ridge and/or gbm
    folds: int = 5  # K of the K-fold cross-validation
    repeats: int = 3  # shuffled K-fold repeated over this many seeds
    spatial: bool = True  # also spatially blocked folds
    coverage: float = common.DEFAULT_COVERAGE  # nominal coverage of the prediction intervals (<label>_lo, _hi)
    device: str = "auto"  # auto, cpu or cuda
    seed: int = 0  # random seed of every stage
    context: str = ""  # spatial context: a preset of the backend's ``context_presets`` ("" = none)
    ensemble: int = 1  # training seeds per learned method (methods whose ``info`` accepts an ensemble)
    output_dir: str = ""  # results folder (written atomically by the backend)
    overwrite: bool = False  # replace an existing, non-empty results folder


# ---------------------------------------------------------------------------------------- methods


@dataclass
class MethodInfo:
    """Defaults and needs of one method, as the backend's ``info`` describes it."""

    name: str  # registry name
    title: str  # human name
    dim: int = 32  # default embedding size
    params: dict[str, Any] = field(default_factory=dict)  # default parameters
    views: list[str] = field(default_factory=list)  # views the method can learn from
    min_views: int = 1  # how many of them it needs
    #: view -> the input that gives it (``regions``, ``pois``, ``imagery``, ``embedding``, ``od``, ``landuse``)
    view_inputs: dict[str, str] = field(default_factory=dict)
    #: name -> {label, help, type, default, choices, min, max} (the backend's ``param_info``; docs/protocol.md)
    param_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    ensemble: bool = False  # whether ``ensemble`` > 1 (several training seeds) applies: learned methods
    combines_methods: bool = False  # combines the run's other methods (fusion); the primary method when chosen


#: The baseline as the backend defines it (backend/models/baseline.py); used until ``info`` answers.
BASELINE = MethodInfo(
    name=common.DEFAULT_METHOD,
    title="Baseline (views standardised, concatenated, PCA)",
    dim=32,
    params={"log1p_counts": True, "neighbourhood_m": 0.0},
    views=["poi_counts", "image_stats", "landuse", "mobility", "embedding"],
    min_views=1,
    view_inputs={"poi_counts": "pois", "image_stats": "imagery", "landuse": "landuse", "mobility": "od",
                 "embedding": "embedding"},
)


def backend_fingerprint() -> str:
    """What the cached ``info`` answer depends on besides the interpreter: the RegionLens version and the size
    and modification time of every backend source file shipped beside the plugin (a few hundred ``stat``
    calls). An updated plugin, even one whose version did not change, asks its backend again."""
    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "backend").rglob("*.py")) + [root / "regionlens_common.py"]
    parts = [common.VERSION]
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        parts.append(f"{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def info_cache_path() -> Path:
    """Where the backend's last ``info`` answer is kept (in the QGIS profile), so that the Processing
    toolbox offers every method at start-up without starting the backend."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "regionlens" / "backend_info.json"


class MethodRegistry:
    """Method name -> :class:`MethodInfo`; the one place the plugin learns which methods exist."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodInfo] = {BASELINE.name: replace(BASELINE, params=dict(BASELINE.params))}
        self.from_backend = False  # True once update_from_info() has run
        self.from_cache = False  # True when the methods come from the cached answer (load_cache())
        self.info: dict[str, Any] | None = None  # the backend's last ``info`` answer

    def names(self) -> list[str]:
        """Method names, baseline first, then in the backend's order."""
        return list(self._methods)

    def get(self, name: str) -> MethodInfo | None:
        """The method's description, or ``None`` if unknown."""
        return self._methods.get(name)

    def choice(self, name: str) -> MethodChoice:
        """A :class:`MethodChoice` with the method's defaults.

        Raises:
            KeyError: If the method is unknown.
        """
        info = self._methods[name]
        return MethodChoice(info.name, info.dim, dict(info.params))

    def update_from_info(self, info: dict[str, Any], python: str | Path | None = None) -> None:
        """Take the methods of a backend ``info`` answer (docs/protocol.md); keeps the baseline first.

        Args:
            info: The answer.
            python: The interpreter that answered; when given, the answer is cached for it
                (:func:`info_cache_path`, read by :meth:`load_cache`).
        """
        methods = info.get("methods")
        if not isinstance(methods, dict):
            return
        if python is not None:
            self._save_cache(info, python)
        self.info = info
        for name, desc in methods.items():
            if not isinstance(desc, dict):
                continue
            known = self._methods.get(name)
            dim = desc.get("dim", known.dim if known else 32)
            self._methods[str(name)] = MethodInfo(
                name=str(name),
                title=str(desc.get("title") or name),
                dim=int(dim) if isinstance(dim, (int, float)) and not isinstance(dim, bool) else 32,
                params=dict(desc.get("params") or {}),
                views=[str(v) for v in desc.get("views") or []],
                min_views=int(desc.get("min_views", 1) or 1),
                view_inputs={str(k): str(v) for k, v in (desc.get("view_inputs") or {}).items()},
                param_info={str(k): dict(v) for k, v in (desc.get("param_info") or {}).items() if isinstance(v, dict)},
                ensemble=desc.get("ensemble") is True,
                combines_methods=desc.get("combines_methods") is True,
            )
        self.from_backend = True

    def load_cache(self, python: str | Path) -> bool:
        """Take the methods of the cached ``info`` answer of ``python``; False if there is none, or if it was
        written by another RegionLens version or before the backend's files changed (:func:`backend_fingerprint`:
        an updated plugin asks its backend again)."""
        try:
            cached = json.loads(info_cache_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(cached, dict) or cached.get("python") != str(python):
            return False
        if cached.get("version") != common.VERSION or cached.get("fingerprint") != backend_fingerprint():
            return False  # written by another RegionLens (or before the backend changed): its methods may differ
        if not isinstance(cached.get("info"), dict):
            return False
        from_backend = self.from_backend
        self.update_from_info(cached["info"])
        self.from_backend, self.from_cache = from_backend, True
        return True

    @staticmethod
    def _save_cache(info: dict[str, Any], python: str | Path) -> None:
        path = info_cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"python": str(python), "version": common.VERSION,
                                        "fingerprint": backend_fingerprint(), "info": info}), encoding="utf-8")
        except (OSError, TypeError, ValueError):
            pass  # a cache only: the next answer tries again

    def reset(self) -> None:
        """Back to the baseline only (tests)."""
        self.__init__()


#: The single method registry of the plugin.
METHODS = MethodRegistry()

#: Processing's name for "no spatial context" (the run dock's "None"; ``RunChoices.context`` "").
NO_CONTEXT = "none"
#: What the spatial context does, in one line (the run dock's and Processing's help).
CONTEXT_HELP = (
    "Appends to every method's embedding the mean embedding of each region's neighbours (adjacent regions "
    "and/or regions within a distance), so that a region is described together with its surroundings."
)
#: What an ensemble does, in one line.
ENSEMBLE_HELP = (
    "Trains each learned method this many times with different seeds; predictions average the models and "
    "the written embedding combines them (steadier results, k times the training time)."
)


def context_presets(info: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The spatial-context presets the backend offers (``info``'s ``context_presets``), name -> spec.

    A preset that appends nothing (the backend's ``none``) is left out: no context is ``""`` here.
    """
    info = METHODS.info if info is None else info
    presets = (info or {}).get("context_presets")
    if not isinstance(presets, dict):
        return {}
    return {str(name): dict(spec) for name, spec in presets.items() if isinstance(spec, dict) and spec}


def describe_context(spec: dict[str, Any]) -> str:
    """A preset in words: ``adjacent regions (1 ring) and regions within 1000 m``."""
    parts = []
    rings = spec.get("rings") or 0
    if isinstance(rings, int) and rings > 0:
        parts.append(f"adjacent regions ({rings} ring{'s' if rings > 1 else ''})")
    distances = [d for d in spec.get("distances_m") or [] if isinstance(d, (int, float))]
    if distances:
        parts.append("regions within " + ", ".join(f"{d:g}" for d in distances) + " m")
    return "mean of " + " and ".join(parts) if parts else "no neighbours"


def ensemble_limit(info: dict[str, Any] | None = None) -> int:
    """The most training seeds the backend accepts (``info``'s ``limits``); 1 while it has not said."""
    info = METHODS.info if info is None else info
    bounds = ((info or {}).get("limits") or {}).get("ensemble")
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2 and isinstance(bounds[1], int):
        return max(1, int(bounds[1]))
    return 1


def methods_config(methods: Iterable[MethodChoice], ensemble: int = 1) -> list[dict[str, Any]]:
    """The run configuration's ``methods``: a method that combines the others (fusion) first, as the
    primary method; ``ensemble`` training seeds for every method that accepts an ensemble."""
    out = []
    for m in methods:
        info = METHODS.get(m.name)
        spec: dict[str, Any] = {"name": m.name, "dim": int(m.dim), "params": dict(m.params)}
        if info is not None and info.ensemble and ensemble > 1:
            spec["ensemble"] = int(ensemble)
        out.append(spec)
    return sorted(out, key=lambda spec: not _combines(spec["name"]))


def combining_problem(method_names: Iterable[str]) -> str | None:
    """Why a method that combines the others (fusion) cannot run with only ``method_names``, or ``None``."""
    names = list(method_names)
    combining = [m for m in names if _combines(m)]
    if combining and not set(names) - set(combining):
        return f"{combining[0]} combines the run's other methods: choose at least one other method with it."
    return None


def _combines(name: str) -> bool:
    info = METHODS.get(name)
    return info is not None and info.combines_methods


def sources_of(choices: RunChoices) -> set[str]:
    """The inputs the choices provide (``regions`` always), named as the backend's ``view_inputs`` names them:
    ``pois``, ``imagery`` and ``embedding`` (rasters of each kind), ``od``, ``landuse``."""
    have = {"regions"}
    if choices.poi_layer_id or choices.poi_file:
        have.add("pois")
    embeddings = set(choices.embedding_raster_ids)
    if any(r not in embeddings for r in choices.raster_layer_ids):
        have.add("imagery")
    if any(r in embeddings for r in choices.raster_layer_ids):
        have.add("embedding")
    if choices.od_path:
        have.add("od")
    if choices.landuse_layer_id:
        have.add("landuse")
    return have


_SOURCE_WORDS = {
    "pois": "a POI layer", "imagery": "a raster", "embedding": "a satellite-embedding raster (raster kind 'embedding')",
    "od": "an OD table", "landuse": "a land-use layer",
}


# ---------------------------------------------------------------------------------------- helpers


def label_name(text: str, taken: Iterable[str] = ()) -> str:
    """A short, readable, unused label name from a field name or layer title (the shared rule,
    :func:`regionlens_common.label_name`): ``Crime incidents 2012 H2 (SFPD)`` -> ``crime_incidents``."""
    return common.label_name(text, taken)


_INTEGER_TYPES = (QVariant.Int, QVariant.UInt, QVariant.LongLong, QVariant.ULongLong)


def label_fields(layer: QgsVectorLayer | None, id_field: str = "") -> list[str]:
    """The fields of ``layer`` that may be offered as labels to predict, in layer order.

    Numeric fields other than ``id_field`` that pass the shared rule
    (:func:`regionlens_common.is_label_field`): no identifiers (``GEOID``, ``OBJECTID``, ``fid``, an
    integer field numbering the regions 1..N) and no geometry-derived fields (``CENSUSAREA``,
    ``Shape_Area``, a grid's ``left``/``top``/``right``/``bottom``). The run dock and the Processing
    algorithms both offer and check labels with this function.
    """
    if layer is None:
        return []
    n_features = max(0, layer.featureCount())
    out = []
    for index, candidate in enumerate(layer.fields()):
        if not candidate.isNumeric() or candidate.name() == id_field:
            continue
        integer = candidate.type() in _INTEGER_TYPES
        n_distinct, span = 0, None
        if integer and n_features > 1:
            values = [int(v) for v in layer.uniqueValues(index) if not _is_null(v)]
            n_distinct = len(values)
            span = max(values) - min(values) + 1 if values else None
        if common.is_label_field(candidate.name(), integer, n_features, n_distinct, span):
            out.append(candidate.name())
    return out


def resolved_label_names(choices: RunChoices, project: QgsProject | None = None) -> list[str]:
    """The label names the run will use, in order (explicit names kept, others derived and de-duplicated)."""
    project = project or QgsProject.instance()
    names: list[str] = []
    for lab in choices.labels:
        if lab.name:
            names.append(lab.name)
            continue
        if lab.field:
            source = lab.field
        else:
            layer = project.mapLayer(lab.points_layer_id) if lab.points_layer_id else None
            source = layer.name() if layer is not None else "points"
        names.append(label_name(source, names))
    return names


def inputs_dir_for(output_dir: str | Path) -> Path:
    """Where the plugin exports a run's inputs: the sibling folder ``<output folder>_inputs``.

    Not inside the results folder: the backend writes that folder atomically (staged next to it and
    renamed into place) and refuses one that already holds files. The inputs folder is kept after a
    run, so ``run.json``'s configuration stays reproducible with ``python -m backend run``.
    """
    out = Path(output_dir).expanduser()
    return out.parent / f"{out.name}_inputs"


def _vector(project: QgsProject, layer_id: str) -> QgsVectorLayer | None:
    layer = project.mapLayer(layer_id) if layer_id else None
    return layer if isinstance(layer, QgsVectorLayer) and layer.isValid() else None


def _field_names(layer: QgsVectorLayer) -> list[str]:
    return list(layer.fields().names())


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    is_null = getattr(value, "isNull", None)  # QVariant NULL (PyQt5) or the NULL sentinel
    if callable(is_null):
        try:
            if is_null():
                return True
        except TypeError:
            pass
    return str(value).strip() in {"", "NULL"}


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _folder_problem(path: Path, what: str) -> str | None:
    """Why ``path`` cannot become a folder we write into (``None`` if it can)."""
    if path.exists() and not path.is_dir():
        return f"The {what} {path} is a file; choose a folder."
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        return f"The {what} {path} cannot be created: {anchor} is a file, not a folder."
    if not os.access(anchor, os.W_OK | os.X_OK):
        return f"The {what} {path} is not writable (no permission to write into {anchor})."
    return None


def _csv_header(path: Path) -> list[str] | None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            sample = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    return [c.strip() for c in next(csv.reader([sample], dialect), [])]


# ---------------------------------------------------------------------------------------- validate


def validate(
    choices: RunChoices,
    project: QgsProject | None = None,
    backend_info: dict[str, Any] | None = None,
) -> list[str]:
    """Every reason the run cannot start, in words a planner understands; empty if it can.

    Checks (cheap: field types, ``uniqueValues``, feature counts, folder tests): the region layer
    (chosen, polygons, not empty, with a CRS) and its id field (exists, no NULL, no duplicates); the
    POI layer (points) and its fields; rasters (local files); the OD table (exists, has the columns);
    the land-use layer (polygons) and its class field; labels (numeric fields, point layers, unique
    names); methods (known, and at least one input each can learn from); clustering k (>= 2 or
    auto); the evaluation settings; the device; the output folder (writable; empty unless
    ``overwrite``) and the inputs folder beside it.

    Args:
        choices: What the dock holds.
        project: The project the layer ids refer to (default: ``QgsProject.instance()``).
        backend_info: The backend's ``info`` answer, if known (to check that CUDA exists).

    Returns:
        Human-readable messages, in the order of the dock's sections.
    """
    project = project or QgsProject.instance()
    problems: list[str] = []
    regions = _check_regions(choices, project, problems)
    _check_pois(choices, project, problems)
    _check_rasters(choices, project, problems)
    _check_od(choices, problems)
    _check_landuse(choices, project, problems)
    _check_labels(choices, project, regions, problems)
    _check_methods(choices, problems)
    _check_settings(choices, backend_info, problems)
    _check_output(choices, problems)
    return problems


def _check_regions(choices: RunChoices, project: QgsProject, problems: list[str]) -> QgsVectorLayer | None:
    """Region layer and id field; returns the layer when it is usable."""
    regions = _vector(project, choices.region_layer_id)
    if regions is None:
        problems.append("Choose a region layer (polygons with an id field).")
        return None
    if regions.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
        problems.append(f"The region layer '{regions.name()}' is not a polygon layer; choose polygons.")
        return None
    if regions.featureCount() == 0:
        problems.append(f"The region layer '{regions.name()}' has no features.")
        return None
    if not regions.crs().isValid():
        problems.append(f"The region layer '{regions.name()}' has no coordinate reference system; set one.")
    id_field = choices.region_id_field
    idx = regions.fields().indexFromName(id_field) if id_field else -1
    if not id_field:
        problems.append("Choose the region id field.")
    elif idx < 0:
        problems.append(
            f"The region layer has no field '{id_field}' (fields: {', '.join(_field_names(regions))})."
        )
    else:
        values = regions.uniqueValues(idx)
        count = regions.featureCount()
        if any(_is_null(v) for v in values):
            problems.append(f"The id field '{id_field}' has empty (NULL) values; every region needs an id.")
        elif count >= 0 and len(values) < count:
            problems.append(
                f"The id field '{id_field}' has duplicate values ({len(values)} distinct ids for {count} "
                "regions); choose a unique field."
            )
    return regions


def _chosen_layer(project: QgsProject, layer_id: str, what: str, geometry: QgsWkbTypes.GeometryType,
                  shape: str, problems: list[str]) -> QgsVectorLayer | None:  # fmt: skip
    """The chosen ``what`` layer (``POI``, ``land-use``) when it is in the project with ``geometry``; ``None``
    when none is chosen, or, with a problem added (``shape``: what it must be), when it is not usable."""
    if not layer_id:
        return None
    layer = _vector(project, layer_id)
    if layer is None:
        problems.append(f"The chosen {what} layer is no longer in the project.")
    elif layer.geometryType() != geometry:
        problems.append(f"The {what} layer '{layer.name()}' is not {shape}.")
    else:
        return layer
    return None


def _check_pois(choices: RunChoices, project: QgsProject, problems: list[str]) -> None:
    if choices.poi_file:
        if choices.poi_layer_id:
            problems.append("Choose either a POI layer or a POI file, not both.")
        problem = poi_file_problem(choices.poi_file)
        if problem:
            problems.append(problem)
        return
    point = QgsWkbTypes.GeometryType.PointGeometry
    if (pois := _chosen_layer(project, choices.poi_layer_id, "POI", point, "a point layer; choose points",
                              problems)) is None:  # fmt: skip
        return
    names = _field_names(pois)
    if not choices.poi_category_field:
        problems.append("Choose the POI category field.")
    elif choices.poi_category_field not in names:
        problems.append(
            f"The POI layer has no field '{choices.poi_category_field}' (fields: {', '.join(names)})."
        )
    if choices.poi_name_field and choices.poi_name_field not in names:
        problems.append(f"The POI layer has no name field '{choices.poi_name_field}'.")


def _check_rasters(choices: RunChoices, project: QgsProject, problems: list[str]) -> None:
    for layer_id in choices.raster_layer_ids:
        layer = project.mapLayer(layer_id)
        if not isinstance(layer, QgsRasterLayer):
            problems.append("A chosen raster is no longer in the project.")
        elif problem := raster_problem(layer):
            problems.append(problem)


def _check_od(choices: RunChoices, problems: list[str]) -> None:
    if not choices.od_path:
        return
    od = Path(choices.od_path).expanduser()
    if not od.is_file():
        problems.append(f"The OD table {od} does not exist.")
        return
    header = _csv_header(od)
    if header is None:
        problems.append(f"The OD table {od} cannot be read as a CSV file.")
        return
    wanted = (choices.od_origin_field, choices.od_destination_field, choices.od_count_field)
    missing = [c for c in wanted if c not in header]
    if missing:
        problems.append(
            f"The OD table has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(header)})."
        )


def _check_landuse(choices: RunChoices, project: QgsProject, problems: list[str]) -> None:
    polygon = QgsWkbTypes.GeometryType.PolygonGeometry
    if (landuse := _chosen_layer(project, choices.landuse_layer_id, "land-use", polygon, "a polygon layer",
                                 problems)) is None:  # fmt: skip
        return
    if not choices.landuse_class_field:
        problems.append("Choose the land-use class field.")
    elif choices.landuse_class_field not in _field_names(landuse):
        problems.append(f"The land-use layer has no field '{choices.landuse_class_field}'.")


def _check_labels(
    choices: RunChoices, project: QgsProject, regions: QgsVectorLayer | None, problems: list[str]
) -> None:
    names = resolved_label_names(choices, project)
    for lab, name in zip(choices.labels, names, strict=True):
        if lab.target not in TARGETS:
            problems.append(f"Label '{name}': target must be count or density, not '{lab.target}'.")
        if bool(lab.field) == bool(lab.points_layer_id):
            problems.append(f"Label '{name}' needs either a field or a point layer.")
        elif lab.field and regions is not None:
            idx = regions.fields().indexFromName(lab.field)
            if idx < 0:
                problems.append(f"The region layer has no label field '{lab.field}'.")
            elif not regions.fields().at(idx).isNumeric():
                problems.append(f"The label field '{lab.field}' is not numeric; choose a number field.")
        elif lab.points_layer_id:
            points = _vector(project, lab.points_layer_id)
            if points is None:
                problems.append(f"The point layer of label '{name}' is no longer in the project.")
            elif points.geometryType() != QgsWkbTypes.GeometryType.PointGeometry:
                problems.append(f"The label layer '{points.name()}' is not a point layer.")
        if not common.LABEL_NAME_PATTERN.fullmatch(name):
            problems.append(f"Label name '{name}' must start with a letter (letters, digits, underscores).")
    if len(set(names)) != len(names):
        problems.append("Two labels have the same name.")


def _check_methods(choices: RunChoices, problems: list[str]) -> None:
    if not choices.methods:
        problems.append("Choose at least one method.")
    method_names = [m.name for m in choices.methods]
    if len(set(method_names)) != len(method_names):
        problems.append("Each method can run only once.")
    problem = combining_problem(method_names)
    if problem:
        problems.append(problem)
    have = sources_of(choices)
    for method in choices.methods:
        info = METHODS.get(method.name)
        if info is None:
            problems.append(f"The backend does not offer the method '{method.name}'.")
            continue
        if method.dim < 1:
            problems.append(f"{info.name}: the embedding size must be at least 1.")
        problem = missing_input(info, have)
        if problem:
            problems.append(problem)


def missing_input(info: MethodInfo, have: set[str]) -> str | None:
    """Why ``info``'s method cannot learn from the inputs ``have`` (see :func:`sources_of`), or ``None``."""
    if info.views and not info.view_inputs:
        return None  # an older backend's answer (a cached one) does not say: its own configuration check will
    usable = [info.view_inputs.get(v) for v in info.views]  # as the backend's ``info`` says
    if sum(1 for source in usable if source in have) >= max(info.min_views, 1):
        return None
    words = " or ".join(_SOURCE_WORDS[s] for s in _SOURCE_WORDS if s in usable)
    need = "" if info.min_views <= 1 else f" (it needs {info.min_views} kinds of input)"
    return f"No input for {info.name}{need}: add {words or 'an input it can use'}."


_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}
_TYPE_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text"}


def describe_param(name: str, spec: dict[str, Any]) -> str:
    """One parameter as the backend describes it (``param_info``), in one line:
    ``scale (a number, 0.5 to 10, default 2.0): Multiplies every category share.``"""
    kind = spec.get("type", "str")
    bounds = [f"{b:g}" if isinstance(b, (int, float)) else "" for b in (spec.get("min"), spec.get("max"))]
    what = _TYPE_WORDS.get(kind, kind)
    if spec.get("choices"):
        what = "one of " + ", ".join(str(c) for c in spec["choices"])
    elif any(bounds):
        what += ", " + (f"{bounds[0]} to {bounds[1]}" if all(bounds) else
                        f"at least {bounds[0]}" if bounds[0] else f"at most {bounds[1]}")
    default = json.dumps(spec.get("default"))
    help_text = str(spec.get("help") or "").strip()
    return f"{name} ({what}, default {default})" + (f": {help_text}" if help_text else "")


def describe_method_params(names: Iterable[str] | None = None) -> str:
    """The parameters of every method (or of ``names``), one line each under the method's name, generated
    from the backend's descriptions (Processing's help of the method parameters)."""
    lines = []
    for name in METHODS.names() if names is None else names:
        info = METHODS.get(name)
        if info is None:
            continue
        specs = info.param_info or {key: {"type": _kind(value), "default": value} for key, value in info.params.items()}
        lines.append(f"{name}: " + ("; ".join(describe_param(k, s) for k, s in specs.items()) or "no parameters"))
    return "\n".join(lines)


def _kind(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float"}.get(type(value), "str")


def method_params_problem(name: str, params: dict[str, Any]) -> str | None:
    """Why ``params`` are not parameters of the method ``name`` as the backend describes them, or ``None``:
    an unknown name, a value of the wrong type, outside its range or not among its choices."""
    info = METHODS.get(name)
    if info is None:
        return f"The backend does not offer the method '{name}'; it offers {', '.join(METHODS.names())}."
    for key, value in params.items():
        spec = info.param_info.get(key) or ({"type": _kind(info.params[key])} if key in info.params else None)
        if spec is None:
            known = ", ".join(info.param_info or info.params) or "none"
            return f"{name} has no parameter '{key}'; its parameters: {known}."
        kind = spec.get("type", "str")
        if isinstance(value, bool) != (kind == "bool") or not isinstance(value, _TYPES.get(kind, (object,))):
            return f"{name}: {key} must be {_TYPE_WORDS.get(kind, kind)}, not {json.dumps(value)}."
        if spec.get("choices") and str(value) not in [str(c) for c in spec["choices"]]:
            return f"{name}: {key} must be one of {', '.join(map(str, spec['choices']))}, not {json.dumps(value)}."
        low, high = spec.get("min"), spec.get("max")
        if kind in ("int", "float") and ((low is not None and value < low) or (high is not None and value > high)):
            return f"{name}: {describe_param(key, spec)}; {json.dumps(value)} is out of range."
    return None


def _check_settings(choices: RunChoices, backend_info: dict[str, Any] | None, problems: list[str]) -> None:
    if choices.cluster_k == 1 or choices.cluster_k < 0:
        problems.append("The number of clusters must be at least 2 (or auto).")
    if choices.labels:
        if not choices.prediction_models:
            problems.append("Choose at least one prediction model (ridge or gradient boosting).")
        if choices.folds < 2:
            problems.append("Cross-validation needs at least 2 folds.")
        if choices.repeats < 1:
            problems.append("Cross-validation needs at least 1 repeat.")
    limit = ensemble_limit(backend_info) if backend_info is not None else None  # None: the backend checks
    if choices.ensemble < 1:
        problems.append("The ensemble needs at least 1 training seed.")
    elif limit is not None and choices.ensemble > limit:
        problems.append(f"The backend trains at most {limit} seeds per method; choose an ensemble of 1 to {limit}.")
    presets = context_presets(backend_info)
    if choices.context and backend_info is not None and choices.context not in presets:
        offered = ", ".join(presets) or "none"
        problems.append(f"The backend has no spatial context '{choices.context}'; choose one of {offered} or None.")
    if choices.device not in DEVICES:
        problems.append(f"Unknown device '{choices.device}'; choose one of {', '.join(DEVICES)}.")
    elif choices.device == "cuda" and backend_info is not None and not backend_info.get("cuda", False):
        problems.append("The backend sees no CUDA GPU; choose auto or cpu.")


def _check_output(choices: RunChoices, problems: list[str]) -> None:
    if not choices.output_dir.strip():
        problems.append("Choose an output folder for the results.")
        return
    out = Path(choices.output_dir).expanduser()
    problem = _folder_problem(out, "output folder")
    if problem:
        problems.append(problem)
        return
    if out.is_dir() and any(out.iterdir()) and not choices.overwrite:
        problems.append(
            f"The output folder {out} already holds files; choose a new folder or tick "
            "\u201creplace existing results\u201d."
        )
        return
    inputs = inputs_dir_for(out)
    problem = _folder_problem(inputs, "inputs folder")
    if problem:
        problems.append(problem)
    elif inputs.is_dir() and any(inputs.iterdir()) and not _is_inputs_dir(inputs):
        problems.append(
            f"{inputs} (where RegionLens exports the run's inputs) holds files RegionLens did not write; "
            "move them or choose another output folder."
        )


def _is_inputs_dir(path: Path) -> bool:
    from .input_export import MARKER

    return (path / MARKER).is_file()


# ---------------------------------------------------------------------------------------- config


def to_run_config(
    choices: RunChoices,
    run_dir: str | Path | None = None,
    project: QgsProject | None = None,
    inputs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Export the chosen layers and build the backend run configuration (``backend/config.py``).

    Call :func:`validate` first; this function assumes valid choices. Vector layers are written to
    GeoPackages in ``inputs_dir`` (default :func:`inputs_dir_for` the results folder) on the calling
    thread (the main thread: layers belong to it); rasters and the OD table are referenced by path.

    Args:
        choices: Valid choices.
        run_dir: The results folder (default ``choices.output_dir``).
        project: The project the layer ids refer to (default ``QgsProject.instance()``).
        inputs_dir: Where to export the vector layers.

    Returns:
        A configuration dict with absolute paths.

    Raises:
        ValueError: If a layer is missing or cannot be exported (the message names it).
    """
    project = project or QgsProject.instance()
    out = Path(run_dir if run_dir is not None else choices.output_dir).expanduser().resolve()
    exporter = InputExporter(Path(inputs_dir) if inputs_dir is not None else inputs_dir_for(out))
    exporter.prepare()
    config = {**run_settings(choices, out, labelled=bool(choices.labels)), **input_config(choices, exporter, project)}
    exporter.finish(config)
    return config


def input_config(choices: RunChoices, exporter: InputExporter, project: QgsProject) -> dict[str, Any]:
    """The inputs of the run configuration (``regions``, ``pois``, ``rasters``, ``od``, ``landuse``, ``labels``)
    as the choices give them, the vector layers exported by ``exporter`` (the run and :func:`apply_request`).

    Raises:
        ValueError: If a layer is missing or cannot be exported (the message names it).
    """
    regions = _require(project, choices.region_layer_id, "region layer")
    label_fields = [lab.field for lab in choices.labels if lab.field]
    config: dict[str, Any] = {}
    config["regions"] = {
        "path": str(exporter.export(regions, "regions", [choices.region_id_field, *label_fields])),
        "id_field": choices.region_id_field,
    }
    if choices.poi_file:
        config["pois"] = poi_file_config(choices.poi_file, choices.poi_category_field, choices.poi_name_field)
    elif choices.poi_layer_id:
        pois = _require(project, choices.poi_layer_id, "POI layer")
        keep = [choices.poi_category_field] + ([choices.poi_name_field] if choices.poi_name_field else [])
        config["pois"] = {
            "path": str(exporter.export(pois, "pois", keep)),
            "category_field": choices.poi_category_field,
            "name_field": choices.poi_name_field or None,
        }
    rasters = []
    for layer_id in choices.raster_layer_ids:
        layer = project.mapLayer(layer_id)
        if not isinstance(layer, QgsRasterLayer):
            raise ValueError(f"The raster {layer_id} is not in the project.")
        kind = "embedding" if layer_id in choices.embedding_raster_ids else "imagery"
        rasters.append(raster_config(exporter.raster(layer), kind))  # its file, or a GeoTIFF in the inputs folder
    config["rasters"] = rasters
    if choices.od_path:
        config["od"] = {
            "path": str(Path(choices.od_path).expanduser().resolve()),
            "origin_field": choices.od_origin_field,
            "destination_field": choices.od_destination_field,
            "count_field": choices.od_count_field,
        }
    if choices.landuse_layer_id:
        landuse = _require(project, choices.landuse_layer_id, "land-use layer")
        config["landuse"] = {
            "path": str(exporter.export(landuse, "landuse", [choices.landuse_class_field])),
            "class_field": choices.landuse_class_field,
        }
    labels = []
    for lab, name in zip(choices.labels, resolved_label_names(choices, project), strict=True):
        spec: dict[str, Any] = {"name": name, "target": lab.target, "log1p": bool(lab.log1p)}
        if lab.field:
            spec["field"] = lab.field
        else:
            points = _require(project, lab.points_layer_id, f"point layer of label '{name}'")
            spec["points"] = str(exporter.export(points, f"label_{name}", []))
        labels.append(spec)
    config["labels"] = labels
    return config


def apply_request(inputs: dict[str, Any], model_dir: str | Path, output: str | Path, overwrite: bool = False,
                  device: str = "auto") -> dict[str, Any]:  # fmt: skip
    """The worker's ``apply`` request (backend/jobs.py ``ApplyJob``): the saved model ``model_dir`` embeds the
    regions of ``inputs`` (:func:`input_config`) with its POIs and rasters into the GeoPackage ``output``."""
    regions, pois = inputs["regions"], inputs.get("pois")
    request: dict[str, Any] = {
        "model": str(Path(model_dir).expanduser().resolve()),
        "regions": regions["path"],
        "id_field": regions["id_field"],
        "output": str(Path(output).expanduser().resolve()),
        "overwrite": bool(overwrite),
        "device": device,
        # paths only: the backend names a single raster like the one the model saw
        "rasters": [raster["path"] for raster in inputs.get("rasters", [])],
    }
    if pois:
        request.update(pois=pois["path"], category_field=pois.get("category_field"), name_field=pois.get("name_field"))
    return request


def run_settings(choices: RunChoices, output_dir: str | Path, labelled: bool) -> dict[str, Any]:
    """The run configuration's settings besides its inputs (``backend/config.py``), the same for the run dock
    and Processing: output folder, seed, device, methods (a combining method first), spatial context,
    clustering, and the prediction settings when the run has labels (``labelled``), else ``None``."""
    config: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": int(choices.seed),
        "device": choices.device,
        "overwrite": bool(choices.overwrite),
        "methods": methods_config(choices.methods, choices.ensemble),
        "clustering": {"k": int(choices.cluster_k) if choices.cluster_k >= 2 else "auto"},
        "prediction": None,
    }
    if choices.context:
        config["context"] = choices.context
    if labelled:
        models = [m for m in PREDICTION_MODELS if m in choices.prediction_models] or [PREDICTION_MODELS[0]]
        config["prediction"] = {"models": models, "folds": int(choices.folds), "repeats": int(choices.repeats),
                                "spatial": bool(choices.spatial), "write_model": models[0],
                                "coverage": float(choices.coverage)}  # fmt: skip
    return config


def _require(project: QgsProject, layer_id: str, what: str) -> QgsVectorLayer:
    layer = _vector(project, layer_id)
    if layer is None:
        raise ValueError(f"The {what} ({layer_id or 'none chosen'}) is not in the project.")
    return layer
