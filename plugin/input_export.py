"""The one way the plugin writes inputs for the backend worker: vectors to GeoPackages, rasters as files.

The worker cannot read QGIS layers (memory layers, filtered layers, database or web layers), so every
chosen vector layer is written to a GeoPackage (:func:`write_vector`): in the layer's own CRS (the backend
reprojects), polygons as multi-polygons, with only the fields the job needs when they are named, and only
the selected features when asked (Processing's feature sources come with their selection, limits and
filters applied). Geometry validity is not checked here: the backend repairs invalid polygons and reports
how many it repaired. A raster that is a local file GDAL reads is passed by its path; any other raster
with a fixed pixel grid (inside a zip or a GeoPackage, a virtual layer, ...) is written as a GeoTIFF
first (:func:`raster_input`). The OD table is referenced by its path. The run dock, the Apply dialog and
the Processing algorithms (through :mod:`.processing._inputs`) all export this way.

The dock's inputs folder is ``<output folder>_inputs`` (:func:`plugin.parameters.inputs_dir_for`), a
sibling of the results folder: the backend writes the results folder atomically and refuses one that
already holds files, so nothing may be put inside it before the run. The inputs folder holds a marker
file (:data:`MARKER`) so that RegionLens only ever clears a folder it wrote itself, and ``config.json``,
the run configuration (``python -m backend run <inputs folder>/config.json`` repeats the run). It is kept
after a successful or failed run and removed when the run is cancelled.

Every chosen field is written as a real attribute column, ``fid`` included: a GeoPackage stores its
feature ids in a key column (named ``fid`` by default) that QGIS shows as a field but that readers such
as the backend's do not see as one, so the GeoPackages written here name their key column
:func:`fid_column` (a name no chosen field uses), and :func:`write_vector` checks the written file for
every chosen field.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from osgeo import ogr
from qgis.core import (
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsFields,
    QgsMapLayer,
    QgsMapLayerType,
    QgsProcessingFeatureSource,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

__all__ = [
    "MARKER",
    "ExportCancelled",
    "ExportError",
    "InputExporter",
    "export_raster",
    "fid_column",
    "gpkg_columns",
    "raster_input",
    "raster_path",
    "raster_problem",
    "remove_exported_inputs",
    "remove_stale_staging",
    "write_vector",
]

#: File that marks a folder as written by RegionLens (safe to clear).
MARKER = ".regionlens-inputs"
#: File in a backend staging folder naming the process that writes it (backend/io/outputs.py STAGING_MARKER).
STAGING_MARKER = ".regionlens-staging"
_FID_COLUMN = "regionlens_fid"


def fid_column(field_names: Iterable[str]) -> str:
    """A name for the GeoPackage key column that none of ``field_names`` uses (case-insensitive).

    Pass it as the ``FID=<name>`` layer option, so that a field named ``fid`` is written as an ordinary
    column instead of becoming the (invisible to readers) key column.
    """
    taken = {name.lower() for name in field_names}
    name, n = _FID_COLUMN, 2
    while name.lower() in taken:
        name, n = f"{_FID_COLUMN}_{n}", n + 1
    return name


def gpkg_columns(path: str | Path, layer_name: str) -> list[str]:
    """The attribute columns a reader sees in one layer of a GeoPackage (without its key column)."""
    dataset = ogr.Open(str(path))
    if dataset is None:
        return []
    layer = dataset.GetLayerByName(layer_name)
    if layer is None:
        return []
    definition = layer.GetLayerDefn()
    return [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]


class InputExporter:
    """Write layers into one inputs folder.

    Args:
        folder: The inputs folder (created; cleared first if RegionLens wrote it before).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.written: list[Path] = []

    def prepare(self) -> None:
        """Create the folder, or empty it if it is a previous RegionLens inputs folder.

        Raises:
            ValueError: If the folder holds files RegionLens did not write, or cannot be created.
        """
        if self.folder.exists():
            if not self.folder.is_dir():
                raise ValueError(f"{self.folder} is a file; cannot export the run's inputs there.")
            if any(self.folder.iterdir()):
                if not (self.folder / MARKER).is_file():
                    raise ValueError(f"{self.folder} holds files RegionLens did not write; not touching it.")
                shutil.rmtree(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / MARKER).write_text("Inputs exported by the RegionLens plugin.\n", encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"Cannot create the inputs folder {self.folder}: {exc.strerror or exc}.") from exc

    def export(self, layer: QgsVectorLayer, name: str, fields: list[str], selected_only: bool = False) -> Path:
        """Write ``layer`` (only ``fields``; every feature, or the selected ones) to ``<folder>/<name>.gpkg``.

        Args:
            layer: The source layer (read on the calling thread).
            name: File and layer name (letters, digits, underscores).
            fields: Field names to keep (missing names are ignored; duplicates once).
            selected_only: Only the layer's selected features.

        Returns:
            The GeoPackage's path.

        Raises:
            ExportError: If QGIS cannot write the file, or a chosen field is not a column of the written file.
        """
        path = write_vector(layer, self.folder / f"{name}.gpkg", fields=fields, selected_only=selected_only)
        self.written.append(path)
        return path

    def raster(self, layer: QgsRasterLayer) -> dict[str, str]:
        """The ``[[rasters]]`` entry of ``layer`` (see :func:`raster_input`), exported into the folder if needed."""
        entry = raster_input(layer, self.folder)
        if Path(entry["path"]).parent == self.folder:
            self.written.append(Path(entry["path"]))
        return entry

    def finish(self, config: dict[str, Any]) -> Path:
        """Write the run configuration next to the inputs (``config.json``); returns its path."""
        path = self.folder / "config.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path


class ExportError(ValueError):
    """An input could not be written; the message names the layer and says why."""


class ExportCancelled(ExportError):
    """The export was cancelled (``is_cancelled`` answered True)."""


def write_vector(
    source: QgsFeatureSource,
    path: Path,
    fields: Iterable[str] | None = None,
    selected_only: bool = False,
    what: str = "",
    is_cancelled: Callable[[], bool] | None = None,
    transform_context: QgsCoordinateTransformContext | None = None,
) -> Path:
    """Write the features of ``source`` to the GeoPackage ``path`` (one layer named after the file).

    Args:
        source: A vector layer, or a Processing feature source (selection and filters already applied).
        path: The ``.gpkg`` file to create (replaced if it exists).
        fields: Field names to keep (missing names ignored, duplicates once); ``None`` keeps every field.
        selected_only: Only the selected features of a vector layer.
        what: What the layer is, for messages (default: the layer's name).
        is_cancelled: Asked before each feature; True stops with :class:`ExportCancelled`.
        transform_context: The project's (default ``QgsProject.instance()``'s).

    Returns:
        ``path``.

    Raises:
        ExportError: If the file cannot be written, or a chosen field is not a column of the written file.
    """
    what = what or (source.name() if isinstance(source, QgsVectorLayer) else path.stem)
    all_fields = source.fields()
    if fields is None:
        indices = list(range(all_fields.count()))
    else:
        indices = [i for i in (all_fields.indexFromName(f) for f in dict.fromkeys(f for f in fields if f)) if i >= 0]
    kept = QgsFields()
    for index in indices:
        kept.append(all_fields.at(index))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = path.stem
    options.fileEncoding = "UTF-8"
    options.layerOptions = [f"FID={fid_column(all_fields.names())}"]  # a field named fid stays a column
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    wkb_type = source.wkbType()
    polygons = QgsWkbTypes.geometryType(wkb_type) == QgsWkbTypes.GeometryType.PolygonGeometry
    if polygons:
        wkb_type = QgsWkbTypes.multiType(wkb_type)
    context = transform_context if transform_context is not None else QgsProject.instance().transformContext()
    writer = QgsVectorFileWriter.create(str(path), kept, wkb_type, source.sourceCrs(), context, options)
    if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
        raise ExportError(f"Cannot export the {what} layer to {path}: {writer.errorMessage()}.")
    request = QgsFeatureRequest()
    if selected_only and isinstance(source, QgsVectorLayer):
        request.setFilterFids(source.selectedFeatureIds())
    if isinstance(source, QgsProcessingFeatureSource):
        no_checks = QgsProcessingFeatureSource.Flag.FlagSkipGeometryValidityChecks  # the backend repairs
        features = source.getFeatures(request, no_checks)
    else:
        features = source.getFeatures(request)
    try:
        for feature in features:
            if is_cancelled is not None and is_cancelled():
                raise ExportCancelled(f"Cancelled while exporting the {what} layer.")
            out = QgsFeature(kept)
            out.setAttributes([feature.attribute(i) for i in indices])
            if feature.hasGeometry():
                geometry = feature.geometry()
                if polygons and not geometry.isMultipart():
                    geometry.convertToMultiType()
                out.setGeometry(geometry)
            if not writer.addFeature(out):
                raise ExportError(f"Cannot write feature {feature.id()} of the {what} layer to {path}: "
                                  f"{writer.errorMessage()}")  # fmt: skip
    finally:
        del writer  # closes and flushes the GeoPackage
    columns = gpkg_columns(path, path.stem)
    missing = [kept.at(i).name() for i in range(kept.count()) if kept.at(i).name() not in columns]
    if missing:
        raise ExportError(
            f"Exporting the {what} layer did not keep the field(s) {', '.join(missing)} as columns "
            f"(written: {', '.join(columns) or 'none'}); choose another field."
        )
    return path


def raster_path(layer: QgsMapLayer) -> Path | None:
    """The local file behind a GDAL raster layer, or ``None`` (WMS, XYZ, /vsicurl/, a zip member, ...)."""
    if layer.type() != QgsMapLayerType.RasterLayer or layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = str(parts.get("path") or "")
    if not path or path.startswith("/vsi") or parts.get("vsiPrefix") or parts.get("layerName"):
        return None  # a remote file, a member of an archive, a table of a GeoPackage: written as a GeoTIFF
    p = Path(path)
    return p if p.is_file() else None


def raster_problem(layer: QgsMapLayer | None) -> str | None:
    """Why ``layer`` cannot be given to the backend, or ``None``: a local file, or a raster with a fixed
    pixel grid that :func:`raster_input` writes as a GeoTIFF."""
    if layer is None:
        return "A chosen raster is no longer in the project."
    if raster_path(layer) is not None:
        return None
    provider = layer.dataProvider() if isinstance(layer, QgsRasterLayer) and layer.isValid() else None
    if provider is None:
        return f"The raster '{layer.name()}' cannot be read."
    if provider.xSize() <= 0 or provider.ySize() <= 0:
        return (f"The raster '{layer.name()}' is not a local file and has no fixed pixel size (a web or tile "
                "service?); save it as a GeoTIFF first (Raster \u203a Conversion \u203a Translate) and choose "
                "that file.")
    return None


def raster_input(layer: QgsRasterLayer, folder: Path,
                 transform_context: QgsCoordinateTransformContext | None = None) -> dict[str, str]:  # fmt: skip
    """The ``[[rasters]]`` entry for ``layer``: its own file, or a GeoTIFF exported to ``folder``.

    Returns:
        ``{"path": ...}``, plus ``"name"`` (the layer name, as the feature-column prefix) when exported.

    Raises:
        ExportError: If the layer must be exported and cannot be.
    """
    path = raster_path(layer)
    if path is not None:
        return {"path": str(path.resolve())}
    name = re.sub(r"[^A-Za-z0-9_]+", "_", layer.name()).strip("_") or "raster"
    path = Path(folder) / f"{name}.tif"
    index = 1
    while path.exists():
        index += 1
        path = Path(folder) / f"{name}_{index}.tif"
    export_raster(layer, path, transform_context)
    return {"path": str(path), "name": path.stem}


def export_raster(layer: QgsRasterLayer, path: Path,
                  transform_context: QgsCoordinateTransformContext | None = None) -> Path:  # fmt: skip
    """Write a raster layer at its native resolution, extent and CRS as a GeoTIFF.

    Raises:
        ExportError: If the layer has no fixed pixel grid (a web service) or the file cannot be written.
    """
    problem = raster_problem(layer)
    if problem:
        raise ExportError(problem)
    provider = layer.dataProvider()
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise ExportError(f"The raster '{layer.name()}' cannot be read.")
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    context = transform_context if transform_context is not None else QgsProject.instance().transformContext()
    error = writer.writeRaster(pipe, provider.xSize(), provider.ySize(), provider.extent(), provider.crs(), context)
    if error != QgsRasterFileWriter.WriterError.NoError:
        raise ExportError(f"Cannot write the raster '{layer.name()}' to {path} (error {error}).")
    return path


def remove_exported_inputs(folder: str | Path) -> bool:
    """Delete an inputs folder if (and only if) RegionLens wrote it; returns whether it did."""
    path = Path(folder)
    if path.is_dir() and (path / MARKER).is_file():
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    return False


def _staging_pid(folder: Path) -> int | None:
    """The pid in a backend staging folder's marker (:data:`STAGING_MARKER`), or None without a marker."""
    try:
        return int(json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs (POSIX; elsewhere unknown, so False)."""
    if os.name == "nt":
        return False  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped) is gone too
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].startswith("Z")


def remove_stale_staging(output_dir: str | Path, pid: int | None = None) -> list[Path]:
    """Remove the backend's staging folders (``.<name>.tmp-*``) left by a worker that was killed.

    The backend writes a run into such a hidden sibling of the results folder, with a marker file naming
    its process, and renames it into place when complete; a killed worker cannot clean it up (the next
    run removes it too). Only folders with the marker are touched: those of ``pid`` (the worker that
    died) or, without ``pid``, those whose process no longer runs.

    Returns:
        The folders removed.
    """
    out = Path(output_dir).expanduser().resolve()
    removed = []
    if out.parent.is_dir():
        for staging in out.parent.glob(f".{out.name}.tmp-*"):
            owner = _staging_pid(staging) if staging.is_dir() and not staging.is_symlink() else None
            if owner is not None and (owner == pid if pid is not None else _pid_gone(owner)):
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging)
    return removed
