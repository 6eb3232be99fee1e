"""``regionlens:embed``: learn region embeddings, cluster the regions and predict labels (worker ``run``).

The same job as the run dock, with the same defaults (:data:`._base.DEFAULTS`, plugin/parameters.py) and
the methods the backend describes (:data:`plugin.parameters.METHODS`): regions, POIs, imagery, an OD
table, a land-use layer, labels from numeric fields or from points counted per region. The vector
inputs are exported to GeoPackages, rasters and the OD table passed by path, and the run configuration of
backend/config.py built from the parameters. The run writes ``<OUTPUT_DIR>/regionlens.gpkg``
(docs/protocol.md); every method's layers (and one predictions map per label) load styled into one
group named after the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
)

from ..common import common, gpkg_uri
from ..i18n import tr
from ..input_export import remove_stale_staging
from ..parameters import (
    CONTEXT_HELP,
    DEVICES,
    ENSEMBLE_HELP,
    METHODS,
    NO_CONTEXT,
    MethodChoice,
    RunChoices,
    combining_problem,
    context_presets,
    describe_method_params,
    ensemble_limit,
    label_name,
    method_params_problem,
    missing_input,
    run_settings,
)
from ..results import run_group_name
from ..sources import POI_FILE_FILTER, poi_file_config, poi_file_problem, raster_config
from ._base import (
    DEFAULTS,
    PredictionParameters,
    advanced,
    backend_python,
    check_label_fields,
    input_folder,
    integer_parameter,
    run_backend,
)
from ._inputs import export_vector, raster_input
from ._outputs import LayerToLoad

__all__ = ["EmbedAlgorithm"]

#: Layers a run writes per method (``<layer>`` for the first method, ``<layer>_<method>`` for the others).
_METHOD_LAYERS = ((common.LAYER_EMBEDDINGS, "Embeddings"), (common.LAYER_CLUSTERS, "Clusters"),
                  (common.LAYER_PREDICTIONS, "Predictions"))


def _given(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name)
    return value is not None and value != "" and value != []


class EmbedAlgorithm(PredictionParameters):
    """Learn region embeddings from POIs, imagery, mobility and land use; cluster; predict labels out of fold."""

    ALG_ID = "embed"
    DISPLAY_NAME = "Learn region embeddings"
    TAGS = "embedding,region,poi,satellite,mobility,land use,cluster,predict,machine learning,urban"
    HELP = (
        "Learns one vector (an embedding) per region polygon with each chosen method from what the region "
        "holds: points of interest, satellite images, trips between regions (an OD table: origin id, "
        "destination id, count) and land use; clusters the regions; and predicts each label (numeric fields "
        "of the region layer, or points counted per region such as crime incidents) from the embeddings, "
        "always out of fold. The same job as the RegionLens run dock, with the same defaults.\n\n"
        "Training runs in the RegionLens backend (its own Python environment, on the CUDA GPU when there "
        "is one). The output folder receives regionlens.gpkg (per method: embeddings, clusters, "
        "predictions; the table metrics), run.json and figures; the folder must be new or empty unless "
        "'Replace a previous RegionLens run in the output folder' (advanced) is ticked. The layers load into "
        "a group named after the output folder, each named by its method.\n\n"
        "Labels are modelled as density per km\u00b2 with log1p by default; predictions and residuals are "
        "written in the label's own units (<label>_obs, _pred, _res; <label> is the field or layer name in "
        "lower case). K = 0 chooses the number of clusters automatically. Embedding size 0 uses each "
        "method's own default. Method parameters (advanced): a JSON object for the first method, or one "
        'object per method, e.g. {"calliper": {"epochs": 20}}. Advanced, as in the run dock: a spatial '
        "context appends each region's neighbours' mean embedding; an ensemble trains each learned method "
        "with several seeds; fusion (with at least one other method) combines the others and comes first."
    )

    REGIONS = "REGIONS"
    REGION_ID = "REGION_ID"
    POIS = "POIS"
    POI_CATEGORY = "POI_CATEGORY"
    POI_NAME = "POI_NAME"
    POI_FILE = "POI_FILE"
    RASTERS = "RASTERS"
    EMBEDDING_RASTERS = "EMBEDDING_RASTERS"
    OD_TABLE = "OD_TABLE"
    OD_ORIGIN = "OD_ORIGIN"
    OD_DESTINATION = "OD_DESTINATION"
    OD_COUNT = "OD_COUNT"
    LANDUSE = "LANDUSE"
    LANDUSE_CLASS = "LANDUSE_CLASS"
    LABEL_FIELDS = "LABEL_FIELDS"
    LABEL_POINTS = "LABEL_POINTS"
    METHOD = "METHOD"
    DIM = "DIM"
    DEVICE = "DEVICE"
    METHOD_PARAMS = "METHOD_PARAMS"
    CONTEXT = "CONTEXT"
    ENSEMBLE = "ENSEMBLE"
    OVERWRITE = "OVERWRITE"
    OUTPUT_DIR = "OUTPUT_DIR"
    # outputs
    GPKG = "GPKG"
    EMBEDDINGS = "EMBEDDINGS"
    RUN_JSON = "RUN_JSON"
    DEVICE_USED = "DEVICE_USED"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 - QGIS API
        """Declare the parameters (the run dock's defaults) and outputs."""
        polygons = [QgsProcessing.SourceType.TypeVectorPolygon]
        points = [QgsProcessing.SourceType.TypeVectorPoint]
        self.addParameter(QgsProcessingParameterFeatureSource(self.REGIONS, tr("Regions (polygons)"), polygons))
        self.addParameter(
            QgsProcessingParameterField(self.REGION_ID, tr("Region id field (unique)"), None, self.REGIONS)
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(self.POIS, tr("Points of interest"), points, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterField(self.POI_CATEGORY, tr("POI category field"), None, self.POIS, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterField(self.POI_NAME, tr("POI name field"), None, self.POIS, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.POI_FILE, tr("Or POIs from a file: OpenStreetMap extract (.osm.pbf) or GeoParquet (Overture "
                                  "places; the category field above for another point layer)"),
                QgsProcessingParameterFile.Behavior.File, "", None, True, POI_FILE_FILTER,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.RASTERS, tr("Satellite images"), QgsProcessing.SourceType.TypeRaster, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.EMBEDDING_RASTERS, tr("Satellite-embedding rasters (AlphaEarth, TESSERA: every band's mean per "
                                           "region; method 'pretrained')"),
                QgsProcessing.SourceType.TypeRaster, optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFile(
                self.OD_TABLE, tr("Trips between regions (OD table, CSV: origin id, destination id, count)"),
                QgsProcessingParameterFile.Behavior.File, "csv", optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFeatureSource(self.LANDUSE, tr("Land use (polygons)"), polygons, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.LANDUSE_CLASS, tr("Land-use class field"), None, self.LANDUSE, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.LABEL_FIELDS, tr("Labels to predict: numeric fields of the regions"), None, self.REGIONS,
                QgsProcessingParameterField.DataType.Numeric, allowMultiple=True, optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.LABEL_POINTS, tr("Labels to predict: points counted per region (e.g. crime incidents)"),
                QgsProcessing.SourceType.TypeVectorPoint, optional=True,
            )
        )  # fmt: skip
        for parameter in self.label_parameters(tr("Model labels as"), tr("log1p-transform the labels")):
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterEnum(
                self.METHOD, tr("Methods"), METHODS.names(), allowMultiple=True,
                defaultValue=[m.name for m in DEFAULTS.methods], usesStaticStrings=True,
            )
        )  # fmt: skip
        self.addParameter(integer_parameter(self.DIM, tr("Embedding size (0 = each method's default)"), 0, 0, 4096))
        self.addParameter(self.clusters_parameter())
        self.addParameter(self.seed_parameter())
        self.addParameter(
            QgsProcessingParameterEnum(
                self.DEVICE, tr("Device"), list(DEVICES), defaultValue=DEVICES.index(DEFAULTS.device)
            )
        )

        contexts = [NO_CONTEXT, *context_presets()]  # the backend's presets (its cached ``info``)
        advanced_parameters = [
            QgsProcessingParameterString(self.OD_ORIGIN, tr("OD table: origin id column"), DEFAULTS.od_origin_field),
            QgsProcessingParameterString(
                self.OD_DESTINATION, tr("OD table: destination id column"), DEFAULTS.od_destination_field
            ),
            QgsProcessingParameterString(self.OD_COUNT, tr("OD table: trip count column"), DEFAULTS.od_count_field),
            *self.evaluation_parameters(tr("Prediction models")),
            QgsProcessingParameterString(
                self.METHOD_PARAMS, tr('Method parameters (JSON, e.g. {"neighbourhood_m": 1000})'), optional=True
            ),
            QgsProcessingParameterEnum(
                self.CONTEXT, tr("Spatial context (neighbours' mean embeddings appended)"), contexts,
                defaultValue=DEFAULTS.context or NO_CONTEXT, usesStaticStrings=True,
            ),
            integer_parameter(
                self.ENSEMBLE, tr("Ensemble (training seeds, learned methods only)"), DEFAULTS.ensemble, 1,
                max(ensemble_limit(), DEFAULTS.ensemble),
            ),
            QgsProcessingParameterBoolean(
                self.OVERWRITE, tr("Replace a previous RegionLens run in the output folder"), DEFAULTS.overwrite
            ),
        ]  # fmt: skip
        helps = {self.CONTEXT: tr(CONTEXT_HELP), self.ENSEMBLE: tr(ENSEMBLE_HELP),
                 self.METHOD_PARAMS: tr("Each method's parameters, as the backend describes them:") + "\n"
                 + describe_method_params()}  # fmt: skip
        for parameter in advanced_parameters:
            if parameter.name() in helps:
                parameter.setHelp(helps[parameter.name()])
            self.addParameter(advanced(parameter))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_DIR, tr("Output folder")))

        self.addOutput(QgsProcessingOutputFile(self.GPKG, tr("Results GeoPackage")))
        self.addOutput(QgsProcessingOutputVectorLayer(self.EMBEDDINGS, tr("Embeddings (first method)"), polygons[0]))
        self.addOutput(QgsProcessingOutputVectorLayer(self.CLUSTERS, tr("Clusters (first method)"), polygons[0]))
        self.addOutput(
            QgsProcessingOutputVectorLayer(self.PREDICTIONS, tr("Predictions (first method)"), polygons[0])
        )
        self.addOutput(
            QgsProcessingOutputVectorLayer(self.METRICS, tr("Metrics"), QgsProcessing.SourceType.TypeVector)
        )
        self.addOutput(QgsProcessingOutputFile(self.RUN_JSON, tr("Run manifest (run.json)")))
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, tr("Device that ran")))

    def problem(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str | None:
        """Wrong or contradictory choices, explained as the run dock does."""
        regions = self.parameterAsSource(parameters, self.REGIONS, context)
        id_field = self.parameterAsString(parameters, self.REGION_ID, context)
        if regions is not None and id_field and regions.fields().indexFromName(id_field) < 0:
            return tr("The region layer has no field '{}' (fields: {}).").format(
                id_field, ", ".join(regions.fields().names())
            )
        if _given(parameters, self.POIS) and _given(parameters, self.POI_FILE):
            return tr("Choose either a POI layer or a POI file, not both.")
        problem = poi_file_problem(self.parameterAsFile(parameters, self.POI_FILE, context))
        if problem:
            return problem
        if _given(parameters, self.POIS) and not _given(parameters, self.POI_CATEGORY):
            return tr("Choose the POI category field (the field that says what each point is).")
        if _given(parameters, self.LANDUSE) and not _given(parameters, self.LANDUSE_CLASS):
            return tr("Choose the land-use class field.")
        problem = self.clusters_problem(parameters, context)
        if problem:
            return problem
        refused = check_label_fields(
            self.parameterAsVectorLayer(parameters, self.REGIONS, context),
            self.parameterAsFields(parameters, self.LABEL_FIELDS, context),
        )
        if refused:
            return refused
        methods = self.parameterAsEnumStrings(parameters, self.METHOD, context)
        if not methods:
            return tr("Choose at least one method.")
        problem = combining_problem(methods)
        if problem:
            return problem
        have = {"regions"} | {
            source for source, name in (("pois", self.POIS), ("pois", self.POI_FILE), ("imagery", self.RASTERS),
                                        ("embedding", self.EMBEDDING_RASTERS), ("od", self.OD_TABLE),
                                        ("landuse", self.LANDUSE)) if _given(parameters, name)
        }  # fmt: skip
        for method in methods:
            info = METHODS.get(method)
            if info is None:
                return tr("The backend does not offer the method '{}'; it offers {}.").format(
                    method, ", ".join(METHODS.names())
                )
            problem = missing_input(info, have)
            if problem:
                return problem
        try:
            _method_params(self.parameterAsString(parameters, self.METHOD_PARAMS, context), methods)
        except QgsProcessingException as exc:
            return str(exc)
        return None

    def processAlgorithm(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Export the inputs, run the backend, report its outputs."""
        self.layers_to_load: list[LayerToLoad] = []
        python = backend_python()
        problem = self.problem(parameters, context)  # (scripts may skip checkParameterValues)
        if problem:
            raise QgsProcessingException(problem)
        output_dir = self.parameterAsFileOutput(parameters, self.OUTPUT_DIR, context)
        evaluation = self.prediction_settings(parameters, context)
        k = self.parameterAsInt(parameters, self.K, context)
        dim = self.parameterAsInt(parameters, self.DIM, context)
        methods = self.parameterAsEnumStrings(parameters, self.METHOD, context)
        method_params = _method_params(self.parameterAsString(parameters, self.METHOD_PARAMS, context), methods)
        spatial_context = self.parameterAsEnumString(parameters, self.CONTEXT, context)
        settings = RunChoices(  # the dock's settings, turned into the configuration by the dock's own code
            methods=[MethodChoice(m, dim or METHODS.get(m).dim, method_params.get(m, {})) for m in methods],
            ensemble=self.parameterAsInt(parameters, self.ENSEMBLE, context),
            context="" if spatial_context in ("", NO_CONTEXT) else spatial_context,
            cluster_k=k, prediction_models=evaluation["models"], folds=evaluation["folds"],
            repeats=evaluation["repeats"], spatial=evaluation["spatial"], coverage=evaluation["coverage"],
            seed=self.parameterAsInt(parameters, self.SEED, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            overwrite=self.parameterAsBool(parameters, self.OVERWRITE, context),
        )  # fmt: skip
        labelled = bool(self.parameterAsFields(parameters, self.LABEL_FIELDS, context)
                        or self.parameterAsLayerList(parameters, self.LABEL_POINTS, context))  # fmt: skip
        config = run_settings(settings, output_dir, labelled)
        methods = [spec["name"] for spec in config["methods"]]  # a method that combines the others first: the primary
        with input_folder(feedback) as folder:
            regions = self.parameterAsSource(parameters, self.REGIONS, context)
            if regions is None:
                raise QgsProcessingException(self.invalidSourceError(parameters, self.REGIONS))
            id_field = self.parameterAsString(parameters, self.REGION_ID, context)
            keep = [id_field, *self.parameterAsFields(parameters, self.LABEL_FIELDS, context)]
            config["regions"] = {
                "path": str(export_vector(regions, folder / "regions.gpkg", context, feedback, "regions", keep)),
                "id_field": id_field,
            }
            pois = self.parameterAsSource(parameters, self.POIS, context)
            poi_file = self.parameterAsFile(parameters, self.POI_FILE, context)
            if poi_file:
                category = self.parameterAsString(parameters, self.POI_CATEGORY, context)
                name = self.parameterAsString(parameters, self.POI_NAME, context)
                config["pois"] = poi_file_config(poi_file, category, name)
            elif pois is not None:
                name_field = self.parameterAsString(parameters, self.POI_NAME, context)
                category_field = self.parameterAsString(parameters, self.POI_CATEGORY, context)
                keep = [category_field, name_field]
                path = export_vector(pois, folder / "pois.gpkg", context, feedback, "POIs", keep)
                config["pois"] = {"path": str(path), "category_field": category_field, "name_field": name_field or None}
            rasters = self.parameterAsLayerList(parameters, self.RASTERS, context)
            config["rasters"] = [raster_input(layer, folder, context, feedback) for layer in rasters]
            config["rasters"] += [
                raster_config(raster_input(layer, folder, context, feedback), "embedding")
                for layer in self.parameterAsLayerList(parameters, self.EMBEDDING_RASTERS, context)
            ]
            od = self.parameterAsFile(parameters, self.OD_TABLE, context)
            if od:
                config["od"] = {
                    "path": str(Path(od).expanduser().resolve()),
                    "origin_field": self.parameterAsString(parameters, self.OD_ORIGIN, context),
                    "destination_field": self.parameterAsString(parameters, self.OD_DESTINATION, context),
                    "count_field": self.parameterAsString(parameters, self.OD_COUNT, context),
                }
            landuse = self.parameterAsSource(parameters, self.LANDUSE, context)
            if landuse is not None:
                class_field = self.parameterAsString(parameters, self.LANDUSE_CLASS, context)
                path = export_vector(landuse, folder / "landuse.gpkg", context, feedback, "land-use", [class_field])
                config["landuse"] = {"path": str(path), "class_field": class_field}
            labels = self._labels(parameters, context, feedback, folder, evaluation["target"], evaluation["log1p"])
            config["labels"] = labels
            try:
                result = run_backend(python, "run", config, feedback)
            except QgsProcessingException:
                # A worker that was killed cannot remove its unfinished output; the worker has exited here.
                remove_stale_staging(output_dir)
                raise

        gpkg = str(result["gpkg"])  # (the run's report lines already came as log events)
        written = set(result.get("layers") or [])
        seconds = float(result.get("seconds") or 0.0)
        feedback.pushInfo(tr("Finished on {} in {:.1f} s: {}").format(result.get("device", "?"), seconds, gpkg))
        outputs: dict[str, Any] = {
            self.OUTPUT_DIR: result.get("output_dir", output_dir),
            self.GPKG: gpkg,
            self.RUN_JSON: result.get("run_json"),
            self.DEVICE_USED: result.get("device"),
        }
        layer_outputs = (self.EMBEDDINGS, self.CLUSTERS, self.PREDICTIONS)
        for output, (layer, _title) in zip(layer_outputs, _METHOD_LAYERS, strict=True):
            outputs[output] = gpkg_uri(gpkg, layer) if layer in written else None
        metrics = common.TABLE_METRICS
        outputs[self.METRICS] = gpkg_uri(gpkg, metrics) if metrics in written else None
        self.layers_to_load = _layers_to_load(gpkg, written, methods, [lab["name"] for lab in labels], layer_outputs)
        return outputs

    def _labels(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                folder: Path, target: str, log1p: bool) -> list[dict[str, Any]]:  # fmt: skip
        """``[[labels]]``: numeric fields of the regions, then point layers counted per region; unique names."""
        labels: list[dict[str, Any]] = []
        names: list[str] = []
        for field in self.parameterAsFields(parameters, self.LABEL_FIELDS, context):
            names.append(label_name(field, names))
            labels.append({"name": names[-1], "field": field, "target": target, "log1p": log1p})
        for layer in self.parameterAsLayerList(parameters, self.LABEL_POINTS, context):
            names.append(label_name(layer.name(), names))
            source = QgsProcessingFeatureSource(layer, context)
            path = export_vector(source, folder / f"label_{names[-1]}.gpkg", context, feedback, layer.name(), [])
            labels.append({"name": names[-1], "points": str(path), "target": target, "log1p": log1p})
        return labels


def _layers_to_load(gpkg: str, written: set[str], methods: list[str], labels: list[str],
                    outputs: tuple[str, str, str]) -> list[LayerToLoad]:  # fmt: skip
    """Every method's layers, named by method, into the run's group; one predictions map per label."""
    group = run_group_name(gpkg)
    items: list[LayerToLoad] = []
    for method in methods:
        for output, (layer, title) in zip(outputs, _METHOD_LAYERS, strict=True):
            table = common.method_layer(layer, method, methods[0])
            if table not in written:
                continue
            tag = f" ({method})"
            if layer != common.LAYER_PREDICTIONS:
                items.append(LayerToLoad(gpkg_uri(gpkg, table), f"{title}{tag}", output, layer, group=group, tag=tag))
            elif labels:
                name = tr("Predicted {}").format(labels[0]) + tag
                items.append(LayerToLoad(gpkg_uri(gpkg, table), name, output, layer, labels[0], tuple(labels[1:]),
                                         group=group, tag=tag))  # fmt: skip
    return items


def _method_params(text: str, methods: list[str]) -> dict[str, dict[str, Any]]:
    """The METHOD_PARAMS JSON object, per method: one object for the first method, or one per method.

    Raises:
        QgsProcessingException: If it is not a JSON object, names a method that does not run, or gives a
            parameter the method does not describe (unknown, of the wrong type, out of range or choices).
    """
    if not text or not text.strip() or not methods:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise QgsProcessingException(tr("Method parameters are not valid JSON: {}").format(exc)) from None
    if not isinstance(value, dict):
        raise QgsProcessingException(tr('Method parameters must be a JSON object, e.g. {"neighbourhood_m": 1000}.'))
    if value and all(isinstance(v, dict) for v in value.values()):
        unknown = sorted(set(value) - set(methods))
        if unknown:
            raise QgsProcessingException(
                tr("Method parameters for {} but the run's methods are {}.").format(
                    ", ".join(unknown), ", ".join(methods)
                )
            )
        chosen = {str(k): dict(v) for k, v in value.items()}
    else:
        chosen = {methods[0]: value}
    for method, params in chosen.items():
        problem = method_params_problem(method, params)
        if problem:
            raise QgsProcessingException(problem)
    return chosen
