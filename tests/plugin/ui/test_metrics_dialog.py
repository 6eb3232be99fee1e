"""The metrics dialog says in what units and space the scores are, and flags R2 below 0."""

from __future__ import annotations

from pathlib import Path

from plugin.ui.metrics_dialog import COLUMNS, NEGATIVE_R2, MetricsDialog


def _row(method: str, r2: float, units: str = "log1p(per km\u00b2)") -> dict:
    return {"method": method, "label": "robbery", "target": "log1p(Robbery per km\u00b2)", "units": units,
            "model": "ridge", "protocol": "shuffled", "n_regions": 579, "r2_mean": r2, "r2_std": 0.1,
            "mae_mean": 0.5, "mae_std": 0.01, "rmse_mean": 0.7, "rmse_std": 0.02}  # fmt: skip


def test_units_column_and_log1p_note(run_gpkg: Path, qtbot) -> None:
    dialog = MetricsDialog.from_gpkg(run_gpkg)
    qtbot.addWidget(dialog)
    units_column = [key for _header, key in COLUMNS].index("units")
    assert dialog.cell(0, units_column) == "log1p(per km\u00b2)"
    note = dialog.units_label.text()
    assert "log1p space" in note and "population, robbery" in note
    assert not dialog.negative_label.isVisibleTo(dialog.negative_label.parentWidget())
    assert dialog.negative_r2_rows() == []

    dialog.set_rows([{**_row("baseline", 0.3, units="count"), "target": "Robbery"}])
    assert "log1p" not in dialog.units_label.text()


def test_negative_r2_is_highlighted_and_explained(qtbot) -> None:
    dialog = MetricsDialog([_row("baseline", 0.31), _row("hafusion", -3.2), _row("cookie", -0.01)])
    qtbot.addWidget(dialog)
    flagged = sorted(dialog.cell(r, 0) for r in dialog.negative_r2_rows())
    assert flagged == ["cookie", "hafusion"]
    assert dialog.negative_label.isVisibleTo(dialog.negative_label.parentWidget())  # on the Full table tab
    assert "worse than predicting the mean" in dialog.negative_label.text()
    r2_column = [key for _header, key in COLUMNS].index("r2")
    row = next(r for r in range(dialog.row_count()) if dialog.cell(r, 0) == "hafusion")
    assert dialog.table.item(row, r2_column).toolTip() == NEGATIVE_R2


def test_dialog_opens_wide_enough_for_every_column(run_gpkg: Path, qtbot, monkeypatch) -> None:
    """The walk found R2 cut in half and MAE/RMSE behind a scrollbar at the first size (820 px) on a wide
    screen. The offscreen test screen is 800 px wide, so a 2000 px screen is stood in for it."""
    from types import SimpleNamespace

    from qgis.PyQt.QtCore import QRect

    from plugin.ui import metrics_dialog

    wide = SimpleNamespace(availableGeometry=lambda: QRect(0, 0, 2000, 1200))
    monkeypatch.setattr(metrics_dialog.QApplication, "primaryScreen", staticmethod(lambda: wide))
    dialog = MetricsDialog.from_gpkg(run_gpkg)
    qtbot.addWidget(dialog)
    header = dialog.table.horizontalHeader()
    columns = sum(header.sectionSize(i) for i in range(header.count()))
    assert dialog.width() > columns  # every column fits without scrolling
    assert dialog.width() <= 2000 - 40  # and the dialog stays on the screen
