"""Write the README's screenshots (``make screenshots``; run in QGIS's Python, offscreen).

- ``docs/images/run_dock.png``: the run dock filled in for the sample city (methods from the real backend);
- ``docs/images/results_map.png``: the demo run's clusters rendered by QGIS (from ``out/demo``);
- ``docs/images/explorer.png``: the embedding explorer on the demo run, with a few regions selected.

Needs ``make demo`` first (for ``out/demo/regionlens.gpkg``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _wait(app, seconds: float, until=lambda: False) -> None:  # noqa: ANN001
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    """Render the three screenshots; returns the exit code."""
    from qgis.core import QgsApplication, QgsProject
    from qgis.PyQt.QtCore import QSize, Qt
    from qgis.PyQt.QtGui import QImage

    app = QgsApplication([], True)
    app.initQgis()
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    gpkg = ROOT / "out" / "demo" / "regionlens.gpkg"
    if not gpkg.is_file():
        print(f"{gpkg} is missing: run `make demo` first.", file=sys.stderr)
        return 2

    from plugin.parameters import LabelChoice, RunChoices
    from plugin.results import load_run_outputs
    from plugin.sample_data import load_sample_data
    from plugin.ui.run_dock import RunDock

    project = QgsProject.instance()
    manager = QgsApplication.taskManager()
    sample = load_sample_data(project)
    fake_plugin = SimpleNamespace(iface=None, start_run=None, ensure_backend=lambda *a, **k: True, tasks=[])
    dock = RunDock(fake_plugin, project=project, fetch_info=True)
    _wait(app, 0.5)
    _wait(app, 90, lambda: manager.countActiveTasks() == 0)  # methods from the backend's `info`
    dock.set_choices(RunChoices(
        region_layer_id=sample["block_groups"].id(), region_id_field="GEO_ID",
        poi_layer_id=sample["pois"].id(), poi_category_field="category", poi_name_field="name",
        raster_layer_ids=[sample["landsat"].id()],
        labels=[LabelChoice(field="Population"), LabelChoice(field="Robbery")],
        output_dir=str(Path.home() / "regionlens" / "sf_run"),
    ))
    dock.resize(QSize(480, 1150))
    dock.show()
    _wait(app, 1.0)
    dock.grab().save(str(out / "run_dock.png"))
    dock.close()
    print(out / "run_dock.png")

    from plugin.render_demo import render_demo

    render_demo(ROOT / "out" / "demo")
    image = QImage(str(ROOT / "out" / "demo" / "map_clusters.png"))
    image.scaledToWidth(1000, Qt.TransformationMode.SmoothTransformation).save(str(out / "results_map.png"))
    print(out / "results_map.png")

    from plugin.explorer.widget import open_explorer

    layers = load_run_outputs(gpkg, project)
    explorer = open_explorer(None, layers["embeddings"], layers["clusters"])
    explorer.resize(QSize(900, 700))
    explorer.show()
    _wait(app, 1.0)
    xy = explorer.coordinates
    explorer.select_in_plot(float(xy[:, 0].min()), float(xy[:, 0].mean()), float(xy[:, 1].mean()),
                            float(xy[:, 1].max()))
    _wait(app, 1.0)
    explorer.grab().save(str(out / "explorer.png"))
    print(out / "explorer.png")
    explorer.close()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
