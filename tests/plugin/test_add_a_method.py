"""Adding a method is one backend module plus one registry line: the plugin offers it everywhere unchanged.

The backend's toy method (tests/backend/models/toy_method.py) joins the backend's registry through the
environment variable ``REGIONLENS_EXTRA_METHODS`` (backend/models/__init__.py), which every worker the
plugin starts inherits. With it, the run dock lists the method with an Advanced panel generated from the
parameters it describes, Processing's ``regionlens:embed`` offers it (and checks its parameters), runs it
on the sample city, and the Apply dialog applies a saved toy model. Nothing in the plugin names it; a
last test checks that Processing names no method at all.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsVectorLayer
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from plugin.common import common
from plugin.main import RegionLensPlugin
from plugin.parameters import METHODS, info_cache_path, method_params_problem
from plugin.processing import _base
from plugin.processing.embed import EmbedAlgorithm
from plugin.sample_data import load_sample_data
from plugin.tasks import RunSucceeded
from plugin.ui.apply_dialog import ApplyDialog
from plugin.ui.run_dock import RunDock

EXTRA_METHODS_ENV = "REGIONLENS_EXTRA_METHODS"  # backend.models.EXTRA_METHODS_ENV
TOY_MODULE = "tests.backend.models.toy_method"
TOY_PARAMS = {"scale": 2.0, "norm": "l1", "repeats": 3, "centre": False}
SF = Path(__file__).resolve().parents[2] / "resources" / "sample_data" / "sf"

# Fits the toy method on six regions' POI counts and saves it to argv[1] (the worker's own save()).
SAVE_TOY = """
import sys
import numpy as np, pandas as pd
from backend.models import EMBEDDERS
from backend.views import Views
ids = pd.Index([f"r{i}" for i in range(6)], name="region_id")
counts = pd.DataFrame(np.arange(18).reshape(6, 3) % 4, index=ids, columns=["bank", "cafe", "school"])
EMBEDDERS["toy"](dim=5).fit(Views(region_ids=ids, tables={"poi_counts": counts})).save(sys.argv[1])
"""


@pytest.fixture
def toy_backend(backend_python: Path, monkeypatch: pytest.MonkeyPatch):
    """Workers started during the test register the toy method; the plugin's registry and its cached
    ``info`` answer are restored afterwards (they would otherwise offer the toy to later tests)."""
    monkeypatch.setenv(EXTRA_METHODS_ENV, TOY_MODULE)
    cache = info_cache_path()
    before = cache.read_bytes() if cache.is_file() else None
    cache.unlink(missing_ok=True)  # the cached answer has no toy: ask the worker
    METHODS.reset()
    yield backend_python
    METHODS.reset()
    cache.unlink(missing_ok=True)
    if before is not None:
        cache.write_bytes(before)


def test_run_dock_lists_the_toy_with_generated_parameters(toy_backend, qgis_iface, qgis_new_project, qtbot) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    dock = RunDock(plugin, None, qgis_new_project)  # asks the worker for its methods in the background
    qtbot.addWidget(dock)
    try:
        qtbot.waitUntil(lambda: dock.info_task is None, timeout=90_000)
        assert "toy" in dock.method_sections and list(dock.method_sections)[0] == common.DEFAULT_METHOD
        section = dock.method_sections["toy"]
        assert section.checkbox.text() == "Toy" and section.dim.value() == 6  # its title and default size
        widgets = section.param_widgets
        assert list(widgets) == list(TOY_PARAMS)
        assert isinstance(widgets["scale"], QDoubleSpinBox)
        assert (widgets["scale"].minimum(), widgets["scale"].maximum()) == (0.5, 10.0)
        assert isinstance(widgets["norm"], QComboBox)
        assert [widgets["norm"].itemText(i) for i in range(widgets["norm"].count())] == ["l1", "l2"]
        assert isinstance(widgets["repeats"], QSpinBox) and widgets["repeats"].minimum() == 1
        assert isinstance(widgets["centre"], QCheckBox)
        assert widgets["scale"].toolTip().startswith("Multiplies every category share")
        section.set_checked(True)
        widgets["norm"].setCurrentIndex(1)
        chosen = {m.name: m for m in dock.choices().methods}
        assert chosen["toy"].params == {**TOY_PARAMS, "norm": "l2"} and chosen["toy"].dim == 6
    finally:
        dock.disconnect_project()


def test_processing_offers_checks_and_runs_the_toy(toy_backend, tmp_path: Path, qgis_new_project) -> None:
    assert _base.ensure_methods(toy_backend)  # what the provider does when it loads its algorithms
    algorithm = EmbedAlgorithm()
    algorithm.initAlgorithm()
    assert algorithm.parameterDefinition("METHOD").options()[-1] == "toy"
    help_text = algorithm.parameterDefinition("METHOD_PARAMS").help()
    assert "toy: scale (a number, 0.5 to 10, default 2.0): Multiplies every category share." in help_text
    assert "norm (one of l1, l2" in help_text
    assert "norm must be one of l1, l2" in method_params_problem("toy", {"norm": "l3"})
    assert "no parameter 'epochs'" in method_params_problem("toy", {"epochs": 3})
    assert "out of range" in method_params_problem("toy", {"scale": 20})
    assert "a whole number" in method_params_problem("toy", {"repeats": 1.5})

    context = QgsProcessingContext()
    context.setProject(qgis_new_project)
    feedback = QgsProcessingFeedback()
    params = {"REGIONS": str(SF / "sf_block_groups_crime_pop.geojson"), "REGION_ID": "GEO_ID",
              "POIS": str(SF / "sf_pois_osm.geojson"), "POI_CATEGORY": "category", "METHOD": ["toy"],
              "METHOD_PARAMS": '{"norm": "l3"}', "K": 3, "DEVICE": common.DEVICES.index("cpu"),
              "OUTPUT_DIR": str(tmp_path / "run")}  # fmt: skip
    ok, message = algorithm.checkParameterValues(params, context)
    assert not ok and "norm must be one of l1, l2" in message  # refused before anything runs
    params["METHOD_PARAMS"] = '{"norm": "l2", "repeats": 2}'
    results, ok = algorithm.run(params, context, feedback)
    assert ok, results
    embeddings = QgsVectorLayer(results["EMBEDDINGS"], "toy", "ogr")
    assert embeddings.isValid() and embeddings.featureCount() == 579
    assert sum(name.startswith("emb_") for name in embeddings.fields().names()) == 6
    manifest = json.loads((tmp_path / "run" / common.RUN_JSON).read_text())
    assert manifest["methods"] == ["toy"]


def test_apply_dialog_applies_a_saved_toy_model(toy_backend, repo_root: Path, tmp_path: Path,
                                                qgis_new_project: QgsProject, qtbot) -> None:  # fmt: skip
    model_dir = tmp_path / "run" / "models" / "toy"
    done = subprocess.run([str(toy_backend), "-c", SAVE_TOY, str(model_dir)], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sample = load_sample_data(qgis_new_project)

    class Plugin:
        iface = None
        tasks: list = []

    dialog = ApplyDialog(Plugin(), project=qgis_new_project, backend_python=toy_backend)
    qtbot.addWidget(dialog)
    dialog.model_file.setFilePath(str(model_dir))
    qtbot.waitUntil(lambda: dialog.model_task is None, timeout=60_000)
    assert dialog.model is not None and dialog.model.name == "toy" and dialog.model.requires("pois")
    assert dialog.model.summary.startswith("Toy (POI category shares, tests only): needs a POI layer (5-d)")
    assert dialog.poi_box.isEnabled()
    dialog.poi_combo.setLayer(sample["pois"])
    dialog.poi_category_combo.setField("category")
    out = tmp_path / "applied.gpkg"
    dialog.output_file.setFilePath(str(out))
    assert dialog.problems == [], dialog.problems
    assert dialog.start() is not None
    qtbot.waitUntil(lambda: dialog.last_outcome is not None, timeout=120_000)
    assert isinstance(dialog.last_outcome, RunSucceeded), dialog.last_outcome
    assert dialog.last_outcome.result["method"] == "toy" and dialog.last_outcome.result["dim"] == 5
    assert dialog.loaded_layers[common.LAYER_EMBEDDINGS].featureCount() == sample["block_groups"].featureCount()


def test_processing_names_no_method() -> None:
    """Processing takes its methods from the registry the backend fills: no method name in its code."""
    names = {common.DEFAULT_METHOD, "hafusion", "calliper", "cookie", "refound", "fusion", "toy"}
    folder = Path(_base.__file__).parent
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == []
    assert _base.METHODS is METHODS  # the plugin's one registry
