"""Fixtures of the plugin tests (QGIS's Python: ``.venv/qgis``, run with QT_QPA_PLATFORM=offscreen).

From pytest-qgis (5.x), configured in pytest.ini (``qgis_gui_enabled = false``):

- ``qgis_app`` (session, autouse): the QgsApplication, initialised once, offscreen; its settings live
  in ``<repo>/.qgis-settings`` (git-ignored), not in the user's profile.
- ``qgis_iface``: a stub QgisInterface (map canvas, message bar that records messages, menus and
  toolbar calls accepted).
- ``qgis_new_project``: clears ``QgsProject.instance()`` before the test and returns it.

From pytest-qt: ``qtbot`` (``waitUntil`` runs the Qt event loop, e.g. while a QgsTask runs).

Defined here:

- ``repo_root``: the plugin folder (the repository root).
- ``backend_python``: the backend venv's interpreter; tests that need the real worker skip only when
  it does not exist.
- ``backend_info``: the real worker's ``info`` answer (methods, context presets, limits), asked once.
- ``make_run_gpkg``: writes a small run GeoPackage following docs/protocol.md (12 square regions in
  EPSG:32610, labels ``population`` and ``robbery``), so styling and rendering are tested without
  running the backend.
- ``run_gpkg``: one such GeoPackage in ``tmp_path/run_small/regionlens.gpkg``.
- ``sample``: the bundled sample city's layers loaded into a new project.
- ``fresh_registry``: the plugin's method registry back to the baseline only, before and after the test.
- ``installed_package`` (module): the repository root imported as QGIS imports a plugin folder.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

try:
    import qgis.core  # noqa: F401 - only checks that this is QGIS's Python
    from osgeo import gdal, ogr, osr
except ImportError:  # another interpreter (e.g. the backend venv running `pytest tests`): nothing to run here
    collect_ignore_glob = ["test_*.py", "*/test_*.py"]
else:
    # QGIS computes raster statistics for the sample image's contrast stretch and GDAL would save them
    # beside it (sf_landsat7_3857_30m.tif.aux.xml, inside the repository); tests must not write there.
    gdal.SetConfigOption("GDAL_PAM_ENABLED", "NO")

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO_ROOT / ".venv" / "backend" / "bin" / "python"

GRID_COLUMNS, GRID_ROWS, CELL = 4, 3, 500.0  # 12 square regions of 500 m
ORIGIN = (550_000.0, 4_180_000.0)  # San Francisco, UTM zone 10N
N_CLUSTERS = 4
EMB_DIM = 4
#: Readable cluster names (``cluster_name``) and the units every label was modelled in (``units`` of ``metrics``).
CLUSTER_NAMES = ["more cafes, banks", "darker image", "more schools; larger regions", "more bars; greener image"]
LABEL_UNITS = "log1p(per km\u00b2)"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The plugin folder (the repository root)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def backend_python() -> Path:
    """Interpreter of the backend venv (skip the test if it is not installed)."""
    if not BACKEND_PYTHON.is_file():
        pytest.skip(f"backend venv not installed ({BACKEND_PYTHON} missing); run `make venv-backend`")
    return BACKEND_PYTHON


@pytest.fixture(scope="session")
def backend_info(backend_python: Path) -> dict:
    """The backend worker's ``info`` answer (docs/protocol.md), asked once as the run dock asks it."""
    from plugin.worker_client import WorkerClient

    client = WorkerClient(backend_python, REPO_ROOT)
    try:
        client.start(timeout=120)
        return client.run_job("info", {}, idle_timeout=120)
    finally:
        client.close(timeout=5)


def _square(i: int) -> ogr.Geometry:
    col, row = i % GRID_COLUMNS, i // GRID_COLUMNS
    x0, y0 = ORIGIN[0] + col * CELL, ORIGIN[1] + row * CELL
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x0 + CELL, y0), (x0 + CELL, y0 + CELL), (x0, y0 + CELL), (x0, y0)):
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


def _layer(ds: ogr.DataSource, name: str, srs: osr.SpatialReference | None, fields: Sequence[tuple[str, int]]):
    layer = ds.CreateLayer(name, srs, ogr.wkbPolygon if srs is not None else ogr.wkbNone)
    assert layer is not None, f"cannot create layer {name}"
    for field_name, field_type in fields:
        assert layer.CreateField(ogr.FieldDefn(field_name, field_type)) == 0
    return layer


def _add(layer, values: dict, geometry: ogr.Geometry | None = None) -> None:
    feature = ogr.Feature(layer.GetLayerDefn())
    for key, value in values.items():
        if value is None:
            feature.SetFieldNull(key)
        else:
            feature.SetField(key, value)
    if geometry is not None:
        feature.SetGeometry(geometry)
    assert layer.CreateFeature(feature) == 0


def write_run_gpkg(
    folder: Path, labels: Sequence[str] = ("population", "robbery"), methods: Sequence[str] = ("baseline",)
) -> Path:
    """Write ``folder/regionlens.gpkg`` with the layers of docs/protocol.md; return its path.

    The first method's layers are unsuffixed; every further method ``m`` adds ``embeddings_m``,
    ``clusters_m``, ``predictions_m`` and ``cluster_profiles_m`` (as a run does), with its own values.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "regionlens.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path), options=["VERSION=1.3"])
    assert ds is not None, f"cannot create {path}"
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32610)
    n = GRID_COLUMNS * GRID_ROWS
    ids = [f"r{i:02d}" for i in range(n)]

    for m, method in enumerate(methods):
        sfx = "" if m == 0 else f"_{method}"
        emb_fields = [("region_id", ogr.OFTString)] + [(f"emb_{j:03d}", ogr.OFTReal) for j in range(EMB_DIM)]
        emb = _layer(ds, f"embeddings{sfx}", srs, emb_fields)
        for i in range(n):
            values = {f"emb_{j:03d}": math.sin(i + j + m) for j in range(EMB_DIM)}
            _add(emb, {"region_id": ids[i], **values}, _square(i))

        clusters = _layer(
            ds,
            f"clusters{sfx}",
            srs,
            [("region_id", ogr.OFTString), ("cluster", ogr.OFTInteger), ("cluster_name", ogr.OFTString)],
        )
        for i in range(n):
            c = i % N_CLUSTERS
            _add(clusters, {"region_id": ids[i], "cluster": c, "cluster_name": CLUSTER_NAMES[c]}, _square(i))

        pred_fields = [("region_id", ogr.OFTString)]
        for label in labels:
            pred_fields += [(f"{label}_{part}", ogr.OFTReal) for part in ("obs", "pred", "res")]
        predictions = _layer(ds, f"predictions{sfx}", srs, pred_fields)
        for i in range(n):
            row: dict = {"region_id": ids[i]}
            for k, label in enumerate(labels):
                obs = 1000.0 * (k + 1) + 150.0 * i
                pred = obs + (-1) ** i * 40.0 * (i % 5) + m  # residuals of both signs
                if i == n - 1:  # one missing label value, as the protocol allows
                    row.update({f"{label}_obs": None, f"{label}_pred": pred, f"{label}_res": None})
                else:
                    row.update({f"{label}_obs": obs, f"{label}_pred": pred, f"{label}_res": obs - pred})
            _add(predictions, row, _square(i))

    metric_fields = [
        ("method", ogr.OFTString), ("label", ogr.OFTString), ("target", ogr.OFTString), ("units", ogr.OFTString),
        ("model", ogr.OFTString), ("protocol", ogr.OFTString), ("n_regions", ogr.OFTInteger),
    ] + [(f"{m}_{s}", ogr.OFTReal) for m in ("mae", "rmse", "r2") for s in ("mean", "std")]  # fmt: skip
    metrics = _layer(ds, "metrics", None, metric_fields)
    for method, label in [(method, label) for method in methods for label in labels]:
        for protocol in ("shuffled", "spatial"):
            _add(metrics, {
                "method": method, "label": label, "target": f"log1p({label} per km\u00b2)", "units": LABEL_UNITS,
                "model": "ridge", "protocol": protocol,
                "n_regions": n, "mae_mean": 1.0, "mae_std": 0.1, "rmse_mean": 1.5, "rmse_std": 0.2,
                "r2_mean": 0.4, "r2_std": 0.05,
            })  # fmt: skip

    for m, method in enumerate(methods):
        profiles = _layer(
            ds, "cluster_profiles" if m == 0 else f"cluster_profiles_{method}", None,
            [("cluster", ogr.OFTInteger), ("cluster_name", ogr.OFTString), ("n_regions", ogr.OFTInteger),
             ("feature", ogr.OFTString), ("mean", ogr.OFTReal), ("zscore", ogr.OFTReal)],
        )  # fmt: skip
        for c in range(N_CLUSTERS):
            _add(profiles, {"cluster": c, "cluster_name": CLUSTER_NAMES[c], "n_regions": 3,
                            "feature": "POI share: cafe", "mean": 0.1 * c, "zscore": c - 1.5})
    ds = None  # noqa: F841 - closes and flushes the GeoPackage
    return path


@pytest.fixture
def make_run_gpkg() -> Callable[..., Path]:
    """``make_run_gpkg(folder, labels=("population", "robbery"), methods=("baseline",)) -> Path``."""
    return write_run_gpkg


@pytest.fixture
def run_gpkg(tmp_path: Path) -> Path:
    """A small run GeoPackage at ``tmp_path/run_small/regionlens.gpkg``."""
    return write_run_gpkg(tmp_path / "run_small")


@pytest.fixture
def sample(qgis_new_project):
    """The sample city's layers (block groups, POIs, crime incidents, Landsat) in a new project."""
    from plugin.sample_data import load_sample_data

    return load_sample_data(qgis_new_project)


@pytest.fixture
def fresh_registry():
    """The plugin's method registry holds the baseline only during the test and after it."""
    from plugin.parameters import METHODS

    METHODS.reset()
    yield METHODS
    METHODS.reset()


@pytest.fixture(scope="module")
def installed_package(repo_root: Path) -> ModuleType:
    """The repository root imported as QGIS does: a package named after the plugin folder."""
    name = "regionlens"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, repo_root / "__init__.py", submodule_search_locations=[str(repo_root)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def count_feature_reads() -> Callable[[qgis.core.QgsVectorLayer], list[int]]:
    """``count_feature_reads(layer) -> seen``: from now on every feature Python reads from ``layer`` through
    ``getFeatures`` appends 1 to ``seen`` (QGIS's own C++ passes do not)."""

    def wrap(layer: qgis.core.QgsVectorLayer) -> list[int]:
        seen: list[int] = []
        real = layer.getFeatures

        def counting(*args: object) -> object:
            for feature in real(*args):
                seen.append(1)
                yield feature

        layer.getFeatures = counting  # type: ignore[method-assign]
        return seen

    return wrap
