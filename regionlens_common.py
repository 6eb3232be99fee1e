"""Names and rules the backend and the QGIS plugin must agree on; pure Python, no dependencies.

Both sides import this one module (SPEC section 2): the backend as ``regionlens_common`` (the worker
runs with the plugin folder as its working directory, tests with ``pythonpath = .``), the plugin as
``regionlens.regionlens_common`` when installed (see ``plugin/common.py``). Nothing here may import
numpy, Qt, QGIS or anything from ``backend/``.

- clusters: the name column :data:`CLUSTER_NAME_FIELD`, the range of ``k = auto`` and the palette,
  :func:`cluster_colour` (cluster ``i`` has one colour whatever the number of clusters, on the map and in
  the figures);
- the label-name rule: :data:`LABEL_NAME_PATTERN`, :func:`label_name` (a short, readable output column
  prefix from a field or layer title) and :func:`is_label_field` (which fields may be offered as labels
  to predict: never id-like or geometry-derived ones);
- label units: :func:`label_units` (the words legends and the metrics dialog show);
- input files: :data:`POI_FILE_SUFFIXES` (POI files read as OpenStreetMap or GeoParquet rather than as a
  point layer), :data:`RASTER_KINDS` and :data:`EMBEDDING_MIN_BANDS` (when a raster is suggested as a
  satellite-embedding raster), :func:`suggested_raster_kind`.
- outputs: the GeoPackage's name :data:`GPKG_NAME`, its layer and table names (``LAYER_*``, ``TABLE_*``) and
  the per-method suffix rule :func:`method_layer` / :func:`split_method_layer` (the first method's layers
  are unsuffixed, every further method's carry ``_<method>``), the prediction columns
  ``<label>_obs`` / ``_pred`` / ``_res`` / ``_lo`` / ``_hi`` (:func:`prediction_column`,
  :func:`prediction_labels`);
- run choices: :data:`DEVICES`, :data:`TARGETS` (:data:`OFFERED_TARGETS` without a denominator field),
  :data:`PREDICTION_MODELS`;
- the version, :data:`VERSION`, read from ``metadata.txt`` beside this module (the packaging source).
- the default interval coverage of the prediction columns (``_lo`` / ``_hi``);
- run files: the report (:data:`REPORT_HTML`), the cluster cards (:data:`CLUSTER_CARDS_JSON`), the
  leaderboard chart (:data:`LEADERBOARD_PNG`);
- find similar regions: the layer and its columns (:data:`SIMILARITY_LAYER` ...), the default top N.
"""

from __future__ import annotations

import colorsys
import configparser
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "CLUSTER_NAME_FIELD",
    "AUTO_K_MIN",
    "AUTO_K_MAX",
    "CLUSTER_COLOURS",
    "cluster_colour",
    "cluster_colours",
    "LABEL_NAME_PATTERN",
    "LABEL_NAME_MAX",
    "label_name",
    "is_label_field",
    "label_units",
    "POI_FILE_SUFFIXES",
    "poi_file_kind",
    "RASTER_KINDS",
    "EMBEDDING_MIN_BANDS",
    "suggested_raster_kind",
    "VERSION",
    "GPKG_NAME",
    "RUN_JSON",
    "ID_FIELD",
    "CLUSTER_FIELD",
    "EMBEDDING_PREFIX",
    "EMBEDDING_COLUMN",
    "embedding_column",
    "RUN_GROUP_PREFIX",
    "LAYER_EMBEDDINGS",
    "LAYER_CLUSTERS",
    "LAYER_PREDICTIONS",
    "TABLE_CLUSTER_PROFILES",
    "TABLE_METRICS",
    "METHOD_TABLES",
    "method_layer",
    "split_method_layer",
    "OBS",
    "PRED",
    "RES",
    "LO",
    "HI",
    "PREDICTION_SUFFIXES",
    "prediction_column",
    "prediction_labels",
    "DEVICES",
    "TARGETS",
    "OFFERED_TARGETS",
    "PREDICTION_MODELS",
    "DEFAULT_METHOD",
    "DEFAULT_COVERAGE",
    "COVERAGE_RANGE",
    "REPORT_HTML",
    "CLUSTER_CARDS_JSON",
    "CLUSTER_CARD_FEATURES",
    "CLUSTER_CARD_EXAMPLES",
    "LEADERBOARD_PNG",
    "SIMILARITY_LAYER",
    "SIMILARITY_FIELD",
    "SIMILAR_TOP_FIELD",
    "SIMILAR_CHOSEN_FIELD",
    "SIMILAR_TOP_N",
    "SIMILAR_GPKG",
]


# ------------------------------------------------------------------------------------------- version


def _read_version() -> str:
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(Path(__file__).with_name("metadata.txt"), encoding="utf-8")
    return meta.get("general", "version", fallback="0+unknown")


#: The RegionLens version: ``metadata.txt``'s (QGIS packages the plugin from it); the backend reports it.
VERSION = _read_version()

# ------------------------------------------------------------------------------------------- outputs

#: The GeoPackage a run writes into its output folder.
GPKG_NAME = "regionlens.gpkg"
#: The run manifest beside it; its presence marks a folder as a previous RegionLens run.
RUN_JSON = "run.json"
#: The region id column of every output layer.
ID_FIELD = "region_id"
#: The cluster number column of the ``clusters`` layers and of ``cluster_profiles``.
CLUSTER_FIELD = "cluster"
#: Embedding columns are ``emb_000``, ``emb_001``, ... (:func:`embedding_column`); any ``emb_<digits>`` is read.
EMBEDDING_PREFIX = "emb_"
EMBEDDING_COLUMN = re.compile(rf"^{EMBEDDING_PREFIX}\d+$")
#: A run's layer group in QGIS is ``RegionLens — <run folder name>``.
RUN_GROUP_PREFIX = "RegionLens \u2014 "


def embedding_column(index: int) -> str:
    """The name of embedding dimension ``index``: ``emb_000`` (three digits at least)."""
    return f"{EMBEDDING_PREFIX}{index:03d}"

#: Layers (with the regions' polygons) and tables (no geometry) of the GeoPackage (docs/protocol.md).
LAYER_EMBEDDINGS = "embeddings"
LAYER_CLUSTERS = "clusters"
LAYER_PREDICTIONS = "predictions"
TABLE_CLUSTER_PROFILES = "cluster_profiles"
TABLE_METRICS = "metrics"
#: The layers and tables each method of a run writes (see :func:`method_layer`); ``metrics`` is shared.
METHOD_TABLES = (LAYER_EMBEDDINGS, LAYER_CLUSTERS, LAYER_PREDICTIONS, TABLE_CLUSTER_PROFILES)


def method_layer(base: str, method: str = "", primary: str = "") -> str:
    """The name of a method's ``base`` layer: ``base`` for the run's first (primary) method, else
    ``base_<method>`` (``method_layer("clusters", "calliper", "baseline")`` -> ``clusters_calliper``)."""
    return base if not method or method == primary else f"{base}_{method}"


def split_method_layer(name: str) -> tuple[str, str]:
    """``(base, method)`` of a layer name written by :func:`method_layer`: ``("clusters", "calliper")`` for
    ``clusters_calliper``, ``("clusters", "")`` for ``clusters``, ``("", "")`` for another name.

    ``cluster_profiles`` is matched before ``clusters``; a method name may hold underscores."""
    for base in sorted(METHOD_TABLES, key=len, reverse=True):
        if name == base:
            return base, ""
        if name.startswith(base + "_") and len(name) > len(base) + 1:
            return base, name[len(base) + 1 :]
    return "", ""


#: Columns of a ``predictions`` layer per label: ``<label>_obs`` (observed), ``_pred`` (out-of-fold predicted),
#: ``_res`` (observed minus predicted), ``_lo`` / ``_hi`` (the prediction interval at the run's coverage);
#: all in the label's own units.
OBS, PRED, RES, LO, HI = "_obs", "_pred", "_res", "_lo", "_hi"
#: Every suffix of a prediction column, in the order the layer holds them.
PREDICTION_SUFFIXES = (OBS, PRED, RES, LO, HI)


def prediction_column(label: str, suffix: str) -> str:
    """``<label><suffix>``, e.g. ``prediction_column("population", PRED)`` -> ``population_pred``.

    Raises:
        ValueError: If ``suffix`` is not one of :data:`PREDICTION_SUFFIXES`.
    """
    if suffix not in PREDICTION_SUFFIXES:
        raise ValueError(f"Prediction columns end in {', '.join(PREDICTION_SUFFIXES)}, not {suffix!r}.")
    return f"{label}{suffix}"


def prediction_labels(columns: Iterable[str]) -> list[str]:
    """The labels of a predictions layer: every ``<label>`` with a ``<label>_pred`` column, in order."""
    return [c[: -len(PRED)] for c in columns if c.endswith(PRED) and len(c) > len(PRED)]


# ------------------------------------------------------------------------------------------- run choices

#: Devices the backend accepts (``auto``: CUDA, then MPS, then CPU).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: How a label is modelled: a count, a density per km², or a rate per unit of another field.
TARGETS = ("count", "density", "rate")
#: The targets the plugin offers (``rate`` needs a denominator field; the CLI offers it).
OFFERED_TARGETS = ("count", "density")
#: Regressors of the evaluation: ``ridge`` (RidgeCV) and ``gbm`` (gradient boosting).
PREDICTION_MODELS = ("ridge", "gbm")
#: The method a run uses when none is chosen, and the one the plugin offers before the backend has answered
#: (every other method comes from the backend's ``info``).
DEFAULT_METHOD = "baseline"


# ------------------------------------------------------------------------------------------- input files

#: POI files that are not a point layer, by how the backend reads them (matched on the end of the name).
POI_FILE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "osm": (".osm.pbf", ".osm"),  # OpenStreetMap extract: tagged nodes and areas become POIs
    "parquet": (".parquet", ".geoparquet"),  # GeoParquet: Overture places, or any point layer
}
#: What a raster is: ``imagery`` (band statistics and image chips of its first bands) or ``embedding``
#: (a pretrained satellite-embedding raster: the per-region mean of every band).
RASTER_KINDS = ("imagery", "embedding")
#: A raster with at least this many bands is suggested as ``kind = "embedding"`` (AlphaEarth: 64, TESSERA: 128).
EMBEDDING_MIN_BANDS = 32


def poi_file_kind(path: str) -> str | None:
    """``"osm"`` or ``"parquet"`` for a POI file read as such (:data:`POI_FILE_SUFFIXES`), ``None`` for a layer."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1].lower()
    for kind, suffixes in POI_FILE_SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    return None


def suggested_raster_kind(band_count: int) -> str:
    """``"embedding"`` for a raster with :data:`EMBEDDING_MIN_BANDS` or more bands, else ``"imagery"``."""
    return "embedding" if band_count >= EMBEDDING_MIN_BANDS else "imagery"

# ------------------------------------------------------------------------------------------- clusters

#: Text column of the ``clusters`` layers (and of ``cluster_profiles``): the cluster's readable name.
CLUSTER_NAME_FIELD = "cluster_name"
#: Range of k that ``k = auto`` tries (see backend/tasks/clustering.py and docs/methods/clustering.md).
AUTO_K_MIN, AUTO_K_MAX = 4, 12


#: matplotlib's ``tab10``, then the light halves of ``tab20``: 20 distinct colours of clusters 0..19.
CLUSTER_COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
_GOLDEN_ANGLE = 137.508  # degrees: successive hues beyond the fixed list stay far apart


def cluster_colour(index: int) -> str:
    """Hex colour (``#rrggbb``) of cluster ``index``, the same whatever the number of clusters.

    Clusters 0..19 take :data:`CLUSTER_COLOURS`; beyond, hues step by the golden angle at a fixed
    saturation and value, so any number of clusters gets colours.

    Raises:
        ValueError: If ``index`` is negative.
    """
    if index < 0:
        raise ValueError(f"Cluster numbers start at 0, got {index}.")
    if index < len(CLUSTER_COLOURS):
        return CLUSTER_COLOURS[index]
    hue = (index * _GOLDEN_ANGLE) % 360.0
    r, g, b = colorsys.hsv_to_rgb(hue / 360.0, 160 / 255, 200 / 255)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))


def cluster_colours(k: int) -> list[str]:
    """Colours of clusters ``0..k-1`` (see :func:`cluster_colour`).

    Raises:
        ValueError: If ``k`` is negative.
    """
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}.")
    return [cluster_colour(i) for i in range(k)]


# ----------------------------------------------------------------------------------------- labels

#: Longest label name; output columns add ``_pred``, ``_obs``, ``_res``, ``_lo``, ``_hi``.
LABEL_NAME_MAX = 31
#: A valid label name: a letter, then letters, digits or underscores.
LABEL_NAME_PATTERN = re.compile(rf"[A-Za-z][A-Za-z0-9_]{{0,{LABEL_NAME_MAX - 1}}}")
#: Words of a layer title kept in a default label name ("Crime incidents 2012 H2 (SFPD)" -> crime_incidents).
_NAME_WORDS = 3


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def label_name(text: str, taken: Iterable[str] = ()) -> str:
    """A short, readable, unused label name from a field name or a layer title.

    A field name (no spaces) is kept, in lower case with ``_`` for other characters: ``Population`` ->
    ``population``, ``crime_2012`` -> ``crime_2012``. A title (with spaces or brackets) loses its
    bracketed parts and its words holding digits (years, halves, versions) and keeps at most three words:
    ``"Crime incidents 2012 H2 (SFPD)"`` -> ``crime_incidents``; when nothing is left the whole title is
    used (``"2012 Q1"`` -> ``label_2012_q1``). A name in ``taken`` gets ``_2``, ``_3``, ... The result
    matches :data:`LABEL_NAME_PATTERN`.
    """
    base = _slug(text)
    if re.search(r"[\s()\[\]]", text.strip()):
        plain = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text)
        words = [w for w in _slug(plain).split("_") if w and not any(ch.isdigit() for ch in w)]
        base = "_".join(words[:_NAME_WORDS]) or base
    if not base or not base[0].isalpha():
        base = f"label_{base}".rstrip("_")
    base = base[:LABEL_NAME_MAX].rstrip("_")
    used = set(taken)
    name, n = base, 2
    while name in used:
        suffix = f"_{n}"
        name = base[: LABEL_NAME_MAX - len(suffix)] + suffix
        n += 1
    return name


#: Field names that are identifiers, however they hold their values.
_ID_WORDS = {"id", "fid", "gid", "uid", "oid", "geoid", "objectid", "ogc_fid", "fips", "code"}
#: Field names derived from the geometry (area, perimeter, a grid cell's bounds, coordinates).
_GEOMETRY_NAMES = {
    "area", "shape_area", "shape_leng", "shape_length", "perimeter", "censusarea", "aland", "awater",
    "aland10", "awater10", "area_km2", "area_m2", "left", "top", "right", "bottom", "xmin", "xmax", "ymin",
    "ymax", "x", "y", "lon", "lat", "longitude", "latitude", "centroid_x", "centroid_y",
}  # fmt: skip


def is_label_field(
    name: str, integer: bool = False, n_values: int = 0, n_distinct: int = 0, span: int | None = None
) -> bool:
    """Whether a numeric field may be offered as a label to predict.

    Not offered: identifiers (a name that is or ends in an id word such as ``id``, ``fid``, ``GEOID``,
    ``OBJECTID``, ``tract_id``, ``FIPS``; or an integer field whose every value is distinct and that runs
    without gaps, ``1, 2, ..., N`` in any order, which numbers the regions rather than measuring them) and
    geometry-derived fields (``CENSUSAREA``, ``Shape_Area``, ``ALAND``, a grid's
    ``left``/``top``/``right``/``bottom``, coordinates).

    Args:
        name: Field name.
        integer: The field holds integers.
        n_values: Number of non-missing values (0: unknown).
        n_distinct: Number of distinct values among them.
        span: ``max - min + 1`` of the values (None: unknown, then distinct integers alone mark a numbering).
            Distinct integers with gaps (household counts) are measurements, not a numbering.

    Returns:
        True if the field can be a label.
    """
    slug = _slug(name)
    if not slug or slug in _GEOMETRY_NAMES:
        return False
    words = slug.split("_")
    if slug in _ID_WORDS or words[-1] in _ID_WORDS or words[0] in {"geoid", "objectid", "fid"}:
        return False
    if re.fullmatch(r"(geo|object|f|g|o)?id\d*|[a-z]*fp\d*", slug):
        return False  # GEOID10, OBJECTID, STATEFP, COUNTYFP
    if integer and n_values > 1 and n_distinct == n_values and (span is None or span == n_values):
        return False
    return True


_TARGET_UNITS = {"count": "count", "density": "per km\u00b2"}


def label_units(target: str, log1p: bool = False, per_field: str | None = None) -> str:
    """Units of a label as a planner reads them.

    Args:
        target: ``count``, ``density`` or ``rate``.
        log1p: The model works on ``log1p`` of the target.
        per_field: The denominator of a rate (e.g. ``Population``).

    Returns:
        ``"count"``, ``"per km²"``, ``"per Population"``, wrapped as ``"log1p(per km²)"`` when modelled
        in log1p space.
    """
    if target == "rate":
        units = f"per {per_field}" if per_field else "per resident"
    else:
        units = _TARGET_UNITS.get(target, target)
    return f"log1p({units})" if log1p else units


# ------------------------------------------------------------------------------------ predictions

#: Nominal coverage of the prediction intervals (``[prediction] coverage``; see docs/analysis.md).
DEFAULT_COVERAGE = 0.9
#: Accepted range (inclusive) of the coverage.
COVERAGE_RANGE = (0.5, 0.99)

# ------------------------------------------------------------------------------------------ run files

#: The self-contained HTML report of a run, in the run folder.
REPORT_HTML = "report.html"
#: Cluster cards of every method of a run, in the run folder: ``{method: {cluster id: {"name", "size",
#: "features": [{"feature", "mean", "zscore"}], "examples": [region ids]}}}`` (docs/protocol.md).
CLUSTER_CARDS_JSON = "clusters.json"
#: Defining features (largest |z-score|) and example regions (nearest the cluster's mean embedding) per card.
CLUSTER_CARD_FEATURES, CLUSTER_CARD_EXAMPLES = 5, 5
#: Bar chart of R2 per method and label (error bars: std over repeats), in the run's ``figures/`` folder.
LEADERBOARD_PNG = "leaderboard.png"

# ------------------------------------------------------------------------------------ similar regions

#: Layer written by the ``similar`` job (backend/jobs.py) and ``regionlens:similar``.
SIMILARITY_LAYER = "similarity"
#: Cosine similarity (-1..1) of the region's centred embedding to the mean of the chosen regions'.
SIMILARITY_FIELD = "similarity"
#: 1 for the N most similar regions (the chosen ones excluded), else 0.
SIMILAR_TOP_FIELD = "top_n"
#: 1 for the chosen regions, else 0.
SIMILAR_CHOSEN_FIELD = "chosen"
#: Default N of :data:`SIMILAR_TOP_FIELD`.
SIMILAR_TOP_N = 10
#: Default output file of the ``similar`` job, in the run folder.
SIMILAR_GPKG = "similar.gpkg"
