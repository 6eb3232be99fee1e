""""Apply a saved model to another layer…": a model a run saved embeds a region layer it never saw.

dialog -> :class:`ApplyChoices` -> :func:`validate_apply` (shown live, in red) -> :func:`to_apply_parameters`
(exports the layers) -> :class:`ApplyTask` (a QgsTask running the worker's ``apply`` action) ->
``RunSucceeded`` / ``RunFailed`` / ``RunCancelled`` -> :meth:`ApplyDialog._done` (main thread: loads the
``embeddings`` layer styled, reports in the message bar).

A run saves every model in ``<output folder>/models/<method>/``. What a model needs is the backend's to
say: the dialog asks the worker (``info`` with ``model``, in the background) and shows the inputs of its
answer (:class:`SavedModel`): the POI layer with the fields it names, the raster, and whether each is
required. It never reads the model's files itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt import sip
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

from ..input_export import MARKER, InputExporter, raster_problem, remove_exported_inputs
from ..parameters import DEVICES, RunChoices, apply_request, input_config
from ..tasks import PLUGIN_ROOT, RunCancelled, RunFailed, RunOutcome, RunSucceeded, RunTask
from ..worker_client import find_backend_python
from .backend_info import BackendInfoTask
from .messages import push_message
from .run_dock import offer_id_field, offer_poi_fields
from .wheel_guard import guard_wheel

__all__ = [
    "ApplyChoices",
    "ApplyDialog",
    "ApplyParameters",
    "ApplyTask",
    "SavedModel",
    "apply_inputs_dir",
    "to_apply_parameters",
    "validate_apply",
]

#: Inputs the ``apply`` action takes besides the regions (backend/jobs.py ApplyJob).
APPLY_INPUTS = ("pois", "rasters")
_INPUT_WORDS = {"pois": "a POI layer", "rasters": "a raster", "landuse": "a land-use layer", "od": "an OD table"}


# ---------------------------------------------------------------------------------------- the model


@dataclass
class SavedModel:
    """A saved model as the backend describes it (the ``model`` of its ``info`` answer)."""

    folder: Path
    name: str  # method (registry name)
    dim: int  # embedding size
    inputs: dict[str, dict[str, Any]]  # input -> {"views", "fields", "optional_fields", "required", ...}
    title: str = ""

    @classmethod
    def from_info(cls, answer: dict[str, Any]) -> SavedModel:
        """Build from the worker's answer (``info`` with ``model``).

        Raises:
            ValueError: If the answer is not a model description.
        """
        model = answer.get("model") if isinstance(answer, dict) else None
        if not isinstance(model, dict) or not model.get("name") or not isinstance(model.get("inputs"), dict):
            raise ValueError("The backend did not describe the model (update the backend).")
        dim = model.get("dim")
        return cls(folder=Path(str(model.get("folder", ""))), name=str(model["name"]),
                   dim=int(dim) if isinstance(dim, int) else 0,
                   inputs={str(k): v for k, v in model["inputs"].items() if isinstance(v, dict)},
                   title=str(model.get("title") or ""))

    def needs(self, name: str) -> bool:
        """Whether the model learned from input ``name`` (``pois``, ``raster``, ...)."""
        return name in self.inputs

    def requires(self, name: str) -> bool:
        """Whether embedding fails without input ``name``."""
        return bool(self.inputs.get(name, {}).get("required"))

    def fields(self, name: str, optional: bool = False) -> list[str]:
        """The fields input ``name`` must name (or may name, with ``optional``), e.g. ``category_field``."""
        key = "optional_fields" if optional else "fields"
        return [str(f) for f in self.inputs.get(name, {}).get(key, [])]

    @property
    def summary(self) -> str:
        """One line for the dialog: the method and what it embeds from."""
        given = [n for n in self.inputs if n != "regions"]
        if not given:
            what = "embeds any regions from their polygons alone"
        else:
            parts = []
            for n in given:
                word = _INPUT_WORDS.get(n, n)
                parts.append(word if self.requires(n) else f"{word} (optional)")
            what = "needs " + ", ".join(parts)
        unsupported = [n for n in given if n not in APPLY_INPUTS]
        note = ""
        if unsupported:
            note = (f" It also learned from {' and '.join(_INPUT_WORDS.get(n, n) for n in unsupported)}, which "
                    "this dialog cannot give; those features count as average.")
        return f"{self.title or self.name}: {what} ({self.dim}-d).{note}"


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
                   backend_python: Path | None = None, model: SavedModel | None = None,
                   model_problem: str = "") -> list[str]:
    """Every problem with the choices, in words (empty when the job can start).

    Args:
        model: The backend's description of the chosen model (``None`` while unknown).
        model_problem: Why the model is unknown (the backend's error, or that it is being asked).
    """
    project = project or QgsProject.instance()
    problems: list[str] = []
    if not choices.model_dir.strip():
        problems.append("Choose the folder of a saved model (<run output>/models/<method>).")
    elif model is None:
        problems.append(model_problem or "Reading the saved model\u2026")
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
    if model is not None and model.requires("pois") and pois is None:
        problems.append(f"This {model.name} model needs a POI layer for the regions.")
    if pois is not None and model is not None and model.needs("pois"):
        if pois.geometryType() != QgsWkbTypes.GeometryType.PointGeometry:
            problems.append(f"The POI layer '{pois.name()}' is not a point layer.")
        if "category_field" in model.fields("pois") and (
            not choices.poi_category_field or pois.fields().indexFromName(choices.poi_category_field) < 0
        ):
            problems.append("Choose the POI category field.")
    raster = project.mapLayer(choices.raster_layer_id) if choices.raster_layer_id else None
    if model is not None and model.requires("rasters") and raster is None:
        problems.append(f"This {model.name} model learned from imagery: choose the raster of the regions.")
    if choices.raster_layer_id and (problem := raster_problem(raster)):
        problems.append(problem)
    if model is not None:
        problems += _input_problems(model, pois is not None, raster is not None)
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


def _input_problems(model: SavedModel, have_pois: bool, have_raster: bool) -> list[str]:
    """The model needs at least one input it learned from; the apply action takes POIs and rasters."""
    learned = [n for n in model.inputs if n != "regions"]
    offered = [n for n in learned if n in APPLY_INPUTS]
    if learned and not offered:
        return [f"This {model.name} model learned only from {' and '.join(_INPUT_WORDS.get(n, n) for n in learned)}, "
                "which the apply action cannot take; run RegionLens on this layer instead."]
    if any(model.requires(n) for n in offered):
        return []  # said above when missing
    given = {"pois": have_pois, "rasters": have_raster}
    if offered and not any(given[n] for n in offered):
        return [f"This {model.name} model needs {' or '.join(_INPUT_WORDS[n] for n in offered)}."]
    return []


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
    action: str = "apply"  # the worker action RunTask sends
    cancelled_message: str = "Applying the model was cancelled."

    def worker_config(self) -> dict[str, Any]:
        """The request's parameters."""
        return dict(self.params)


def to_apply_parameters(choices: ApplyChoices, backend_python: Path, model: SavedModel,
                        project: QgsProject | None = None) -> ApplyParameters:
    """Export the chosen layers and build the job (call only when :func:`validate_apply` found nothing).

    Only the inputs ``model`` needs are sent, with the fields it names.

    Raises:
        ValueError: If a layer cannot be exported.
    """
    project = project or QgsProject.instance()
    output = Path(choices.output).expanduser().resolve()
    raster = project.mapLayer(choices.raster_layer_id) if choices.raster_layer_id else None
    pois = model.needs("pois") and _vector(project, choices.poi_layer_id) is not None
    inputs = RunChoices(
        region_layer_id=choices.region_layer_id, region_id_field=choices.region_id_field,
        poi_layer_id=choices.poi_layer_id if pois else "", poi_category_field=choices.poi_category_field,
        poi_name_field=choices.poi_name_field if "name_field" in model.fields("pois", optional=True) else "",
        raster_layer_ids=[raster.id()] if model.needs("rasters") and isinstance(raster, QgsRasterLayer) else [],
        labels=[], methods=[],
    )  # fmt: skip
    exporter = InputExporter(apply_inputs_dir(output))
    exporter.prepare()
    params = apply_request(input_config(inputs, exporter, project), choices.model_dir, output, choices.overwrite,
                           choices.device)  # fmt: skip
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
        self.model: SavedModel | None = None  # the backend's description of the chosen model
        self.model_problem = ""  # why there is none (being asked, or the backend's error)
        self.model_task: BackendInfoTask | None = None
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
        self.model_info = QLabel("", box)  # what the backend says the model needs
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
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.cancel_button.setVisible(False)  # after the last addButton(): each one shows all buttons again
        self.apply_button.clicked.connect(lambda _checked=False: self.start())
        self.cancel_button.clicked.connect(lambda _checked=False: self.cancel())
        self.close_button.clicked.connect(lambda _checked=False: self.close())
        layout.addWidget(self.buttons)
        guard_wheel(self)  # the wheel never changes a dropdown the pointer merely passes over

        self.model_file.fileChanged.connect(lambda _path: self.ask_model())
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
        offer_id_field(self.region_combo.currentLayer(), self.region_id_combo)
        self.refresh()

    def _on_poi_layer_changed(self) -> None:
        offer_poi_fields(self.poi_combo.currentLayer(), self.poi_category_combo, self.poi_name_combo)
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

    def ask_model(self) -> BackendInfoTask | None:
        """Ask the backend (in the background) what the chosen model is and which inputs it needs."""
        folder = self.model_file.filePath().strip()
        if self.model_task is not None:
            self.model_task.on_finished = None
            self.model_task.cancel()
            self.model_task = None
        self.model = None
        self.model_problem = ""
        if folder and self.backend_python is None:
            self.model_problem = "The backend must be set up to read the saved model."
        elif folder:
            self.model_problem = "Asking the backend about the saved model\u2026"
            task = BackendInfoTask(self.backend_python, params={"model": folder},
                                   on_finished=lambda info, error: self._model_answered(task, folder, info, error))
            self.model_task = task
            QgsApplication.taskManager().addTask(task)
        self.refresh()
        return self.model_task

    def _model_answered(self, task: BackendInfoTask, folder: str, info: dict[str, Any] | None, error: str) -> None:
        if sip.isdeleted(self) or task is not self.model_task:
            return
        self.model_task = None
        if folder != self.model_file.filePath().strip():
            return
        try:
            self.model = SavedModel.from_info(info) if info is not None else None
            self.model_problem = "" if info is not None else (error.strip().splitlines() or ["no answer"])[0]
        except ValueError as exc:
            self.model, self.model_problem = None, str(exc)
        self.refresh()

    def refresh(self) -> list[str]:
        """Show what the model needs, validate; returns the problems."""
        model = self.model
        self.model_info.setText(model.summary if model is not None else "")
        pois = model is not None and model.needs("pois")
        self.poi_box.setEnabled(model is None or pois)
        self.poi_box.setTitle("Points of interest" + (
            "" if model is None or model.requires("pois") else " (optional)" if pois else " (not needed)"))
        self.raster_box.setVisible(model is not None and model.needs("rasters"))
        self.raster_box.setTitle("Imagery" + ("" if model is not None and model.requires("rasters") else " (optional)"))
        self.problems = validate_apply(self.choices(), self.project, self.backend_python, model, self.model_problem)
        self.problem_label.setText("\n".join(self.problems))
        running = self.task is not None
        self.apply_button.setEnabled(not self.problems and not running)
        return self.problems

    # ------------------------------------------------------------------ running

    def start(self) -> ApplyTask | None:
        """Export the layers and start the job in QGIS's task manager (``None`` if the choices are invalid)."""
        if self.task is not None or self.refresh() or self.backend_python is None or self.model is None:
            return None
        try:
            params = to_apply_parameters(self.choices(), self.backend_python, self.model, self.project)
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
            return dict(load_run_outputs(gpkg, self.project, primary_method=str(method), run_name=gpkg.stem,
                                         group_name=f"RegionLens \u2014 {method} applied: {gpkg.stem}"))
        except (OSError, ValueError) as exc:
            self.status_label.setText(str(exc))
            return {}
