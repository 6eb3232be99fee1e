"""The metrics dialog opens on a leaderboard: best method per label, both protocols, a clear lead or not, a chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import ogr

from plugin.ui import leaderboard
from plugin.ui.leaderboard import LEADERBOARD_FIGURE, LeaderboardWidget, summarise
from plugin.ui.metrics_dialog import COLUMNS, MetricsDialog


def _row(method: str, label: str, protocol: str, r2: float, std: float | None, model: str = "ridge") -> dict:
    return {"method": method, "label": label, "target": f"log1p({label} per km2)", "units": "log1p(per km\u00b2)",
            "model": model, "protocol": protocol, "n_regions": 579, "r2_mean": r2, "r2_std": std,
            "mae_mean": 0.5, "mae_std": 0.01, "rmse_mean": 0.7, "rmse_std": 0.02}  # fmt: skip


ROWS = [
    # population: fusion leads hafusion by 0.10 under spatial folds, repeats spread 0.02: a clear lead.
    _row("fusion", "population", "shuffled", 0.54, 0.01), _row("fusion", "population", "spatial", 0.41, 0.02),
    _row("hafusion", "population", "shuffled", 0.56, 0.03), _row("hafusion", "population", "spatial", 0.31, 0.02),
    _row("baseline", "population", "shuffled", 0.47, 0.01), _row("baseline", "population", "spatial", 0.30, 0.01),
    # robbery: hafusion (its boosting model) leads baseline by 0.01 with a spread of 0.05: no clear winner.
    _row("hafusion", "robbery", "spatial", 0.20, 0.05), _row("hafusion", "robbery", "spatial", 0.33, 0.05, "gbm"),
    _row("hafusion", "robbery", "shuffled", 0.40, 0.04, "gbm"),
    _row("baseline", "robbery", "spatial", 0.32, 0.01), _row("baseline", "robbery", "shuffled", 0.38, 0.01),
]  # fmt: skip


def test_summary_ranks_by_spatial_folds_and_tests_the_lead_against_the_spread() -> None:
    population, robbery = summarise(ROWS)
    assert population.label == "population" and population.protocol == "spatial"
    assert population.best.method == "fusion"  # hafusion is higher under shuffled folds only
    assert population.other.protocol == "shuffled" and population.other.mean == pytest.approx(0.54)
    assert population.runner_up.method == "hafusion"
    assert population.lead == pytest.approx(0.10) and population.spread == pytest.approx(0.02)
    assert population.clear_lead and population.lead_text() == "clear: +0.100 > 0.020"
    assert robbery.best.method == "hafusion" and robbery.best.model == "gbm"  # the method's best model counts
    assert robbery.lead == pytest.approx(0.01) and robbery.spread == pytest.approx(0.05)
    assert not robbery.clear_lead and robbery.lead_text() == "not clear: +0.010 \u2264 0.050"


def test_without_spatial_scores_ranks_by_shuffled_and_one_repeat_has_no_verdict() -> None:
    rows = [_row("a", "pop", "shuffled", 0.5, None), _row("b", "pop", "shuffled", 0.2, None)]
    (summary,) = summarise(rows)
    assert summary.protocol == "shuffled" and summary.best.method == "a" and summary.other is None
    assert not summary.clear_lead and summary.lead_text() == "+0.300 (one repeat: no spread)"


def test_dialog_opens_on_the_summary_with_a_chart(qtbot) -> None:
    dialog = MetricsDialog(ROWS)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.tabs.currentIndex() == 0 and dialog.tabs.tabText(0) == "Summary"
    assert dialog.tabs.tabText(1) == "Full table"
    board = dialog.leaderboard
    assert board.table.rowCount() == 2
    assert board.cell(0, 0) == "population\nlog1p(per km\u00b2)"
    assert board.cell(0, 1) == "fusion (ridge)"
    assert board.cell(0, 2) == "0.540 \u00b1 0.010" and board.cell(0, 3) == "0.410 \u00b1 0.020"
    assert board.cell(0, 4) == "hafusion\n0.310 \u00b1 0.020"
    assert board.cell(0, 5) == "clear: +0.100 > 0.020"
    assert board.cell(1, 5).startswith("not clear")
    assert "spatially blocked" in board.note.text()
    # The chart: one panel per protocol, one bar per method and label, error bars of the std.
    axes = board.figure.axes
    assert [a.get_ylabel() for a in axes] == ["R\u00b2 (shuffled)", "R\u00b2 (spatial)"]
    spatial = axes[1]
    heights = sorted(round(p.get_height(), 3) for p in spatial.patches)
    assert heights == [0.3, 0.31, 0.32, 0.33, 0.41]  # fusion scored population only
    assert [t.get_text() for t in spatial.get_xticklabels()] == ["population", "robbery"]
    from matplotlib.container import BarContainer

    bars = [c for c in spatial.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == ["fusion", "hafusion", "baseline"]
    assert all(c.errorbar is not None for c in bars)
    (segment,) = bars[0].errorbar.lines[2][0].get_segments()  # fusion's population bar: 0.41 +- 0.02
    assert sorted(segment[:, 1]) == pytest.approx([0.39, 0.43])
    # The full table is a tab away, with its units and model columns.
    assert dialog.row_count() == len(ROWS)
    assert dialog.cell(0, [k for _h, k in COLUMNS].index("units")) == "log1p(per km\u00b2)"


def test_coverage_column(run_gpkg: Path, qtbot) -> None:
    """Runs with prediction intervals add a coverage to each metrics row: the table shows it in percent."""
    ds = ogr.Open(str(run_gpkg), 1)
    layer = ds.GetLayerByName("metrics")
    assert layer.CreateField(ogr.FieldDefn("coverage", ogr.OFTReal)) == 0
    for i, feature in enumerate(list(layer)):
        feature.SetField("coverage", 0.9 - 0.01 * i)
        assert layer.SetFeature(feature) == 0
    ds = None  # noqa: F841 - flush
    dialog = MetricsDialog.from_gpkg(run_gpkg)
    qtbot.addWidget(dialog)
    column = [k for _h, k in COLUMNS].index("coverage")
    shown = sorted(dialog.cell(r, column) for r in range(dialog.row_count()))
    assert shown[-1] == "90.0 %" and shown[0] == "87.0 %"
    assert dialog.table.horizontalHeaderItem(column).text() == "Interval coverage"


def test_without_matplotlib_the_runs_figure_is_shown(run_gpkg: Path, qtbot, monkeypatch) -> None:
    from qgis.PyQt.QtGui import QColor, QImage

    from plugin.explorer import plot

    def missing():
        raise ImportError("matplotlib is missing")

    monkeypatch.setattr(plot, "require_matplotlib", missing)
    figure = run_gpkg.parent / LEADERBOARD_FIGURE
    figure.parent.mkdir()
    image = QImage(40, 20, QImage.Format.Format_RGB32)
    image.fill(QColor("#336699"))
    assert image.save(str(figure))
    board = LeaderboardWidget(ROWS, run_gpkg.parent)
    qtbot.addWidget(board)
    assert board.figure is None and board.chart_label.pixmap() is not None
    assert board.chart_label.pixmap().width() == 40
    empty = LeaderboardWidget(ROWS, run_gpkg.parent / "elsewhere")
    qtbot.addWidget(empty)
    assert "matplotlib is missing" in empty.chart_label.text()
    assert leaderboard.summarise([]) == []
