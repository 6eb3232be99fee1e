"""RunTask end to end with the real backend worker on the sample city (plugin/tasks.py)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsCategorizedSymbolRenderer, QgsProject, QgsTask

from plugin.results import load_run_outputs
from plugin.tasks import RunCancelled, RunFailed, RunParameters, RunSucceeded, RunTask


def sample_config(repo_root: Path) -> dict:
    """A small, fast configuration on the bundled sample city."""
    sf = repo_root / "resources" / "sample_data" / "sf"
    return {
        "regions": {"path": str(sf / "sf_block_groups_crime_pop.geojson"), "id_field": "GEO_ID"},
        "pois": {"path": str(sf / "sf_pois_osm.geojson"), "category_field": "category"},
        "methods": [{"name": "baseline", "dim": 8}],
        "labels": [{"name": "population", "field": "Population", "target": "density", "log1p": True}],
        "clustering": {"k": 4},
        "prediction": {"folds": 3, "repeats": 1, "models": ["ridge"]},
    }


def test_run_task_end_to_end(
    backend_python: Path,
    repo_root: Path,
    tmp_path: Path,
    qgis_new_project: QgsProject,
    qtbot,
) -> None:
    outcomes: list = []
    progress: list[float] = []
    params = RunParameters(backend_python, sample_config(repo_root), tmp_path / "run_sf")
    task = RunTask(params, on_finished=outcomes.append)
    task.progressChanged.connect(progress.append)
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=240_000)

    outcome = outcomes[0]
    assert isinstance(outcome, RunSucceeded), outcome
    assert outcome.device in {"cpu", "cuda", "mps"}
    assert outcome.seconds > 0
    assert outcome.gpkg == (tmp_path / "run_sf" / "regionlens.gpkg").resolve()
    assert outcome.gpkg.is_file()
    assert all(Path(figure).is_file() for figure in outcome.result["figures"])
    assert progress and max(progress) > 50

    layers = load_run_outputs(outcome.gpkg, qgis_new_project, label="population")
    assert {"clusters", "predictions", "residuals", "embeddings", "metrics"} <= set(layers)
    assert all(layer.isValid() for layer in layers.values())
    renderer = layers["clusters"].renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert len(renderer.categories()) == 4
    assert layers["predictions"].renderer().classAttribute() == "population_pred"
    assert layers["residuals"].renderer().classAttribute() == "population_res"
    assert layers["clusters"].featureCount() > 500


def test_run_task_reports_bad_input(backend_python: Path, repo_root: Path, tmp_path: Path, qtbot) -> None:
    config = sample_config(repo_root)
    config["regions"] = {"path": str(tmp_path / "missing.geojson"), "id_field": "GEO_ID"}
    outcomes: list = []
    task = RunTask(RunParameters(backend_python, config, tmp_path / "run_bad"), on_finished=outcomes.append)
    ok = task.run()  # in this thread: no task manager needed
    task.finished(ok)
    assert ok is False
    qtbot.waitUntil(lambda: bool(outcomes), timeout=5_000)  # handed over on the next event-loop pass
    assert len(outcomes) == 1
    outcome = outcomes[0]
    assert isinstance(outcome, RunFailed), outcome
    assert outcome.kind in {"input", "config"}
    assert "missing.geojson" in outcome.message
    assert not (tmp_path / "run_bad" / "regionlens.gpkg").exists()


def test_run_task_cancel(backend_python: Path, repo_root: Path, tmp_path: Path, qtbot) -> None:
    outcomes: list = []
    notices: list[str] = []  # what QGIS's own end-of-task notice would say (qgisapp.cpp: complete or failed)
    params = RunParameters(backend_python, sample_config(repo_root), tmp_path / "run_cancel", cancel_grace=3.0)
    task = RunTask(params, on_finished=lambda outcome: outcomes.append(outcome) or notices.append("RegionLens"),
                   description="RegionLens: run_cancel")
    manager = QgsApplication.taskManager()

    def qgis_notice(task_id: int, status: int) -> None:
        ended = manager.task(task_id)
        if ended is not None and status in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated):
            word = "Task complete" if status == QgsTask.TaskStatus.Complete else "Task failed"
            notices.append(f"{word}: {ended.description()}")

    manager.statusChanged.connect(qgis_notice)
    try:
        manager.addTask(task)
        qtbot.waitUntil(lambda: bool(task.status.stage) or bool(outcomes), timeout=60_000)
        assert not outcomes, outcomes  # still running
        task.cancel()
        qtbot.waitUntil(lambda: bool(outcomes), timeout=30_000)
    finally:
        manager.statusChanged.disconnect(qgis_notice)
    assert isinstance(outcomes[0], RunCancelled), outcomes[0]
    assert "cancelled" in outcomes[0].message
    assert not (tmp_path / "run_cancel" / "regionlens.gpkg").exists()
    # QGIS's notice reads as a cancelled run, not a failed one, and RegionLens reports after it (on top).
    assert notices == ["Task complete: RegionLens: run_cancel (cancelled)", "RegionLens"]


def test_run_task_cancelled_before_start(tmp_path: Path, qtbot) -> None:
    outcomes: list = []
    task = RunTask(RunParameters(tmp_path / "python", {}, tmp_path / "out"), on_finished=outcomes.append)
    task.cancel()
    ok = task.run()
    task.finished(ok)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=5_000)
    assert ok is True and isinstance(outcomes[0], RunCancelled)


def test_run_task_missing_backend(tmp_path: Path) -> None:
    task = RunTask(RunParameters(tmp_path / "no" / "python", {}, tmp_path / "out"))
    assert task.run() is False
    assert isinstance(task.outcome, RunFailed)
    assert task.outcome.kind == "startup"
