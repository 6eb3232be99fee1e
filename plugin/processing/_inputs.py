"""Processing's side of the one input exporter (:mod:`plugin.input_export`): its errors as
:class:`QgsProcessingException`, its progress text and Cancel button from the algorithm's feedback.

Vector inputs are always exported, whatever their format: the export goes through Processing's feature
source, so "selected features only", feature limits and filters are honoured, and layers that are not
files (memory, PostGIS, WFS, ...) work too. A raster that is a local file GDAL reads is passed by its
path; any other raster with a pixel grid is written as a GeoTIFF first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from qgis.core import (
    QgsFeatureSource,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
)

from .. import input_export
from ..i18n import tr

__all__ = ["export_vector", "raster_input"]


def export_vector(
    source: QgsFeatureSource,
    path: Path,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
    what: str,
    fields: Iterable[str] | None = None,
) -> Path:
    """Write ``source`` (selection and filters already applied) to the GeoPackage ``path``
    (:func:`plugin.input_export.write_vector`); ``fields`` keeps only those fields (``None``: all).

    Raises:
        QgsProcessingException: If the file cannot be written, or the user cancelled.
    """
    feedback.setProgressText(tr("Exporting the {} layer").format(what))
    try:
        return input_export.write_vector(source, path, fields=fields, what=what, is_cancelled=feedback.isCanceled,
                                         transform_context=context.transformContext())  # fmt: skip
    except input_export.ExportError as exc:
        raise QgsProcessingException(str(exc)) from None


def raster_input(
    layer: QgsRasterLayer, folder: Path, context: QgsProcessingContext, feedback: QgsProcessingFeedback
) -> dict[str, str]:
    """The ``[[rasters]]`` entry for ``layer`` (:func:`plugin.input_export.raster_input`).

    Raises:
        QgsProcessingException: If the layer must be exported and cannot be.
    """
    if input_export.raster_path(layer) is None:
        feedback.pushInfo(tr("Raster '{}' is not a local file; writing it as a GeoTIFF").format(layer.name()))
    try:
        return input_export.raster_input(layer, folder, context.transformContext())
    except input_export.ExportError as exc:
        raise QgsProcessingException(str(exc)) from None
