"""What a planner waits for in QGIS when a national run's results come in: open, style and draw them.

Usage (QGIS's Python: the plugin test venv)::

    QT_QPA_PLATFORM=offscreen .venv/qgis/bin/python bench/qgis_load.py out/scale/run_250000_fusion \
        [--size 1600x1000] [--json out/scale/qgis_load.json]

For the run folder's ``regionlens.gpkg`` it measures, in one process and in this order:

* **QGIS alone** (the baseline): the primary clusters layer opened as a plain OGR layer with QGIS's default
  single-symbol style, drawn at the whole extent and at a view of 1/16 of it (a zoomed-in map: the R-tree
  spatial index decides which polygons are read);
* **RegionLens**: the plugin's ``load_run_outputs`` (every layer of the run in its group, styled: clusters by
  cluster with their names, predictions by quantile classes, residuals, interval widths), then the styled
  clusters and predictions layers drawn at the whole extent, the clusters at the 1/16 view and at the most
  zoomed-out view where their labels show (``plugin.styling.label_scale_limit``: about 1,500 regions in view).

Each row: wall seconds, CPU seconds of the process and its resident memory (MB) after the step. Drawing is
QGIS's own sequential map renderer into an image of ``--size`` pixels (what the map canvas does in a thread of
its own, so a slow draw never blocks the QGIS window; the numbers say how long the map stays blank).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Fraction of the extent's width and height shown by the zoomed-in view (1/4 x 1/4 = 1/16 of the area).
ZOOM = 0.25


def _rss_mb() -> float:
    """Resident memory of this process now (MB; Linux), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def measure(rows: list[dict[str, Any]], who: str, step: str, call: Callable[[], Any]) -> Any:
    """Run ``call()`` and append its row (wall s, CPU s, RSS MB after) to ``rows``; return its result."""
    t0, c0 = time.perf_counter(), _cpu()
    out = call()
    rows.append({"who": who, "step": step, "seconds": round(time.perf_counter() - t0, 2),
                 "cpu_s": round(_cpu() - c0, 2), "rss_mb": round(_rss_mb(), 1)})
    return out


def draw(layer: Any, size: tuple[int, int], zoom: float = 1.0) -> int:
    """Draw ``layer`` at its whole extent (or the central ``zoom`` x ``zoom`` part) into an image; returns the
    number of features in the view."""
    from qgis.core import QgsFeatureRequest, QgsMapRendererSequentialJob, QgsMapSettings, QgsRectangle
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    extent = QgsRectangle(layer.extent())
    extent.scale(zoom)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(*size))
    settings.setOutputDpi(96)
    settings.setBackgroundColor(QColor(255, 255, 255))
    settings.setFlag(QgsMapSettings.Flag.Antialiasing, True)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    if job.renderedImage().isNull():
        raise RuntimeError(f"QGIS drew nothing for {layer.name()}.")
    request = QgsFeatureRequest().setFilterRect(extent).setNoAttributes()
    request.setFlags(QgsFeatureRequest.Flag.NoGeometry)
    return sum(1 for _ in layer.getFeatures(request)) if zoom < 1.0 else int(layer.featureCount())


def _label_zoom(layer: Any, size: tuple[int, int]) -> float:
    """The zoom (fraction of the extent's width) at which the cluster labels appear: the plugin's label scale
    limit over the scale of the whole extent in an image of ``size`` (1.0 when every scale is labelled)."""
    from qgis.core import QgsMapSettings
    from qgis.PyQt.QtCore import QSize

    from plugin.styling import label_scale_limit

    limit = label_scale_limit(layer)
    if not limit:
        return 1.0
    settings = QgsMapSettings()
    settings.setDestinationCrs(layer.crs())
    settings.setOutputSize(QSize(*size))
    settings.setOutputDpi(96)
    settings.setExtent(layer.extent())
    return min(1.0, 0.999 * limit / settings.scale())


def run(run_dir: Path, size: tuple[int, int]) -> dict[str, Any]:
    """Every measurement on ``run_dir`` (QgsApplication must be running)."""
    from qgis.core import QgsProject, QgsVectorLayer

    from plugin.common import common
    from plugin.results import load_run_outputs, open_gpkg_layer

    gpkg = run_dir / common.GPKG_NAME
    if not gpkg.is_file():
        raise FileNotFoundError(f"{gpkg} not found: give a RegionLens run folder.")
    rows: list[dict[str, Any]] = []
    alone: QgsVectorLayer = measure(rows, "QGIS alone", "open the clusters layer",
                                    lambda: open_gpkg_layer(gpkg, common.LAYER_CLUSTERS))
    n = alone.featureCount()
    measure(rows, "QGIS alone", "draw clusters, whole extent", lambda: draw(alone, size))
    in_view = measure(rows, "QGIS alone", "draw clusters, 1/16 of the extent", lambda: draw(alone, size, ZOOM))
    project = QgsProject.instance()
    loaded = measure(rows, "RegionLens", "load and style every layer of the run",
                     lambda: load_run_outputs(gpkg, project))
    measure(rows, "RegionLens", "draw clusters, whole extent", lambda: draw(loaded[common.LAYER_CLUSTERS], size))
    if common.LAYER_PREDICTIONS in loaded:
        measure(rows, "RegionLens", "draw predictions, whole extent",
                lambda: draw(loaded[common.LAYER_PREDICTIONS], size))
    measure(rows, "RegionLens", "draw clusters, 1/16 of the extent",
            lambda: draw(loaded[common.LAYER_CLUSTERS], size, ZOOM))
    labelled = _label_zoom(loaded[common.LAYER_CLUSTERS], size)
    labelled_view = measure(rows, "RegionLens", "draw clusters with labels (label scale)",
                            lambda: draw(loaded[common.LAYER_CLUSTERS], size, labelled))
    return {"run": str(run_dir), "n_regions": n, "regions_in_zoomed_view": in_view,
            "regions_in_labelled_view": labelled_view,
            "layers_loaded": len(loaded.entries), "size_px": list(size), "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    """The rows as a table, with the run's size."""
    print(f"\n{result['run']}: {result['n_regions']:,} regions, {result['layers_loaded']} layers loaded by "
          f"RegionLens; image {result['size_px'][0]} x {result['size_px'][1]} px; zoomed view "
          f"{result['regions_in_zoomed_view']:,} regions, labelled view {result['regions_in_labelled_view']:,} regions")
    print(f"{'':11s} {'step':40s}{'wall s':>8s}{'cpu s':>8s}{'RSS MB':>8s}")
    for r in result["rows"]:
        print(f"{r['who']:11s} {r['step']:40s}{r['seconds']:8.2f}{r['cpu_s']:8.2f}{r['rss_mb']:8.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/qgis_load.py", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a RegionLens run folder (holding regionlens.gpkg)")
    parser.add_argument("--size", default="1600x1000", help="image size WxH in pixels (default 1600x1000)")
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WIDTHxHEIGHT, e.g. 1600x1000, not {args.size!r}")
    from plugin.render_demo import headless_qgis

    with headless_qgis():
        try:
            result = run(Path(args.run_dir), (width, height))
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
