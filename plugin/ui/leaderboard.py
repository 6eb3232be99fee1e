"""The leaderboard: which method predicts each label best, by how much, and a bar chart of every score.

Read from the rows of a run's ``metrics`` table (docs/protocol.md): one per method, label, model and
protocol, with ``r2_mean`` and ``r2_std`` (standard deviation over the repeats). Per label and method the
best model's row counts. Methods are ranked by R2 under the *ranking protocol*: the spatially blocked
folds when the run has them (neighbouring regions cannot leak into the test fold, so they are the honest
score), else the shuffled folds. A leader's lead over the runner-up is called *clear* only when it is
larger than the spread over repeats (the larger of the two methods' standard deviations); otherwise the
two cannot be told apart on this run.

The chart is drawn with matplotlib (one panel per protocol, a group of bars per label, one bar per method,
error bars of one standard deviation); without matplotlib the widget shows the run's own
``figures/leaderboard.png`` when it has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..common import common

__all__ = [
    "PROTOCOLS",
    "LEADERBOARD_FIGURE",
    "LabelSummary",
    "LeaderboardWidget",
    "Score",
    "draw_chart",
    "method_scores",
    "ranking_protocol",
    "summarise",
]

#: Protocols of the ``metrics`` table, in the order the summary shows them.
PROTOCOLS = ("shuffled", "spatial")
#: The run's own chart (written by the backend), relative to the run folder.
LEADERBOARD_FIGURE = Path("figures") / common.LEADERBOARD_PNG
SUMMARY_COLUMNS = ("Label", "Best method", "R\u00b2 shuffled", "R\u00b2 spatial", "Runner-up", "Lead vs. spread")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


@dataclass(frozen=True)
class Score:
    """A method's R2 for one label under one protocol (its best model's row)."""

    method: str
    label: str
    protocol: str
    model: str
    mean: float
    std: float | None  # over the repeats; None with one repeat

    def text(self) -> str:
        """``0.412 ± 0.021`` (or ``0.412`` without a spread)."""
        return f"{self.mean:.3f}" + ("" if self.std is None else f" \u00b1 {self.std:.3f}")


@dataclass(frozen=True)
class LabelSummary:
    """The leaderboard line of one label."""

    label: str
    protocol: str  # the ranking protocol
    best: Score
    other: Score | None  # the best method's score under the other protocol
    runner_up: Score | None
    units: str = ""

    @property
    def lead(self) -> float | None:
        """The best method's R2 minus the runner-up's (ranking protocol)."""
        return None if self.runner_up is None else self.best.mean - self.runner_up.mean

    @property
    def spread(self) -> float | None:
        """The spread over repeats the lead is compared with: the larger of the two standard deviations."""
        if self.runner_up is None:
            return None
        stds = [s for s in (self.best.std, self.runner_up.std) if s is not None]
        return max(stds) if stds else None

    @property
    def clear_lead(self) -> bool:
        """Whether the lead is larger than the spread over repeats (False when either is unknown)."""
        return self.lead is not None and self.spread is not None and self.lead > self.spread

    def lead_text(self) -> str:
        """The lead in words: ``clear: +0.081 > 0.012`` (the spread over repeats), ``not clear: +0.010 ≤ 0.050``,
        ``+0.010 (one repeat: no spread)`` or ``only method``."""
        if self.runner_up is None:
            return "only method"
        if self.spread is None:
            return f"+{self.lead:.3f} (one repeat: no spread)"
        if self.clear_lead:
            return f"clear: +{self.lead:.3f} > {self.spread:.3f}"
        return f"not clear: +{self.lead:.3f} \u2264 {self.spread:.3f}"


def method_scores(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], Score]:
    """The best model's R2 of each (label, protocol, method) among the rows (rows without R2 skipped)."""
    best: dict[tuple[str, str, str], Score] = {}
    for row in rows:
        mean = _number(row.get("r2_mean"))
        method, label, protocol = (str(row.get(k) or "") for k in ("method", "label", "protocol"))
        if mean is None or not method or not label:
            continue
        score = Score(method, label, protocol, str(row.get("model") or ""), mean, _number(row.get("r2_std")))
        key = (label, protocol, method)
        if key not in best or score.mean > best[key].mean:
            best[key] = score
    return best


def ranking_protocol(rows: list[dict[str, Any]]) -> str:
    """``spatial`` when the rows have spatially blocked scores, else ``shuffled`` (or the one protocol there is)."""
    present = {str(row.get("protocol") or "") for row in rows if _number(row.get("r2_mean")) is not None}
    for protocol in ("spatial", "shuffled"):
        if protocol in present:
            return protocol
    return sorted(present)[0] if present else "spatial"


def summarise(rows: list[dict[str, Any]]) -> list[LabelSummary]:
    """One :class:`LabelSummary` per label (in the order the rows first name them)."""
    scores = method_scores(rows)
    protocol = ranking_protocol(rows)
    labels: list[str] = []
    units: dict[str, str] = {}
    for row in rows:
        label = str(row.get("label") or "")
        if label and label not in labels:
            labels.append(label)
        if label and row.get("units") and label not in units:
            units[label] = str(row["units"])
    summaries = []
    for label in labels:
        ranked = sorted((s for (lab, prot, _m), s in scores.items() if lab == label and prot == protocol),
                        key=lambda s: (-s.mean, s.method))
        if not ranked:
            continue
        best = ranked[0]
        others = [p for p in PROTOCOLS if p != protocol]
        other = next((scores[(label, p, best.method)] for p in others if (label, p, best.method) in scores), None)
        summaries.append(LabelSummary(label, protocol, best, other, ranked[1] if len(ranked) > 1 else None,
                                      units.get(label, "")))
    return summaries


def draw_chart(figure, rows: list[dict[str, Any]]) -> None:
    """Bars of R2 per method and label with one-standard-deviation error bars; one panel per protocol.

    Args:
        figure: A matplotlib ``Figure`` (cleared first).
        rows: Metrics rows.
    """
    figure.clear()
    scores = method_scores(rows)
    protocols = [p for p in PROTOCOLS if any(k[1] == p for k in scores)]
    protocols += sorted({k[1] for k in scores} - set(protocols))
    if not protocols:
        axes = figure.add_subplot(1, 1, 1)
        axes.text(0.5, 0.5, "No R\u00b2 scores in this run.", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    labels = list(dict.fromkeys(k[0] for k in scores))
    methods = list(dict.fromkeys(k[2] for k in scores))
    width = 0.8 / max(len(methods), 1)
    axes_list = figure.subplots(len(protocols), 1, sharex=True, squeeze=False)[:, 0]
    for axes, protocol in zip(axes_list, protocols, strict=True):
        for m, method in enumerate(methods):
            xs, heights, errors = [], [], []
            for i, label in enumerate(labels):
                score = scores.get((label, protocol, method))
                if score is None:
                    continue
                xs.append(i - 0.4 + width * (m + 0.5))
                heights.append(score.mean)
                errors.append(score.std or 0.0)
            axes.bar(xs, heights, width * 0.9, yerr=errors, capsize=2, label=method,
                     color=common.cluster_colour(m), edgecolor="#404040", linewidth=0.4)
        axes.axhline(0.0, color="#404040", linewidth=0.6)
        axes.set_ylabel(f"R\u00b2 ({protocol})")
        axes.grid(axis="y", alpha=0.3)
    axes_list[-1].set_xticks(range(len(labels)))
    axes_list[-1].set_xticklabels(labels, rotation=20 if len(labels) > 4 else 0)
    axes_list[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method",
                        title_fontsize="small", frameon=False)  # beside the bars, never over them
    axes_list[0].set_title("R\u00b2 per method and label (mean \u00b1 std over repeats)")
    figure.tight_layout()


class LeaderboardWidget(QWidget):
    """The summary tab of the metrics dialog: a table of the leaders and the bar chart.

    Args:
        rows: Metrics rows.
        run_dir: The run folder (its ``figures/leaderboard.png`` is shown when matplotlib is missing).
        parent: Parent widget.
    """

    def __init__(self, rows: list[dict[str, Any]], run_dir: str | Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.figure = None  # the matplotlib Figure, when matplotlib is there
        self.canvas: QWidget | None = None
        layout = QVBoxLayout(self)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.table = QTableWidget(0, len(SUMMARY_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(SUMMARY_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table)
        self.chart_label = QLabel(self)  # the run's PNG, or why there is no chart
        self.chart_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.chart_label.setWordWrap(True)
        try:
            from ..explorer.plot import require_matplotlib

            figure_class, canvas_class = require_matplotlib()
        except ImportError as exc:
            self._missing = str(exc)
        else:
            self._missing = ""
            self.figure = figure_class(figsize=(7, 4))
            self.canvas = canvas_class(self.figure)
            self.canvas.setParent(self)
            self.canvas.setMinimumHeight(280)
            layout.addWidget(self.canvas, 1)
        layout.addWidget(self.chart_label)
        self.summaries: list[LabelSummary] = []
        self.set_rows(rows)

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        """Show these metrics rows."""
        self.summaries = summarise(rows)
        protocol = self.summaries[0].protocol if self.summaries else ranking_protocol(rows)
        why = ("spatially blocked folds: neighbouring regions cannot leak into the test fold"
               if protocol == "spatial" else f"{protocol} folds (the run has no spatially blocked scores)")
        self.note.setText(
            f"Per label, the method with the highest out-of-fold R\u00b2 under {why}; its R\u00b2 under both "
            "protocols (mean \u00b1 std over repeats), and whether its lead over the runner-up is larger than "
            "that spread (the larger of the two std; when it is not, this run cannot tell the two apart). Units "
            "and models: the Full table tab."
        )
        self.table.setRowCount(len(self.summaries))
        for r, summary in enumerate(self.summaries):
            by_protocol = {summary.best.protocol: summary.best}
            if summary.other is not None:
                by_protocol[summary.other.protocol] = summary.other
            runner = summary.runner_up
            cells = (  # two lines where a cell has two parts, so that the table fits the dialog's width
                summary.label + (f"\n{summary.units}" if summary.units else ""),
                summary.best.method + (f" ({summary.best.model})" if summary.best.model else ""),
                by_protocol["shuffled"].text() if "shuffled" in by_protocol else "",
                by_protocol["spatial"].text() if "spatial" in by_protocol else "",
                "" if runner is None else f"{runner.method}\n{runner.text()}",
                summary.lead_text(),
            )
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == len(cells) - 1 and summary.runner_up is not None:
                    item.setToolTip("Clear: the lead is larger than the spread over repeats."
                                    if summary.clear_lead else
                                    "The lead is not larger than the spread over repeats: no clear winner.")
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()
        self._draw(rows)

    def _draw(self, rows: list[dict[str, Any]]) -> None:
        if self.figure is not None:
            draw_chart(self.figure, rows)
            self.canvas.draw_idle()
            self.chart_label.setVisible(False)
            return
        png = self.run_dir / LEADERBOARD_FIGURE if self.run_dir is not None else None
        pixmap = QPixmap(str(png)) if png is not None and png.is_file() else QPixmap()
        if not pixmap.isNull():
            self.chart_label.setPixmap(pixmap.scaledToWidth(min(pixmap.width(), 760),
                                                            Qt.TransformationMode.SmoothTransformation))
        else:
            self.chart_label.setText(f"No chart: {self._missing}")
        self.chart_label.setVisible(True)

    def cell(self, row: int, column: int) -> str:
        """Text of one summary cell."""
        item = self.table.item(row, column)
        return item.text() if item is not None else ""
