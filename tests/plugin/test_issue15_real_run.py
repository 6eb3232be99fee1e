"""A real run of the backend worker on the sample city, seen through the plugin: the finished message links the
report, the metrics dialog's summary and coverage, the interval-width style, a cluster card from clusters.json."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject

from plugin.clusters import cluster_cards
from plugin.main import RegionLensPlugin
from plugin.report import run_report
from plugin.styling import INTERVAL_STYLE
from plugin.tasks import RunParameters, RunSucceeded
from plugin.ui.metrics_dialog import COLUMNS, MetricsDialog

from .test_run_task import sample_config


def test_a_real_run_in_the_plugin(backend_python: Path, repo_root: Path, tmp_path: Path, qgis_iface,
                                  qgis_new_project: QgsProject, qtbot) -> None:
    config = sample_config(repo_root)
    config["prediction"] = {"folds": 3, "repeats": 2, "models": ["ridge"]}
    plugin = RegionLensPlugin(qgis_iface)
    outcomes: list = []
    qgis_iface.messageBar().clearWidgets()
    try:
        plugin.start_run(RunParameters(backend_python, config, tmp_path / "run_sf"), on_done=outcomes.append)
        qtbot.waitUntil(lambda: bool(outcomes), timeout=300_000)
        outcome = outcomes[0]
        assert isinstance(outcome, RunSucceeded), outcome
        report = run_report(outcome.gpkg)
        assert report is not None and report == Path(outcome.result["report_html"]).resolve()
        finished = [i for i in qgis_iface.messageBar().items() if "finished on" in i.text()]
        assert finished and [b.text() for b in finished[0].action_buttons] == ["Open report"]
        assert finished[0].duration() == 0

        dialog = MetricsDialog.from_gpkg(outcome.gpkg)
        qtbot.addWidget(dialog)
        (summary,) = dialog.leaderboard.summaries
        assert summary.label == "population" and summary.best.method == "baseline" and summary.protocol == "spatial"
        assert summary.best.std is not None and summary.other is not None  # two repeats, both protocols
        coverage = [k for _h, k in COLUMNS].index("coverage")
        shown = [dialog.cell(r, coverage) for r in range(dialog.row_count())]
        assert shown and all(text.endswith("%") for text in shown), shown
        assert len(dialog.leaderboard.figure.axes) == 2

        group = qgis_new_project.layerTreeRoot().findGroup("RegionLens \u2014 run_sf")
        layers = {node.layer().name(): node.layer() for node in group.findLayers()}
        predictions = next(layer for name, layer in layers.items() if name.startswith("Predicted population"))
        assert INTERVAL_STYLE in predictions.styleManager().styles()
        clusters = next(layer for name, layer in layers.items() if name.startswith("Clusters"))
        cards = cluster_cards(clusters)
        assert len(cards) == 4 and sum(card.size for card in cards.values()) == clusters.featureCount()
        first = cards[0]
        assert "clusters.json" in first.source and first.features and first.examples
        assert all(isinstance(f.zscore, float) for f in first.features)
    finally:
        plugin.unload()
        qgis_iface.messageBar().clearWidgets()
