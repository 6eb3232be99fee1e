"""The base class of the RegionLens algorithms and the one way they call the backend worker.

Every algorithm exports its inputs (:mod:`._inputs`), sends one request to the worker with
:func:`run_backend` and reports the files the worker wrote as outputs (:mod:`._outputs`). The worker's
progress events drive the Processing progress bar, its log lines go to the algorithm log, and the
Cancel button cancels the worker (it stops at its next progress point; after a grace period it is
killed). Every failure becomes a :class:`QgsProcessingException` with a message meant for the user.
"""

from __future__ import annotations

import configparser
import html
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..common import common
from ..i18n import tr
from ..parameters import METHODS, PREDICTION_MODELS, TARGETS, LabelChoice, RunChoices, label_fields
from ..tasks import LOG_TAG, PLUGIN_ROOT, RunCancelled, RunSucceeded, run_info, run_worker_job
from ..worker_client import find_backend_python
from ._inputs import export_vector
from ._outputs import queue_layers

__all__ = [
    "DEFAULTS",
    "EmbeddingLayerAlgorithm",
    "GROUP",
    "GROUP_ID",
    "HELP_URL",
    "ICON_PATH",
    "LABEL_DEFAULTS",
    "POLYGONS",
    "PredictionParameters",
    "SETUP_HINT",
    "RegionLensAlgorithm",
    "advanced",
    "backend_python",
    "ensure_methods",
    "input_folder",
    "check_label_fields",
    "coverage_parameter",
    "integer_parameter",
    "run_backend",
]

#: The geometry type of region layers (inputs and outputs).
POLYGONS = QgsProcessing.SourceType.TypeVectorPolygon
#: The provider's and the algorithms' icon.
ICON_PATH = PLUGIN_ROOT / "resources" / "icon.svg"
GROUP = "Region embeddings"
GROUP_ID = "embeddings"
#: The defaults of a run, the same as the run dock's (plugin/parameters.py).
DEFAULTS = RunChoices()
#: The defaults of a label, the same as the run dock's.
LABEL_DEFAULTS = LabelChoice()


def _repository_url() -> str:
    meta = configparser.ConfigParser()
    meta.read(PLUGIN_ROOT / "metadata.txt", encoding="utf-8")
    return meta.get("general", "repository", fallback="").rstrip("/")


#: The Processing page of the documentation (the algorithms' help button).
HELP_URL = f"{_repository_url()}/blob/main/docs/processing.md"

SETUP_HINT = (
    "The RegionLens backend is not installed: no backend Python interpreter was found. Run the RegionLens "
    "backend setup from the plugin (or `make setup` in a development checkout), or set the path of the "
    "backend's Python in Settings \u203a Options \u203a RegionLens (setting regionlens/backend_python)."
)

#: Seconds the worker gets to start (the first start imports torch).
START_TIMEOUT = 120.0
#: Seconds a cancelled job gets to stop by itself before the worker is killed.
CANCEL_GRACE = 5.0
#: Lines of the worker's error output quoted in an error message.
STDERR_LINES = 10
#: Error kinds that are the user's input, explained by the message alone (no stderr quoted).
_INPUT_KINDS = frozenset({"input", "config", "output", "busy"})


def coverage_parameter(name: str) -> QgsProcessingParameterNumber:
    """The nominal coverage of the prediction intervals (``<label>_lo`` to ``<label>_hi``), as in the run dock."""
    low, high = common.COVERAGE_RANGE
    return QgsProcessingParameterNumber(
        name, tr("Prediction interval coverage (0.9 = 90 % of regions inside their interval)"),
        QgsProcessingParameterNumber.Type.Double, DEFAULTS.coverage, False, low, high,
    )


def integer_parameter(name: str, description: str, default: int, minimum: int,
                      maximum: int | None = None) -> QgsProcessingParameterNumber:  # fmt: skip
    """A whole-number parameter from ``minimum`` (to ``maximum`` when given)."""
    parameter = QgsProcessingParameterNumber(
        name, description, QgsProcessingParameterNumber.Type.Integer, default, False, minimum
    )
    if maximum is not None:
        parameter.setMaximum(maximum)
    return parameter


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """``parameter``, shown under the dialog's *Advanced parameters*."""
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return parameter


def check_label_fields(layer: QgsVectorLayer | None, fields: list[str]) -> str:
    """Why some of ``fields`` cannot be labels to predict (``""`` when all can), by the rule the run dock
    uses (:func:`..parameters.label_fields`): identifiers and geometry-derived fields are refused."""
    if layer is None or not fields:
        return ""
    offered = set(label_fields(layer))
    refused = [f for f in fields if f not in offered]
    if not refused:
        return ""
    return tr(
        "{} cannot be predicted: identifiers (id, GEOID, OBJECTID, integers numbering the regions) and fields "
        "derived from the geometry (area, bounds) are not labels. Labels of this layer: {}."
    ).format(", ".join(refused), ", ".join(label_fields(layer)) or tr("none"))


class RegionLensAlgorithm(QgsProcessingAlgorithm):
    """Common parts of the RegionLens algorithms; subclasses set the four class attributes."""

    ALG_ID = ""  # id within the provider (``embed`` -> ``regionlens:embed``)
    DISPLAY_NAME = ""
    HELP = ""
    TAGS = ""  # comma-separated search words

    def name(self) -> str:
        """Algorithm id within the provider."""
        return self.ALG_ID

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name shown in the toolbox."""
        return tr(self.DISPLAY_NAME)

    def group(self) -> str:
        """Toolbox group."""
        return tr(GROUP)

    def groupId(self) -> str:  # noqa: N802 - QGIS API
        """Toolbox group id."""
        return GROUP_ID

    def tags(self) -> list[str]:
        """Search words."""
        return [tag.strip() for tag in tr(self.TAGS).split(",") if tag.strip()]

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help shown beside the parameters (QGIS renders it as HTML: ``<label>`` must stay visible)."""
        return html.escape(tr(self.HELP), quote=False)

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API
        """The Processing page of the documentation (the dialog's Help button)."""
        return HELP_URL

    def icon(self) -> QIcon:
        """The RegionLens icon."""
        return QIcon(str(ICON_PATH))

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802 - QGIS API
        """A fresh instance (Processing runs each execution on its own copy)."""
        return type(self)()

    def checkParameterValues(  # noqa: N802 - QGIS API
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        """QGIS's checks, then :meth:`problem`: wrong or contradictory choices explained before the run starts."""
        ok, message = super().checkParameterValues(parameters, context)
        problem = self.problem(parameters, context) if ok else None
        return (False, problem) if problem else (ok, message)

    def problem(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str | None:
        """Why the chosen parameters cannot run (beyond what QGIS checks), or ``None``."""
        return None

    def postProcessAlgorithm(self, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:  # noqa: N802
        """Main thread, after the run: queue the outputs for loading (see :mod:`._outputs`)."""
        queue_layers(context, getattr(self, "layers_to_load", []))
        return {}  # keep processAlgorithm's results

    # ------------------------------------------------ parameters and outputs more than one algorithm has
    K = "K"
    SEED = "SEED"
    CLUSTERS = "CLUSTERS"  # output: the clusters layer
    PREDICTIONS = "PREDICTIONS"  # output: the predictions layer
    METRICS = "METRICS"  # output: the metrics table

    def clusters_parameter(self, default: int = DEFAULTS.cluster_k) -> QgsProcessingParameterNumber:
        """The number of clusters (0 = chosen by silhouette), as in the run dock; see :meth:`clusters_problem`."""
        return integer_parameter(self.K, tr("Number of clusters (0 = choose automatically)"), default, 0, 100)

    def clusters_problem(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str | None:
        """Why the number of clusters cannot be used (1), or ``None``."""
        if self.parameterAsInt(parameters, self.K, context) == 1:
            return tr("The number of clusters must be 0 (choose automatically) or at least 2.")
        return None

    def seed_parameter(self) -> QgsProcessingParameterNumber:
        """The random seed of every stage (the run dock's default)."""
        return integer_parameter(self.SEED, tr("Random seed"), DEFAULTS.seed, 0)


class PredictionParameters(RegionLensAlgorithm):
    """The label and evaluation parameters of the algorithms that predict labels (``embed``, ``predict``), with
    the run dock's defaults, and the settings they give (:meth:`prediction_settings`)."""

    TARGET = "TARGET"
    LOG1P = "LOG1P"
    FOLDS = "FOLDS"
    REPEATS = "REPEATS"
    MODELS = "MODELS"
    SPATIAL = "SPATIAL"
    COVERAGE = "COVERAGE"

    def label_parameters(self, target: str, log1p: str) -> list[QgsProcessingParameterDefinition]:
        """How labels are modelled: ``target`` and ``log1p`` are the two parameters' descriptions."""
        return [
            QgsProcessingParameterEnum(self.TARGET, target, [tr("count"), tr("density (per km\u00b2)")],
                                       defaultValue=TARGETS.index(LABEL_DEFAULTS.target)),
            QgsProcessingParameterBoolean(self.LOG1P, log1p, LABEL_DEFAULTS.log1p),
        ]  # fmt: skip

    def evaluation_parameters(self, models: str) -> list[QgsProcessingParameterDefinition]:
        """Folds, repeats, prediction models (described as ``models``), spatial folds and interval coverage."""
        return [
            integer_parameter(self.FOLDS, tr("Cross-validation folds"), DEFAULTS.folds, 2, 50),
            integer_parameter(self.REPEATS, tr("Cross-validation repeats"), DEFAULTS.repeats, 1, 50),
            QgsProcessingParameterEnum(
                self.MODELS, models, list(PREDICTION_MODELS), allowMultiple=True,
                defaultValue=[PREDICTION_MODELS.index(m) for m in DEFAULTS.prediction_models],
            ),
            QgsProcessingParameterBoolean(self.SPATIAL, tr("Also evaluate with spatially blocked folds"),
                                          DEFAULTS.spatial),
            coverage_parameter(self.COVERAGE),
        ]  # fmt: skip

    def prediction_settings(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        """``target``, ``log1p``, ``models`` (the run dock's when none is chosen), ``folds``, ``repeats``,
        ``spatial`` and ``coverage``, as the worker's ``predict`` job and the run configuration name them."""
        chosen = self.parameterAsEnums(parameters, self.MODELS, context)
        return {
            "target": TARGETS[self.parameterAsEnum(parameters, self.TARGET, context)],
            "log1p": self.parameterAsBool(parameters, self.LOG1P, context),
            "models": [PREDICTION_MODELS[i] for i in chosen] or list(DEFAULTS.prediction_models),
            "folds": self.parameterAsInt(parameters, self.FOLDS, context),
            "repeats": self.parameterAsInt(parameters, self.REPEATS, context),
            "spatial": self.parameterAsBool(parameters, self.SPATIAL, context),
            "coverage": self.parameterAsDouble(parameters, self.COVERAGE, context),
        }


class EmbeddingLayerAlgorithm(RegionLensAlgorithm):
    """An algorithm whose input is an embedding layer (``emb_000`` ... fields) with a region id field and whose
    worker job writes one GeoPackage (:meth:`run_job`); subclasses declare the rest in :meth:`add_parameters`
    and :meth:`add_outputs`."""

    INPUT = "INPUT"
    ID_FIELD = "ID_FIELD"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 - QGIS API
        """Declare the embedding layer and its id field (default ``region_id``, as a run writes it), the
        algorithm's parameters, the GeoPackage the job writes, and the algorithm's outputs."""
        self.addParameter(QgsProcessingParameterFeatureSource(self.INPUT, tr("Embedding layer"), [POLYGONS]))
        self.addParameter(
            QgsProcessingParameterField(self.ID_FIELD, tr("Region id field"), common.ID_FIELD, self.INPUT)
        )
        self.add_parameters()
        self.addParameter(
            QgsProcessingParameterFileDestination(self.OUTPUT, tr("Output GeoPackage"), tr("GeoPackage (*.gpkg)"))
        )
        self.add_outputs()

    def add_parameters(self) -> None:
        """Declare the algorithm's own parameters (after the embedding layer, before the output)."""

    def add_outputs(self) -> None:
        """Declare the algorithm's outputs besides the GeoPackage."""

    def export_embeddings(self, parameters: dict[str, Any], context: QgsProcessingContext,
                          feedback: QgsProcessingFeedback, folder: Path) -> str:  # fmt: skip
        """Write the embedding layer (every field) into ``folder``; returns the file's path.

        Raises:
            QgsProcessingException: If the layer cannot be read or written.
        """
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        return str(export_vector(source, folder / f"{common.LAYER_EMBEDDINGS}.gpkg", context, feedback, "embedding"))

    def run_job(self, action: str, parameters: dict[str, Any], context: QgsProcessingContext,
                feedback: QgsProcessingFeedback, job: Callable[[Path], dict]) -> tuple[dict, str]:  # fmt: skip
        """Run the worker's ``action`` on an embedding layer and report the notes of its result.

        Args:
            job: ``job(folder)``: the request's parameters besides ``output``, with its inputs exported into
                ``folder`` (a temporary folder, removed after the job).

        Returns:
            The worker's result and the GeoPackage it wrote (the ``OUTPUT`` file, replaced: Processing asked
            before a chosen file is replaced, and the write is atomic).

        Raises:
            QgsProcessingException: See :func:`run_backend`.
        """
        self.layers_to_load = []
        python = backend_python()
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        with input_folder(feedback) as folder:
            request = {**job(folder), "output": output, "overwrite": True}
            result = run_backend(python, action, request, feedback)
        for line in result.get("report") or []:
            feedback.pushInfo(str(line))
        return result, str(result["output"])


def ensure_methods(python: Path | None = None, wait: bool = True) -> bool:
    """Fill :data:`plugin.parameters.METHODS` from the backend's description of its methods.

    From the cached answer of the backend's last ``info`` (written whenever it answers); without one,
    and with ``wait``, it asks the backend now (the worker imports torch: seconds, once per backend).

    Returns:
        True when the registry holds the backend's methods.
    """
    if METHODS.from_backend:
        return True
    python = python or find_backend_python(PLUGIN_ROOT)
    if python is None:
        return False
    if METHODS.load_cache(python):
        return True
    if not wait:
        return False
    outcome = run_info(python, timeout=START_TIMEOUT)
    if not isinstance(outcome, RunSucceeded):
        message = getattr(outcome, "message", "")
        QgsMessageLog.logMessage(f"The backend did not describe its methods ({message}); only the "
                                 f"{common.DEFAULT_METHOD} is offered.", LOG_TAG, Qgis.MessageLevel.Warning)
        return False
    METHODS.update_from_info(outcome.result, python)
    return True


def backend_python() -> Path:
    """The backend venv's interpreter.

    Raises:
        QgsProcessingException: With :data:`SETUP_HINT` when no backend is installed.
    """
    python = find_backend_python(PLUGIN_ROOT)
    if python is None:
        raise QgsProcessingException(tr(SETUP_HINT))
    return python


@contextmanager
def input_folder(feedback: QgsProcessingFeedback) -> Iterator[Path]:
    """A fresh folder in Processing's temporary folder for the exported inputs, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="regionlens-inputs-", dir=QgsProcessingUtils.tempFolder()))
    feedback.pushDebugInfo(f"Inputs for the backend: {folder}")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_backend(
    python: Path, action: str, params: dict[str, Any], feedback: QgsProcessingFeedback
) -> dict[str, Any]:
    """Run one worker action to its end, reporting progress and log lines to ``feedback``.

    Args:
        python: The backend venv's interpreter (:func:`backend_python`).
        action: ``run``, ``cluster`` or ``predict`` (docs/protocol.md).
        params: The request's parameters (absolute paths).
        feedback: Progress bar, log and Cancel button of the algorithm.

    Returns:
        The worker's result.

    Raises:
        QgsProcessingException: If the job was cancelled (the message says so; the worker writes
            nothing then), failed (the worker's message, with the last lines of its error output
            unless the input was at fault), or the worker died (how, and its last error output).
    """
    stage = {"name": ""}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "progress":
            fraction = event.get("fraction")
            if isinstance(fraction, (int, float)):
                feedback.setProgress(100.0 * min(max(float(fraction), 0.0), 1.0))
            name = str(event.get("stage") or "")
            if name and name != stage["name"]:
                stage["name"] = name
                feedback.setProgressText(tr("RegionLens: {}").format(name))
        elif event.get("event") == "log":
            message = str(event.get("message", ""))
            if event.get("level") == "warning":
                feedback.pushWarning(message)
            else:
                feedback.pushInfo(message)

    cancelled = tr("The RegionLens {} job was cancelled; no output was written.").format(action)
    feedback.pushInfo(tr("Starting the RegionLens backend ({})").format(python))
    outcome = run_worker_job(python, action, params, on_event=on_event, is_cancelled=feedback.isCanceled,
                             start_timeout=START_TIMEOUT, cancel_grace=CANCEL_GRACE, cancelled_message=cancelled)
    if isinstance(outcome, RunSucceeded):
        return outcome.result
    if isinstance(outcome, RunCancelled):
        raise QgsProcessingException(outcome.message)
    if outcome.kind == "died":
        raise QgsProcessingException(tr("The RegionLens backend failed: {}").format(outcome.message))
    message = outcome.message or tr("The backend failed ({}).").format(outcome.kind)
    if outcome.kind in _INPUT_KINDS:  # the input was at fault: the message alone says what to change
        raise QgsProcessingException(message)
    if outcome.traceback:
        feedback.pushDebugInfo(outcome.traceback)
    tail = _tail(outcome.stderr)
    if tail:
        message += "\n" + tr("Last lines of the worker's error output:") + "\n" + tail
    raise QgsProcessingException(message)


def _tail(text: str, lines: int = STDERR_LINES) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
