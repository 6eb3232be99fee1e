"""Export a run's vector inputs to GeoPackages the backend worker reads.

The worker cannot read QGIS layers (memory layers, filtered layers, database or web layers), so every
chosen vector layer is written to ``<inputs folder>/<role>.gpkg`` with only the fields the run needs
(``QgsVectorFileWriter.writeAsVectorFormatV3``, in the layer's own CRS; the backend reprojects).
Rasters and the OD table are referenced by their file paths.

The inputs folder is ``<output folder>_inputs`` (:func:`plugin.parameters.inputs_dir_for`), a sibling
of the results folder: the backend writes the results folder atomically and refuses one that already
holds files, so nothing may be put inside it before the run. The inputs folder holds a marker file
(:data:`MARKER`) so that RegionLens only ever clears a folder it wrote itself, and ``config.json``, the
run configuration (``python -m backend run <inputs folder>/config.json`` repeats the run). It is kept
after a successful or failed run and removed when the run is cancelled.

Every chosen field is written as a real attribute column, ``fid`` included: a GeoPackage stores its
feature ids in a key column (named ``fid`` by default) that QGIS shows as a field but that readers such
as the backend's do not see as one, so the GeoPackages written here name their key column
:func:`fid_column` (a name no chosen field uses), and :meth:`InputExporter.export` checks the written
file for every chosen field.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from osgeo import ogr
from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

__all__ = [
    "MARKER",
    "InputExporter",
    "fid_column",
    "gpkg_columns",
    "remove_exported_inputs",
    "remove_stale_staging",
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

    def export(self, layer: QgsVectorLayer, name: str, fields: list[str]) -> Path:
        """Write ``layer`` (all features, only ``fields``) to ``<folder>/<name>.gpkg``.

        Args:
            layer: The source layer (read on the calling thread).
            name: File and layer name (letters, digits, underscores).
            fields: Field names to keep (missing names are ignored; duplicates once).

        Returns:
            The GeoPackage's path.

        Raises:
            ValueError: If QGIS cannot write the file, or a chosen field is not a column of the written file.
        """
        path = self.folder / f"{name}.gpkg"
        indices = []
        wanted = []
        for field_name in dict.fromkeys(f for f in fields if f):
            idx = layer.fields().indexFromName(field_name)
            if idx >= 0:
                indices.append(idx)
                wanted.append(field_name)
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = name
        options.fileEncoding = "UTF-8"
        options.attributes = indices
        options.layerOptions = [f"FID={fid_column(layer.fields().names())}"]
        options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
        context = QgsProject.instance().transformContext()
        result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), context, options)
        error, message = result[0], result[1]
        if error != QgsVectorFileWriter.WriterError.NoError:
            raise ValueError(f"Cannot export layer '{layer.name()}' to {path}: {message or error}.")
        self.written.append(path)
        columns = gpkg_columns(path, name)
        missing = [f for f in wanted if f not in columns]
        if missing:
            raise ValueError(
                f"Exporting layer '{layer.name()}' did not keep the field(s) {', '.join(missing)} as columns "
                f"(written: {', '.join(columns) or 'none'}); choose another field."
            )
        return path

    def finish(self, config: dict[str, Any]) -> Path:
        """Write the run configuration next to the inputs (``config.json``); returns its path."""
        path = self.folder / "config.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
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
