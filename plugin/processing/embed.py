"""``regionlens:embed``: learn region embeddings, cluster the regions and predict labels (worker ``run``).

The region polygons (and POIs) are exported to GeoPackages, the rasters passed by path, and the run
configuration of backend/config.py built from the parameters. The run writes ``<OUTPUT_DIR>/regionlens.gpkg``
(docs/protocol.md); its layers are the outputs and load styled into the project.
"""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..input_export import remove_stale_staging
from ._base import (
    DEVICES,
    METHODS,
    PREDICTION_MODELS,
    TARGETS,
    RegionLensAlgorithm,
    backend_python,
    check_label_fields,
    input_folder,
    label_name,
    run_backend,
    tr,
)
from ._inputs import export_vector, raster_input
from ._outputs import LayerToLoad, gpkg_uri

__all__ = ["EmbedAlgorithm"]


def _given(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name)
    return value is not None and value != "" and value != []


class EmbedAlgorithm(RegionLensAlgorithm):
    """Learn region embeddings from POIs and imagery; cluster; predict labels out of fold."""

    ALG_ID = "embed"
    DISPLAY_NAME = "Learn region embeddings"
    TAGS = "embedding,region,poi,satellite,cluster,predict,machine learning,urban"
    HELP = (
        "Learns one vector (an embedding) per region polygon from the points of interest inside it and, "
        "optionally, satellite images; clusters the regions; and predicts each chosen label (numeric "
        "fields of the region layer) from the embeddings, always out of fold.\n\n"
        "Training runs in the RegionLens backend (its own Python environment, on the CUDA GPU when there "
        "is one). The output folder receives regionlens.gpkg (layers embeddings, clusters, predictions, "
        "table metrics), run.json and figures; the folder must be new or empty unless 'Replace the output "
        "folder' (advanced) is ticked.\n\n"
        "Labels are modelled as density per km\u00b2 with log1p by default; predictions and residuals are "
        "written in the label's own units (<label>_obs, _pred, _res; <label> is the field name in lower "
        "case). K = 0 chooses the number of clusters by silhouette."
    )

    REGIONS = "REGIONS"
    REGION_ID = "REGION_ID"
    POIS = "POIS"
    POI_CATEGORY = "POI_CATEGORY"
    POI_NAME = "POI_NAME"
    RASTERS = "RASTERS"
    LABEL_FIELDS = "LABEL_FIELDS"
    TARGET = "TARGET"
    LOG1P = "LOG1P"
    METHOD = "METHOD"
    DIM = "DIM"
    K = "K"
    SEED = "SEED"
    DEVICE = "DEVICE"
    FOLDS = "FOLDS"
    REPEATS = "REPEATS"
    MODELS = "MODELS"
    SPATIAL = "SPATIAL"
    METHOD_PARAMS = "METHOD_PARAMS"
    OVERWRITE = "OVERWRITE"
    OUTPUT_DIR = "OUTPUT_DIR"
    # outputs
    GPKG = "GPKG"
    EMBEDDINGS = "EMBEDDINGS"
    CLUSTERS = "CLUSTERS"
    PREDICTIONS = "PREDICTIONS"
    METRICS = "METRICS"
    RUN_JSON = "RUN_JSON"
    DEVICE_USED = "DEVICE_USED"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 - QGIS API
        """Declare the parameters and outputs."""
        polygons = [QgsProcessing.SourceType.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterFeatureSource(self.REGIONS, tr("Regions (polygons)"), polygons))
        self.addParameter(
            QgsProcessingParameterField(self.REGION_ID, tr("Region id field (unique)"), None, self.REGIONS)
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.POIS, tr("Points of interest"), [QgsProcessing.SourceType.TypeVectorPoint], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(self.POI_CATEGORY, tr("POI category field"), None, self.POIS, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterField(self.POI_NAME, tr("POI name field"), None, self.POIS, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.RASTERS, tr("Satellite images"), QgsProcessing.SourceType.TypeRaster, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.LABEL_FIELDS,
                tr("Labels to predict (numeric fields of the regions)"),
                None,
                self.REGIONS,
                QgsProcessingParameterField.DataType.Numeric,
                allowMultiple=True,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.TARGET, tr("Model labels as"), [tr("count"), tr("density (per km\u00b2)")], defaultValue=1
            )
        )
        self.addParameter(QgsProcessingParameterBoolean(self.LOG1P, tr("log1p-transform the labels"), True))
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, tr("Method"), list(METHODS), defaultValue=0))
        self.addParameter(_integer(self.DIM, tr("Embedding size"), 32, 2, 1024))
        self.addParameter(_integer(self.K, tr("Number of clusters (0 = choose automatically)"), 0, 0, 100))
        self.addParameter(_integer(self.SEED, tr("Random seed"), 0, 0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, tr("Device"), list(DEVICES), defaultValue=0))

        advanced = [
            _integer(self.FOLDS, tr("Cross-validation folds"), 5, 2, 50),
            _integer(self.REPEATS, tr("Cross-validation repeats"), 3, 1, 50),
            QgsProcessingParameterEnum(
                self.MODELS, tr("Prediction models"), list(PREDICTION_MODELS), allowMultiple=True, defaultValue=[0, 1]
            ),
            QgsProcessingParameterBoolean(self.SPATIAL, tr("Also evaluate with spatially blocked folds"), True),
            QgsProcessingParameterString(
                self.METHOD_PARAMS, tr('Method parameters (JSON, e.g. {"neighbourhood_m": 1000})'), optional=True
            ),
            QgsProcessingParameterBoolean(
                self.OVERWRITE, tr("Replace a previous RegionLens run in the output folder"), False
            ),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_DIR, tr("Output folder")))

        self.addOutput(QgsProcessingOutputFile(self.GPKG, tr("Results GeoPackage")))
        self.addOutput(QgsProcessingOutputVectorLayer(self.EMBEDDINGS, tr("Embeddings"), polygons[0]))
        self.addOutput(QgsProcessingOutputVectorLayer(self.CLUSTERS, tr("Clusters"), polygons[0]))
        self.addOutput(QgsProcessingOutputVectorLayer(self.PREDICTIONS, tr("Predictions"), polygons[0]))
        self.addOutput(
            QgsProcessingOutputVectorLayer(self.METRICS, tr("Metrics"), QgsProcessing.SourceType.TypeVector)
        )
        self.addOutput(QgsProcessingOutputFile(self.RUN_JSON, tr("Run manifest (run.json)")))
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, tr("Device that ran")))

    def checkParameterValues(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        """Explain contradictory choices before the run starts."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        if _given(parameters, self.POIS) and not _given(parameters, self.POI_CATEGORY):
            return False, tr("Choose the POI category field (the field that says what each point is).")
        if not _given(parameters, self.POIS) and not _given(parameters, self.RASTERS):
            return False, tr("Choose points of interest, satellite images or both: the embedding is learned from them.")
        if self.parameterAsInt(parameters, self.K, context) == 1:
            return False, tr("The number of clusters must be 0 (choose automatically) or at least 2.")
        refused = check_label_fields(
            self.parameterAsVectorLayer(parameters, self.REGIONS, context),
            self.parameterAsFields(parameters, self.LABEL_FIELDS, context),
        )
        if refused:
            return False, refused
        if _given(parameters, self.METHOD_PARAMS):
            try:
                _method_params(self.parameterAsString(parameters, self.METHOD_PARAMS, context))
            except QgsProcessingException as exc:
                return False, str(exc)
        return True, ""

    def processAlgorithm(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Export the inputs, run the backend, report its outputs."""
        self.layers_to_load: list[LayerToLoad] = []
        python = backend_python()
        output_dir = self.parameterAsFileOutput(parameters, self.OUTPUT_DIR, context)
        label_fields = self.parameterAsFields(parameters, self.LABEL_FIELDS, context)
        target = TARGETS[self.parameterAsEnum(parameters, self.TARGET, context)]
        log1p = self.parameterAsBool(parameters, self.LOG1P, context)
        models = [PREDICTION_MODELS[i] for i in self.parameterAsEnums(parameters, self.MODELS, context)] or ["ridge"]
        k = self.parameterAsInt(parameters, self.K, context)
        labels = _labels(label_fields, target, log1p)
        config: dict[str, Any] = {
            "output_dir": output_dir,
            "methods": [
                {
                    "name": METHODS[self.parameterAsEnum(parameters, self.METHOD, context)],
                    "dim": self.parameterAsInt(parameters, self.DIM, context),
                    "params": _method_params(self.parameterAsString(parameters, self.METHOD_PARAMS, context)),
                }
            ],
            "labels": labels,
            "clustering": {"k": k if k >= 2 else "auto"},
            "prediction": {
                "models": models,
                "folds": self.parameterAsInt(parameters, self.FOLDS, context),
                "repeats": self.parameterAsInt(parameters, self.REPEATS, context),
                "spatial": self.parameterAsBool(parameters, self.SPATIAL, context),
                "write_model": "ridge" if "ridge" in models else models[0],
            },
            "seed": self.parameterAsInt(parameters, self.SEED, context),
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "overwrite": self.parameterAsBool(parameters, self.OVERWRITE, context),
        }
        with input_folder(feedback) as folder:
            regions = self.parameterAsSource(parameters, self.REGIONS, context)
            if regions is None:
                raise QgsProcessingException(self.invalidSourceError(parameters, self.REGIONS))
            config["regions"] = {
                "path": str(export_vector(regions, folder / "regions.gpkg", context, feedback, "regions")),
                "id_field": self.parameterAsString(parameters, self.REGION_ID, context),
            }
            pois = self.parameterAsSource(parameters, self.POIS, context)
            if pois is not None:
                name_field = self.parameterAsString(parameters, self.POI_NAME, context)
                config["pois"] = {
                    "path": str(export_vector(pois, folder / "pois.gpkg", context, feedback, "POIs")),
                    "category_field": self.parameterAsString(parameters, self.POI_CATEGORY, context),
                    "name_field": name_field or None,
                }
            rasters = self.parameterAsLayerList(parameters, self.RASTERS, context)
            config["rasters"] = [raster_input(layer, folder, context, feedback) for layer in rasters]
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
        for output, layer in (
            (self.EMBEDDINGS, "embeddings"),
            (self.CLUSTERS, "clusters"),
            (self.PREDICTIONS, "predictions"),
            (self.METRICS, "metrics"),
        ):
            outputs[output] = gpkg_uri(gpkg, layer) if layer in written else None
        first_label = labels[0]["name"] if labels else None
        for output, style, name in (
            (self.EMBEDDINGS, "embeddings", tr("Embeddings")),
            (self.CLUSTERS, "clusters", tr("Clusters")),
            (self.PREDICTIONS, "predictions", tr("Predicted {}").format(first_label)),
        ):
            if outputs[output] and (style != "predictions" or first_label):
                self.layers_to_load.append(LayerToLoad(outputs[output], name, output, style, first_label))
        return outputs


def _integer(name: str, description: str, default: int, minimum: int, maximum: int | None = None):
    parameter = QgsProcessingParameterNumber(
        name, description, QgsProcessingParameterNumber.Type.Integer, default, False, minimum
    )
    if maximum is not None:
        parameter.setMaximum(maximum)
    return parameter


def _labels(fields: list[str], target: str, log1p: bool) -> list[dict[str, Any]]:
    """``[[labels]]`` entries for numeric fields of the region layer, with unique names."""
    labels: list[dict[str, Any]] = []
    used: set[str] = set()
    for field in fields:
        name = label_name(field, used)
        used.add(name)
        labels.append({"name": name, "field": field, "target": target, "log1p": log1p})
    return labels


def _method_params(text: str) -> dict[str, Any]:
    """The METHOD_PARAMS JSON object (empty text: no parameters).

    Raises:
        QgsProcessingException: If it is not a JSON object.
    """
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise QgsProcessingException(tr("Method parameters are not valid JSON: {}").format(exc)) from exc
    if not isinstance(value, dict):
        raise QgsProcessingException(tr('Method parameters must be a JSON object, e.g. {"neighbourhood_m": 1000}.'))
    return value
