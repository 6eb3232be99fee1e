""""Apply a saved model to another layer…" (plugin/ui/apply_dialog.py): model needs, validation, the real worker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer

from plugin.tasks import RunSucceeded
from plugin.ui.apply_dialog import ApplyDialog, apply_inputs_dir, read_saved_model, validate_apply

# Trains a tiny CaLLiPer model (fake sentence encoder, one epoch) on four squares and saves it to argv[1].
TRAIN_SCRIPT = """
import sys, zlib
import geopandas as gpd, numpy as np, pandas as pd, torch
from shapely.geometry import box
from backend.models.calliper import CaLLiPerEmbedder, text
from backend.views import Views

class Fake:
    def encode(self, texts, **kw):
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]).astype("float32")

torch.set_num_threads(1)
text._load_encoder = lambda name, device: Fake()
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


def write_config(folder: Path, name: str, vocabulary: dict, params: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    config = {"name": name, "dim": 8, "seed": 0, "device": "auto", "params": params or {}, "vocabulary": vocabulary}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


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


def test_read_saved_model(tmp_path: Path) -> None:
    cal = read_saved_model(write_config(tmp_path / "cal", "calliper", {"poi_points": ["cafe"]},
                                        {"region_mode": "polygon"}))
    assert cal.name == "calliper" and not cal.pois and not cal.imagery and "inside each polygon" in cal.summary
    poi_mode = read_saved_model(write_config(tmp_path / "calp", "calliper", {}, {"region_mode": "poi"}))
    assert poi_mode.pois
    base = read_saved_model(write_config(tmp_path / "base", "baseline", {"poi_counts": ["cafe"], "image_stats": []}))
    assert base.pois and base.imagery
    with pytest.raises(ValueError, match="no saved RegionLens model"):
        read_saved_model(tmp_path / "nothing")


def test_dialog_adapts_to_the_model_and_validates(tmp_path: Path, qgis_new_project: QgsProject) -> None:
    layer = square_layer()
    qgis_new_project.addMapLayer(layer)
    dialog = ApplyDialog(plugin=None, project=qgis_new_project, backend_python=Path("/usr/bin/python3"))
    assert dialog.region_id_combo.currentField() == "cell_id"
    assert any("saved model" in p for p in dialog.problems) and not dialog.apply_button.isEnabled()

    dialog.model_file.setFilePath(str(write_config(tmp_path / "base", "baseline", {"poi_counts": ["cafe"]})))
    assert dialog.poi_box.isEnabled() and any("needs a POI layer" in p for p in dialog.refresh())

    dialog.model_file.setFilePath(str(write_config(tmp_path / "cal", "calliper", {}, {"region_mode": "polygon"})))
    dialog.output_file.setFilePath(str(tmp_path / "out.txt"))
    assert not dialog.poi_box.isEnabled()
    assert dialog.problems == ["The output must be a GeoPackage file ending in .gpkg."]
    (tmp_path / "out.gpkg").write_text("")
    dialog.output_file.setFilePath(str(tmp_path / "out.gpkg"))
    assert any("exists" in p for p in dialog.problems)
    dialog.overwrite_check.setChecked(True)
    assert dialog.problems == [] and dialog.apply_button.isEnabled()
    assert validate_apply(dialog.choices(), qgis_new_project, None)[-1].startswith("The backend is not set up")


def test_idle_dialog_shows_no_cancel_button_and_ignores_the_wheel(qgis_new_project: QgsProject, qtbot) -> None:
    from tests.plugin.test_wheel_guard import wheel

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
