"""Render a run's outputs headless: a QGIS project and two PNG maps, without the QGIS GUI.

Usage (from the plugin root, with QGIS's Python)::

    QT_QPA_PLATFORM=offscreen .venv/qgis/bin/python -m plugin.render_demo out/demo [--label population]

Reads ``<dir>/regionlens.gpkg`` and writes

- ``<dir>/regionlens_demo.qgz``: a project with the styled layers (relative paths, so the folder can
  be moved or zipped);
- ``<dir>/map_clusters.png``: the clusters layer;
- ``<dir>/map_<label>.png``: predictions of ``population`` (or the first label if there is none of
  that name), i.e. ``map_population.png`` on the sample city.

Each PNG is the map (1200 x 1000 px by default, white background, the layers' CRS and extent) with a
legend panel on its right.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRectangle,
    QgsSymbolLayerUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QRect, QRectF, QSize, Qt
from qgis.PyQt.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QTextOption

from .common import common
from .results import gpkg_layer_names, label_names, load_run_outputs, open_gpkg_layer

__all__ = ["GPKG_NAME", "PROJECT_NAME", "choose_label", "headless_qgis", "main", "render_demo", "render_layer"]

GPKG_NAME = common.GPKG_NAME
PROJECT_NAME = "regionlens_demo.qgz"
_LEGEND_WIDTH = 380
_WHITE = QColor(255, 255, 255)


@contextlib.contextmanager
def headless_qgis() -> Iterator[QgsApplication]:
    """QGIS's application for a script: the one running (e.g. in tests), or one started offscreen here and closed
    (its project cleared first) when the block ends."""
    app = QgsApplication.instance()
    if app is not None:
        yield app
        return
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QgsApplication([], False)
    app.initQgis()
    try:
        yield app
    finally:
        QgsProject.instance().clear()
        app.exitQgis()


def choose_label(gpkg_path: str | Path, preferred: str = "population") -> str | None:
    """``preferred`` if the run predicted it, else the run's first label, else ``None``."""
    if common.LAYER_PREDICTIONS not in gpkg_layer_names(gpkg_path):
        return None
    labels = label_names(open_gpkg_layer(gpkg_path, common.LAYER_PREDICTIONS))
    if preferred in labels:
        return preferred
    return labels[0] if labels else None


def _draw_legend(painter: QPainter, layer: QgsVectorLayer, title: str, rect: QRect) -> None:
    """Title and one line per legend entry (symbol patch + label) in ``rect``."""
    painter.fillRect(rect, _WHITE)
    painter.setPen(QColor(30, 30, 30))
    margin = 16.0
    width = rect.width() - 2 * margin
    x, y = rect.left() + margin, rect.top() + 24.0

    title_font = QFont()
    title_font.setPointSize(13)
    title_font.setBold(True)
    painter.setFont(title_font)
    wrap = QTextOption(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    wrap.setWrapMode(QTextOption.WrapMode.WordWrap)
    title_rect = painter.boundingRect(QRectF(x, y, width, 200.0), title, wrap)
    painter.drawText(title_rect, title, wrap)
    y = title_rect.bottom() + 14.0

    item_font = QFont()
    item_font.setPointSize(10)
    painter.setFont(item_font)
    metrics = QFontMetrics(item_font)
    item_height = max(metrics.height(), 18) + 6
    one_line = QTextOption(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    one_line.setWrapMode(QTextOption.WrapMode.NoWrap)
    for item in layer.renderer().legendSymbolItems():
        if y + item_height > rect.bottom() - 8:
            break
        symbol = item.symbol()
        if symbol is not None:
            pixmap = QgsSymbolLayerUtils.symbolPreviewPixmap(symbol, QSize(22, 16))
            painter.drawPixmap(int(x), int(y + (item_height - 16) / 2), pixmap)
        text = metrics.elidedText(item.label(), Qt.TextElideMode.ElideRight, int(width - 32))
        painter.drawText(QRectF(x + 32, y, width - 32, item_height), text, one_line)
        y += item_height


def render_layer(
    layer: QgsVectorLayer,
    path: str | Path,
    size: tuple[int, int] = (1200, 1000),
    title: str | None = None,
    project: QgsProject | None = None,
    legend: bool = True,
) -> Path:
    """Render one layer to a PNG: white background, the layer's CRS and extent (plus a 3% margin).

    Args:
        layer: The (styled) layer.
        path: PNG to write.
        size: Map size in pixels (width, height); the legend panel is added to the right.
        title: Legend title (default: the layer name).
        project: Supplies the coordinate transform context.
        legend: Draw the legend panel.

    Returns:
        The written path.

    Raises:
        RuntimeError: If the image cannot be written.
    """
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    if project is not None:
        settings.setTransformContext(project.transformContext())
    layer.updateExtents()
    extent = QgsRectangle(layer.extent())
    extent.scale(1.03)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(*size))
    settings.setOutputDpi(96)
    settings.setBackgroundColor(_WHITE)
    settings.setFlag(QgsMapSettings.Flag.Antialiasing, True)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    map_image = job.renderedImage()

    width = size[0] + (_LEGEND_WIDTH if legend else 0)
    image = QImage(width, size[1], QImage.Format.Format_ARGB32)
    image.fill(_WHITE)
    painter = QPainter(image)
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.drawImage(0, 0, map_image)
        if legend:
            _draw_legend(painter, layer, title or layer.name(), QRect(size[0], 0, _LEGEND_WIDTH, size[1]))
    finally:
        painter.end()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out), "PNG"):
        raise RuntimeError(f"Cannot write {out}.")
    return out


def render_demo(
    out_dir: str | Path,
    label: str = "population",
    size: tuple[int, int] = (1200, 1000),
) -> dict[str, Path]:
    """Write the demo project and maps for the run in ``out_dir`` (QgsApplication must be running).

    Args:
        out_dir: Run folder holding ``regionlens.gpkg``.
        label: Label whose predictions to map (falls back to the first label).
        size: Map size in pixels.

    Returns:
        ``{"project": ..., "clusters": ..., "<label>": ...}`` paths (no label map if the run has no
        predictions).

    Raises:
        FileNotFoundError: If the GeoPackage is missing.
        ValueError: If it holds no RegionLens layers.
        RuntimeError: If the project or an image cannot be written.
    """
    folder = Path(out_dir).resolve()
    gpkg = folder / GPKG_NAME
    if not gpkg.is_file():
        raise FileNotFoundError(f"No {GPKG_NAME} in {folder}; run the backend first (python -m backend demo).")
    chosen = choose_label(gpkg, label)
    project = QgsProject()
    try:
        layers = load_run_outputs(gpkg, project=project, label=chosen)
        written: dict[str, Path] = {}
        project_path = folder / PROJECT_NAME
        first = next(iter(layers.values()))
        project.setCrs(first.crs())
        project.setTitle(f"RegionLens \u2014 {folder.name}")
        project.setFilePathStorage(Qgis.FilePathType.Relative)
        project.setFileName(str(project_path))
        if not project.write():
            raise RuntimeError(f"Cannot write {project_path}: {project.error()}")
        written["project"] = project_path
        if common.LAYER_CLUSTERS in layers:
            written[common.LAYER_CLUSTERS] = render_layer(
                layers[common.LAYER_CLUSTERS], folder / "map_clusters.png", size, "Clusters", project
            )
        if common.LAYER_PREDICTIONS in layers and chosen is not None:
            written[chosen] = render_layer(
                layers[common.LAYER_PREDICTIONS], folder / f"map_{chosen}.png", size,
                f"Predicted {chosen} (out-of-fold)", project,
            )
        return written
    finally:
        project.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m plugin.render_demo", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="run folder holding regionlens.gpkg (e.g. out/demo)")
    parser.add_argument("--label", default="population", help="label to map (default: population)")
    parser.add_argument("--width", type=int, default=1200, help="map width in pixels")
    parser.add_argument("--height", type=int, default=1000, help="map height in pixels")
    args = parser.parse_args(argv)

    gpkg = Path(args.out_dir) / GPKG_NAME
    if not gpkg.is_file():
        print(
            f"render_demo: {gpkg} does not exist. Run the backend first (e.g. `python -m backend demo`).",
            file=sys.stderr,
        )
        return 2

    with headless_qgis():
        try:
            written = render_demo(args.out_dir, label=args.label, size=(args.width, args.height))
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"render_demo: {exc}", file=sys.stderr)
            return 1
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
