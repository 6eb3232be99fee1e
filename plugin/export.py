"""Export a layer to an ESRI Shapefile or a GeoPackage, with shapefile-safe field names.

A DBF field name holds at most 10 bytes and is compared case-insensitively, so RegionLens shortens
names for shapefiles by one rule (:func:`shapefile_field_names`) and always says which fields it
renamed: in :class:`ExportResult`, in the message bar, and in ``<name>_fields.csv`` next to the file.

Writing is atomic: the layer is written under a temporary name in the target folder and renamed into
place (every shapefile part) only once complete, so a failed or refused export leaves nothing behind
and never touches an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsField,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import QUrl, QVariant
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .common import common
from .ui.messages import push_message

try:  # QGIS 3
    from qgis.core import QgsMapLayerType

    VECTOR_LAYER_TYPE = QgsMapLayerType.VectorLayer
except ImportError:  # QGIS 4
    VECTOR_LAYER_TYPE = Qgis.LayerType.Vector

__all__ = [
    "DRIVERS",
    "VECTOR_LAYER_TYPE",
    "SHAPEFILE_MAX_NAME",
    "ExportDialog",
    "ExportResult",
    "export_layer",
    "export_layer_dialog",
    "output_files",
    "report_export",
    "shapefile_field_names",
]

SHAPEFILE = "ESRI Shapefile"
GEOPACKAGE = "GPKG"
#: Driver name -> (file extension, name shown in the dialog).
DRIVERS = {SHAPEFILE: (".shp", "ESRI Shapefile (*.shp)"), GEOPACKAGE: (".gpkg", "GeoPackage (*.gpkg)")}
#: Longest field name a DBF file stores (bytes).
SHAPEFILE_MAX_NAME = 10
#: Every file a shapefile may consist of (lower-case extensions; ``.shp`` first).
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qmd", ".qpj", ".shp.xml")
#: Suffixes of a prediction layer's fields (docs/protocol.md, ``regionlens_common``), longest first.
PREDICTION_SUFFIXES = tuple(sorted(common.PREDICTION_SUFFIXES, key=len, reverse=True))
#: A label is cut to this many characters, so that ``<label>_pred`` fits in 10.
_LABEL_STEM = SHAPEFILE_MAX_NAME - max(len(s) for s in PREDICTION_SUFFIXES)
_SUFFIX_RE = re.compile(rf"^(?P<label>.+)(?P<suffix>{'|'.join(re.escape(s) for s in PREDICTION_SUFFIXES)})$")
_SHAPEFILE_STRING_MAX = 254  # DBF character fields hold at most 254 bytes
_SHAPEFILE_INT64_WIDTH = 18  # wider integer columns are read back as reals


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_layer` wrote."""

    path: Path  # the written file (``.shp`` or ``.gpkg``)
    renamed: dict[str, str] = field(default_factory=dict)  # original -> written name, renamed fields only
    files: tuple[Path, ...] = ()  # every file written (shapefile parts, the field-name table)
    feature_count: int = 0

    def message(self) -> str:
        """A short line for the message bar: how many features went to which file, how many fields renamed."""
        text = f"Exported {self.feature_count} features to {self.path.name}."
        if self.renamed:
            count = len(self.renamed)
            text += f" {count} field{'s' if count > 1 else ''} renamed for the shapefile (see Details)."
        return text

    def details(self) -> str:
        """The full report: the file, every file written and every renamed field."""
        lines = [f"Exported {self.feature_count} features to {self.path}.", "", "Files written:"]
        lines += [f"  {p}" for p in self.files or (self.path,)]
        if self.renamed:
            lines += ["", "Fields renamed for the shapefile (names of at most 10 characters):"]
            lines += [f"  {old} \u2192 {new}" for old, new in self.renamed.items()]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- names


def _fits(name: str) -> bool:
    return 0 < len(name.encode("utf-8")) <= SHAPEFILE_MAX_NAME


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    while len(text.encode("utf-8")) > limit:
        text = text[:-1]
    return text


def _numbered(base: str, taken: set[str]) -> str:
    """``base`` (cut to fit) or ``<base>_1``, ``<base>_2``, ... : the first name not in ``taken``."""
    candidate = _cut(base, SHAPEFILE_MAX_NAME) or "field"
    number = 0
    while candidate.lower() in taken:
        number += 1
        tail = f"_{number}"
        stem = _cut(base, SHAPEFILE_MAX_NAME - len(tail)).rstrip("_") or "f"
        candidate = f"{stem}{tail}"
    return candidate


def shapefile_field_names(names: Sequence[str]) -> dict[str, str]:
    """Shapefile-safe names for a layer's fields: at most 10 bytes, unique ignoring case.

    The rule, applied in field order so that the result only depends on ``names``:

    1. A name that fits (at most 10 bytes of UTF-8) is kept, unless it belongs to a prediction
       group that must be shortened (step 2) or a previous field already took it (step 3).
    2. Prediction fields ``<label>_obs`` / ``_pred`` / ``_res`` / ``_lo`` / ``_hi`` keep their suffix;
       if any field of a label is too long, the label is cut to its first 5 characters for all
       of them, so they stay together: ``population_pred`` -> ``popul_pred``, ``population_obs`` ->
       ``popul_obs``. Two labels with the same first characters get numbered stems: ``popu1_pred``.
    3. Any other name is cut to 10 characters; if that name is taken (ignoring case), its end is
       replaced by ``_1``, ``_2``, ...: ``cluster_name`` -> ``cluster_na``.

    So ``region_id``, ``cluster`` and ``emb_000`` ... ``emb_999`` never change.

    Args:
        names: Field names in layer order (unique, as in any layer).

    Returns:
        Every name mapped to its shapefile name (unchanged names map to themselves), in input order.

    Raises:
        ValueError: If ``names`` holds a name twice or an empty name.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate field names: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}.")
    if any(not name for name in names):
        raise ValueError("A field has an empty name.")

    groups: dict[str, list[str]] = {}  # label -> its prediction fields, for labels that need shortening
    for name in names:
        match = _SUFFIX_RE.match(name)
        if match and not _fits(name):
            groups.setdefault(match["label"], [])
    for name in names:
        match = _SUFFIX_RE.match(name)
        if match and match["label"] in groups:
            groups[match["label"]].append(name)
    grouped = {name for members in groups.values() for name in members}

    result: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:  # 1. keep what fits (first come, first kept)
        if name not in grouped and _fits(name) and name.lower() not in taken:
            result[name] = name
            taken.add(name.lower())
    for label, members in groups.items():  # 2. prediction groups: one stem per label
        suffixes = [_SUFFIX_RE.match(name)["suffix"] for name in members]
        base = _cut(label, _LABEL_STEM).rstrip("_") or "v"
        stem, number = base, 0
        while any(f"{stem}{s}".lower() in taken for s in suffixes):
            number += 1
            stem = f"{_cut(base, _LABEL_STEM - len(str(number)))}{number}"
        for name, suffix in zip(members, suffixes, strict=True):
            result[name] = f"{stem}{suffix}"
            taken.add(result[name].lower())
    for name in names:  # 3. everything else: cut and number
        if name not in result:
            result[name] = _numbered(name, taken)
            taken.add(result[name].lower())
    return {name: result[name] for name in names}


# ---------------------------------------------------------------------------------------------- writing


class _RenameFields(QgsVectorFileWriter.FieldValueConverter):
    """Gives the writer the new field names (values pass unchanged)."""

    def __init__(self, names: dict[str, str], shapefile: bool) -> None:
        super().__init__()
        self._names = dict(names)
        self._shapefile = shapefile

    def fieldDefinition(self, field: QgsField) -> QgsField:  # noqa: N802 - QGIS API
        out = QgsField(field)
        out.setName(self._names.get(field.name(), field.name()))
        if self._shapefile:
            if field.type() == QVariant.String and not 0 < field.length() <= _SHAPEFILE_STRING_MAX:
                out.setLength(_SHAPEFILE_STRING_MAX)
            elif field.type() == QVariant.LongLong and not 0 < field.length() <= _SHAPEFILE_INT64_WIDTH:
                out.setLength(_SHAPEFILE_INT64_WIDTH)
        return out

    def convert(self, field_index: int, value: object) -> object:
        return value

    def clone(self) -> _RenameFields:
        return _RenameFields(self._names, self._shapefile)


def _with_extension(path: Path, driver: str) -> Path:
    extension = DRIVERS[driver][0]
    if path.suffix.lower() == extension:
        return path.with_suffix(extension)
    return path.with_name(path.name + extension)


def output_files(path: str | Path, driver: str = SHAPEFILE) -> list[Path]:
    """The files an export to ``path`` may write (existing or not): every shapefile part and the
    ``<name>_fields.csv`` table for a shapefile, the file itself for a GeoPackage."""
    path = Path(path)
    if driver != SHAPEFILE:
        return [path]
    stem = path.with_suffix("")
    return [Path(f"{stem}{ext}") for ext in SHAPEFILE_PARTS] + [path.with_name(f"{stem.name}_fields.csv")]


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise FileNotFoundError(f"Cannot export to {folder}: the folder does not exist.")
    if not folder.is_dir():
        raise NotADirectoryError(f"Cannot export to {folder}: it is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot export to {folder}: the folder is not writable.")


def export_layer(
    layer: QgsVectorLayer,
    path: str | Path,
    driver: str = SHAPEFILE,
    overwrite: bool = False,
) -> ExportResult:
    """Write every feature of ``layer`` to a new shapefile or GeoPackage.

    Fields keep their order (the embeddings' ``emb_000``, ``emb_001``, ... stay in order), values and
    geometries are written unchanged in the layer's CRS, text is UTF-8 (a shapefile gets a ``.cpg``).
    For a shapefile, names are shortened by :func:`shapefile_field_names`; if any was renamed, the
    mapping is also written to ``<name>_fields.csv`` (columns ``original,shapefile``). A GeoPackage
    keeps every name and holds one layer named after the file.

    Args:
        layer: A valid vector layer (with or without geometry).
        path: Output file; ``.shp`` or ``.gpkg`` is appended when missing.
        driver: ``"ESRI Shapefile"`` or ``"GPKG"``.
        overwrite: Replace an existing file (all of a shapefile's parts); otherwise refuse.

    Returns:
        What was written, with every renamed field. Exported to a shapefile, a layer without
        geometry (a table) becomes a lone ``.dbf``, which ``path`` then names.

    Raises:
        ValueError: If the layer is not a valid vector layer or the driver is not supported.
        FileExistsError: If an output file exists and ``overwrite`` is false (nothing is touched).
        FileNotFoundError: If the target folder does not exist.
        NotADirectoryError: If the target folder is a file.
        PermissionError: If the target folder is not writable.
        OSError: If QGIS fails to write the layer (no partial output is left).
    """
    if driver not in DRIVERS:
        raise ValueError(f"Unsupported format '{driver}'; use one of: {', '.join(DRIVERS)}.")
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise ValueError("Choose a valid vector layer to export.")
    path = _with_extension(Path(path).expanduser().absolute(), driver)
    _check_folder(path.parent)
    targets = output_files(path, driver)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists; choose another name or allow replacing it."
            if existing[0] == path
            else f"{existing[0]} (part of {path.name}) already exists; choose another name or allow replacing it."
        )

    shapefile = driver == SHAPEFILE
    names = layer.fields().names()
    mapping = shapefile_field_names(names) if shapefile else {name: name for name in names}
    renamed = {old: new for old, new in mapping.items() if old != new}

    token = secrets.token_hex(4)
    temp = path.with_name(f".{path.stem}-tmp-{token}{path.suffix}")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.fileEncoding = "UTF-8"
    options.layerName = path.stem
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    converter = _RenameFields(mapping, shapefile)
    options.fieldValueConverter = converter

    written: list[Path] = []
    try:
        error, message, _new_file, _new_layer = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, str(temp), _transform_context(layer), options
        )
        if error != QgsVectorFileWriter.WriterError.NoError:
            raise OSError(f"QGIS could not write {path.name}: {message or f'writer error {int(error)}'}")
        moves = _temp_parts(temp, path, driver)
        if shapefile and renamed:
            table = temp.with_name(f"{temp.stem}_fields.csv")
            _write_field_table(table, renamed)
            moves.append((table, path.with_name(f"{path.stem}_fields.csv")))
        if not moves:
            raise OSError(f"QGIS reported success but wrote nothing for {path.name}.")
        main = moves[0][1]  # the .shp, or the .dbf of a layer without geometry
        if overwrite:
            produced = {final for _tmp, final in moves}
            for old in existing:
                if old not in produced:
                    old.unlink()
        for tmp, final in moves:
            os.replace(tmp, final)
            written.append(final)
    finally:
        for leftover in _temp_leftovers(temp):
            leftover.unlink(missing_ok=True)
    return ExportResult(path=main, renamed=renamed, files=tuple(written), feature_count=layer.featureCount())


def _transform_context(layer: QgsVectorLayer):
    project = layer.project() or QgsProject.instance()
    return project.transformContext()


def _temp_parts(temp: Path, final: Path, driver: str) -> list[tuple[Path, Path]]:
    """(temporary file, final file) for every file the writer produced, the main file first.

    A shapefile's main file is its ``.shp``; a layer without geometry becomes a lone ``.dbf``.
    """
    if driver != SHAPEFILE:
        return [(temp, final)] if temp.exists() else []
    temp_stem, final_stem = temp.with_suffix(""), final.with_suffix("")
    if not Path(f"{temp_stem}.dbf").exists():
        return []
    moves = []
    for ext in SHAPEFILE_PARTS:
        part = Path(f"{temp_stem}{ext}")
        if part.exists():
            moves.append((part, Path(f"{final_stem}{ext}")))
    return moves


def _temp_leftovers(temp: Path) -> list[Path]:
    """Files whose name starts with the temporary name (after a failure: whatever the writer left)."""
    prefix = temp.stem
    return [p for p in temp.parent.iterdir() if p.name.startswith(prefix) and p.is_file()]


def _write_field_table(path: Path, renamed: dict[str, str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["original", "shapefile"])
        writer.writerows(renamed.items())


# ---------------------------------------------------------------------------------------------- GUI


class ExportDialog(QDialog):
    """Asks for the layer, the format and the output file.

    Args:
        layer: Preselected layer (default: the first vector layer of the project).
        parent: Parent widget.
    """

    def __init__(self, layer: QgsMapLayer | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RegionLens \u2014 Export layer")
        self.layer_combo = QgsMapLayerComboBox(self)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.VectorLayer)
        if layer is not None:
            self.layer_combo.setLayer(layer)
        self.format_combo = QComboBox(self)
        for driver, (_ext, title) in DRIVERS.items():
            self.format_combo.addItem(title, driver)
        self.path_edit = QLineEdit(self)
        self.path_edit.setPlaceholderText("Output file")
        browse = QPushButton("Browse\u2026", self)
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit)
        path_row.addWidget(browse)

        form = QFormLayout()
        form.addRow("Layer", self.layer_combo)
        form.addRow("Format", self.format_combo)
        form.addRow("File", path_row)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, parent=self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.format_combo.currentIndexChanged.connect(self._fix_extension)

    def layer(self) -> QgsVectorLayer | None:
        """The chosen layer."""
        chosen = self.layer_combo.currentLayer()
        return chosen if isinstance(chosen, QgsVectorLayer) else None

    def driver(self) -> str:
        """The chosen OGR driver name."""
        return str(self.format_combo.currentData())

    def path(self) -> Path | None:
        """The chosen file, with the format's extension (``None`` when empty)."""
        text = self.path_edit.text().strip()
        return _with_extension(Path(text), self.driver()) if text else None

    def _browse(self) -> None:
        _ext, title = DRIVERS[self.driver()]
        start = self.path_edit.text().strip() or str(Path.home() / _default_name(self.layer()))
        chosen, _filter = QFileDialog.getSaveFileName(
            self, "Export layer to", start, title, options=QFileDialog.Option.DontConfirmOverwrite
        )  # we ask ourselves: replacing a shapefile replaces all its parts
        if chosen:
            self.path_edit.setText(str(_with_extension(Path(chosen), self.driver())))

    def _fix_extension(self) -> None:
        text = self.path_edit.text().strip()
        if text:
            stem = Path(text)
            if stem.suffix.lower() in (".shp", ".gpkg"):
                stem = stem.with_suffix("")
            self.path_edit.setText(str(_with_extension(stem, self.driver())))


def _default_name(layer: QgsVectorLayer | None) -> str:
    name = layer.name() if layer is not None else "layer"
    return re.sub(r"[^\w\-]+", "_", name).strip("_").lower() or "layer"


def export_layer_dialog(iface, layer: QgsMapLayer | None = None) -> ExportResult | None:
    """Ask what to export and where, confirm replacing a file, export, report in the message bar.

    Args:
        iface: The QGIS interface.
        layer: Preselected layer (default: the active layer).

    Returns:
        The export's result, or ``None`` if cancelled or failed (the failure is in the message bar).
    """
    bar = iface.messageBar()
    if layer is None:
        layer = iface.activeLayer()
    dialog = ExportDialog(layer if isinstance(layer, QgsVectorLayer) else None, iface.mainWindow())
    while True:
        if not dialog.exec():  # 0: rejected (an int in PyQt5 and PyQt6 alike)
            return None
        chosen, path = dialog.layer(), dialog.path()
        if chosen is None or path is None:
            QMessageBox.warning(dialog, "Export layer", "Choose a vector layer and an output file.")
            continue
        break
    driver = dialog.driver()
    overwrite = False
    existing = [p for p in output_files(path, driver) if p.exists()]
    if existing:
        answer = QMessageBox.question(
            iface.mainWindow(),
            "Replace file?",
            f"{path} already exists" + (" (or some of its parts)" if driver == SHAPEFILE else "")
            + ". Replace it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )  # fmt: skip
        if answer != QMessageBox.StandardButton.Yes:
            return None
        overwrite = True
    try:
        result = export_layer(chosen, path, driver, overwrite=overwrite)
    except (OSError, ValueError) as exc:
        bar.pushCritical("RegionLens", f"Export failed: {exc}")
        return None
    report_export(bar, result, iface.mainWindow())
    return result


def report_export(bar, result: ExportResult, parent: QWidget | None = None):
    """A green success message, short enough for the bar: the file name, an *Open folder* button, and the
    full report (files, renamed fields) behind *Details*. Returns the message-bar item."""
    folder = result.path.parent

    def open_folder() -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    return push_message(bar, result.message(), Qgis.MessageLevel.Success, details=result.details(),
                        details_title="RegionLens export", parent=parent,
                        actions=[("Open folder", open_folder)])  # fmt: skip
