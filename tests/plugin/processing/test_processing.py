"""The Processing provider (plugin/processing/): registration, the three algorithms with a real worker,
styling on load, cancel, failures, and headless ``qgis_process.bin``.

Runs ``processing.run`` in pytest-qgis: QGIS's own ``processing`` package lives in
``<pkgDataPath>/python/plugins`` (added to ``sys.path`` here) and needs ``Processing.initialize()``.
Fixtures defined here: ``processing_module``, ``provider``, ``embed_run`` (one small embed run on the
sample city, shared by the tests that read its outputs) and ``installed_package``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsGraduatedSymbolRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)

from plugin.parameters import METHODS, TARGETS, LabelChoice, RunChoices, info_cache_path
from plugin.processing import _base, _outputs
from plugin.processing._inputs import raster_input
from plugin.processing.provider import RegionLensProvider

ALGORITHM_IDS = {"regionlens:embed", "regionlens:cluster", "regionlens:predict", "regionlens:similar"}
SF = Path(__file__).resolve().parents[3] / "resources" / "sample_data" / "sf"
BLOCKS = SF / "sf_block_groups_crime_pop.geojson"
POIS = SF / "sf_pois_osm.geojson"
LANDSAT = SF / "sf_landsat7_3857_30m.tif"
CRIMES = SF / "sf_crime_incidents_2012h2.geojson"
N_BLOCKS = 579
#: Small, fast prediction settings (ridge only, 3 folds, one repeat, no spatial folds).
FAST = {"FOLDS": 3, "REPEATS": 1, "MODELS": [0], "SPATIAL": False}


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm reports."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.errors: list[str] = []
        self.progress_values: list[float] = []
        self.progressChanged.connect(self.progress_values.append)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N803 - QGIS API
        self.errors.append(error)


def new_context() -> QgsProcessingContext:
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return context


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def processing_module() -> ModuleType:
    """QGIS's ``processing`` package, initialised."""
    plugins = str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins")
    if plugins not in sys.path:
        sys.path.append(plugins)
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing

    return processing


@pytest.fixture(scope="module")
def provider(processing_module: ModuleType) -> RegionLensProvider:
    """This checkout's provider, registered for the module's tests."""
    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("regionlens")
    if existing is not None:
        assert isinstance(existing, RegionLensProvider), "another RegionLens provider is registered"
        yield existing
        return
    provider = RegionLensProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture(scope="module")
def embed_run(provider, processing_module, backend_python: Path, tmp_path_factory) -> dict[str, Any]:
    """``regionlens:embed`` on the sample city (d = 8, k = 4, labels Population and the crime incidents counted
    per block group, with the Landsat image)."""
    out = tmp_path_factory.mktemp("embed") / "run"
    feedback = RecordingFeedback()
    context = new_context()
    crimes = QgsVectorLayer(str(CRIMES), "Crime incidents 2012 H2", "ogr")
    assert crimes.isValid()
    QgsProject.instance().addMapLayer(crimes)
    params = {
        "REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "POIS": str(POIS), "POI_CATEGORY": "category",
        "POI_NAME": "name", "RASTERS": [str(LANDSAT)], "LABEL_FIELDS": ["Population"], "LABEL_POINTS": [crimes.id()],
        "DIM": 8, "K": 4, "SEED": 0, "DEVICE": 1, "OUTPUT_DIR": str(out), **FAST,
    }  # fmt: skip
    results = processing_module.run("regionlens:embed", params, feedback=feedback, context=context)
    return {"results": results, "feedback": feedback, "context": context, "out": out}


# ---------------------------------------------------------------------------------------------- registration


def test_plugin_registers_and_removes_provider(installed_package: ModuleType, qgis_iface) -> None:
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("regionlens") is None
    plugin = installed_package.classFactory(qgis_iface)
    plugin.initProcessing()
    plugin.initProcessing()  # idempotent
    try:
        registered = registry.providerById("regionlens")
        assert registered is plugin.provider
        assert registered.name() == "RegionLens"
        assert not registered.icon().isNull()
        assert {alg.id() for alg in registered.algorithms()} == ALGORITHM_IDS
        for alg_id in ALGORITHM_IDS:
            assert registry.algorithmById(alg_id) is not None
    finally:
        plugin.unload()
    assert registry.providerById("regionlens") is None
    assert plugin.provider is None


def test_algorithm_definitions(provider: RegionLensProvider) -> None:
    algorithms = {alg.id(): alg for alg in provider.algorithms()}
    assert set(algorithms) == ALGORITHM_IDS
    for alg in algorithms.values():
        assert alg.displayName() and alg.group() == "Region embeddings" and alg.groupId() == "embeddings"
        assert len(alg.shortHelpString()) > 100
        assert type(alg.createInstance()) is type(alg)
        assert alg.flags() & alg.FlagCanCancel
    params = {alg_id: {p.name() for p in alg.parameterDefinitions()} for alg_id, alg in algorithms.items()}
    outputs = {alg_id: {o.name() for o in alg.outputDefinitions()} for alg_id, alg in algorithms.items()}
    assert {
        "REGIONS", "REGION_ID", "POIS", "POI_CATEGORY", "POI_NAME", "RASTERS", "LABEL_FIELDS", "TARGET", "LOG1P",
        "METHOD", "DIM", "K", "SEED", "DEVICE", "OUTPUT_DIR",
    } <= params["regionlens:embed"]  # fmt: skip
    assert {"OUTPUT_DIR", "EMBEDDINGS", "CLUSTERS", "PREDICTIONS", "GPKG"} <= outputs["regionlens:embed"]
    assert {"INPUT", "ID_FIELD", "K", "METHOD", "SEED", "OUTPUT"} <= params["regionlens:cluster"]
    assert "CLUSTERS" in outputs["regionlens:cluster"]
    assert {
        "INPUT", "ID_FIELD", "LABELS", "LABEL_ID_FIELD", "LABEL_FIELD", "TARGET", "LOG1P", "FOLDS", "REPEATS", "SEED",
        "OUTPUT",
    } <= params["regionlens:predict"]  # fmt: skip
    assert {"PREDICTIONS", "METRICS", "R2", "COVERAGE_SHUFFLED", "COVERAGE_SPATIAL"} <= outputs["regionlens:predict"]
    assert "COVERAGE" in params["regionlens:predict"] and "COVERAGE" in params["regionlens:embed"]
    assert {"INPUT", "ID_FIELD", "REGION_IDS", "TOP", "OUTPUT"} <= params["regionlens:similar"]
    assert outputs["regionlens:similar"] == {"OUTPUT", "SIMILARITY"}
    assert {"OD_TABLE", "OD_ORIGIN", "OD_DESTINATION", "OD_COUNT", "LANDUSE", "LANDUSE_CLASS", "LABEL_POINTS"} <= (
        params["regionlens:embed"]
    )
    for alg in algorithms.values():
        assert alg.helpUrl() == "https://github.com/regionlens/regionlens/blob/main/docs/processing.md"
    embed_help = algorithms["regionlens:embed"].shortHelpString()  # rendered as HTML: placeholders stay visible
    assert "&lt;label&gt;_obs" in embed_help and "<label>" not in embed_help


def test_embed_offers_the_dock_defaults(provider: RegionLensProvider) -> None:
    """The toolbox and the run dock run the same job with the same defaults (plugin/parameters.py)."""
    embed = provider.algorithm("embed")
    dock = RunChoices()
    label = LabelChoice()
    models = embed.parameterDefinition("MODELS")
    assert [models.options()[i] for i in models.defaultValue()] == dock.prediction_models == ["ridge"]  # no gbm
    assert embed.parameterDefinition("METHOD").defaultValue() == [m.name for m in dock.methods]
    assert embed.parameterDefinition("FOLDS").defaultValue() == dock.folds
    assert embed.parameterDefinition("REPEATS").defaultValue() == dock.repeats
    assert embed.parameterDefinition("SPATIAL").defaultValue() == dock.spatial
    assert embed.parameterDefinition("K").defaultValue() == dock.cluster_k
    assert embed.parameterDefinition("OD_ORIGIN").defaultValue() == dock.od_origin_field
    target = embed.parameterDefinition("TARGET")
    assert TARGETS[target.defaultValue()] == label.target
    assert embed.parameterDefinition("LOG1P").defaultValue() == label.log1p
    predict = provider.algorithm("predict")
    assert predict.parameterDefinition("MODELS").defaultValue() == models.defaultValue()


def test_invalid_choices_are_explained_before_running(provider, processing_module, tmp_path: Path) -> None:
    base = {"REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "OUTPUT_DIR": str(tmp_path / "out")}
    cases = [
        ({**base, "POIS": str(POIS)}, "category"),
        (base, "No input for baseline"),
        ({**base, "POIS": str(POIS), "POI_CATEGORY": "category", "K": 1}, "at least 2"),
        ({**base, "POIS": str(POIS), "POI_CATEGORY": "category", "METHOD_PARAMS": "[1]"}, "JSON object"),
        # the run dock's rule (plugin/parameters.label_fields): no area or id field as a label
        ({**base, "POIS": str(POIS), "POI_CATEGORY": "category", "LABEL_FIELDS": ["CENSUSAREA"]}, "be predicted"),
        ({**base, "REGION_ID": "NO_SUCH_ID", "POIS": str(POIS), "POI_CATEGORY": "category"}, "no field 'NO_SUCH_ID'"),
    ]
    for params, words in cases:
        with pytest.raises(QgsProcessingException, match=words):
            processing_module.run("regionlens:embed", params, feedback=RecordingFeedback())
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- the algorithms


def test_embed_on_sample_city(embed_run: dict[str, Any]) -> None:
    results, out = embed_run["results"], embed_run["out"]
    gpkg = out / "regionlens.gpkg"
    assert gpkg.is_file() and (out / "run.json").is_file()
    assert Path(results["GPKG"]) == gpkg.resolve()
    assert Path(results["OUTPUT_DIR"]) == out.resolve()
    assert results["DEVICE_USED"] == "cpu"
    layers = {key: QgsVectorLayer(results[key], key, "ogr") for key in ("EMBEDDINGS", "CLUSTERS", "PREDICTIONS")}
    for key, layer in layers.items():
        assert layer.isValid(), key
        assert layer.featureCount() == N_BLOCKS, key
    assert [f for f in layers["EMBEDDINGS"].fields().names() if f.startswith("emb_")] == [f"emb_{i:03d}" for i in
                                                                                           range(8)]  # fmt: skip
    assert {f["cluster"] for f in layers["CLUSTERS"].getFeatures()} == {0, 1, 2, 3}
    assert {"population_obs", "population_pred", "population_res"} <= set(layers["PREDICTIONS"].fields().names())
    metrics = QgsVectorLayer(results["METRICS"], "metrics", "ogr")
    assert metrics.isValid() and metrics.featureCount() >= 1
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["methods"][0]["dim"] == 8
    assert len(run["config"]["rasters"]) == 1
    feedback = embed_run["feedback"]
    assert max(feedback.progress_values) >= 99
    assert any("Finished on cpu" in line for line in feedback.infos)
    # the exported inputs are gone
    assert not list(Path(QgsProcessingUtils.tempFolder()).glob("regionlens-inputs-*"))


def test_embed_queues_styled_layers(embed_run: dict[str, Any]) -> None:
    context: QgsProcessingContext = embed_run["context"]
    queued = context.layersToLoadOnCompletion()
    results = embed_run["results"]
    assert set(queued) == {results["EMBEDDINGS"], results["CLUSTERS"], results["PREDICTIONS"]}
    names = {uri: details.name for uri, details in queued.items()}
    assert names[results["PREDICTIONS"]] == "Predicted population (baseline)"
    assert names[results["CLUSTERS"]] == "Clusters (baseline)"
    for details in queued.values():
        processor = details.postProcessor()
        assert isinstance(processor, _outputs.StyleOnLoad)
        assert processor in _outputs._POST_PROCESSORS  # kept alive
        assert processor.group == f"RegionLens \u2014 {embed_run['out'].name}"
    predictions = queued[results["PREDICTIONS"]].postProcessor()
    assert predictions.label == "population" and predictions.extra_labels == ("crime_incidents",)


def test_embed_counts_points_as_a_label(embed_run: dict[str, Any]) -> None:
    layer = QgsVectorLayer(embed_run["results"]["PREDICTIONS"], "p", "ogr")
    names = layer.fields().names()
    assert {"crime_incidents_obs", "crime_incidents_pred"} <= set(names)
    observed = sum(f["crime_incidents_obs"] for f in layer.getFeatures())
    assert observed > 0


def test_embed_layers_load_grouped_by_run_with_every_label(embed_run: dict[str, Any], qgis_new_project) -> None:
    """What Processing does on completion: each queued layer added, then its post-processor called."""
    results = embed_run["results"]
    context = embed_run["context"]
    for uri, details in context.layersToLoadOnCompletion().items():
        layer = QgsVectorLayer(uri, details.name, "ogr")
        qgis_new_project.addMapLayer(layer)
        details.postProcessor().postProcessLayer(layer, context, RecordingFeedback())
    root = qgis_new_project.layerTreeRoot()
    group = root.findGroup(f"RegionLens \u2014 {embed_run['out'].name}")
    assert group is not None and not [n for n in root.children() if n is not group]  # all in the run's group
    names = {node.layer().name() for node in group.findLayers()}
    assert {
        "Embeddings (baseline)", "Clusters (baseline)",
        "Predicted population (baseline) (modelled as log1p(per km\u00b2))",
        "Residuals population (baseline) (observed \u2212 predicted) (modelled as log1p(per km\u00b2))",
        "Predicted crime_incidents (baseline) (modelled as log1p(per km\u00b2))",
        "Residuals crime_incidents (baseline) (observed \u2212 predicted) (modelled as log1p(per km\u00b2))",
    } == names
    assert results["PREDICTIONS"]


def test_bad_id_gives_one_clear_message(provider, processing_module, backend_python: Path, tmp_path: Path) -> None:
    """The backend's message, once, without a traceback (the check runs before the worker starts too)."""
    feedback = RecordingFeedback()
    params = {"REGIONS": str(BLOCKS), "REGION_ID": "NO_SUCH_ID", "POIS": str(POIS), "POI_CATEGORY": "category",
              "OUTPUT_DIR": str(tmp_path / "out")}  # fmt: skip
    alg = provider.algorithm("embed").create()
    with pytest.raises(QgsProcessingException) as info:
        alg.processAlgorithm(params, new_context(), feedback)  # (skips checkParameterValues, as scripts may)
    message = str(info.value)
    assert message.startswith("The region layer has no field 'NO_SUCH_ID'") and message.count("NO_SUCH_ID") == 1
    assert "Traceback" not in message and not feedback.errors
    assert not (tmp_path / "out").exists()


def test_duplicate_ids_give_the_backend_message_once(provider, processing_module, backend_python: Path,
                                                     tmp_path: Path) -> None:  # fmt: skip
    """An input the backend rejects: its message alone, no traceback, nothing written."""
    feedback = RecordingFeedback()
    params = {"REGIONS": str(BLOCKS), "REGION_ID": "Population", "POIS": str(POIS), "POI_CATEGORY": "category",
              "OUTPUT_DIR": str(tmp_path / "out"), **FAST}  # fmt: skip
    with pytest.raises(QgsProcessingException) as info:
        processing_module.run("regionlens:embed", params, feedback=feedback)
    message = str(info.value)
    assert "is not unique" in message and message.count("is not unique") == 1 and "Traceback" not in message
    assert not [line for line in feedback.errors + feedback.infos if "is not unique" in line]  # said once: raised
    assert not (tmp_path / "out").exists()


def test_cluster_on_embed_output(embed_run: dict[str, Any], processing_module, tmp_path: Path) -> None:
    output = tmp_path / "clusters.gpkg"
    params = {"INPUT": embed_run["results"]["EMBEDDINGS"], "ID_FIELD": "region_id", "K": 3, "METHOD": 1,
              "OUTPUT": str(output)}  # fmt: skip
    results = processing_module.run("regionlens:cluster", params, feedback=RecordingFeedback())
    assert output.is_file()
    assert results["N_CLUSTERS"] == 3
    assert -1.0 <= results["SILHOUETTE"] <= 1.0
    clusters = QgsVectorLayer(results["CLUSTERS"], "clusters", "ogr")
    assert clusters.isValid() and clusters.featureCount() == N_BLOCKS
    assert {f["cluster"] for f in clusters.getFeatures()} == {0, 1, 2}
    assert QgsVectorLayer(results["CLUSTER_PROFILES"], "profiles", "ogr").featureCount() > 0


def test_predict_with_labels_on_another_layer(embed_run: dict[str, Any], processing_module, tmp_path: Path) -> None:
    output = tmp_path / "predictions.gpkg"
    params = {
        "INPUT": embed_run["results"]["EMBEDDINGS"], "ID_FIELD": "region_id", "LABELS": str(BLOCKS),
        "LABEL_ID_FIELD": "GEO_ID", "LABEL_FIELD": "Population", "TARGET": 1, "LOG1P": True, "SEED": 0,
        "OUTPUT": str(output), **FAST,
    }  # fmt: skip
    results = processing_module.run("regionlens:predict", params, feedback=RecordingFeedback())
    assert output.is_file()
    assert results["LABEL"] == "population"
    predictions = QgsVectorLayer(results["PREDICTIONS"], "predictions", "ogr")
    assert predictions.isValid() and predictions.featureCount() == N_BLOCKS
    assert {"population_obs", "population_pred", "population_res"} <= set(predictions.fields().names())
    metrics = QgsVectorLayer(results["METRICS"], "metrics", "ogr")
    rows = [feature.attributes() for feature in metrics.getFeatures()]
    assert len(rows) == 1  # ridge, shuffled
    assert isinstance(results["R2"], float) and results["R2"] > 0.1  # embed's R2 for population is about 0.4
    assert results["MAE"] > 0 and results["RMSE"] >= results["MAE"]


def test_predict_label_from_the_embedding_layer(
    provider, processing_module, backend_python: Path, run_gpkg: Path, tmp_path: Path
) -> None:
    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id", "LABEL_FIELD": "emb_003",
              "TARGET": 0, "LOG1P": False, "OUTPUT": str(tmp_path / "p.gpkg"), "COVERAGE": 0.8, **FAST}  # fmt: skip
    feedback = RecordingFeedback()
    results = processing_module.run("regionlens:predict", params, feedback=feedback)
    predictions = QgsVectorLayer(results["PREDICTIONS"], "predictions", "ogr")
    assert predictions.featureCount() == 12
    assert {"emb_003_obs", "emb_003_pred", "emb_003_res", "emb_003_lo", "emb_003_hi"} <= set(
        predictions.fields().names())
    assert all(f["emb_003_lo"] <= f["emb_003_hi"] for f in predictions.getFeatures())
    assert 0.0 <= results["COVERAGE_SHUFFLED"] <= 1.0 and results["COVERAGE_SPATIAL"] is None  # FAST: shuffled only


def test_predict_reports_unknown_label_field(provider, processing_module, run_gpkg: Path, tmp_path: Path) -> None:
    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id", "LABEL_FIELD": "Population",
              "OUTPUT": str(tmp_path / "p.gpkg")}  # fmt: skip
    with pytest.raises(QgsProcessingException, match=r"label field 'Population'.*emb_000"):
        processing_module.run("regionlens:predict", params, feedback=RecordingFeedback())


def test_cluster_honours_selection_and_styles_on_load(
    provider, processing_module, backend_python: Path, run_gpkg: Path, tmp_path: Path, qgis_new_project: QgsProject
) -> None:
    embeddings = QgsVectorLayer(f"{run_gpkg}|layername=embeddings", "embeddings", "ogr")
    qgis_new_project.addMapLayer(embeddings)
    embeddings.selectByIds(list(embeddings.allFeatureIds())[:8])
    source = QgsProcessingFeatureSourceDefinition(embeddings.id(), True)
    params = {"INPUT": source, "ID_FIELD": "region_id", "K": 2, "OUTPUT": str(tmp_path / "c.gpkg")}
    results = processing_module.runAndLoadResults("regionlens:cluster", params, feedback=RecordingFeedback())
    assert QgsVectorLayer(results["CLUSTERS"], "c", "ogr").featureCount() == 8
    loaded = qgis_new_project.mapLayersByName("Clusters")
    assert len(loaded) == 1
    renderer = loaded[0].renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "cluster"
    assert len(renderer.categories()) == 2


def test_predict_loads_predictions_and_residuals_styled(
    provider, processing_module, backend_python: Path, run_gpkg: Path, tmp_path: Path, qgis_new_project: QgsProject
) -> None:
    params = {
        "INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id",
        "LABELS": f"{run_gpkg}|layername=predictions", "LABEL_ID_FIELD": "region_id",
        "LABEL_FIELD": "population_obs", "TARGET": 0, "LOG1P": False, "OUTPUT": str(tmp_path / "p.gpkg"), **FAST,
    }  # fmt: skip
    processing_module.runAndLoadResults("regionlens:predict", params, feedback=RecordingFeedback())
    predictions = qgis_new_project.mapLayersByName("Predicted population_obs")
    residuals = qgis_new_project.mapLayersByName("Residuals population_obs (observed \u2212 predicted)")
    assert len(predictions) == 1 and len(residuals) == 1
    assert isinstance(predictions[0].renderer(), QgsGraduatedSymbolRenderer)
    assert predictions[0].renderer().classAttribute() == "population_obs_pred"
    assert isinstance(residuals[0].renderer(), QgsGraduatedSymbolRenderer)
    assert residuals[0].renderer().classAttribute() == "population_obs_res"
    assert len(residuals[0].renderer().ranges()) == 7  # symmetric diverging classes
    # the residuals layer sits right below the predictions layer
    order = [layer.name() for layer in qgis_new_project.layerTreeRoot().layerOrder()]
    assert order.index(residuals[0].name()) == order.index(predictions[0].name()) + 1


def test_post_processor_styles_directly(run_gpkg: Path, qgis_new_project: QgsProject) -> None:
    context, feedback = new_context(), RecordingFeedback()
    layers = {}
    for style in _outputs.STYLES:
        layers[style] = QgsVectorLayer(f"{run_gpkg}|layername={style}", style, "ogr")
        qgis_new_project.addMapLayer(layers[style])
    _outputs.StyleOnLoad("embeddings").postProcessLayer(layers["embeddings"], context, feedback)
    _outputs.StyleOnLoad("clusters").postProcessLayer(layers["clusters"], context, feedback)
    processor = _outputs.StyleOnLoad("predictions", "robbery")
    processor.postProcessLayer(layers["predictions"], context, feedback)
    assert isinstance(layers["embeddings"].renderer(), QgsSingleSymbolRenderer)
    assert isinstance(layers["clusters"].renderer(), QgsCategorizedSymbolRenderer)
    assert layers["predictions"].renderer().classAttribute() == "robbery_pred"
    assert processor.residuals_layer is not None
    assert processor.residuals_layer.renderer().classAttribute() == "robbery_res"
    assert qgis_new_project.mapLayer(processor.residuals_layer.id()) is not None
    # a label the layer lacks is reported, not raised: a finished run must not fail over styling
    _outputs.StyleOnLoad("predictions", "nonexistent").postProcessLayer(layers["predictions"], context, feedback)
    assert any("nonexistent_pred" in error for error in feedback.errors)


# ---------------------------------------------------------------------------------------------- cancel, failures


def test_cancel_during_run_leaves_no_output(provider, processing_module, backend_python: Path, tmp_path: Path) -> None:
    feedback = RecordingFeedback()
    timers: list[threading.Timer] = []

    def cancel_soon(_progress: float) -> None:  # once the worker reports progress: it is running
        if not timers:
            timers.append(threading.Timer(0.3, feedback.cancel))
            timers[0].start()

    feedback.progressChanged.connect(cancel_soon)
    out = tmp_path / "cancelled"
    params = {  # default prediction settings: long enough to be cancelled mid-run
        "REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "POIS": str(POIS), "POI_CATEGORY": "category",
        "LABEL_FIELDS": ["Population"], "DEVICE": 1, "OUTPUT_DIR": str(out),
    }  # fmt: skip
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing_module.run("regionlens:embed", params, feedback=feedback)
    assert timers and feedback.isCanceled()
    assert not (out / "regionlens.gpkg").exists()
    assert not [path for path in tmp_path.rglob("*.gpkg")]  # no staging copy left behind either


def test_missing_backend_says_how_to_set_it_up(
    provider, processing_module, monkeypatch: pytest.MonkeyPatch, run_gpkg: Path, tmp_path: Path
) -> None:
    monkeypatch.setattr(_base, "find_backend_python", lambda *args: None)
    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id", "OUTPUT": str(tmp_path / "c.gpkg")}
    with pytest.raises(QgsProcessingException) as info:
        processing_module.run("regionlens:cluster", params, feedback=RecordingFeedback())
    message = str(info.value)
    assert "setup" in message and "make setup" in message and "Options \u203a RegionLens" in message


def test_worker_error_becomes_processing_exception(
    provider, processing_module, backend_python: Path, run_gpkg: Path, tmp_path: Path
) -> None:
    output = tmp_path / "c.gpkg"
    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "NO_SUCH_ID", "OUTPUT": str(output)}
    with pytest.raises(QgsProcessingException, match="NO_SUCH_ID") as info:
        processing_module.run("regionlens:cluster", params, feedback=RecordingFeedback())
    assert "Traceback" not in str(info.value)  # the user's input was at fault: the message alone
    assert not output.exists()


def test_dead_worker_becomes_processing_exception(
    provider, processing_module, monkeypatch: pytest.MonkeyPatch, run_gpkg: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ImportError: no module named torch' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(_base, "find_backend_python", lambda *args: fake)
    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id", "OUTPUT": str(tmp_path / "c.gpkg")}
    with pytest.raises(QgsProcessingException, match=r"(?s)exit 3.*no module named torch"):
        processing_module.run("regionlens:cluster", params, feedback=RecordingFeedback())


def test_killed_worker_leaves_no_staging_folder(
    provider, processing_module, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    unmarked = tmp_path / ".run.tmp-notours"  # not written by the backend: kept
    unmarked.mkdir()
    fake = tmp_path / "python"  # a worker killed while writing: its staging folder names it, then it dies
    fake.write_text(
        "#!/bin/sh\n"
        f"mkdir -p '{tmp_path}/.run.tmp-abc'\n"
        f"echo \"{{\\\"pid\\\": $$}}\" > '{tmp_path}/.run.tmp-abc/.regionlens-staging'\n"
        "kill -9 $$\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(_base, "find_backend_python", lambda *args: fake)
    params = {"REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "POIS": str(POIS), "POI_CATEGORY": "category",
              "OUTPUT_DIR": str(out), **FAST}
    with pytest.raises(QgsProcessingException, match="-9"):
        processing_module.run("regionlens:embed", params, feedback=RecordingFeedback())
    assert not (tmp_path / ".run.tmp-abc").exists() and unmarked.is_dir() and not out.exists()


# ---------------------------------------------------------------------------------------------- inputs


def test_raster_inputs(tmp_path: Path) -> None:
    context, feedback = new_context(), RecordingFeedback()
    local = QgsRasterLayer(str(LANDSAT), "landsat", "gdal")
    assert raster_input(local, tmp_path, context, feedback) == {"path": str(LANDSAT.resolve())}
    archive = tmp_path / "landsat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(LANDSAT, LANDSAT.name)
    zipped = QgsRasterLayer(f"/vsizip/{archive}/{LANDSAT.name}", "Landsat (zipped)", "gdal")
    assert zipped.isValid()
    entry = raster_input(zipped, tmp_path, context, feedback)
    assert entry["name"] == "Landsat_zipped"
    exported = QgsRasterLayer(entry["path"], "exported", "gdal")
    assert Path(entry["path"]).suffix == ".tif" and exported.isValid()
    assert (exported.width(), exported.height(), exported.bandCount()) == (
        zipped.width(), zipped.height(), zipped.bandCount()
    )
    assert exported.crs() == zipped.crs()


# ---------------------------------------------------------------------------------------------- qgis_process


def test_qgis_process_lists_and_runs_the_algorithms(
    repo_root: Path, backend_python: Path, run_gpkg: Path, tmp_path: Path
) -> None:
    exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not Path(exe).is_file():
        pytest.skip("qgis_process.bin is not installed")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "regionlens").symlink_to(repo_root, target_is_directory=True)
    # A fresh profile (not the user's, nor the tests' .qgis-settings that pytest-qgis points QGIS_* at).
    inherited = {"QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"}
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins), XDG_DATA_HOME=str(tmp_path / "profile"))

    def qgis_process(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    enabled = qgis_process("plugins", "enable", "regionlens")  # once per profile
    assert enabled.returncode == 0, enabled.stderr
    assert (tmp_path / "profile" / "QGIS" / "QGIS3" / "profiles" / "default" / "QGIS" / "QGIS3.ini").is_file()
    listed = qgis_process("list")
    assert listed.returncode == 0, listed.stderr
    for alg_id in ALGORITHM_IDS:
        assert alg_id in listed.stdout
    output = tmp_path / "clusters.gpkg"
    ran = qgis_process("--json", "run", "regionlens:cluster", "--", f"INPUT={run_gpkg}|layername=embeddings",
                       "ID_FIELD=region_id", "K=3", f"OUTPUT={output}")  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = json.loads(ran.stdout)["results"]
    assert results["N_CLUSTERS"] == 3
    assert output.is_file()


def test_processing_methods_come_from_the_backend(provider, backend_python, repo_root) -> None:
    """No list of methods in the plugin: the toolbox offers what the backend describes (``info``)."""
    out = subprocess.run([str(backend_python), "-c", "from backend.models import EMBEDDERS; print(*EMBEDDERS)"],
                         cwd=repo_root, capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    backend = out.stdout.split()
    assert provider.algorithm("embed").parameterDefinition("METHOD").options() == backend
    assert _base.METHODS is METHODS  # the plugin's one registry, filled from the backend
    cached = json.loads(info_cache_path().read_text())  # so the next start needs no worker
    assert list(cached["info"]["methods"]) == backend


def test_embed_sends_od_and_land_use_like_the_dock(provider, processing_module, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """The OD table and the land-use layer reach the run configuration as the dock sends them (backend/config.py)."""
    from plugin.processing import embed as embed_module

    od = tmp_path / "trips.csv"
    od.write_text("from,to,trips\n060750101001,060750101002,3\n")
    sent: list[dict] = []

    def capture(_python, action, config, _feedback):
        sent.append({"action": action, **json.loads(json.dumps(config))})
        raise QgsProcessingException("stop here")

    monkeypatch.setattr(embed_module, "run_backend", capture)
    params = {
        "REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "OD_TABLE": str(od), "OD_ORIGIN": "from",
        "OD_DESTINATION": "to", "OD_COUNT": "trips", "LANDUSE": str(BLOCKS), "LANDUSE_CLASS": "LSAD",
        "OUTPUT_DIR": str(tmp_path / "out"),
    }  # fmt: skip
    with pytest.raises(QgsProcessingException, match="stop here"):
        processing_module.run("regionlens:embed", params, feedback=RecordingFeedback())
    (config,) = sent
    assert config["action"] == "run"
    assert config["od"] == {"path": str(od.resolve()), "origin_field": "from", "destination_field": "to",
                            "count_field": "trips"}  # fmt: skip
    assert config["landuse"]["class_field"] == "LSAD" and config["landuse"]["path"].endswith("landuse.gpkg")
    assert config["methods"] == [{"name": "baseline", "dim": 32, "params": {}}]  # the dock's default method
    assert config["labels"] == [] and config["prediction"] is None


def test_embed_context_ensemble_and_fusion_match_the_dock(
    provider, processing_module, backend_info: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    qgis_new_project: QgsProject,
) -> None:  # fmt: skip
    """CONTEXT and ENSEMBLE (advanced) offer what the backend describes, default as the dock does, and give the
    run configuration the dock builds for the same choices: fusion first, the ensemble on learned methods only."""
    from plugin.parameters import to_run_config
    from plugin.processing import embed as embed_module

    METHODS.update_from_info(backend_info)
    provider.refreshAlgorithms()
    learned = next(n for n, d in backend_info["methods"].items() if d["ensemble"] and d["views"] == ["poi_points"])
    fusion = next(n for n, d in backend_info["methods"].items() if d["combines_methods"])
    presets = [name for name, spec in backend_info["context_presets"].items() if spec]
    algorithm = provider.algorithm("embed")
    context_param = algorithm.parameterDefinition("CONTEXT")
    ensemble_param = algorithm.parameterDefinition("ENSEMBLE")
    defaults = RunChoices()
    assert context_param.options() == ["none", *presets]
    assert context_param.defaultValue() == (defaults.context or "none")
    assert ensemble_param.defaultValue() == defaults.ensemble
    assert ensemble_param.maximum() == backend_info["limits"]["ensemble"][1]
    for param in (context_param, ensemble_param):
        assert param.flags() & param.Flag.FlagAdvanced and param.help()

    sent: list[dict] = []

    def capture(_python, action, config, _feedback):
        sent.append(json.loads(json.dumps(config)))
        raise QgsProcessingException("stop here")

    monkeypatch.setattr(embed_module, "run_backend", capture)
    params = {
        "REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "POIS": str(POIS), "POI_CATEGORY": "category",
        "LABEL_FIELDS": ["Population"], "METHOD": ["baseline", learned, fusion], "CONTEXT": presets[-1],
        "ENSEMBLE": 3, "OUTPUT_DIR": str(tmp_path / "out"),
    }  # fmt: skip
    with pytest.raises(QgsProcessingException, match="stop here"):
        processing_module.run("regionlens:embed", params, feedback=RecordingFeedback())
    (processed,) = sent

    regions = QgsVectorLayer(str(BLOCKS), "regions", "ogr")
    pois = QgsVectorLayer(str(POIS), "pois", "ogr")
    qgis_new_project.addMapLayers([regions, pois])
    choices = RunChoices(
        region_layer_id=regions.id(), region_id_field="GEO_ID", poi_layer_id=pois.id(), poi_category_field="category",
        labels=[LabelChoice(field="Population")], context=presets[-1], ensemble=3,
        methods=[METHODS.choice("baseline"), METHODS.choice(learned), METHODS.choice(fusion)],
        output_dir=str(tmp_path / "dock"),
    )  # fmt: skip
    docked = to_run_config(choices, project=qgis_new_project)

    def same(config: dict) -> dict:
        return {
            "context": config.get("context"),
            "methods": [(m["name"], m["dim"], m.get("ensemble")) for m in config["methods"]],
            "labels": config["labels"], "prediction": config["prediction"], "clustering": config["clustering"],
            "seed": config["seed"], "device": config["device"],
        }  # fmt: skip

    assert same(processed) == same(docked)
    assert same(processed)["methods"][0][0] == fusion
    assert [m[2] for m in same(processed)["methods"]] == [None, None, 3]
    assert same(processed)["context"] == presets[-1]

    # fusion alone is refused before anything runs, with the dock's words.
    alone = dict(params, METHOD=[fusion])
    ok, message = algorithm.checkParameterValues(alone, new_context())
    assert not ok and "choose at least one other method" in message


# ---------------------------------------------------------------------------------------------- similar


def test_similar_by_typed_ids_and_by_selection(provider, processing_module, backend_python: Path, run_gpkg: Path,
                                               tmp_path: Path, qgis_new_project: QgsProject) -> None:
    from plugin.common import common

    output = tmp_path / "similar.gpkg"
    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id", "REGION_IDS": "r01, r02",
              "TOP": 3, "OUTPUT": str(output)}  # fmt: skip
    results = processing_module.run("regionlens:similar", params, feedback=RecordingFeedback())
    rows = _similarity_rows(results["SIMILARITY"])
    assert len(rows) == 12
    assert {r for r, f in rows.items() if f[common.SIMILAR_CHOSEN_FIELD] == 1} == {"r01", "r02"}
    top = {r for r, f in rows.items() if f[common.SIMILAR_TOP_FIELD] == 1}
    assert len(top) == 3 and not top & {"r01", "r02"}
    assert all(-1.0 <= f[common.SIMILARITY_FIELD] <= 1.0 for f in rows.values())

    embeddings = QgsVectorLayer(f"{run_gpkg}|layername=embeddings", "embeddings", "ogr")
    qgis_new_project.addMapLayer(embeddings)
    embeddings.selectByExpression("\"region_id\" = 'r05'")
    params.update(INPUT=embeddings.id(), REGION_IDS="", OUTPUT=str(tmp_path / "selected.gpkg"))
    results = processing_module.run("regionlens:similar", params, feedback=RecordingFeedback())
    chosen = [r for r, f in _similarity_rows(results["SIMILARITY"]).items() if f[common.SIMILAR_CHOSEN_FIELD] == 1]
    assert chosen == ["r05"]

    embeddings.removeSelection()
    params.update(OUTPUT=str(tmp_path / "none.gpkg"))
    with pytest.raises(QgsProcessingException, match="Choose the regions to compare with"):
        processing_module.run("regionlens:similar", params, feedback=RecordingFeedback())
    params.update(REGION_IDS="r99", OUTPUT=str(tmp_path / "bad.gpkg"))
    with pytest.raises(QgsProcessingException, match="Unknown region ids: r99"):
        processing_module.run("regionlens:similar", params, feedback=RecordingFeedback())
    assert not (tmp_path / "bad.gpkg").exists() and not (tmp_path / "none.gpkg").exists()
    qgis_new_project.removeMapLayer(embeddings.id())


def _similarity_rows(uri: str) -> dict[str, dict[str, object]]:
    """The similarity layer's rows as plain values (no QGIS layer or feature outlives this call)."""
    layer = QgsVectorLayer(uri, "similarity", "ogr")
    assert layer.isValid()
    rows = {f["region_id"]: {name: f[name] for name in layer.fields().names()} for f in layer.getFeatures()}
    del layer
    return rows


def test_similar_loads_styled(provider, processing_module, backend_python: Path, run_gpkg: Path, tmp_path: Path,
                              qgis_new_project: QgsProject) -> None:
    """Run and loaded from the toolbox: graduated by similarity, the top N outlined (plugin/styling.py)."""
    from qgis.core import QgsGraduatedSymbolRenderer, QgsSymbolLayer

    params = {"INPUT": f"{run_gpkg}|layername=embeddings", "ID_FIELD": "region_id", "REGION_IDS": "r04",
              "TOP": 2, "OUTPUT": str(tmp_path / "similar.gpkg")}  # fmt: skip
    processing_module.runAndLoadResults("regionlens:similar", params, feedback=RecordingFeedback())
    (loaded,) = qgis_new_project.mapLayersByName("Similarity")
    renderer = loaded.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "similarity"
    ranges = renderer.ranges()  # copies: keep them while their symbols are used
    symbol = ranges[0].symbol()
    assert symbol.symbolLayer(1).dataDefinedProperties().hasProperty(QgsSymbolLayer.Property.PropertyStrokeWidth)
