""""Apply a saved model to another layer…" (plugin/ui/apply_dialog.py): model needs, validation, the real worker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer

from plugin.parameters import RunChoices, apply_request, raster_path, to_run_config
from plugin.sample_data import load_sample_data
from plugin.tasks import RunSucceeded
from plugin.ui.apply_dialog import ApplyDialog, SavedModel, apply_inputs_dir, to_apply_parameters, validate_apply

# Trains a tiny CaLLiPer model (fake sentence encoder, one epoch) on four squares and saves it to argv[1].
TRAIN_SCRIPT = """
import sys, zlib
import geopandas as gpd, numpy as np, pandas as pd, torch
from shapely.geometry import box
from backend.encoders import text
from backend.models.calliper import CaLLiPerEmbedder
from backend.views import Views

class Fake:
    def encode(self, texts, **kw):
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]).astype("float32")

torch.set_num_threads(1)
text.load_text_encoder = lambda name, device: Fake()
x0, y0 = 550_000.0, 4_180_000.0
squares = [box(x0 + dx, y0 + dy, x0 + dx + 500, y0 + dy + 500) for dy in (0, 500) for dx in (0, 500)]
ids = pd.Index(list("abcd"), name="region_id")
rng = np.random.default_rng(0)
rows = [(x0 + rng.uniform(0, 1000), y0 + rng.uniform(0, 1000), "a", c) for c in ("cafe", "bank") * 20]
pts = pd.DataFrame(rows, columns=["x", "y", "region_id", "category"]).assign(text="", name=None)
views = Views(region_ids=ids, poi_points=pts, geometry=gpd.GeoSeries(squares, index=ids, crs="EPSG:32610"))
CaLLiPerEmbedder(dim=4, device="cpu", epochs=1, hidden=16, blocks=1, scales=4, names="no", cache_dir="none",
                 batch_size=16).fit(views).save(sys.argv[1])
"""


# Describes, as the backend saves it, a chips-CooKIE model and a ReFound model (POIs and imagery), without
# training: the backend's own Embedder.inputs() on a fitted state. Prints {"cookie": config, "refound": config}.
DESCRIBE_SCRIPT = """
import json
from backend.models import CooKIEEmbedder, RefoundEmbedder
cookie = CooKIEEmbedder(dim=8)
cookie.vocabulary = {"poi_counts": ["bank", "cafe"], "chips": ["sf_landsat7_3857_30m"]}
cookie.meta = {"sources": {"poi": "poi_counts", "image": "chips"}}
refound = RefoundEmbedder(dim=8)
refound.vocabulary = {"chips": ["sf_landsat7_3857_30m"]}
refound.meta = {"has_pois": True, "has_image": True, "raster": "sf_landsat7_3857_30m"}
out = {}
for model in (cookie, refound):
    model._fitted = True
    out[model.name] = {"name": model.name, "dim": 8, "seed": 0, "device": "auto", "params": {},
                       "vocabulary": model.vocabulary, "inputs": model.inputs()}
print(json.dumps(out))
"""


def saved_configs(backend_python: Path, repo_root: Path, folder: Path) -> dict[str, Path]:
    """Model folders holding the backend's config.json of a chips-CooKIE and a ReFound model."""
    done = subprocess.run([str(backend_python), "-c", DESCRIBE_SCRIPT], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folders = {}
    for name, config in json.loads(done.stdout.strip().splitlines()[-1]).items():
        folders[name] = folder / name
        folders[name].mkdir(parents=True)
        (folders[name] / "config.json").write_text(json.dumps(config))
    return folders


def square_layer(n: int = 3, name: str = "cells") -> QgsVectorLayer:
    layer = QgsVectorLayer("Polygon?crs=EPSG:32610&field=cell_id:string(10)&field=pop:integer", name, "memory")
    features = []
    for i in range(n):
        feature = QgsFeature(layer.fields())
        feature.setAttributes([f"c{i}", i])
        x = 550_000.0 + 400 * i
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, 4_180_100.0, x + 400, 4_180_500.0)))
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


def test_saved_model_from_the_backend_answer() -> None:
    answer = {"model": {"folder": "/m", "name": "calliper", "title": "CaLLiPer", "dim": 8,
                        "inputs": {"regions": {"views": [], "fields": ["id_field"], "required": True}}}}
    model = SavedModel.from_info(answer)
    assert model.name == "calliper" and not model.needs("pois") and not model.needs("rasters")
    assert "polygons alone" in model.summary and "(8-d)" in model.summary
    answer["model"]["inputs"]["landuse"] = {"views": ["landuse"], "fields": ["class_field"], "required": False}
    assert "land-use layer" in SavedModel.from_info(answer).summary  # said, though the dialog cannot give it
    with pytest.raises(ValueError, match="did not describe"):
        SavedModel.from_info({"version": "0.1"})


def test_dialog_asks_the_backend_what_a_model_needs(
    backend_python: Path, repo_root: Path, tmp_path: Path, qgis_new_project: QgsProject, qtbot
) -> None:
    folders = saved_configs(backend_python, repo_root, tmp_path / "models")
    sample = load_sample_data(qgis_new_project)
    dialog = ApplyDialog(plugin=None, project=qgis_new_project, backend_python=backend_python)
    assert dialog.region_id_combo.currentField() == "GEO_ID"
    assert any("saved model" in p for p in dialog.problems) and not dialog.apply_button.isEnabled()
    dialog.output_file.setFilePath(str(tmp_path / "out.gpkg"))

    # CooKIE that learned from image chips: the raster is asked for and sent (it used to be dropped).
    dialog.model_file.setFilePath(str(folders["cookie"]))
    assert dialog.model_task is not None and any("Asking the backend" in p for p in dialog.problems)
    qtbot.waitUntil(lambda: dialog.model_task is None, timeout=60_000)
    assert dialog.model is not None and dialog.model.name == "cookie"
    assert not dialog.raster_box.isHidden() and dialog.poi_box.isEnabled()
    assert dialog.problems == ["This cookie model needs a POI layer or a raster."]
    dialog.raster_combo.setLayer(sample["landsat"])
    dialog.poi_combo.setLayer(sample["pois"])
    assert dialog.problems == [], dialog.problems
    params = to_apply_parameters(dialog.choices(), backend_python, dialog.model, qgis_new_project)
    assert params.params["rasters"] == [str(raster_path(sample["landsat"]))]
    assert params.params["category_field"] == "category" and params.params["name_field"] is None  # counts only

    # ReFound (POI names and image chips): both go to the worker, names included.
    dialog.model_file.setFilePath(str(folders["refound"]))
    qtbot.waitUntil(lambda: dialog.model_task is None, timeout=60_000)
    assert dialog.model is not None and dialog.model.needs("pois") and dialog.model.needs("rasters")
    assert dialog.problems == [], dialog.problems
    params = to_apply_parameters(dialog.choices(), backend_python, dialog.model, qgis_new_project)
    assert params.params["rasters"] == [str(raster_path(sample["landsat"]))]
    assert (params.params["category_field"], params.params["name_field"]) == ("category", "name")
    assert "regions" in params.params and Path(params.params["pois"]).is_file()
    # one request builder: Apply's request is the run dock's configuration of the same layers as an apply request
    chosen = dialog.choices()
    run = to_run_config(RunChoices(
        region_layer_id=chosen.region_layer_id, region_id_field=chosen.region_id_field,
        poi_layer_id=chosen.poi_layer_id, poi_category_field=chosen.poi_category_field,
        poi_name_field=chosen.poi_name_field, raster_layer_ids=[chosen.raster_layer_id], labels=[],
        output_dir=str(tmp_path / "run"),
    ), project=qgis_new_project, inputs_dir=apply_inputs_dir(chosen.output))  # fmt: skip
    assert params.params == apply_request(run, chosen.model_dir, chosen.output, chosen.overwrite, chosen.device)

    dialog.model_file.setFilePath(str(tmp_path / "nothing"))  # the backend's error is shown
    qtbot.waitUntil(lambda: dialog.model_task is None, timeout=60_000)
    assert any("no saved RegionLens model" in p for p in dialog.problems)


def test_dialog_validates(tmp_path: Path, qgis_new_project: QgsProject) -> None:
    layer = square_layer()
    qgis_new_project.addMapLayer(layer)
    dialog = ApplyDialog(plugin=None, project=qgis_new_project, backend_python=Path("/usr/bin/python3"))
    assert dialog.region_id_combo.currentField() == "cell_id"
    dialog.model = SavedModel(tmp_path, "calliper", 8, {"regions": {"fields": ["id_field"], "required": True}})
    dialog.model_file.blockSignals(True)
    dialog.model_file.setFilePath(str(tmp_path))
    dialog.model_file.blockSignals(False)
    dialog.output_file.setFilePath(str(tmp_path / "out.txt"))
    assert not dialog.poi_box.isEnabled() and dialog.raster_box.isHidden()
    assert dialog.problems == ["The output must be a GeoPackage file ending in .gpkg."]
    (tmp_path / "out.gpkg").write_text("")
    dialog.output_file.setFilePath(str(tmp_path / "out.gpkg"))
    assert any("exists" in p for p in dialog.problems)
    dialog.overwrite_check.setChecked(True)
    assert dialog.problems == [] and dialog.apply_button.isEnabled()
    assert validate_apply(dialog.choices(), qgis_new_project, None, dialog.model)[-1].startswith("The backend is not")


def test_idle_dialog_shows_no_cancel_button_and_ignores_the_wheel(qgis_new_project: QgsProject, qtbot) -> None:
    from tests.plugin.ui.test_wheel_guard import wheel

    qgis_new_project.addMapLayer(square_layer())
    dialog = ApplyDialog(plugin=None, project=qgis_new_project, backend_python=Path("/usr/bin/python3"))
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.close_button.isVisible() and not dialog.cancel_button.isVisible()
    device = dialog.device_combo.currentIndex()
    assert not wheel(dialog.device_combo).isAccepted()
    assert dialog.device_combo.currentIndex() == device


def test_apply_runs_the_worker_and_loads_the_layer(backend_python: Path, repo_root: Path, tmp_path: Path,
                                                   qgis_new_project: QgsProject, qtbot) -> None:
    model_dir = tmp_path / "run" / "models" / "calliper"
    done = subprocess.run([str(backend_python), "-c", TRAIN_SCRIPT, str(model_dir)], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    layer = square_layer(5, "new cells")
    qgis_new_project.addMapLayer(layer)

    class Plugin:
        iface = None
        tasks: list = []

    plugin = Plugin()
    dialog = ApplyDialog(plugin, project=qgis_new_project, backend_python=backend_python)
    dialog.model_file.setFilePath(str(model_dir))
    qtbot.waitUntil(lambda: dialog.model_task is None, timeout=60_000)
    out = tmp_path / "applied" / "cells.gpkg"
    dialog.output_file.setFilePath(str(out))
    assert dialog.problems == [], dialog.problems
    task = dialog.start()
    assert task is not None and plugin.tasks == [task] and not dialog.apply_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.last_outcome is not None, timeout=120_000)

    outcome = dialog.last_outcome
    assert isinstance(outcome, RunSucceeded), outcome
    assert outcome.gpkg == out.resolve() and out.is_file()
    assert outcome.result["method"] == "calliper" and outcome.result["n_regions"] == 5
    assert plugin.tasks == [] and not apply_inputs_dir(out).exists()  # exported inputs removed
    embeddings = dialog.loaded_layers["embeddings"]
    assert embeddings.isValid() and embeddings.featureCount() == 5
    assert [f.name() for f in embeddings.fields()][1:] == ["region_id", "emb_000", "emb_001", "emb_002", "emb_003"]
    assert embeddings.id() in qgis_new_project.mapLayers()
    assert dialog.apply_button.isEnabled() is False  # the output now exists; replacing must be ticked
