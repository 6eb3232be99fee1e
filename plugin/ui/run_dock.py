"""The run dock: a planner picks inputs, labels, methods and an output folder, then runs RegionLens.

dock -> :class:`plugin.parameters.RunChoices` -> :func:`plugin.parameters.validate` (shown live, in
red, under the form) -> :func:`plugin.parameters.to_run_config` (exports the layers) ->
:class:`plugin.tasks.RunParameters` -> ``plugin.start_run`` (a QgsTask; the plugin keeps it referenced,
loads the results and reports in the message bar) -> :meth:`RunDock._run_done` (the dock's own state,
the metrics table).

The methods offered are the baseline plus whatever the backend's ``info`` lists, asked in the
background (:class:`plugin.ui.backend_info.BackendInfoTask`). The choices are stored in the project
(:mod:`plugin.project_settings`) and restored when the dock opens or a project is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from qgis.core import (
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..common import common
from ..input_export import remove_exported_inputs, remove_stale_staging
from ..parameters import (
    CONTEXT_HELP,
    DEVICES,
    ENSEMBLE_HELP,
    METHODS,
    TARGETS,
    LabelChoice,
    RunChoices,
    context_presets,
    describe_context,
    ensemble_limit,
    inputs_dir_for,
    label_fields,
    label_name,
    to_run_config,
    validate,
)
from ..project_settings import load_choices, save_choices
from ..results import is_result_layer
from ..sample_data import SAMPLE_CHOICES
from ..tasks import RunCancelled, RunFailed, RunOutcome, RunParameters, RunSucceeded, RunTask
from ..worker_client import find_backend_python
from .backend_banner import BACKEND_MISSING_PROBLEM, BackendBanner
from .backend_info import BackendInfoTask
from .method_widgets import MethodSection
from .metrics_dialog import MetricsDialog
from .source_widgets import RasterKinds, poi_file_widget
from .wheel_guard import guard_wheel

__all__ = [
    "RunDock",
    "guess_id_field",
    "guess_poi_fields",
    "next_free_folder",
    "offer_id_field",
    "offer_poi_fields",
    "output_folder_is_free",
    "suggested_output_folder",
]

_ID_NAME = re.compile(r"(^|_)(geo_?)?id$|^code$|^id_", re.IGNORECASE)


class _Plugin(Protocol):
    """What the dock needs from the plugin (``plugin.main.RegionLensPlugin``)."""

    iface: Any

    def start_run(self, params: RunParameters, on_done: Callable[[RunOutcome], None] | None = None) -> RunTask: ...

    def find_similar(self) -> object: ...


def _narrow(combo: QComboBox) -> QComboBox:
    """Let a combo box shrink with the dock instead of growing to its longest item."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    return combo


def _layer_combo(filters: Any, allow_empty: bool, parent: QWidget) -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox(parent)
    _narrow(combo)
    combo.setFilters(filters)
    combo.setAllowEmptyLayer(allow_empty)
    if allow_empty:
        combo.setLayer(None)
    return combo


def _field_combo(allow_empty: bool, parent: QWidget) -> QgsFieldComboBox:
    combo = QgsFieldComboBox(parent)
    _narrow(combo)
    combo.setAllowEmptyFieldName(allow_empty)
    return combo


def _guess_field(layer: QgsVectorLayer | None, *patterns: str | re.Pattern[str]) -> str:
    """The first field matching the first pattern that matches any field ("" if none)."""
    if layer is None:
        return ""
    names = layer.fields().names()
    for pattern in patterns:
        regex = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
        found = next((name for name in names if regex.search(name)), "")
        if found:
            return found
    return ""


def output_folder_is_free(path: Path) -> bool:
    """Whether a run can write to ``path`` without replacing anything: no files there, nor inputs beside it."""
    taken = path.exists() and (not path.is_dir() or any(path.iterdir()))
    return not taken and not inputs_dir_for(path).exists()


def next_free_folder(path: str | Path) -> Path:
    """``path`` if it is free (:func:`output_folder_is_free`), else ``path_2``, ``path_3``, ... (the first free).

    A name that already ends in ``_<n>`` counts on from ``n``.
    """
    path = Path(path).expanduser()
    if output_folder_is_free(path):
        return path
    match = re.fullmatch(r"(.*)_(\d+)", path.name)
    stem, n = (match.group(1), int(match.group(2))) if match else (path.name, 1)
    while True:
        n += 1
        candidate = path.with_name(f"{stem}_{n}")
        if output_folder_is_free(candidate):
            return candidate


def suggested_output_folder(project: QgsProject, name: str = "run_1") -> Path:
    """A fresh results folder: ``<project folder or home>/regionlens/<name>``, or the next free name."""
    home = project.homePath() if project is not None else ""
    base = Path(home) if home else Path.home()
    return next_free_folder(base / "regionlens" / name)


def guess_id_field(layer: QgsVectorLayer | None) -> str:
    """The region layer's likely id field: an ``id``-like name, else ``fid``, else the first field."""
    names = layer.fields().names() if layer is not None else []
    return _guess_field(layer, _ID_NAME, r"^fid$") or (names[0] if names else "")


def guess_poi_fields(layer: QgsVectorLayer | None) -> tuple[str, str]:
    """A POI layer's likely category and name fields (``""`` where none fits)."""
    category = _guess_field(layer, r"^category$", r"categ", r"amenity", r"class", r"type")
    return category, _guess_field(layer, r"^name$")


def offer_id_field(layer: QgsMapLayer | None, id_combo: QgsFieldComboBox) -> None:
    """Offer the fields of the region layer ``layer`` in ``id_combo``: the chosen field stays when the layer has
    it, else the likely id field (:func:`guess_id_field`) is chosen (the run dock and the Apply dialog)."""
    vector = layer if isinstance(layer, QgsVectorLayer) else None
    previous = id_combo.currentField()
    id_combo.setLayer(vector)
    if vector is not None:
        id_combo.setField(previous if previous in vector.fields().names() else guess_id_field(vector))


def offer_poi_fields(layer: QgsMapLayer | None, category_combo: QgsFieldComboBox,
                     name_combo: QgsFieldComboBox) -> None:  # fmt: skip
    """Offer the fields of the POI layer ``layer`` with the likely category and name chosen
    (:func:`guess_poi_fields`; the run dock and the Apply dialog)."""
    vector = layer if isinstance(layer, QgsVectorLayer) else None
    category_combo.setLayer(vector)
    name_combo.setLayer(vector)
    if vector is not None:
        category, name = guess_poi_fields(vector)
        category_combo.setField(category)
        name_combo.setField(name)


class RunDock(QgsDockWidget):
    """The RegionLens run dock.

    Args:
        plugin: The plugin (``start_run`` and ``iface``).
        parent: Parent widget (QGIS's main window).
        project: The project whose layers it offers (default ``QgsProject.instance()``).
        fetch_info: Ask the backend for its methods in the background (tests can turn it off).
    """

    def __init__(
        self,
        plugin: _Plugin,
        parent: QWidget | None = None,
        project: QgsProject | None = None,
        fetch_info: bool = True,
    ) -> None:
        super().__init__("RegionLens", parent)
        self.setObjectName("RegionLensRunDock")
        self.plugin = plugin
        self.project = project or QgsProject.instance()
        self.task: RunTask | None = None  # the running task (the plugin also keeps it)
        self.info_task: BackendInfoTask | None = None
        self.metrics_dialog: MetricsDialog | None = None  # the last run's metrics
        self.last_outcome: RunOutcome | None = None
        self.problems: list[str] = []
        self.backend_python: Path | None = None
        self.backend_error = ""
        self._restoring = False
        self._user_changed = False
        self._pending_methods: dict[str, Any] | None = None  # stored method choices not yet offered
        self._pending_advanced: tuple[str, int] | None = None  # stored context and ensemble not yet offered
        self._applying_methods = False  # ticking stored methods: method states are updated once, after
        # a method that combines the others (fusion) is ticked by itself when a second other method is
        # chosen, unless the planner unticked it; the count of other methods seen last time
        self._combining_declined = False
        self._others_seen = 0
        self._auto_combining = False
        self._inputs_dir: Path | None = None  # where the running task's inputs were exported
        self._suggested_output = ""  # the output folder RegionLens suggested (not stored as a choice)
        self._connections: list[tuple[Any, Callable[..., None]]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.refresh_validation)

        self._build()
        self._rebuild_methods()
        self._except_result_layers()
        self._refresh_rasters()
        self._on_region_layer_changed()
        self._on_poi_layer_changed()
        self._on_landuse_layer_changed()
        self.check_backend(fetch_info)
        self.restore()
        self._suggest_output_folder()
        self._listen_to_project()
        self.refresh_validation()

    # ================================================================== building

    def _build(self) -> None:
        outer = QWidget(self)
        outer_layout = QVBoxLayout(outer)
        outer_layout.setContentsMargins(4, 4, 4, 4)
        scroll = QScrollArea(outer)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        content = QWidget(scroll)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        scroll.setWidget(content)
        self.banner = BackendBanner(outer)  # above the scroll area: seen first while no backend exists
        self.setup_button = self.banner.button
        self.setup_button.clicked.connect(self.set_up_backend)
        outer_layout.addWidget(self.banner)
        outer_layout.addWidget(scroll, 1)

        # Regions
        box = QGroupBox("Regions", content)
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.region_combo = _layer_combo(QgsMapLayerProxyModel.Filter.PolygonLayer, False, box)
        self.region_combo.setToolTip("Polygon layer of the regions (block groups, grid cells, districts)")
        self.region_id_combo = _field_combo(False, box)
        self.region_id_combo.setToolTip("Field holding a unique, non-empty id per region")
        form.addRow("Layer", self.region_combo)
        form.addRow("Id field", self.region_id_combo)
        layout.addWidget(box)

        # POIs
        box = QGroupBox("Points of interest", content)
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.poi_combo = _layer_combo(QgsMapLayerProxyModel.Filter.PointLayer, True, box)
        self.poi_category_combo = _field_combo(False, box)
        self.poi_name_combo = _field_combo(True, box)
        self.poi_file = poi_file_widget(box)
        form.addRow("Layer", self.poi_combo)
        form.addRow("Category field", self.poi_category_combo)
        form.addRow("Name field (optional)", self.poi_name_combo)
        form.addRow("Or a file", self.poi_file)  # .osm.pbf or GeoParquet (tooltip)
        layout.addWidget(box)

        # Imagery
        box = QGroupBox("Imagery", content)  # short titles: the dock stays usable at 300 px
        box.setToolTip("Raster layers of the project (a layer that is not a local file is written as a GeoTIFF)")
        box_layout = QVBoxLayout(box)
        self.raster_list = QListWidget(box)
        self.raster_list.setMaximumHeight(90)
        self.raster_hint = QLabel("No raster layer in the project.", box)
        self.raster_kinds = RasterKinds(self.raster_list, box)
        box_layout.addWidget(self.raster_list)
        kind_row = QFormLayout()  # the dropdown says what it sets: the kind of the highlighted raster
        kind_label = QLabel("Kind of the highlighted raster", box)
        kind_label.setWordWrap(True)
        kind_label.setBuddy(self.raster_kinds.combo)
        kind_row.addRow(kind_label, self.raster_kinds.combo)
        kind_row.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        box_layout.addLayout(kind_row)
        box_layout.addWidget(self.raster_hint)
        layout.addWidget(box)

        # OD flows
        self.od_box = QgsCollapsibleGroupBox("OD flows (optional)", content)
        self.od_box.setToolTip("Origin-destination flows between regions: a CSV table of trips")
        self.od_box.setSaveCollapsedState(False)
        form = QFormLayout(self.od_box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.od_file = QgsFileWidget(self.od_box)
        self.od_file.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.od_file.setFilter("CSV files (*.csv *.txt);;All files (*)")
        self.od_origin = QLineEdit("origin", self.od_box)
        self.od_destination = QLineEdit("destination", self.od_box)
        self.od_count = QLineEdit("count", self.od_box)
        form.addRow("CSV table", self.od_file)
        form.addRow("Origin column", self.od_origin)
        form.addRow("Destination column", self.od_destination)
        form.addRow("Count column", self.od_count)
        self.od_box.setCollapsed(True)
        layout.addWidget(self.od_box)

        # Land use
        self.landuse_box = QgsCollapsibleGroupBox("Land use (optional)", content)
        self.landuse_box.setSaveCollapsedState(False)
        form = QFormLayout(self.landuse_box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.landuse_combo = _layer_combo(QgsMapLayerProxyModel.Filter.PolygonLayer, True, self.landuse_box)
        self.landuse_class_combo = _field_combo(False, self.landuse_box)
        form.addRow("Layer", self.landuse_combo)
        form.addRow("Class field", self.landuse_class_combo)
        self.landuse_box.setCollapsed(True)
        layout.addWidget(self.landuse_box)

        # Labels
        box = QGroupBox("Labels to predict", content)
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.label_list = QListWidget(box)
        self.label_list.setMaximumHeight(110)
        self.label_list.setToolTip(
            "Numeric fields of the region layer to predict from the embeddings (identifiers and area or bounds "
            "fields are not offered). Double-click a name to rename the label."
        )
        self.label_points_combo = _layer_combo(QgsMapLayerProxyModel.Filter.PointLayer, True, box)
        self.label_points_combo.setToolTip("Points counted per region, e.g. crime incidents")
        self.label_points_name = QLineEdit(box)
        self.label_points_name.setToolTip("Name of the counted points' label in the outputs (letters, digits, _)")
        self.target_combo = _narrow(QComboBox(box))
        for target in TARGETS:
            self.target_combo.addItem("density (per km\u00b2)" if target == "density" else target, target)
        self.target_combo.setCurrentIndex(self.target_combo.findData(LabelChoice().target))
        self.log1p_check = QCheckBox("log1p transform", box)
        self.log1p_check.setChecked(True)
        form.addRow("Region fields", self.label_list)
        form.addRow("Points counted", self.label_points_combo)
        form.addRow("Points label name", self.label_points_name)
        form.addRow("Target", self.target_combo)
        form.addRow(self.log1p_check)
        layout.addWidget(box)

        # Methods
        box = QGroupBox("Methods", content)
        self.methods_layout = QVBoxLayout(box)
        self.backend_label = QLabel("", box)
        self.backend_label.setWordWrap(True)
        self.methods_layout.addWidget(self.backend_label)
        self.method_sections: dict[str, MethodSection] = {}
        layout.addWidget(box)

        # Clustering and evaluation
        box = QGroupBox("Clustering and evaluation", content)
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.k_spin = QSpinBox(box)
        self.k_spin.setRange(0, 50)
        self.k_spin.setSpecialValueText("auto")
        self.k_spin.setToolTip("Number of clusters; auto picks the best silhouette")
        form.addRow("Clusters (k)", self.k_spin)
        self.eval_box = QgsCollapsibleGroupBox("Advanced", box)
        self.eval_box.setSaveCollapsedState(False)
        eval_form = QFormLayout(self.eval_box)
        eval_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.folds_spin = QSpinBox(self.eval_box)
        self.folds_spin.setRange(2, 20)
        self.folds_spin.setValue(5)
        self.repeats_spin = QSpinBox(self.eval_box)
        self.repeats_spin.setRange(1, 20)
        self.repeats_spin.setValue(3)
        self.ridge_check = QCheckBox("ridge", self.eval_box)
        self.ridge_check.setChecked(True)
        self.gbm_check = QCheckBox("gradient boosting", self.eval_box)
        self.spatial_check = QCheckBox("spatial folds too", self.eval_box)
        self.spatial_check.setToolTip("Also score with spatially blocked folds: whole neighbourhoods are held out, "
                                      "as when predicting an area with no labels")
        self.spatial_check.setChecked(True)
        models = QWidget(self.eval_box)
        models_layout = QVBoxLayout(models)  # stacked: the dock stays usable at 300 px
        models_layout.setContentsMargins(0, 0, 0, 0)
        models_layout.addWidget(self.ridge_check)
        models_layout.addWidget(self.gbm_check)
        eval_form.addRow("Folds", self.folds_spin)
        eval_form.addRow("Repeats", self.repeats_spin)
        eval_form.addRow("Models", models)
        eval_form.addRow(self.spatial_check)
        self.context_combo = _narrow(QComboBox(self.eval_box))
        self.context_combo.setToolTip(CONTEXT_HELP)
        self.ensemble_spin = QSpinBox(self.eval_box)
        self.ensemble_spin.setRange(1, 1)  # up to the backend's limit once it has answered
        for text, field in (("Spatial context", self.context_combo), ("Ensemble (training seeds)", self.ensemble_spin)):
            label = QLabel(text, self.eval_box)
            label.setWordWrap(True)  # wraps instead of widening a narrow dock
            label.setBuddy(field)
            eval_form.addRow(label, field)
        self.eval_box.setCollapsed(True)
        form.addRow(self.eval_box)
        layout.addWidget(box)

        # Run settings
        box = QGroupBox("Run", content)
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.device_combo = _narrow(QComboBox(box))
        for device in DEVICES:
            self.device_combo.addItem(device, device)
        self.seed_spin = QSpinBox(box)
        self.seed_spin.setRange(0, 2_147_483_647)
        self.output_file = QgsFileWidget(box)
        self.output_file.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_file.setDialogTitle("Folder for the results")
        self.overwrite_check = QCheckBox("replace existing results", box)
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Output folder", self.output_file)
        form.addRow(self.overwrite_check)
        layout.addWidget(box)
        layout.addStretch(1)

        # Below the scroll area: problems, progress, buttons
        self.validation_label = QLabel("", outer)
        self.validation_label.setWordWrap(True)
        self.validation_label.setStyleSheet("QLabel { color: #c62828; }")
        self.validation_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer_layout.addWidget(self.validation_label)
        self.stage_label = QLabel("", outer)
        self.stage_label.setWordWrap(True)
        outer_layout.addWidget(self.stage_label)
        self.progress_bar = QProgressBar(outer)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        outer_layout.addWidget(self.progress_bar)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", outer)
        self.run_button.setDefault(True)
        self.run_button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.cancel_button = QPushButton("Cancel", outer)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        outer_layout.addLayout(buttons)
        self.similar_button = QPushButton("Find similar regions", outer)  # plugin/similar.py
        self.similar_button.setToolTip("Select regions of a run's embeddings (on the map or in the explorer), then "
                                       "map how similar every region is to them")
        self.similar_button.clicked.connect(lambda _checked=False: self.plugin.find_similar())
        outer_layout.addWidget(self.similar_button)
        self.setWidget(outer)
        guard_wheel(content)  # the wheel scrolls the dock, not the dropdown under the pointer

        # Signals. Anything may re-validate (``_schedule``); only what a person does counts as an edit
        # (``_edited``) and is stored in the project: ``activated``, ``clicked``, ``textEdited`` fire for
        # people only, while layer and field combos also change when the project loads or drops layers.
        self.region_combo.layerChanged.connect(self._on_region_layer_changed)
        self.poi_combo.layerChanged.connect(self._on_poi_layer_changed)
        self.landuse_combo.layerChanged.connect(self._on_landuse_layer_changed)
        self.label_points_combo.layerChanged.connect(self._on_points_label_changed)
        self.label_points_name.textChanged.connect(self._schedule)
        self.label_points_name.textEdited.connect(self._edited)
        for combo in (self.region_id_combo, self.poi_category_combo, self.poi_name_combo, self.landuse_class_combo):
            combo.fieldChanged.connect(self._schedule)
        self.region_id_combo.fieldChanged.connect(self._refresh_labels)  # the id is no label
        for combo in (
            self.region_combo, self.poi_combo, self.landuse_combo, self.label_points_combo, self.region_id_combo,
            self.poi_category_combo, self.poi_name_combo, self.landuse_class_combo, self.target_combo,
            self.device_combo,
        ):  # fmt: skip
            combo.activated.connect(self._edited)
        for combo in (self.target_combo, self.device_combo):
            combo.currentIndexChanged.connect(self._schedule)
        for widget in (self.raster_list, self.label_list):  # filled with signals blocked
            widget.itemChanged.connect(self._edited)
        for file_widget in (self.od_file, self.output_file, self.poi_file):
            file_widget.fileChanged.connect(self._edited)
        for edit in (self.od_origin, self.od_destination, self.od_count):
            edit.textChanged.connect(self._schedule)
            edit.textEdited.connect(self._edited)
        for spin in (self.k_spin, self.folds_spin, self.repeats_spin, self.seed_spin):
            spin.valueChanged.connect(self._edited)
        self.context_combo.activated.connect(self._advanced_edited)
        self.ensemble_spin.valueChanged.connect(self._advanced_edited)
        for check in (self.log1p_check, self.ridge_check, self.gbm_check, self.spatial_check, self.overwrite_check):
            check.toggled.connect(self._edited)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    def _rebuild_methods(self) -> None:
        """One section per method of the registry; keeps what was ticked and set."""
        previous = {name: (s.is_checked(), s.choice()) for name, s in self.method_sections.items()}
        for section in self.method_sections.values():
            self.methods_layout.removeWidget(section)
            section.deleteLater()
        self.method_sections = {}
        for name in METHODS.names():
            info = METHODS.get(name)
            if info is None:
                continue
            section = MethodSection(info, self.methods_layout.parentWidget())
            if name in previous:
                checked, choice = previous[name]
                section.set_checked(checked)
                section.set_choice(choice)
            else:
                section.set_checked(name == common.DEFAULT_METHOD and not previous)
            section.changed.connect(self._edited)
            section.changed.connect(self._update_method_states)
            if info.combines_methods:
                section.checkbox.toggled.connect(self._combining_toggled)
            self.methods_layout.addWidget(section)
            self.method_sections[name] = section
        self._others_seen = sum(1 for s in self.method_sections.values()
                                if s.is_checked() and not s.info.combines_methods)  # rebuilt as it was
        if self._pending_methods is not None:
            self._apply_methods(self._pending_methods)
        self._refresh_advanced()
        self._update_method_states()

    def _refresh_advanced(self) -> None:
        """Offer the backend's spatial-context presets and ensemble limit (keeps or applies the choice)."""
        context, ensemble = self._pending_advanced or self._advanced_shown()
        restoring, self._restoring = self._restoring, True
        try:
            self.context_combo.clear()
            self.context_combo.addItem("None", "")
            self.context_combo.setItemData(0, "No neighbour means", Qt.ItemDataRole.ToolTipRole)
            for name, spec in context_presets().items():
                self.context_combo.addItem(name, name)
                self.context_combo.setItemData(
                    self.context_combo.count() - 1, describe_context(spec), Qt.ItemDataRole.ToolTipRole
                )
            self.ensemble_spin.setMaximum(ensemble_limit())
            self._show_advanced(context, ensemble)
        finally:
            self._restoring = restoring

    def _advanced_shown(self) -> tuple[str, int]:
        return str(self.context_combo.currentData() or ""), int(self.ensemble_spin.value())

    def _show_advanced(self, context: str, ensemble: int) -> None:
        """Show a context and an ensemble size; what the backend has not offered yet stays pending until it has."""
        index = self.context_combo.findData(context)
        fits = index >= 0 and 1 <= ensemble <= self.ensemble_spin.maximum()
        self._pending_advanced = None if fits else (context, ensemble)
        self.context_combo.setCurrentIndex(max(index, 0))
        self.ensemble_spin.setValue(ensemble)

    def _advanced_edited(self, *_args: object) -> None:
        if not self._restoring:
            self._pending_advanced = None  # a person chose: what they see is the choice
        self._edited()

    def _combining_toggled(self, checked: bool) -> None:
        """A planner who unticks the combining method keeps it off; ticking it again lifts that."""
        if not (self._applying_methods or self._restoring or self._auto_combining):
            others = [s for s in self.method_sections.values() if s.is_checked() and not s.info.combines_methods]
            if others:  # (it is unticked by itself when no other method is left)
                self._combining_declined = not checked

    def _update_method_states(self) -> None:
        """A method that combines the others (fusion) is offered only with another method; the ensemble
        applies only when a learned method is chosen."""
        if self._applying_methods:
            return
        chosen = [s for s in self.method_sections.values() if s.is_checked()]
        others = [s for s in chosen if not s.info.combines_methods]
        offer = len(others) >= 2 > self._others_seen and not self._combining_declined and not self._restoring
        self._others_seen = len(others)
        for section in self.method_sections.values():
            if not section.info.combines_methods:
                continue
            section.checkbox.setEnabled(bool(others))
            if offer and not section.is_checked():
                self._auto_combining = True
                try:
                    section.set_checked(True)  # several methods: their combination is the primary layer set
                finally:
                    self._auto_combining = False
                chosen.append(section)
            if others:
                section.checkbox.setToolTip(
                    f"{section.info.title} \u2014 combines the other chosen methods and the raw views; "
                    "its layers become the primary results"
                )
            else:
                section.set_checked(False)
                section.checkbox.setToolTip(
                    f"{section.info.name} combines the run's other methods: choose at least one other method first"
                )
        learned = [s.name for s in chosen if s.info.ensemble]
        self.ensemble_spin.setEnabled(bool(learned))
        if learned:
            self.ensemble_spin.setToolTip(f"{ENSEMBLE_HELP} Applies to: {', '.join(learned)}.")
        else:
            self.ensemble_spin.setToolTip(
                "Applies to learned methods only; the chosen methods train no seeds "
                f"({', '.join(s.name for s in chosen) or 'none chosen'})."
            )

    # ================================================================== backend

    def check_backend(self, fetch_info: bool = True) -> None:
        """Find the backend; ask it for its methods in the background (once per session)."""
        self.backend_python = find_backend_python()
        self.backend_label.setVisible(True)
        can_set_up = callable(getattr(self.plugin, "ensure_backend", None))
        self.banner.setVisible(self.backend_python is None)
        self.setup_button.setVisible(self.backend_python is None and can_set_up)
        if self.backend_python is None:
            self.backend_label.setText("")  # (the banner says it)
            self.backend_label.setVisible(False)
            return
        self.backend_label.setStyleSheet("")
        if METHODS.from_backend or not fetch_info:
            self._show_backend_state()
            return
        self.backend_label.setText("Asking the backend for its methods\u2026")
        task = BackendInfoTask(self.backend_python, on_finished=self._info_done)
        self.info_task = task
        QgsApplication.taskManager().addTask(task)

    def set_up_backend(self) -> None:
        """Open the plugin's backend setup (``plugin.ensure_backend``); re-check once it is ready."""
        ensure = getattr(self.plugin, "ensure_backend", None)
        if callable(ensure) and ensure(lambda _python: self._backend_ready()):
            self._backend_ready()  # it was there already (e.g. set in the options meanwhile)

    def _backend_ready(self) -> None:
        if sip.isdeleted(self):
            return
        self.check_backend()
        self.refresh_validation()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Look for the backend again when the dock is shown (it may have been set up meanwhile)."""
        super().showEvent(event)
        if self.backend_python is None and self.info_task is None:
            self.check_backend()
            self._schedule()

    def _info_done(self, info: dict[str, Any] | None, error: str) -> None:
        self.info_task = None
        if sip.isdeleted(self):  # the dock was deleted while the backend answered
            return
        self.backend_error = "" if info is not None else error
        self._rebuild_methods()
        self._show_backend_state()
        self.refresh_validation()

    def _show_backend_state(self) -> None:
        if self.backend_error:
            first = self.backend_error.strip().splitlines()[0] if self.backend_error.strip() else ""
            self.backend_label.setText(f"The backend did not answer ({first}); only the baseline is offered.")
            self.backend_label.setStyleSheet("QLabel { color: #c62828; }")
            return
        info = METHODS.info or {}
        if info:
            cuda = "CUDA GPU available" if info.get("cuda") else "no CUDA GPU: runs on the CPU"
            self.backend_label.setText(f"Backend {info.get('version', '')}, torch {info.get('torch', '?')}, {cuda}.")
        else:
            self.backend_label.setText("")
        self.backend_label.setVisible(bool(self.backend_label.text()))

    # ================================================================== choices

    def choices(self) -> RunChoices:
        """What the dock holds now."""
        region = self.region_combo.currentLayer()
        poi = self.poi_combo.currentLayer()
        landuse = self.landuse_combo.currentLayer()
        points = self.label_points_combo.currentLayer()
        target = str(self.target_combo.currentData() or "density")
        log1p = self.log1p_check.isChecked()
        labels = [
            LabelChoice(field=item.data(Qt.ItemDataRole.UserRole), target=target, log1p=log1p, name=_renamed(item))
            for item in self._items(self.label_list)
            if item.checkState() == Qt.CheckState.Checked
        ]
        if points is not None:
            name = self.label_points_name.text().strip()
            labels.append(LabelChoice(points_layer_id=points.id(), target=target, log1p=log1p, name=name))
        models = [m for m, check in (("ridge", self.ridge_check), ("gbm", self.gbm_check)) if check.isChecked()]
        context, ensemble = self._pending_advanced or self._advanced_shown()
        return RunChoices(
            region_layer_id=region.id() if region is not None else "",
            region_id_field=self.region_id_combo.currentField() if region is not None else "",
            poi_layer_id=poi.id() if poi is not None else "",
            poi_category_field=self.poi_category_combo.currentField() if poi is not None else "",
            poi_name_field=self.poi_name_combo.currentField() if poi is not None else "",
            poi_file=self.poi_file.filePath().strip(),
            raster_layer_ids=self._checked_data(self.raster_list),
            embedding_raster_ids=[
                item.data(Qt.ItemDataRole.UserRole)
                for item in self._items(self.raster_list)
                if item.checkState() == Qt.CheckState.Checked and RasterKinds.kind(item) == "embedding"
            ],
            od_path=self.od_file.filePath().strip(),
            od_origin_field=self.od_origin.text().strip(),
            od_destination_field=self.od_destination.text().strip(),
            od_count_field=self.od_count.text().strip(),
            landuse_layer_id=landuse.id() if landuse is not None else "",
            landuse_class_field=self.landuse_class_combo.currentField() if landuse is not None else "",
            labels=labels,
            methods=[s.choice() for s in self.method_sections.values() if s.is_checked()],
            cluster_k=int(self.k_spin.value()),
            prediction_models=models,
            folds=int(self.folds_spin.value()),
            repeats=int(self.repeats_spin.value()),
            spatial=self.spatial_check.isChecked(),
            device=str(self.device_combo.currentData() or "auto"),
            seed=int(self.seed_spin.value()),
            context=context,
            ensemble=ensemble,
            output_dir=self.output_file.filePath().strip(),
            overwrite=self.overwrite_check.isChecked(),
        )

    def set_choices(self, choices: RunChoices) -> None:
        """Show stored choices (layers that are gone are left unchosen)."""
        self._restoring = True
        try:
            project = self.project
            region = project.mapLayer(choices.region_layer_id) if choices.region_layer_id else None
            if isinstance(region, QgsVectorLayer):
                self.region_combo.setLayer(region)
            self._on_region_layer_changed()
            if choices.region_id_field:
                self.region_id_combo.setField(choices.region_id_field)
            poi = project.mapLayer(choices.poi_layer_id) if choices.poi_layer_id else None
            self.poi_combo.setLayer(poi if isinstance(poi, QgsVectorLayer) else None)
            self._on_poi_layer_changed()
            if poi is not None:
                self.poi_category_combo.setField(choices.poi_category_field)
                self.poi_name_combo.setField(choices.poi_name_field)
            self.poi_file.setFilePath(choices.poi_file)
            self._refresh_rasters(set(choices.raster_layer_ids), set(choices.embedding_raster_ids))
            self.od_file.setFilePath(choices.od_path)
            self.od_origin.setText(choices.od_origin_field)
            self.od_destination.setText(choices.od_destination_field)
            self.od_count.setText(choices.od_count_field)
            self.od_box.setCollapsed(not choices.od_path)
            landuse = project.mapLayer(choices.landuse_layer_id) if choices.landuse_layer_id else None
            self.landuse_combo.setLayer(landuse if isinstance(landuse, QgsVectorLayer) else None)
            self._on_landuse_layer_changed()
            if landuse is not None:
                self.landuse_class_combo.setField(choices.landuse_class_field)
            self.landuse_box.setCollapsed(landuse is None)
            fields = {lab.field: lab.name for lab in choices.labels if lab.field}
            for item in self._items(self.label_list):
                field_name = item.data(Qt.ItemDataRole.UserRole)
                item.setCheckState(Qt.CheckState.Checked if field_name in fields else Qt.CheckState.Unchecked)
                item.setText(fields.get(field_name) or field_name)
            points_label = next((lab for lab in choices.labels if lab.points_layer_id), None)
            points = project.mapLayer(points_label.points_layer_id) if points_label is not None else None
            self.label_points_combo.setLayer(points if isinstance(points, QgsVectorLayer) else None)
            self.label_points_name.setText(points_label.name if points_label is not None else "")
            if choices.labels:
                index = self.target_combo.findData(choices.labels[0].target)
                if index >= 0:
                    self.target_combo.setCurrentIndex(index)
                self.log1p_check.setChecked(choices.labels[0].log1p)
            self._apply_methods({m.name: m for m in choices.methods})
            self.k_spin.setValue(max(0, choices.cluster_k))
            self.folds_spin.setValue(choices.folds)
            self.repeats_spin.setValue(choices.repeats)
            self.ridge_check.setChecked("ridge" in choices.prediction_models)
            self.gbm_check.setChecked("gbm" in choices.prediction_models)
            self.spatial_check.setChecked(choices.spatial)
            index = self.device_combo.findData(choices.device)
            self.device_combo.setCurrentIndex(max(index, 0))
            self.seed_spin.setValue(choices.seed)
            self._show_advanced(choices.context, choices.ensemble)
            self.output_file.setFilePath(choices.output_dir)
            self.overwrite_check.setChecked(choices.overwrite)
        finally:
            self._restoring = False
        self._schedule()

    def _apply_methods(self, methods: dict[str, Any]) -> None:
        """Tick exactly ``methods``; those the backend has not listed yet are ticked once it has.

        The whole choice stays pending (not only the missing methods), so that when the sections are
        rebuilt the methods offered from the start (the baseline) keep their tick.
        """
        missing = [name for name in methods if name not in self.method_sections]
        self._pending_methods = dict(methods) if missing else None
        self._applying_methods = True
        try:
            for name, section in self.method_sections.items():
                section.set_checked(name in methods)
                if name in methods:
                    section.set_choice(methods[name])
        finally:
            self._applying_methods = False
        # a stored choice is shown as it was saved: no combining method is ticked on top of it
        self._others_seen = sum(1 for s in self.method_sections.values()
                                if s.is_checked() and not s.info.combines_methods)
        self._update_method_states()

    def save(self) -> None:
        """Store the choices in the project (a suggested output folder is not a choice: stored empty)."""
        choices = self.choices()
        if choices.output_dir and choices.output_dir == self._suggested_output:
            choices.output_dir = ""
        save_choices(choices, self.project)
        self._user_changed = False

    def restore(self) -> bool:
        """Show the choices stored in the project; returns whether there were any."""
        choices = load_choices(self.project)
        if choices is None:
            return False
        self.set_choices(choices)
        self._user_changed = False
        return True

    # ================================================================== validation

    def refresh_validation(self) -> list[str]:
        """Validate now; show the problems; enable Run only when there are none. Returns them."""
        self._timer.stop()
        choices = self.choices()
        problems = []
        if self.backend_python is None:
            problems.append(BACKEND_MISSING_PROBLEM)
        problems += validate(choices, self.project, METHODS.info)
        self.problems = problems
        self.validation_label.setText("\n".join(f"\u2022 {p}" for p in problems))
        self.validation_label.setVisible(bool(problems))
        self.run_button.setEnabled(not problems and self.task is None)
        if self._user_changed and not self._restoring:
            self.save()
        return problems

    def _schedule(self, *_args: object) -> None:
        """Re-validate soon (several changes in a row cost one validation)."""
        self._timer.start()

    def _edited(self, *_args: object) -> None:
        """Something the user changed: re-validate, then store the choices in the project."""
        if not self._restoring:
            self._user_changed = True
        self._schedule()

    # ================================================================== layer-dependent widgets

    def _on_region_layer_changed(self, *_args: object) -> None:
        offer_id_field(self.region_combo.currentLayer(), self.region_id_combo)
        self._refresh_labels()

    def _refresh_labels(self, *_args: object) -> None:
        """List the region layer's numeric fields as labels, except the id field (keeps the ticks)."""
        layer = self.region_combo.currentLayer()
        vector = layer if isinstance(layer, QgsVectorLayer) else None
        checked = set(self._checked_data(self.label_list))
        self.label_list.blockSignals(True)
        self.label_list.clear()
        if vector is not None:
            for name in label_fields(vector, self.region_id_combo.currentField()):
                item = QListWidgetItem(name, self.label_list)
                item.setData(Qt.ItemDataRole.UserRole, name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEditable)
                item.setCheckState(Qt.CheckState.Checked if name in checked else Qt.CheckState.Unchecked)
        self.label_list.blockSignals(False)
        self._schedule()

    def _on_points_label_changed(self, *_args: object) -> None:
        """Show the default name of the counted points' label (short and readable, from the layer title)."""
        layer = self.label_points_combo.currentLayer()
        self.label_points_name.setPlaceholderText(label_name(layer.name()) if layer is not None else "")
        self._schedule()

    def _on_poi_layer_changed(self, *_args: object) -> None:
        offer_poi_fields(self.poi_combo.currentLayer(), self.poi_category_combo, self.poi_name_combo)
        self._schedule()

    def _on_landuse_layer_changed(self, *_args: object) -> None:
        layer = self.landuse_combo.currentLayer()
        vector = layer if isinstance(layer, QgsVectorLayer) else None
        self.landuse_class_combo.setLayer(vector)
        if vector is not None:
            self.landuse_class_combo.setField(_guess_field(vector, r"^class$", r"class", r"land_?use", r"type"))
        self._schedule()

    def _refresh_rasters(self, checked: set[str] | None = None, embeddings: set[str] | None = None) -> None:
        """List the project's raster layers (keeps ticks and kinds, or ticks ``checked`` and makes ``embeddings``
        satellite-embedding rasters; a new raster's kind is suggested from its band count)."""
        kept = self.raster_kinds.kinds() if embeddings is None else {}
        if checked is None:
            checked = set(self._checked_data(self.raster_list))
        self.raster_list.blockSignals(True)
        self.raster_list.clear()
        rasters = [layer for layer in self.project.mapLayers().values() if isinstance(layer, QgsRasterLayer)]
        for layer in sorted(rasters, key=lambda lyr: lyr.name().lower()):
            item = QListWidgetItem(layer.name(), self.raster_list)
            item.setData(Qt.ItemDataRole.UserRole, layer.id())
            RasterKinds.set_kind(item, RasterKinds.initial_kind(layer, embeddings, kept), layer.name())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if layer.id() in checked else Qt.CheckState.Unchecked)
            item.setToolTip(layer.source())
        self.raster_list.blockSignals(False)
        self.raster_hint.setVisible(not rasters)
        self.raster_list.setVisible(bool(rasters))
        self._schedule()

    @staticmethod
    def _items(widget: QListWidget) -> list[QListWidgetItem]:
        return [widget.item(i) for i in range(widget.count())]

    @classmethod
    def _checked_data(cls, widget: QListWidget) -> list[Any]:
        """The data (layer id, field name) of the ticked items, in list order."""
        return [item.data(Qt.ItemDataRole.UserRole) for item in cls._items(widget)
                if item.checkState() == Qt.CheckState.Checked]  # fmt: skip

    # ================================================================== project signals

    def _listen_to_project(self) -> None:
        project = self.project
        for signal, slot in (
            (project.layersAdded, self._on_layers_changed),
            (project.layersRemoved, self._on_layers_changed),
            (project.readProject, self._on_project_read),
            (project.cleared, self._on_project_cleared),
            (project.writeProject, self._on_project_write),
        ):
            signal.connect(slot)
            self._connections.append((signal, slot))

    def disconnect_project(self) -> None:
        """Stop following the project (call before deleting the dock)."""
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        self._connections.clear()
        if self.info_task is not None:
            self.info_task.on_finished = None
            self.info_task.cancel()
            self.info_task = None

    def _on_layers_changed(self, *_args: object) -> None:
        self._except_result_layers()
        self._refresh_rasters()

    def _except_result_layers(self) -> None:
        """Keep a run's own result layers (embeddings, clusters, ...) out of the region and land-use choices:
        in a project holding only results, the dock must not guess ``Clusters`` as the regions."""
        results = [layer for layer in self.project.mapLayers().values() if is_result_layer(layer)]
        for combo in (self.region_combo, self.landuse_combo):
            combo.setExceptedLayerList(results)

    def _on_project_read(self, *_args: object) -> None:
        self._refresh_rasters(set())
        restored = self.restore()
        self._move_past_finished_run()
        self._suggest_output_folder()
        if not restored:
            self._schedule()

    def _on_project_write(self, *_args: object) -> None:
        if not self._restoring:
            self.save()  # entries written now still go into the file being saved

    def _on_project_cleared(self) -> None:
        self._refresh_rasters(set())
        self.od_file.setFilePath("")
        self.output_file.setFilePath("")
        self.progress_bar.setValue(0)  # the last run belonged to the project that is gone
        self.stage_label.setText("")
        if self.metrics_dialog is not None:
            self.metrics_dialog.close()
            self.metrics_dialog = None
        self._suggest_output_folder()
        self._user_changed = False

    def _move_past_finished_run(self) -> None:
        """A person's own output folder that now holds a run moves on to the next free name beside it
        (``results`` -> ``results_2``), still their choice: the folder they picked is never forgotten."""
        text = self.output_file.filePath().strip()
        if not text or text == self._suggested_output or self.overwrite_check.isChecked():
            return
        folder = Path(text).expanduser()
        if not output_folder_is_free(folder):
            self._choose_output_folder(next_free_folder(folder))

    def _choose_output_folder(self, folder: Path) -> None:
        """Set ``folder`` as the person's choice (stored with the project, unlike a suggestion)."""
        self._suggested_output = ""
        self.output_file.setFilePath(str(folder))
        self._schedule()

    def _suggest_output_folder(self, folder: Path | None = None) -> None:
        """Show ``folder`` (default: a fresh one, if the field is empty) as the output folder.

        A suggestion is not stored in the project (a reopened project gets a fresh one) until a person
        edits the field.
        """
        if folder is None:
            if self.output_file.filePath().strip():
                return
            folder = suggested_output_folder(self.project)
        restoring, self._restoring = self._restoring, True
        try:
            self._suggested_output = str(folder)
            self.output_file.setFilePath(str(folder))
        finally:
            self._restoring = restoring
        self._schedule()

    # ================================================================== sample data

    def use_sample(self, layers: dict[str, Any]) -> None:
        """Choose the sample city's layers (:func:`plugin.sample_data.load_sample_data`): regions, POIs, the
        image, labels and a fresh output folder, so that Run works straight away."""
        region = layers.get(str(SAMPLE_CHOICES["regions"]))
        if region is not None:
            self.region_combo.setLayer(region)
            self._on_region_layer_changed()
            self.region_id_combo.setField(str(SAMPLE_CHOICES["region_id_field"]))
        pois = layers.get(str(SAMPLE_CHOICES["pois"]))
        if pois is not None:
            self.poi_combo.setLayer(pois)
            self._on_poi_layer_changed()
            self.poi_category_combo.setField(str(SAMPLE_CHOICES["poi_category_field"]))
            self.poi_name_combo.setField(str(SAMPLE_CHOICES["poi_name_field"]))
        rasters = {layers[key].id() for key in SAMPLE_CHOICES["rasters"] if key in layers}
        for item in self._items(self.raster_list):
            if item.data(Qt.ItemDataRole.UserRole) in rasters:
                item.setCheckState(Qt.CheckState.Checked)
        fields = set(SAMPLE_CHOICES["label_fields"])
        for item in self._items(self.label_list):
            checked = item.data(Qt.ItemDataRole.UserRole) in fields
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.label_points_combo.setLayer(layers.get(str(SAMPLE_CHOICES["label_points"])))
        if not self.output_file.filePath().strip() or not output_folder_is_free(Path(self.output_file.filePath())):
            self._suggest_output_folder(suggested_output_folder(self.project, "sf_sample"))
        self._user_changed = True
        self.refresh_validation()

    # ================================================================== run

    def run(self) -> RunTask | None:
        """Validate, export the inputs, start the run; returns the task (``None`` if it cannot start)."""
        if self.task is not None:
            return None
        problems = self.refresh_validation()
        if problems or self.backend_python is None:
            self.stage_label.setText("Fix the problems above first.")
            return None
        choices = self.choices()
        self.save()
        self.stage_label.setText("Exporting the inputs\u2026")
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            config = to_run_config(choices, project=self.project)
        except (OSError, ValueError) as exc:
            self.stage_label.setText(f"Cannot export the inputs: {exc}")
            return None
        finally:
            QApplication.restoreOverrideCursor()
        params = RunParameters(self.backend_python, config, Path(config["output_dir"]))
        self._inputs_dir = inputs_dir_for(config["output_dir"])
        self.last_outcome = None
        self.progress_bar.setValue(0)
        self.stage_label.setText("Starting the backend\u2026")
        task = self.plugin.start_run(params, on_done=self._run_done)
        self.task = task
        task.progressChanged.connect(self._on_progress)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        return task

    def cancel(self) -> None:
        """Cancel the running task (the worker stops within seconds)."""
        if self.task is not None:
            self.stage_label.setText("Cancelling\u2026")
            self.cancel_button.setEnabled(False)
            self.task.cancel()

    def _on_progress(self, value: float) -> None:
        task = self.task
        if task is None:
            return
        self.progress_bar.setValue(int(value))
        stage, message = task.status.stage, task.status.message
        self.stage_label.setText(f"{stage}: {message}" if message and stage else stage or message)

    def _run_done(self, outcome: RunOutcome) -> None:
        """Main thread, after the plugin loaded the results and reported in the message bar."""
        if sip.isdeleted(self):  # the plugin was unloaded while the run was cancelled
            return
        task, self.task = self.task, None
        if task is not None:
            try:
                task.progressChanged.disconnect(self._on_progress)
            except (TypeError, RuntimeError):
                pass
        self.last_outcome = outcome
        self.cancel_button.setEnabled(False)
        if isinstance(outcome, RunSucceeded):
            self.progress_bar.setValue(100)
            self.stage_label.setText(f"Finished on {outcome.device} in {outcome.seconds:.1f} s.")
            self.show_metrics(outcome.gpkg)
            used = Path(self.output_file.filePath().strip()).expanduser()
            same = task is not None and used.resolve() == Path(task.params.output_dir).resolve()
            if same and not self.overwrite_check.isChecked():  # the next run gets a fresh folder
                if self.output_file.filePath().strip() == self._suggested_output:
                    self._suggest_output_folder(next_free_folder(used))
                else:  # beside the folder the person chose, and still their choice
                    self._choose_output_folder(next_free_folder(used))
        elif isinstance(outcome, RunCancelled):
            self.progress_bar.setValue(0)
            self.stage_label.setText("Cancelled; nothing was written.")
            if self._inputs_dir is not None:
                remove_exported_inputs(self._inputs_dir)
        elif isinstance(outcome, RunFailed):
            self.progress_bar.setValue(0)
            first = outcome.message.strip().splitlines()[0] if outcome.message.strip() else outcome.kind
            self.stage_label.setText(f"Failed: {first}")
            if outcome.kind == "died" and task is not None:
                remove_stale_staging(task.params.output_dir)
        self.refresh_validation()

    def show_metrics(self, gpkg: str | Path) -> MetricsDialog | None:
        """Open the metrics table of a run (``None`` if the run wrote none)."""
        try:
            dialog = MetricsDialog.from_gpkg(gpkg, self)
        except (OSError, ValueError):
            return None
        if self.metrics_dialog is not None:
            self.metrics_dialog.close()
        self.metrics_dialog = dialog
        dialog.show()
        return dialog


def _renamed(item: QListWidgetItem) -> str:
    """The name a planner gave a field's label in the list (``""``: keep the default derived from the field)."""
    text = item.text().strip()
    return "" if text == item.data(Qt.ItemDataRole.UserRole) else text
