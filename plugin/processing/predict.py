"""``regionlens:predict``: predict a label from an embedding layer, out of fold (worker ``predict``).

The label is a numeric field of a labels layer joined on the region id, or of the embedding layer
itself when no labels layer is given. The output GeoPackage holds ``predictions`` (``<label>_obs``,
``_pred``, ``_res`` in the label's units) and the ``metrics`` table (backend/jobs.py); the predictions
load graduated, with a residuals layer beside them. The shuffled-fold scores of the first model are
also outputs (R2, MAE, RMSE), for use in models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
)

from ..common import common, gpkg_uri
from ..i18n import tr
from ..parameters import label_name
from ._base import POLYGONS, EmbeddingLayerAlgorithm, PredictionParameters, advanced, check_label_fields
from ._inputs import export_vector
from ._outputs import LayerToLoad

__all__ = ["PredictAlgorithm"]


class PredictAlgorithm(PredictionParameters, EmbeddingLayerAlgorithm):
    """Predict a label from region embeddings with out-of-fold cross-validation."""

    ALG_ID = "predict"
    DISPLAY_NAME = "Predict a label from region embeddings"
    TAGS = "embedding,predict,regression,cross-validation,population,crime,region"
    HELP = (
        "Predicts a numeric label (population, crime counts, ...) of every region from its embedding "
        "(numeric fields emb_000, emb_001, ... of the embedding layer), each region by a model that never "
        "saw it: K-fold cross-validation repeated over seeds, and spatially blocked folds.\n\n"
        "The label field is read from the labels layer, joined on the region id (labels id field, default: "
        "the same name as the region id field). To use a field of the embedding layer itself, choose that "
        "layer as labels layer too (or, in scripts and qgis_process, leave LABELS empty). Modelled as "
        "density per km\u00b2 with log1p by default; predictions are written back in "
        "the label's units as <label>_obs, <label>_pred and <label>_res (observed minus predicted), with the "
        "prediction interval <label>_lo to <label>_hi at the chosen coverage (CV+ from the out-of-fold "
        "residuals; its empirical coverage under both protocols is in the metrics). The output GeoPackage also "
        "holds the table 'metrics' (MAE, RMSE, R2 as mean and standard deviation)."
    )

    LABELS = "LABELS"
    LABEL_ID_FIELD = "LABEL_ID_FIELD"
    LABEL_FIELD = "LABEL_FIELD"
    # outputs
    LABEL = "LABEL"
    R2 = "R2"
    MAE = "MAE"
    RMSE = "RMSE"
    COVERAGE_SHUFFLED = "COVERAGE_SHUFFLED"
    COVERAGE_SPATIAL = "COVERAGE_SPATIAL"

    def add_parameters(self) -> None:
        """Declare the parameters."""
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.LABELS, tr("Labels layer (empty: the embedding layer)"), [POLYGONS], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.LABEL_ID_FIELD, tr("Labels id field (empty: same as the region id field)"), None, self.LABELS,
                optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterField(
                self.LABEL_FIELD, tr("Label field (numeric)"), None, self.LABELS,
                QgsProcessingParameterField.DataType.Numeric,
            )
        )  # fmt: skip
        for parameter in self.label_parameters(tr("Model the label as"), tr("log1p-transform the label")):
            self.addParameter(parameter)
        folds, repeats, models, spatial, coverage = self.evaluation_parameters(
            tr("Prediction models (the first fills the predictions layer)"))
        for parameter in (folds, repeats, self.seed_parameter(), coverage, advanced(models), advanced(spatial)):
            self.addParameter(parameter)

    def add_outputs(self) -> None:
        """Declare the outputs."""
        self.addOutput(QgsProcessingOutputVectorLayer(self.PREDICTIONS, tr("Predictions"), POLYGONS))
        self.addOutput(QgsProcessingOutputVectorLayer(self.METRICS, tr("Metrics"), QgsProcessing.SourceType.TypeVector))
        self.addOutput(QgsProcessingOutputString(self.LABEL, tr("Label name (prefix of the output fields)")))
        self.addOutput(QgsProcessingOutputNumber(self.R2, tr("R2 (shuffled folds, mean)")))
        self.addOutput(QgsProcessingOutputNumber(self.MAE, tr("MAE (shuffled folds, mean)")))
        self.addOutput(QgsProcessingOutputNumber(self.RMSE, tr("RMSE (shuffled folds, mean)")))
        self.addOutput(QgsProcessingOutputNumber(
            self.COVERAGE_SHUFFLED, tr("Empirical coverage of the prediction intervals (shuffled folds)")))
        self.addOutput(QgsProcessingOutputNumber(
            self.COVERAGE_SPATIAL, tr("Empirical coverage of the prediction intervals (spatially blocked folds)")))

    def processAlgorithm(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Export the layers, run the backend's ``predict`` job, report its outputs."""
        id_field = self.parameterAsString(parameters, self.ID_FIELD, context)
        label_field = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        label_id_field = self.parameterAsString(parameters, self.LABEL_ID_FIELD, context) or id_field
        settings = self.prediction_settings(parameters, context)
        models = settings["models"]
        name = label_name(label_field)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        labels = self.parameterAsSource(parameters, self.LABELS, context)
        _require_field(labels if labels is not None else source, label_field, tr("label field"))
        refused = check_label_fields(
            self.parameterAsVectorLayer(parameters, self.LABELS if labels is not None else self.INPUT, context),
            [label_field],
        )
        if refused:
            raise QgsProcessingException(refused)
        if labels is not None:
            _require_field(labels, label_id_field, tr("labels id field"))

        def job(folder: Path) -> dict[str, Any]:
            request: dict[str, Any] = {
                "embeddings": self.export_embeddings(parameters, context, feedback, folder),
                "id_field": id_field, "label_field": label_field, "label_name": name, **settings,
                "seed": self.parameterAsInt(parameters, self.SEED, context),
            }  # fmt: skip
            if labels is not None:
                keep = [label_id_field, label_field]
                path = export_vector(labels, folder / "labels.gpkg", context, feedback, "labels", keep)
                request["labels"] = str(path)
                request["labels_id_field"] = label_id_field
            return request

        result, gpkg = self.run_job("predict", parameters, context, feedback, job)
        name = str(result.get("label") or name)
        scores = _shuffled_scores(result.get("metrics") or [], models[0])
        for row in result.get("metrics") or []:
            feedback.pushInfo(_score_line(row))
        predictions = gpkg_uri(gpkg, common.LAYER_PREDICTIONS)
        self.layers_to_load.append(
            LayerToLoad(predictions, tr("Predicted {}").format(name), self.PREDICTIONS, common.LAYER_PREDICTIONS, name)
        )
        return {
            self.OUTPUT: gpkg,
            self.PREDICTIONS: predictions,
            self.METRICS: gpkg_uri(gpkg, common.TABLE_METRICS),
            self.LABEL: name,
            self.R2: scores.get("r2_mean"),
            self.MAE: scores.get("mae_mean"),
            self.RMSE: scores.get("rmse_mean"),
            self.COVERAGE_SHUFFLED: scores.get("coverage"),
            self.COVERAGE_SPATIAL: _protocol_scores(result.get("metrics") or [], models[0], "spatial").get("coverage"),
        }


def _require_field(source, field: str, what: str) -> None:
    names = source.fields().names()
    if field not in names:
        raise QgsProcessingException(
            tr("The {} '{}' is not a field of '{}'; its fields: {}.").format(
                what, field, source.sourceName(), ", ".join(names)
            )
        )


def _shuffled_scores(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The metrics row of ``model`` under shuffled folds (or the first row)."""
    return _protocol_scores(rows, model, "shuffled") or (rows[0] if rows else {})


def _protocol_scores(rows: list[dict[str, Any]], model: str, protocol: str) -> dict[str, Any]:
    """The metrics row of ``model`` under ``protocol`` (``{}`` when there is none)."""
    for row in rows:
        if row.get("model") == model and row.get("protocol") == protocol:
            return row
    return {}


def _score_line(row: dict[str, Any]) -> str:
    """``ridge shuffled: R2 0.312 ± 0.060, MAE 0.51, RMSE 0.66``."""
    values = {key: row.get(key) for key in ("r2_mean", "r2_std", "mae_mean", "rmse_mean", "coverage")}
    numbers = {key: float(value) if isinstance(value, (int, float)) else float("nan") for key, value in values.items()}
    line = "{} {}: R2 {:.3f} \u00b1 {:.3f}, MAE {:.4g}, RMSE {:.4g}".format(
        row.get("model", "?"), row.get("protocol", "?"), numbers["r2_mean"], numbers["r2_std"], numbers["mae_mean"],
        numbers["rmse_mean"],
    )  # fmt: skip
    if numbers["coverage"] == numbers["coverage"]:  # not NaN: the intervals' model
        line += ", interval coverage {:.2f}".format(numbers["coverage"])
    return line
