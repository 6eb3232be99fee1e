"""The explorer's matplotlib scatter: points, highlight, legend or colour bar, and selection tools.

Nothing here knows about QGIS layers: :class:`ScatterPlot` draws rows, reports the rows a rectangle
or lasso selects through ``on_select`` and highlights the rows it is given. matplotlib is imported
when the first plot is built (:func:`require_matplotlib`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qgis.PyQt.QtCore import QT_VERSION_STR
from qgis.PyQt.QtWidgets import QWidget

__all__ = [
    "LEGEND_CHARS",
    "LEGEND_MAX",
    "MIN_CANVAS_SIZE",
    "MISSING_MATPLOTLIB",
    "NO_CLUSTER_COLOUR",
    "PlotContent",
    "ScatterPlot",
    "legend_chars",
    "require_matplotlib",
]

MISSING_MATPLOTLIB = (
    "The embedding explorer needs matplotlib in QGIS's Python: on Debian or Ubuntu "
    "`sudo apt install python3-matplotlib`; on Windows (OSGeo4W) or macOS `python -m pip install matplotlib` "
    "from QGIS's Python."
)
#: Points of regions without a cluster.
NO_CLUSTER_COLOUR = "#bdbdbd"
_POINT_SIZE = 18.0
_HIGHLIGHT_SIZE = 70.0
_PICK_PIXELS = 6.0  # a click (a rectangle smaller than this) picks the nearest point within this distance
#: The canvas never gets smaller than this (pixels): axes, ticks and the legend below them keep their room.
MIN_CANVAS_SIZE = (360, 320)
#: Below this many pixels a draw is skipped (the layout would collapse); the next resize draws.
_MIN_DRAW_PIXELS = 120
#: Legend entries shown; more clusters are summed up in one last entry.
LEGEND_MAX = 10
#: Legend texts are cut to this many characters in a narrow plot (the full label is in the clusters layer);
#: a wider plot shows as many as fit (:func:`legend_chars`).
LEGEND_CHARS = 26
#: Width of an average legend character (x-small text at the figure's 100 dpi, generous) and of the marker,
#: padding and column spacing of one legend entry, in pixels.
_LEGEND_CHAR_PIXELS = 5.6
_LEGEND_ENTRY_PIXELS = 36.0


def legend_chars(width: float, columns: int) -> int:
    """How many characters a legend text may have in a figure ``width`` pixels wide with ``columns`` columns
    (at least :data:`LEGEND_CHARS`)."""
    fit = int((width / max(columns, 1) - _LEGEND_ENTRY_PIXELS) / _LEGEND_CHAR_PIXELS)
    return max(LEGEND_CHARS, fit)


def _cut(text: str, limit: int = LEGEND_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _sized_canvas(canvas_class):
    """The Qt canvas class, drawing only when it has a usable size (no "axes collapsed" warnings while
    the dock is hidden or being laid out), and calling ``before_draw`` first (fits the legend to the width)."""

    class SizedCanvas(canvas_class):
        before_draw: Callable[[], None] | None = None

        def draw(self):
            width, height = self.get_width_height()
            if width < _MIN_DRAW_PIXELS or height < _MIN_DRAW_PIXELS:
                return  # resizeEvent draws again once the canvas has its size
            if self.before_draw is not None:
                self.before_draw()
            super().draw()

    return SizedCanvas


def require_matplotlib():
    """Import matplotlib's Figure and the Qt canvas class for this Qt (5 or 6).

    Returns:
        ``(Figure, FigureCanvasQTAgg)``.

    Raises:
        ImportError: With :data:`MISSING_MATPLOTLIB` if matplotlib is missing.
    """
    try:
        from matplotlib.figure import Figure

        if QT_VERSION_STR.startswith("5"):
            from matplotlib.backends.backend_qt5agg import FigureCanvasQTAgg
        else:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB) from exc
    return Figure, FigureCanvasQTAgg


@dataclass
class PlotContent:
    """What to draw."""

    coords: np.ndarray  # N x 2
    colours: np.ndarray | None = None  # N x 4 RGBA, for categorical colouring (clusters)
    values: np.ndarray | None = None  # N floats (NaN = missing), for a continuous colour scale
    value_label: str = ""  # colour bar title
    legend: Sequence[tuple[str, str]] = ()  # (text, colour) per legend entry
    title: str = ""
    axis_labels: tuple[str, str] = ("", "")
    message: str = ""  # shown instead of points when there are none


class ScatterPlot:
    """A scatter plot on a Qt canvas, with rectangle and lasso selection.

    Args:
        parent: Parent widget of the canvas.
        on_select: Called with the selected row indices (sorted ``int64`` array) after a selection
            in the plot.
    """

    def __init__(self, parent: QWidget | None = None, on_select: Callable[[np.ndarray], None] | None = None):
        figure_class, canvas_class = require_matplotlib()
        self.figure = figure_class(figsize=(5, 4), dpi=100, layout="constrained")
        self.canvas = _sized_canvas(canvas_class)(self.figure)
        self.canvas.before_draw = self._fit_legend
        self.canvas.setMinimumSize(*MIN_CANVAS_SIZE)
        if parent is not None:
            self.canvas.setParent(parent)
        self.on_select = on_select
        self.mode = "rectangle"
        self.coords = np.zeros((0, 2))
        self.highlighted = np.zeros(0, dtype=np.int64)
        self.points = None  # the PathCollection of all points
        self.highlight = None  # the PathCollection of the highlighted points
        self.axes = None
        self.selector = None
        self.legend_texts: list[str] = []  # the legend's texts in full (shown cut to the plot's width)
        self._legend_columns = 1
        self.draw(PlotContent(np.zeros((0, 2)), message="No embeddings layer chosen."))

    # ------------------------------------------------------------------ drawing

    def draw(self, content: PlotContent) -> None:
        """Redraw everything (the highlighted rows stay highlighted if they still exist)."""
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize, to_rgba
        from matplotlib.lines import Line2D

        if self.selector is not None:
            self.selector.disconnect_events()
            self.selector = None
        self.figure.clear()
        self.legend_texts = []
        ax = self.figure.add_subplot()
        self.axes = ax
        coords = np.asarray(content.coords, dtype=float).reshape(-1, 2)
        self.coords = coords
        n = len(coords)
        if n == 0:
            ax.text(0.5, 0.5, content.message or "No regions to show.", ha="center", va="center",
                    transform=ax.transAxes, wrap=True, color="#555555")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            self.points = self.highlight = None
            self.highlighted = np.zeros(0, dtype=np.int64)
            self.canvas.draw_idle()
            return
        if content.values is not None:
            values = np.asarray(content.values, dtype=float)
            finite = np.isfinite(values)
            low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
            norm = Normalize(vmin=low, vmax=high if high > low else low + 1.0)
            cmap = colormaps["viridis"]
            colours = np.array([to_rgba(NO_CLUSTER_COLOUR)] * n)
            colours[finite] = cmap(norm(values[finite]))
            bar = self.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.85)
            bar.set_label(content.value_label, fontsize="small")
            bar.ax.tick_params(labelsize="x-small")
        elif content.colours is not None:
            colours = np.asarray(content.colours, dtype=float)
        else:
            colours = np.array([to_rgba("#1f77b4")] * n)
        self.points = ax.scatter(coords[:, 0], coords[:, 1], s=_POINT_SIZE, c=colours, linewidths=0.3,
                                 edgecolors="#ffffff", zorder=2)  # fmt: skip
        self.highlight = ax.scatter([], [], s=_HIGHLIGHT_SIZE, facecolors="none", edgecolors="black",
                                    linewidths=1.4, zorder=3)  # fmt: skip
        if content.legend:
            entries = list(content.legend)
            if len(entries) > LEGEND_MAX:
                rest = len(entries) - (LEGEND_MAX - 1)
                entries = entries[: LEGEND_MAX - 1] + [(f"\u2026 and {rest} more", "#ffffff")]
            self._legend_columns = 2 if len(entries) > 3 else 1
            limit = legend_chars(self.figure.bbox.width, self._legend_columns)
            handles = [
                Line2D([], [], marker="o", linestyle="", markersize=6, markerfacecolor=colour,
                       markeredgecolor="#ffffff", label=_cut(text, limit))
                for text, colour in entries
            ]  # fmt: skip
            self.legend_texts = [text for text, _colour in entries]
            # below the axes, where a narrow dock has room (constrained layout makes space for it)
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="x-small",
                      frameon=False, borderaxespad=0.0, ncol=self._legend_columns,
                      columnspacing=1.0, handletextpad=0.3)  # fmt: skip
        ax.set_title(content.title, fontsize="small")
        ax.set_xlabel(content.axis_labels[0], fontsize="small")
        ax.set_ylabel(content.axis_labels[1], fontsize="small")
        ax.tick_params(labelsize="x-small")
        self._make_selector()
        self.set_highlighted(self.highlighted[self.highlighted < n])

    def _fit_legend(self) -> None:
        """Cut the legend's texts to what the figure's current width holds (called before every draw)."""
        legend = self.axes.get_legend() if self.axes is not None else None
        if legend is None or not self.legend_texts:
            return
        limit = legend_chars(self.figure.bbox.width, self._legend_columns)
        for artist, text in zip(legend.get_texts(), self.legend_texts, strict=True):
            artist.set_text(_cut(text, limit))

    def set_highlighted(self, rows: Sequence[int] | np.ndarray) -> None:
        """Highlight these rows (bigger, black-edged markers); an empty list clears the highlight."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[(rows >= 0) & (rows < len(self.coords))]
        self.highlighted = rows
        if self.highlight is None or self.points is None:
            return
        self.highlight.set_offsets(self.coords[rows] if len(rows) else np.zeros((0, 2)))
        facecolors = self.points.get_facecolors()
        if len(rows) and len(facecolors) == len(self.coords):
            self.highlight.set_facecolors(facecolors[rows])
        self.canvas.draw_idle()

    def save(self, path: str | Path, dpi: int = 150) -> Path:
        """Write the figure (PNG, SVG or PDF by the file's extension)."""
        path = Path(path)
        self.figure.savefig(str(path), dpi=dpi)
        return path

    # ------------------------------------------------------------------ selection

    def set_mode(self, mode: str) -> None:
        """``rectangle`` or ``lasso``."""
        if mode not in ("rectangle", "lasso"):
            raise ValueError(f"Unknown selection mode '{mode}'.")
        self.mode = mode
        if self.axes is not None and self.points is not None:
            if self.selector is not None:
                self.selector.disconnect_events()
            self._make_selector()

    def rows_in_rectangle(self, xmin: float, xmax: float, ymin: float, ymax: float) -> np.ndarray:
        """Rows whose point lies in the rectangle (bounds in data coordinates, either order)."""
        x0, x1 = sorted((xmin, xmax))
        y0, y1 = sorted((ymin, ymax))
        x, y = self.coords[:, 0], self.coords[:, 1]
        return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).astype(np.int64)

    def rows_in_polygon(self, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
        """Rows whose point lies inside the polygon (data coordinates)."""
        from matplotlib.path import Path as MplPath

        if len(vertices) < 3 or len(self.coords) == 0:
            return np.zeros(0, dtype=np.int64)
        inside = MplPath(np.asarray(vertices, dtype=float)).contains_points(self.coords)
        return np.flatnonzero(inside).astype(np.int64)

    def nearest_row(self, x: float, y: float, pixels: float = _PICK_PIXELS) -> int | None:
        """The row nearest to a data point, if its marker is within ``pixels`` on screen."""
        if self.axes is None or len(self.coords) == 0:
            return None
        transform = self.axes.transData
        screen = transform.transform(self.coords)
        click = transform.transform((x, y))
        distance = np.hypot(*(screen - click).T)
        row = int(np.argmin(distance))
        return row if distance[row] <= pixels else None

    def select(self, rows: Sequence[int] | np.ndarray) -> None:
        """Highlight ``rows`` and report them through ``on_select``."""
        self.set_highlighted(rows)
        if self.on_select is not None:
            self.on_select(self.highlighted.copy())

    def _make_selector(self) -> None:
        from matplotlib.widgets import LassoSelector, RectangleSelector

        if self.mode == "lasso":
            self.selector = LassoSelector(self.axes, self._on_lasso, useblit=False, button=[1])
        else:
            self.selector = RectangleSelector(
                self.axes, self._on_rectangle, useblit=False, button=[1], minspanx=0, minspany=0,
                spancoords="data", interactive=False,
                props={"facecolor": "#1f77b4", "edgecolor": "#1f77b4", "alpha": 0.15, "fill": True},
            )  # fmt: skip

    def _on_rectangle(self, press, release) -> None:
        """RectangleSelector callback: press and release events with ``xdata``/``ydata`` (and ``x``/``y``
        in pixels); a click without a drag picks the nearest point, or clears the selection."""
        if None in (press.xdata, press.ydata, release.xdata, release.ydata):
            return
        px = (getattr(press, "x", None), getattr(press, "y", None))
        rx = (getattr(release, "x", None), getattr(release, "y", None))
        if None not in px + rx and abs(px[0] - rx[0]) < 3 and abs(px[1] - rx[1]) < 3:
            row = self.nearest_row(release.xdata, release.ydata)
            self.select([] if row is None else [row])
            return
        self.select(self.rows_in_rectangle(press.xdata, release.xdata, press.ydata, release.ydata))

    def _on_lasso(self, vertices) -> None:
        self.select(self.rows_in_polygon(vertices))
