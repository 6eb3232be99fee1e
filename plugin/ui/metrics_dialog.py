"""The run's ``metrics`` table (docs/protocol.md): a leaderboard summary, and the full sortable table a tab away.

The dialog opens on the *Summary* tab (:mod:`.leaderboard`: per label the best method, its R2 under both
protocols and whether its lead is larger than the spread over repeats; a bar chart of every method's R2).
The *Full table* tab has one row per method, label, target, model and protocol: R2 (mean ± std over the
repeats), MAE and RMSE, in the modelled space, whose units the ``Units`` column gives (e.g.
``log1p(per km²)``); the dialog says when scores are in log1p space. An R2 below 0 (worse than
predicting the mean) is highlighted and explained. The ``Interval coverage`` column is the share of
regions whose observed value fell inside their prediction interval (``<label>_lo`` .. ``<label>_hi``),
when the run wrote intervals. Click a header to sort; numbers sort by their mean.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qgis.core import QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..common import common
from ..results import open_gpkg_layer
from .leaderboard import LeaderboardWidget

__all__ = ["COLUMNS", "NEGATIVE_R2", "MetricsDialog", "metrics_rows", "units_note"]

#: (header, metrics field or metric name) of the table's columns.
COLUMNS = (
    ("Method", "method"),
    ("Label", "label"),
    ("Target", "target"),
    ("Units", "units"),
    ("Model", "model"),
    ("Protocol", "protocol"),
    ("R\u00b2 mean \u00b1 std", "r2"),
    ("MAE", "mae"),
    ("RMSE", "rmse"),
    ("Interval coverage", "coverage"),
)
_TEXT_FIELDS = ("method", "label", "target", "units", "model", "protocol")
_METRICS = ("r2", "mae", "rmse", "coverage")
#: Tooltip and note of an R2 below 0.
NEGATIVE_R2 = "R\u00b2 below 0: worse than predicting the mean of the label for every region."
_NEGATIVE_BACKGROUND = "#f8d0d0"


def _is_log1p(row: dict[str, Any]) -> bool:
    return any(str(row.get(key) or "").startswith("log1p") for key in ("units", "target"))


def units_note(rows: list[dict[str, Any]]) -> str:
    """What the scores' units are, in words: which labels were scored in log1p space."""
    logged = sorted({str(row.get("label") or "") for row in rows if _is_log1p(row)})
    text = "Scores are computed in the units of the Units column (the modelled quantity), not in the map's units."
    if logged:
        text += (
            f" {', '.join(logged)}: scored in log1p space, on log(1 + value); an MAE of 0.1 there means "
            "predictions off by about 10%, not by 0.1 of the label."
        )
    return text


def metrics_rows(layer: QgsVectorLayer) -> list[dict[str, Any]]:
    """The rows of a ``metrics`` table layer as dicts (NULL -> ``None``)."""
    names = layer.fields().names()
    rows = []
    for feature in layer.getFeatures():
        row: dict[str, Any] = {}
        for name in names:
            value = feature[name]
            row[name] = None if value is None or (hasattr(value, "isNull") and value.isNull()) else value
        rows.append(row)
    return rows


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


class _SortItem(QTableWidgetItem):
    """A cell that sorts by a key (numbers before missing values) instead of its text."""

    def __init__(self, text: str, key: Any) -> None:
        super().__init__(text)
        self.key = key
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        other_key = getattr(other, "key", other.text())
        try:
            return self.key < other_key
        except TypeError:
            return str(self.key) < str(other_key)


class MetricsDialog(QDialog):
    """A sortable table of a run's metrics.

    Args:
        rows: Metrics rows (dicts with the fields of the ``metrics`` table).
        title: Window title.
        parent: Parent widget.
    """

    def __init__(self, rows: list[dict[str, Any]], title: str = "RegionLens metrics", parent: QWidget | None = None,
                 run_dir: str | Path | None = None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(820, 640)
        outer = QVBoxLayout(self)
        self.tabs = QTabWidget(self)
        outer.addWidget(self.tabs)
        self.leaderboard = LeaderboardWidget([], run_dir, self.tabs)  # filled by set_rows
        self.tabs.addTab(self.leaderboard, "Summary")
        full = QWidget(self.tabs)
        self.tabs.addTab(full, "Full table")
        layout = QVBoxLayout(full)
        note = QLabel(
            "Out-of-fold scores of each label predicted from the embeddings (mean \u00b1 std over repeats). "
            "Click a header to sort.",
            self,
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        self.units_label = QLabel("", self)
        self.units_label.setWordWrap(True)
        layout.addWidget(self.units_label)
        self.negative_label = QLabel(NEGATIVE_R2 + " Such rows are shaded red.", self)
        self.negative_label.setWordWrap(True)
        self.negative_label.setStyleSheet("QLabel { color: #c62828; }")
        layout.addWidget(self.negative_label)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels([header for header, _key in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        copy = buttons.addButton("Copy table", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda _checked=False: QApplication.clipboard().setText(self.as_text()))
        buttons.rejected.connect(self.reject)
        outer.addWidget(buttons)
        self.set_rows(rows)
        self._fit_width()

    def _fit_width(self) -> None:
        """Open wide enough to show every column (R2, MAE and RMSE without scrolling), within the screen."""
        self.table.resizeColumnsToContents()
        margins = self.layout().contentsMargins()
        inner = self.table.parentWidget().layout().contentsMargins()
        wanted = (self.table.horizontalHeader().length() + 2 * self.table.frameWidth() + inner.left() + inner.right()
                  + self.table.verticalScrollBar().sizeHint().width() + margins.left() + margins.right())
        screen = QApplication.primaryScreen()
        limit = screen.availableGeometry().width() - 40 if screen is not None else wanted
        self.resize(max(self.width(), min(wanted, limit)), self.height())

    @classmethod
    def from_layer(cls, layer: QgsVectorLayer, title: str | None = None, parent: QWidget | None = None):
        """The dialog for a ``metrics`` table layer."""
        return cls(metrics_rows(layer), title or "RegionLens metrics", parent)

    @classmethod
    def from_gpkg(cls, gpkg: str | Path, parent: QWidget | None = None) -> MetricsDialog:
        """The dialog for a run's ``regionlens.gpkg``.

        Raises:
            ValueError: If the GeoPackage has no ``metrics`` table.
        """
        layer = open_gpkg_layer(gpkg, common.TABLE_METRICS, "Metrics")
        run_dir = Path(gpkg).resolve().parent
        return cls(metrics_rows(layer), f"RegionLens metrics \u2014 {run_dir.name}", parent, run_dir)

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        """Fill the summary and the table (sorted by method, label, protocol and model)."""
        self.leaderboard.set_rows(rows)
        self.table.setSortingEnabled(False)
        order = ("method", "label", "protocol", "model", "target")
        rows = sorted(rows, key=lambda row: tuple(str(row.get(k) or "") for k in order))
        self.units_label.setText(units_note(rows))

        negative = False
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (_header, key) in enumerate(COLUMNS):
                if key in _TEXT_FIELDS:
                    text = "" if row.get(key) is None else str(row[key])
                    item = _SortItem(text, text)
                else:
                    mean, std = _number(row.get(f"{key}_mean", row.get(key))), _number(row.get(f"{key}_std"))
                    if key == "coverage":  # a share of regions, as a percentage
                        text = "" if mean is None else f"{100 * mean:.1f} %" + (
                            "" if std is None else f" \u00b1 {100 * std:.1f}")
                    else:
                        text = "" if mean is None else f"{mean:.3f}" + ("" if std is None else f" \u00b1 {std:.3f}")
                    item = _SortItem(text, (mean is None, mean if mean is not None else 0.0))
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    if key == "r2" and mean is not None and mean < 0:
                        item.setBackground(QBrush(QColor(_NEGATIVE_BACKGROUND)))
                        item.setToolTip(NEGATIVE_R2)
                        negative = True
                self.table.setItem(r, c, item)
        self.negative_label.setVisible(negative)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)

    def row_count(self) -> int:
        """Number of rows shown."""
        return self.table.rowCount()

    def negative_r2_rows(self) -> list[int]:
        """Rows (as shown) whose mean R2 is below 0, highlighted in the table."""
        column = [key for _header, key in COLUMNS].index("r2")
        return [r for r in range(self.table.rowCount()) if self.table.item(r, column).toolTip() == NEGATIVE_R2]

    def cell(self, row: int, column: int) -> str:
        """Text of one cell."""
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def as_text(self) -> str:
        """The table as tab-separated text (with the header)."""
        lines = ["\t".join(header for header, _key in COLUMNS)]
        for r in range(self.table.rowCount()):
            lines.append("\t".join(self.cell(r, c) for c in range(self.table.columnCount())))
        return "\n".join(lines)
