"""Inputs for the worker: vector sources exported to GeoPackages, rasters by file path or as GeoTIFF.

Vector inputs are always exported, whatever their format: the export goes through Processing's
feature source, so "selected features only", feature limits and filters are honoured, and layers that
are not files (memory, PostGIS, WFS, ...) work too. Geometry validity is not checked here: the backend
repairs invalid polygons and reports how many it repaired. Polygons are written as multi-polygons.

A raster that is a local file GDAL reads is passed by its path; any other raster (inside a zip or a
GeoPackage, a virtual layer, ...) is written as a GeoTIFF first.
"""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import (
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsVectorFileWriter,
    QgsWkbTypes,
)

from ..i18n import tr
from ..input_export import fid_column

__all__ = ["export_raster", "export_vector", "raster_input"]


def export_vector(
    source: QgsFeatureSource,
    path: Path,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
    what: str,
) -> Path:
    """Write every feature of ``source`` to the GeoPackage ``path`` (one layer named after the file).

    Args:
        source: From ``parameterAsSource`` (selection and filters already applied).
        path: The ``.gpkg`` file to create.
        context: Processing context (transform context).
        feedback: Cancel button and progress text.
        what: What the layer is, for messages (``regions``, ``POIs``, ...).

    Returns:
        ``path``.

    Raises:
        QgsProcessingException: If the file cannot be written, or the user cancelled.
    """
    feedback.setProgressText(tr("Exporting the {} layer").format(what))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = path.stem
    options.fileEncoding = "UTF-8"
    options.layerOptions = [f"FID={fid_column(source.fields().names())}"]  # a field named fid stays a column
    wkb_type = source.wkbType()
    polygons = QgsWkbTypes.geometryType(wkb_type) == QgsWkbTypes.GeometryType.PolygonGeometry
    if polygons:
        wkb_type = QgsWkbTypes.multiType(wkb_type)
    writer = QgsVectorFileWriter.create(
        str(path), source.fields(), wkb_type, source.sourceCrs(), context.transformContext(), options
    )
    if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
        message = writer.errorMessage()
        raise QgsProcessingException(tr("Cannot write the {} layer to {}: {}").format(what, path, message))
    if isinstance(source, QgsProcessingFeatureSource):
        no_checks = QgsProcessingFeatureSource.Flag.FlagSkipGeometryValidityChecks  # the backend repairs
        features = source.getFeatures(QgsFeatureRequest(), no_checks)
    else:
        features = source.getFeatures(QgsFeatureRequest())
    try:
        for feature in features:
            if feedback.isCanceled():
                raise QgsProcessingException(tr("Cancelled while exporting the {} layer.").format(what))
            if polygons and feature.hasGeometry() and not feature.geometry().isMultipart():
                geometry = feature.geometry()
                geometry.convertToMultiType()
                feature.setGeometry(geometry)
            if not writer.addFeature(feature):
                raise QgsProcessingException(
                    tr("Cannot write feature {} of the {} layer to {}: {}").format(
                        feature.id(), what, path, writer.errorMessage()
                    )
                )
    finally:
        del writer  # closes and flushes the GeoPackage
    return path


def raster_input(
    layer: QgsRasterLayer, folder: Path, context: QgsProcessingContext, feedback: QgsProcessingFeedback
) -> dict[str, str]:
    """The ``[[rasters]]`` entry for ``layer``: its own file, or a GeoTIFF exported to ``folder``.

    Returns:
        ``{"path": ...}``, plus ``"name"`` (the layer name, as the feature-column prefix) when exported.

    Raises:
        QgsProcessingException: If the layer must be exported and cannot be.
    """
    source = layer.source()
    if layer.providerType() == "gdal" and Path(source).is_file():
        return {"path": str(Path(source).resolve())}
    name = re.sub(r"[^A-Za-z0-9_]+", "_", layer.name()).strip("_") or "raster"
    path = folder / f"{name}.tif"
    index = 1
    while path.exists():
        index += 1
        path = folder / f"{name}_{index}.tif"
    feedback.pushInfo(tr("Raster '{}' is not a local file; writing it as {}").format(layer.name(), path.name))
    export_raster(layer, path, context)
    return {"path": str(path), "name": path.stem}


def export_raster(layer: QgsRasterLayer, path: Path, context: QgsProcessingContext) -> Path:
    """Write a raster layer at its native resolution, extent and CRS as a GeoTIFF.

    Raises:
        QgsProcessingException: If the layer has no fixed pixel grid (a web service) or the file
            cannot be written.
    """
    provider = layer.dataProvider()
    if provider is None or not layer.isValid():
        raise QgsProcessingException(tr("Raster '{}' cannot be read.").format(layer.name()))
    width, height = provider.xSize(), provider.ySize()
    if width <= 0 or height <= 0:
        raise QgsProcessingException(
            tr(
                "Raster '{}' has no fixed pixel size (a web or tile service?). Save it as a GeoTIFF first "
                "(Raster \u203a Conversion \u203a Translate) and choose that file."
            ).format(layer.name())
        )
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise QgsProcessingException(tr("Raster '{}' cannot be read.").format(layer.name()))
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    error = writer.writeRaster(pipe, width, height, provider.extent(), provider.crs(), context.transformContext())
    if error != QgsRasterFileWriter.WriterError.NoError:
        raise QgsProcessingException(tr("Cannot write raster '{}' to {} (error {}).").format(layer.name(), path, error))
    return path
