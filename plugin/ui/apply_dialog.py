""""Apply a saved model to another layer…": a model a run saved embeds a region layer it never saw.

dialog -> :class:`ApplyChoices` -> :func:`validate_apply` (shown live, in red) -> :func:`to_apply_parameters`
(exports the layers) -> :class:`ApplyTask` (a QgsTask running the worker's ``apply`` action) ->
``RunSucceeded`` / ``RunFailed`` / ``RunCancelled`` -> :meth:`ApplyDialog._done` (main thread: loads the
``embeddings`` layer styled, reports in the message bar).

A run saves every model in ``<output folder>/models/<method>/`` (``config.json`` plus weights). What the
model needs is read from ``config.json`` (:func:`read_saved_model`), without the backend: CaLLiPer embeds
regions from their polygons alone (its ``poi`` region mode also needs POIs); the other methods need the
kinds of input they learned from (their saved vocabulary names them: POI counts, image statistics).
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from ..input_export import MARKER, InputExporter, remove_exported_inputs
from ..parameters import DEVICES, raster_path
from ..tasks import PLUGIN_ROOT, RunCancelled, RunFailed, RunOutcome, RunSucceeded, RunTask
from ..worker_client import WorkerCancelled, WorkerClient, WorkerDied, WorkerError, find_backend_python
from .messages import push_message

__all__ = [
    "ApplyChoices",
    "ApplyDialog",
    "ApplyParameters",
    "ApplyTask",
    "SavedModel",
    "apply_inputs_dir",
    "read_saved_model",
    "to_apply_parameters",
    "validate_apply",
]

_ID_NAME = re.compile(r"(^|_)(geo_?)?id$|^fid$|^code$|^id_", re.IGNORECASE)


# ---------------------------------------------------------------------------------------- the model


@dataclass
class SavedModel:
    """What a saved model needs, read from its ``config.json``."""

    folder: Path
    name: str  # method (registry name)
    dim: int  # embedding size
    pois: bool  # needs a POI layer
    imagery: bool  # learned from image statistics (a raster can be given)
    summary: str  # one line for the dialog


def read_saved_model(folder: str | Path) -> SavedModel:
    """Read a saved model's ``config.json``.

    Raises:
        ValueError: If the folder holds no readable RegionLens model.
    """
    path = Path(folder).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{Path(folder)} holds no saved RegionLens model (config.json unreadable: {exc}).") from exc
    if not isinstance(config, dict) or not config.get("name"):
        raise ValueError(f"{path} is not a RegionLens model configuration.")
    name = str(config["name"])
    vocabulary = config.get("vocabulary") if isinstance(config.get("vocabulary"), dict) else {}
    params = config.get("params") if isinstance(config.get("params"), dict) else {}
    if name == "calliper":  # inductive location encoder: polygons suffice, POIs only in "poi" mode
        pois = params.get("region_mode") == "poi"
        how = "at POI locations" if pois else ("at region centroids" if params.get("region_mode") == "centroid"
                                               else "from points inside each polygon")
        summary = f"CaLLiPer location encoder: embeds any regions {how}"
    else:
        pois = any(str(view).startswith("poi") for view in vocabulary)
        summary = f"{name}: learned from {', '.join(sorted(vocabulary)) or 'its inputs'}"
    dim = config.get("dim")
    return SavedModel(
        folder=Path(folder).expanduser(),
        name=name,
        dim=int(dim) if isinstance(dim, int) else 0,
        pois=pois,
        imagery="image_stats" in vocabulary,
        summary=f"{summary} ({dim}-d).",
    )


# ---------------------------------------------------------------------------------------- choices


@dataclass
class ApplyChoices:
    """What the planner chose in the dialog (layers by id, fields by name)."""

    model_dir: str = ""  # folder of a saved model, <run output>/models/<method>
    region_layer_id: str = ""
    region_id_field: str = ""
    poi_layer_id: str = ""  # only for models that need POIs
    poi_category_field: str = ""
    poi_name_field: str = ""
    raster_layer_id: str = ""  # only for models that learned from imagery (optional)
    output: str = ""  # GeoPackage to write
    overwrite: bool = False  # replace an existing output file
    device: str = "auto"


def _vector(project: QgsProject, layer_id: str) -> QgsVectorLayer | None:
    layer = project.mapLayer(layer_id) if layer_id else None
    return layer if isinstance(layer, QgsVectorLayer) and layer.isValid() else None


def validate_apply(choices: ApplyChoices, project: QgsProject | None = None,
                   backend_python: Path | None = None) -> list[str]:
    """Every problem with the choices, in words (empty when the job can start)."""
    project = project or QgsProject.instance()
    problems: list[str] = []
    model: SavedModel | None = None
    if not choices.model_dir.strip():
        problems.append("Choose the folder of a saved model (<run output>/models/<method>).")
    else:
        try:
            model = read_saved_model(choices.model_dir)
        except ValueError as exc:
            problems.append(str(exc))
    regions = _vector(project, choices.region_layer_id)
    if regions is None:
        problems.append("Choose the region layer to embed.")
    else:
        if regions.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
            problems.append(f"The region layer '{regions.name()}' is not a polygon layer.")
        if not choices.region_id_field or regions.fields().indexFromName(choices.region_id_field) < 0:
            problems.append("Choose the region id field.")
        if regions.featureCount() == 0:
            problems.append(f"The region layer '{regions.name()}' has no features.")
    pois = _vector(project, choices.poi_layer_id)
    if model is not None and model.pois and pois is None:
        problems.append(f"This {model.name} model needs a POI layer for the regions.")
    if pois is not None and (model is None or model.pois):
        if pois.geometryType() != QgsWkbTypes.GeometryType.PointGeometry:
            problems.append(f"The POI layer '{pois.name()}' is not a point layer.")
        if not choices.poi_category_field or pois.fields().indexFromName(choices.poi_category_field) < 0:
            problems.append("Choose the POI category field.")
    if choices.raster_layer_id:
        layer = project.mapLayer(choices.raster_layer_id)
        if layer is None or raster_path(layer) is None:
            problems.append("The raster must be a local file (GeoTIFF).")
    out = choices.output.strip()
    if not out:
        problems.append("Choose the GeoPackage to write (.gpkg).")
    elif not out.lower().endswith(".gpkg"):
        problems.append("The output must be a GeoPackage file ending in .gpkg.")
    elif Path(out).expanduser().exists() and not choices.overwrite:
        problems.append(f"{out} exists; choose another file or tick \u201creplace existing file\u201d.")
    if choices.device not in DEVICES:
        problems.append(f"Unknown device '{choices.device}'.")
    if backend_python is None:
        problems.append("The backend is not set up (RegionLens \u203a Set up backend\u2026).")
    return problems


def apply_inputs_dir(output: str | Path) -> Path:
    """Where the layers are exported for the worker: the hidden sibling ``.<output stem>_apply_inputs``."""
    out = Path(output).expanduser()
    return out.parent / f".{out.stem}_apply_inputs"


@dataclass
class ApplyParameters:
    """Everything a background ``apply`` job needs (the fields RunTask reads, plus the job's parameters)."""

    backend_python: Path
    params: dict[str, Any]  # the worker's apply parameters (backend/jobs.py ApplyJob), absolute paths
    inputs_dir: Path | None = None  # exported layers, removed when the job succeeds or is cancelled
    plugin_root: Path = PLUGIN_ROOT
    start_timeout: float = 120.0
    cancel_grace: float = 5.0
    idle_timeout: float | None = None
    output_dir: Path = field(default_factory=Path)  # unused (RunTask compatibility)

    def worker_config(self) -> dict[str, Any]:
        """The request's parameters."""
        return dict(self.params)


def to_apply_parameters(choices: ApplyChoices, backend_python: Path, project: QgsProject | None = None
                        ) -> ApplyParameters:
    """Export the chosen layers and build the job (call only when :func:`validate_apply` found nothing).

    Raises:
        ValueError: If a layer cannot be exported.
    """
    project = project or QgsProject.instance()
    model = read_saved_model(choices.model_dir)
    output = Path(choices.output).expanduser().resolve()
    exporter = InputExporter(apply_inputs_dir(output))
    exporter.prepare()
    regions = _vector(project, choices.region_layer_id)
    assert regions is not None  # validated
    params: dict[str, Any] = {
        "model": str(model.folder.resolve()),
        "regions": str(exporter.export(regions, "regions", [choices.region_id_field])),
        "layer": "regions",
        "id_field": choices.region_id_field,
        "output": str(output),
        "overwrite": bool(choices.overwrite),
        "device": choices.device,
    }
    pois = _vector(project, choices.poi_layer_id)
    if model.pois and pois is not None:
        params.update(pois=str(exporter.export(pois, "pois", [choices.poi_category_field, choices.poi_name_field])),
                      poi_layer="pois", category_field=choices.poi_category_field,
                      name_field=choices.poi_name_field or None)
    raster = project.mapLayer(choices.raster_layer_id) if choices.raster_layer_id else None
    path = raster_path(raster) if raster is not None else None
    if model.imagery and path is not None:
        params["rasters"] = [str(path)]
    exporter.finish(params)
    return ApplyParameters(backend_python=Path(backend_python), params=params, inputs_dir=exporter.folder,
                           output_dir=output.parent)


# ---------------------------------------------------------------------------------------- the task


class ApplyTask(RunTask):
    """Run the worker's ``apply`` action in the background (same outcomes as :class:`RunTask`).

    The result is the job's answer: ``output`` / ``gpkg`` (the written GeoPackage), ``method``,
    ``n_regions``, ``dim``, ``device``, ``seconds``, ``report``.
    """

    def __init__(self, params: ApplyParameters, on_finished: Callable[[RunOutcome], None] | None = None,
                 description: str = "RegionLens: apply a saved model") -> None:
        super().__init__(params, on_finished, description)  # type: ignore[arg-type] # same fields as RunParameters

    def run(self) -> bool:
        """Task thread: start the worker, send ``apply``, map events; never touches the GUI."""
        if self.isCanceled():
            self.outcome = RunCancelled("Applying the model was cancelled.")
            return False
        started = time.monotonic()
        client = WorkerClient(self.params.backend_python, self.params.plugin_root, on_stderr=self._log_stderr)
        self.client = client
        try:
            client.start(timeout=self.params.start_timeout)
            result = client.run_job("apply", self.params.worker_config(), on_event=self._on_event,
                                    is_cancelled=self.isCanceled, idle_timeout=self.params.idle_timeout,
                                    cancel_grace=self.params.cancel_grace)
            seconds = result.get("seconds")
            self.outcome = RunSucceeded(
                result=result, device=str(result.get("device", "unknown")),
                seconds=float(seconds) if isinstance(seconds, (int, float)) else time.monotonic() - started,
            )
            return True
        except WorkerCancelled as exc:
            self.outcome = RunCancelled(exc.message)
        except WorkerError as exc:
            self.outcome = RunFailed(exc.kind, exc.message, "\n".join(p for p in (exc.traceback, exc.stderr) if p))
        except WorkerDied as exc:
            self.outcome = RunFailed("died", exc.message, exc.stderr)
        except Exception as exc:  # a task must report every failure, not raise it
            self.outcome = RunFailed("internal", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            client.close(timeout=self.params.cancel_grace)
        return False


# ---------------------------------------------------------------------------------------- the dialog


class ApplyDialog(QDialog):
    """Choose a saved model, a region layer (and POIs if needed) and an output; run; load the result.

    Args:
        plugin: The plugin (``iface``; running tasks are also kept in its ``tasks`` list if it has one).
        parent: Parent widget (QGIS's main window).
        project: The project whose layers it offers (default ``QgsProject.instance()``).
        backend_python: The backend interpreter (default: :func:`find_backend_python`).
    """

    def __init__(self, plugin: Any, parent: QWidget | None = None, project: QgsProject | None = None,
                 backend_python: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RegionLens \u2014 apply a saved model to another layer")
        self.setObjectName("RegionLensApplyDialog")
        self.plugin = plugin
        self.project = project or QgsProject.instance()
        self.backend_python = backend_python if backend_python is not None else find_backend_python()
        self.task: ApplyTask | None = None
        self.last_outcome: RunOutcome | None = None
        self.loaded_layers: dict[str, Any] = {}
        self.problems: list[str] = []
        self.model: SavedModel | None = None
        self._build()
        self._on_region_layer_changed()
        self._on_poi_layer_changed()
        self.refresh()

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        box = QGroupBox("Saved model", self)
        form = QFormLayout(box)
        self.model_file = QgsFileWidget(box)
        self.model_file.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.model_file.setDialogTitle("Folder of a saved model (<run output>/models/<method>)")
        self.model_info = QLabel("", box)
        self.model_info.setWordWrap(True)
        form.addRow("Model folder", self.model_file)
        form.addRow(self.model_info)
        layout.addWidget(box)

        box = QGroupBox("Regions to embed", self)
        form = QFormLayout(box)
        self.region_combo = self._layer_combo(QgsMapLayerProxyModel.Filter.PolygonLayer, False, box)
        self.region_id_combo = QgsFieldComboBox(box)
        form.addRow("Layer", self.region_combo)
        form.addRow("Id field", self.region_id_combo)
        layout.addWidget(box)

        self.poi_box = QGroupBox("Points of interest", self)
        form = QFormLayout(self.poi_box)
        self.poi_combo = self._layer_combo(QgsMapLayerProxyModel.Filter.PointLayer, True, self.poi_box)
        self.poi_category_combo = QgsFieldComboBox(self.poi_box)
        self.poi_name_combo = QgsFieldComboBox(self.poi_box)
        self.poi_name_combo.setAllowEmptyFieldName(True)
        form.addRow("Layer", self.poi_combo)
        form.addRow("Category field", self.poi_category_combo)
        form.addRow("Name field (optional)", self.poi_name_combo)
        layout.addWidget(self.poi_box)

        self.raster_box = QGroupBox("Imagery (optional)", self)
        form = QFormLayout(self.raster_box)
        self.raster_combo = self._layer_combo(QgsMapLayerProxyModel.Filter.RasterLayer, True, self.raster_box)
        form.addRow("Raster", self.raster_combo)
        layout.addWidget(self.raster_box)

        box = QGroupBox("Output", self)
        form = QFormLayout(box)
        self.output_file = QgsFileWidget(box)
        self.output_file.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_file.setFilter("GeoPackage (*.gpkg)")
        self.output_file.setDialogTitle("GeoPackage for the embeddings")
        self.overwrite_check = QCheckBox("replace existing file", box)
        self.device_combo = QComboBox(box)
        for device in DEVICES:
            self.device_combo.addItem(device, device)
        form.addRow("GeoPackage", self.output_file)
        form.addRow(self.overwrite_check)
        form.addRow("Device", self.device_combo)
        layout.addWidget(box)

        self.problem_label = QLabel("", self)
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #b00020;")
        layout.addWidget(self.problem_label)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setVisible(False)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        self.buttons = QDialogButtonBox(self)
        self.apply_button = self.buttons.addButton("Apply", QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton("Cancel run", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setVisible(False)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.apply_button.clicked.connect(lambda _checked=False: self.start())
        self.cancel_button.clicked.connect(lambda _checked=False: self.cancel())
        self.close_button.clicked.connect(lambda _checked=False: self.close())
        layout.addWidget(self.buttons)

        self.model_file.fileChanged.connect(lambda _path: self.refresh())
        self.region_combo.layerChanged.connect(lambda _layer: self._on_region_layer_changed())
        self.region_id_combo.fieldChanged.connect(lambda _name: self.refresh())
        self.poi_combo.layerChanged.connect(lambda _layer: self._on_poi_layer_changed())
        self.poi_category_combo.fieldChanged.connect(lambda _name: self.refresh())
        self.raster_combo.layerChanged.connect(lambda _layer: self.refresh())
        self.output_file.fileChanged.connect(lambda _path: self.refresh())
        self.overwrite_check.toggled.connect(lambda _on: self.refresh())

    def _layer_combo(self, filters: Any, allow_empty: bool, parent: QWidget) -> QgsMapLayerComboBox:
        combo = QgsMapLayerComboBox(parent)
        if hasattr(combo, "setProject"):  # QGIS >= 3.24; 3.22 always lists QgsProject.instance()
            combo.setProject(self.project)
        combo.setFilters(filters)
        combo.setAllowEmptyLayer(allow_empty)
        if allow_empty:
            combo.setLayer(None)
        return combo

    def _on_region_layer_changed(self) -> None:
        layer = self.region_combo.currentLayer()
        self.region_id_combo.setLayer(layer)
        if isinstance(layer, QgsVectorLayer):
            names = layer.fields().names()
            guess = next((n for n in names if _ID_NAME.search(n)), names[0] if names else "")
            self.region_id_combo.setField(guess)
        self.refresh()

    def _on_poi_layer_changed(self) -> None:
        layer = self.poi_combo.currentLayer()
        self.poi_category_combo.setLayer(layer)
        self.poi_name_combo.setLayer(layer)
        if isinstance(layer, QgsVectorLayer):
            names = layer.fields().names()
            self.poi_category_combo.setField(next((n for n in names if "categ" in n.lower()), ""))
            self.poi_name_combo.setField(next((n for n in names if n.lower() == "name"), ""))
        self.refresh()

    # ------------------------------------------------------------------ state

    def choices(self) -> ApplyChoices:
        """The choices shown."""
        region = self.region_combo.currentLayer()
        poi = self.poi_combo.currentLayer()
        raster = self.raster_combo.currentLayer()
        return ApplyChoices(
            model_dir=self.model_file.filePath().strip(),
            region_layer_id=region.id() if region is not None else "",
            region_id_field=self.region_id_combo.currentField(),
            poi_layer_id=poi.id() if poi is not None else "",
            poi_category_field=self.poi_category_combo.currentField(),
            poi_name_field=self.poi_name_combo.currentField(),
            raster_layer_id=raster.id() if raster is not None else "",
            output=self.output_file.filePath().strip(),
            overwrite=self.overwrite_check.isChecked(),
            device=str(self.device_combo.currentData()),
        )

    def refresh(self) -> list[str]:
        """Re-read the model, show what it needs, validate; returns the problems."""
        folder = self.model_file.filePath().strip()
        try:
            self.model = read_saved_model(folder) if folder else None
        except ValueError:
            self.model = None
        model = self.model
        self.model_info.setText(model.summary if model is not None else "")
        self.poi_box.setEnabled(model is None or model.pois)
        self.poi_box.setTitle("Points of interest" + ("" if model is None or model.pois else " (not needed)"))
        self.raster_box.setVisible(model is not None and model.imagery)
        self.problems = validate_apply(self.choices(), self.project, self.backend_python)
        self.problem_label.setText("\n".join(self.problems))
        running = self.task is not None
        self.apply_button.setEnabled(not self.problems and not running)
        return self.problems

    # ------------------------------------------------------------------ running

    def start(self) -> ApplyTask | None:
        """Export the layers and start the job in QGIS's task manager (``None`` if the choices are invalid)."""
        if self.task is not None or self.refresh():
            return None
        assert self.backend_python is not None  # validated
        try:
            params = to_apply_parameters(self.choices(), self.backend_python, self.project)
        except ValueError as exc:
            self.problem_label.setText(str(exc))
            return None
        task = ApplyTask(params, description=f"RegionLens: apply {self.model.name if self.model else 'model'}")
        task.on_finished = self._done
        task.progressChanged.connect(lambda value: self.progress_bar.setValue(int(value)))
        self.task = task
        tasks = getattr(self.plugin, "tasks", None)
        if isinstance(tasks, list):
            tasks.append(task)  # referenced until it finishes; cancelled when the plugin unloads
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)
        self.status_label.setText("Running\u2026")
        self.apply_button.setEnabled(False)
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        """Cancel the running job (the worker stops at its next progress point, or is killed)."""
        if self.task is not None:
            self.task.cancel()

    def _done(self, outcome: RunOutcome) -> None:
        task, self.task = self.task, None
        tasks = getattr(self.plugin, "tasks", None)
        if isinstance(tasks, list) and task in tasks:
            tasks.remove(task)
        self.last_outcome = outcome
        self.progress_bar.setVisible(False)
        self.cancel_button.setVisible(False)
        inputs = task.params.inputs_dir if task is not None else None
        iface = getattr(self.plugin, "iface", None)
        bar = iface.messageBar() if iface is not None else None
        if isinstance(outcome, RunSucceeded):
            if inputs is not None and (Path(inputs) / MARKER).is_file():
                remove_exported_inputs(inputs)
            self.loaded_layers = self._load(outcome)
            report = outcome.result.get("report") or []
            text = (f"embedded {outcome.result.get('n_regions', '?')} regions with the saved "
                    f"{outcome.result.get('method', '')} model on {outcome.device} in {outcome.seconds:.1f} s")
            self.status_label.setText(text[0].upper() + text[1:] + f": {outcome.gpkg}")
            if bar is not None:
                push_message(bar, text, Qgis.MessageLevel.Success, details="\n".join(
                    [f"GeoPackage: {outcome.gpkg}", *report]), details_title="RegionLens apply")
        elif isinstance(outcome, RunFailed):
            first = (outcome.message.strip().splitlines() or [outcome.kind])[0]
            self.status_label.setText(f"Failed ({outcome.kind}): {first}")
            if bar is not None:
                push_message(bar, f"applying the model failed ({outcome.kind}): {first}", Qgis.MessageLevel.Critical,
                             details="\n\n".join(p for p in (outcome.message, outcome.details) if p.strip()),
                             details_title="RegionLens: worker log and traceback")
        elif isinstance(outcome, RunCancelled):
            if inputs is not None:
                remove_exported_inputs(inputs)
            self.status_label.setText(outcome.message)
        self.refresh()

    def _load(self, outcome: RunSucceeded) -> dict[str, Any]:
        from ..results import load_run_outputs

        gpkg = outcome.gpkg
        method = outcome.result.get("method", "model")
        try:
            return dict(load_run_outputs(gpkg, self.project, group_name=f"RegionLens \u2014 {method} applied: {gpkg.stem}",
                                         primary_method=str(method), run_name=gpkg.stem))
        except (OSError, ValueError) as exc:
            self.status_label.setText(str(exc))
            return {}
