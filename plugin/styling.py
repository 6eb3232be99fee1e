"""Renderers for RegionLens output layers: clusters, predictions, residuals, embeddings.

- clusters: categorized on ``cluster`` with the palette shared with the backend's figures
  (``regionlens_common``), legend ``Cluster 0 — <cluster_name>`` (the readable name the backend wrote)
  and the cluster number as map label;
- predictions: graduated on ``<label>_pred`` (quantile or Jenks, 5 classes, Viridis); the layer name
  (legend title) says which units the run modelled the label in (``modelled as log1p(per km²)``);
- residuals: graduated on ``<label>_res`` (observed minus predicted), 7 classes symmetric around 0
  with the diverging RdBu ramp, so that white means "about right";
- embeddings: a light single symbol (the layer is there for its attributes);
- interval width: a second, named style of a predictions layer (Styles menu of the layer), graduated on
  ``<label>_hi - <label>_lo``, light where the prediction is sure and dark where it is not;
- similarity (the ``similar`` job's layer): graduated on ``similarity``, the top N most similar regions
  outlined in red and the chosen regions in black.

Colour ramps are built here from fixed colour lists (ColorBrewer / matplotlib), so the result does not
depend on the user's style database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsClassificationEqualInterval,
    QgsClassificationJenks,
    QgsClassificationMethod,
    QgsClassificationQuantile,
    QgsExpression,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsGraduatedSymbolRenderer,
    QgsMapLayerStyle,
    QgsPalLayerSettings,
    QgsProperty,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSimpleLineSymbolLayer,
    QgsSingleSymbolRenderer,
    QgsSymbol,
    QgsSymbolLayer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsVectorLayerUtils,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

from .common import common, gpkg_uri

__all__ = [
    "CLUSTER_COLOURS",
    "VIRIDIS",
    "RDBU",
    "base_symbol",
    "cluster_colour",
    "cluster_legend",
    "gradient_ramp",
    "numeric_values",
    "run_label_units",
    "units_title",
    "symmetric_breaks",
    "style_clusters",
    "style_predictions",
    "style_residuals",
    "style_embeddings",
    "INTERVAL_STYLE",
    "ORANGES",
    "add_interval_width_style",
    "interval_width_expression",
    "style_interval_width",
    "style_similarity",
]

#: The fixed cluster colours (clusters 0..19), shared with the backend's figures.
CLUSTER_COLOURS = list(common.CLUSTER_COLOURS)
#: Sequential ramp for predicted values (matplotlib viridis, 5 anchors).
VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]
#: Diverging ramp for residuals (ColorBrewer RdBu, 11 classes): red = observed below predicted.
RDBU = [
    "#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7",
    "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061",
]  # fmt: skip

#: Sequential ramp for interval widths (ColorBrewer Oranges, 5 classes): dark = wide = unsure.
ORANGES = ["#feedde", "#fdbe85", "#fd8d3c", "#e6550d", "#a63603"]
#: Name of the interval-width style of a predictions layer (in the layer's style manager).
INTERVAL_STYLE = "Interval width (hi \u2212 lo)"
#: Outlines of the similarity layer: the top N most similar regions and the chosen ones.
TOP_OUTLINE, CHOSEN_OUTLINE, TOP_OUTLINE_WIDTH = "#d7191c", "#000000", 0.8

_OUTLINE = "90,90,90,150"  # thin, half-transparent grey outline
_OUTLINE_WIDTH = "0.1"  # millimetres


def cluster_colour(index: int) -> QColor:
    """Colour of cluster ``index``, the same as in the backend's figures (``regionlens_common``)."""
    return QColor(common.cluster_colour(abs(int(index))))


def gradient_ramp(colours: Sequence[str]) -> QgsGradientColorRamp:
    """A continuous QgsGradientColorRamp through ``colours`` (equally spaced stops)."""
    stops = [
        QgsGradientStop(i / (len(colours) - 1), QColor(colour))
        for i, colour in enumerate(colours)
        if 0 < i < len(colours) - 1
    ]
    return QgsGradientColorRamp(QColor(colours[0]), QColor(colours[-1]), False, stops)


def numeric_values(layer: QgsVectorLayer, field: str) -> list[float]:
    """The finite numeric values of ``field`` (NULLs and NaNs skipped).

    Read in one pass by QGIS (``QgsVectorLayerUtils.getValues``, attributes only, no geometry), not by a
    Python loop over features: a 250,000-region layer is styled without freezing the map for seconds.
    """
    if layer.fields().indexOf(field) < 0:
        return []
    values, ok = QgsVectorLayerUtils.getValues(layer, field)
    if not ok:
        return []
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _require_field(layer: QgsVectorLayer, field: str) -> None:
    if layer.fields().indexOf(field) < 0:
        names = ", ".join(layer.fields().names())
        raise ValueError(f"Layer '{layer.name()}' has no field '{field}' (fields: {names}).")


def base_symbol(layer: QgsVectorLayer, colour: QColor | str) -> QgsSymbol:
    """A symbol for the layer's geometry type; polygons get a thin grey outline."""
    colour = QColor(colour)
    if layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry:
        return QgsFillSymbol.createSimple(
            {
                "color": f"{colour.red()},{colour.green()},{colour.blue()},{colour.alpha()}",
                "outline_color": _OUTLINE,
                "outline_width": _OUTLINE_WIDTH,
                "outline_width_unit": "MM",
            }
        )
    symbol = QgsSymbol.defaultSymbol(layer.geometryType())
    symbol.setColor(colour)
    return symbol


def _precision(edges: Sequence[float]) -> int:
    """Decimals that tell class bounds apart: two significant digits of the smallest step or bound."""
    ordered = sorted(edges)
    scales = [abs(v) for v in ordered if v != 0]
    scales += [ordered[i + 1] - ordered[i] for i in range(len(ordered) - 1) if ordered[i + 1] > ordered[i]]
    if not scales:
        return 0
    return max(0, min(6, 1 - int(math.floor(math.log10(min(scales))))))


def _range_label(lower: float, upper: float, precision: int) -> str:
    return f"{_fmt(lower, precision)} \u2013 {_fmt(upper, precision)}"


def _fmt(value: float, precision: int) -> str:
    text = f"{value:,.{precision}f}"
    if precision:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text.replace("-", "\u2212")


def cluster_legend(cluster: int, name: str) -> str:
    """The legend entry of a cluster: ``Cluster 0 — <name>`` (``Cluster 0`` without a name)."""
    return f"Cluster {cluster}" + (f" \u2014 {name}" if name else "")


#: Cluster labels are drawn only at scales where about this many regions (or fewer) fill a map view.
LABELLED_REGIONS = 1500
#: The map view assumed for that: 1600 x 1000 pixels at 96 dpi, in metres of paper.
_VIEW_M = (1600 * 0.0254 / 96, 1000 * 0.0254 / 96)
#: Metres per degree (of latitude; of longitude at the equator).
_M_PER_DEGREE = 111_320.0


def label_scale_limit(layer: QgsVectorLayer, regions: int = LABELLED_REGIONS) -> float:
    """The most zoomed-out scale (denominator) at which a view holds about ``regions`` of the layer's features, or
    0 (no limit) when the whole layer has no more than that.

    A view of :data:`_VIEW_M` at scale 1:S covers ``S^2 * w * h`` square metres; the layer holds ``n`` features
    over its extent's area ``A``, so about ``n * S^2 * w * h / A`` are in view.
    """
    n = layer.featureCount()
    extent = layer.extent()
    if n <= regions or extent.isEmpty():
        return 0.0
    width, height = extent.width(), extent.height()
    crs = layer.crs()
    if crs.isGeographic():
        mid_lat = math.radians(max(-89.0, min(89.0, extent.center().y())))
        width, height = width * _M_PER_DEGREE * math.cos(mid_lat), height * _M_PER_DEGREE
    else:
        factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceUnit.DistanceMeters)
        width, height = width * factor, height * factor
    area = width * height
    if not area > 0:
        return 0.0
    return float(math.sqrt(regions * area / (n * _VIEW_M[0] * _VIEW_M[1])))


def style_clusters(
    layer: QgsVectorLayer,
    field: str = "cluster",
    label_field: str = common.CLUSTER_NAME_FIELD,
    show_labels: bool = True,
) -> QgsCategorizedSymbolRenderer:
    """Categorized renderer on the cluster number, with readable legend entries and map labels.

    The legend reads ``Cluster 0 — more cafes, banks; brighter image`` from the ``cluster_name`` the
    backend wrote (docs/protocol.md); a layer without it (an older run) shows ``Cluster 0``.

    Args:
        layer: A ``clusters`` layer.
        field: Integer cluster field.
        label_field: Text field naming each cluster (optional in the data).
        show_labels: Label each region with its cluster number (a large layer: only when zoomed in to about
            :data:`LABELLED_REGIONS` regions, see :func:`label_scale_limit`).

    Returns:
        The renderer (already set on the layer).

    Raises:
        ValueError: If ``field`` is missing.
    """
    _require_field(layer, field)
    idx = layer.fields().indexOf(field)
    label_idx = layer.fields().indexOf(label_field)
    # The distinct cluster numbers from the provider (SELECT DISTINCT for a GeoPackage), then one feature per
    # cluster for its name: no Python loop over the regions, however many there are.
    descriptions: dict[int, str] = {}
    for value in layer.uniqueValues(idx):
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        text = None
        if label_idx >= 0:
            request = (QgsFeatureRequest(QgsExpression(QgsExpression.createFieldEqualityExpression(field, value)))
                       .setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes([label_idx]).setLimit(1))
            text = next((f.attribute(label_idx) for f in layer.getFeatures(request)), None)
        descriptions[value] = str(text) if isinstance(text, str) else ""
    categories = []
    for value in sorted(descriptions):
        legend = cluster_legend(value, descriptions[value])
        categories.append(QgsRendererCategory(value, base_symbol(layer, cluster_colour(value)), legend))
    renderer = QgsCategorizedSymbolRenderer(field, categories)
    renderer.setSourceSymbol(base_symbol(layer, "#cccccc"))
    layer.setRenderer(renderer)

    if show_labels:
        settings = QgsPalLayerSettings()
        settings.fieldName = field
        settings.isExpression = False
        settings.placement = QgsPalLayerSettings.Placement.OverPoint
        zoomed = label_scale_limit(layer)
        if zoomed:  # a large layer: labels only once few regions are in view (250,000 labels took 99 s, 1.5 GB)
            settings.scaleVisibility = True
            settings.minimumScale = zoomed
            settings.maximumScale = 0.0
        text_format = QgsTextFormat()
        text_format.setSize(7)
        text_format.setColor(QColor("#202020"))
        buffer = QgsTextBufferSettings()
        buffer.setEnabled(True)
        buffer.setSize(0.7)
        buffer.setColor(QColor("#ffffff"))
        text_format.setBuffer(buffer)
        settings.setFormat(text_format)
        layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
        layer.setLabelsEnabled(True)
    else:
        layer.setLabelsEnabled(False)
    layer.triggerRepaint()
    return renderer


def run_label_units(layer: QgsVectorLayer, label: str) -> str:
    """Units the run modelled ``label`` in (``units`` of its ``metrics`` rows, e.g. ``log1p(per km²)``).

    Read from the ``metrics`` table of the GeoPackage the layer comes from; ``""`` when there is none
    (another file, an older run).
    """
    path = layer.source().split("|")[0]
    if layer.providerType() != "ogr" or not path.lower().endswith(".gpkg"):
        return ""
    metrics = QgsVectorLayer(gpkg_uri(path, common.TABLE_METRICS), common.TABLE_METRICS, "ogr")
    if not metrics.isValid() or metrics.fields().indexOf("units") < 0 or metrics.fields().indexOf("label") < 0:
        return ""
    expression = QgsExpression.createFieldEqualityExpression("label", label)
    for feature in metrics.getFeatures(QgsFeatureRequest().setFilterExpression(expression)):
        value = feature["units"]
        if isinstance(value, str) and value:
            return value
    return ""


def units_title(name: str, units: str) -> str:
    """``name`` with the modelled units appended once: ``Predicted population (modelled as log1p(per km²))``.

    Nothing is added for a label modelled as it is (``count``) or when the units are unknown.
    """
    if not units or units == "count":
        return name
    note = f"(modelled as {units})"
    return name if note in name else f"{name} {note}"


def _title_with_units(layer: QgsVectorLayer, label: str, units: str | None) -> None:
    layer.setName(units_title(layer.name(), run_label_units(layer, label) if units is None else units))


def style_predictions(
    layer: QgsVectorLayer,
    label: str,
    mode: str = "quantile",
    classes: int = 5,
    suffix: str = common.PRED,
    units: str | None = None,
) -> QgsGraduatedSymbolRenderer:
    """Graduated renderer on ``<label>_pred`` with a sequential ramp (Viridis).

    The values are in the label's own units; the layer's name (its legend title) gets the units the
    run modelled the label in, e.g. ``(modelled as log1p(per km²))``.

    Args:
        layer: A ``predictions`` layer.
        label: Label name (the field prefix), e.g. ``population``.
        mode: ``quantile`` (equal counts) or ``jenks`` (natural breaks).
        classes: Number of classes.
        suffix: ``_pred`` for predictions, ``_obs`` to show the observed values the same way.
        units: Modelled units; ``None``: read from the run's ``metrics`` table (:func:`run_label_units`).

    Returns:
        The renderer (already set on the layer).

    Raises:
        ValueError: If the field is missing or ``mode`` is unknown.
    """
    field = common.prediction_column(label, suffix)
    _require_field(layer, field)
    methods = {"quantile": QgsClassificationQuantile, "jenks": QgsClassificationJenks}
    if mode not in methods:
        raise ValueError(f"Unknown classification mode '{mode}'; use one of {sorted(methods)}.")
    renderer = _graduated(layer, field, numeric_values(layer, field), VIRIDIS, classes, methods[mode]())
    _title_with_units(layer, label, units)
    return renderer


def _graduated(layer: QgsVectorLayer, attribute: str, values: list[float], colours: Sequence[str], classes: int,
               method: QgsClassificationMethod | None = None, symbol: QgsSymbol | None = None, min_precision: int = 0,
               first: str = "", last: str = "") -> QgsGraduatedSymbolRenderer:  # fmt: skip
    """The graduated renderer the result layers share, set on ``layer`` (its labels off).

    Args:
        attribute: The field or expression classed.
        values: Its finite values (no classes without any).
        colours: The ramp, from the first class to the last.
        method: How classes are made (default: quantiles, equal counts).
        symbol: The symbol the classes colour (default: a fill of the first colour).
        min_precision: At least this many decimals in the class labels (``a – b``, with the decimals that tell
            the bounds apart).
        first, last: Words added to the first and to the last class label, e.g. ``narrow: surer``.
    """
    method = method or QgsClassificationQuantile()
    method.setLabelTrimTrailingZeroes(True)
    renderer = QgsGraduatedSymbolRenderer(attribute)
    renderer.setSourceSymbol(symbol or base_symbol(layer, colours[0]))
    renderer.setSourceColorRamp(gradient_ramp(colours))
    renderer.setClassificationMethod(method)
    if values:
        renderer.updateClasses(layer, classes)
        renderer.updateColorRamp(gradient_ramp(colours))
        ranges = renderer.ranges()
        precision = max(min_precision, _precision([r.lowerValue() for r in ranges] + [r.upperValue() for r in ranges]))
        method.setLabelPrecision(precision)
        for i, class_range in enumerate(ranges):
            text = _range_label(class_range.lowerValue(), class_range.upperValue(), precision)
            if i == 0 and first:
                text += f" ({first})"
            elif i == len(ranges) - 1 and last:
                text += f" ({last})"
            renderer.updateRangeLabel(i, text)
    layer.setRenderer(renderer)
    layer.setLabelsEnabled(False)
    layer.triggerRepaint()
    return renderer


def symmetric_breaks(values: Sequence[float]) -> list[float]:
    """Positive class bounds ``b1 < b2 < b3 < m`` for 7 classes symmetric around 0.

    ``b1..b3`` are the quartiles of ``|values|`` and ``m`` their maximum, so the white middle class
    ``[-b1, b1]`` holds the quarter of the regions predicted best; equal steps are used where the
    quartiles coincide. Empty or all-zero input gives ``[0.25, 0.5, 0.75, 1]``.
    """
    magnitudes = sorted(abs(v) for v in values)
    top = magnitudes[-1] if magnitudes else 0.0
    if top <= 0:
        return [0.25, 0.5, 0.75, 1.0]

    def quantile(q: float) -> float:
        pos = q * (len(magnitudes) - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, len(magnitudes) - 1)
        return magnitudes[lo] + (magnitudes[hi] - magnitudes[lo]) * (pos - lo)

    bounds = [quantile(0.25), quantile(0.5), quantile(0.75), top]
    if bounds[0] <= 0 or any(bounds[i] >= bounds[i + 1] for i in range(len(bounds) - 1)):
        bounds = [top * k / 4 for k in (1, 2, 3, 4)]
    return bounds


def style_residuals(layer: QgsVectorLayer, label: str, units: str | None = None) -> QgsGraduatedSymbolRenderer:
    """Graduated renderer on ``<label>_res`` (observed minus predicted), symmetric around 0, RdBu.

    Seven classes: ``[-m, -b3], [-b3, -b2], [-b2, -b1], [-b1, b1], [b1, b2], [b2, b3], [b3, m]``
    (see :func:`symmetric_breaks`); red where the model over-predicted, blue where it under-predicted.
    The layer's name gets the modelled units as in :func:`style_predictions`.

    Raises:
        ValueError: If the field is missing.
    """
    field = common.prediction_column(label, common.RES)
    _require_field(layer, field)
    values = numeric_values(layer, field)
    b1, b2, b3, top = symmetric_breaks(values)
    edges = [-top, -b3, -b2, -b1, b1, b2, b3, top]
    ramp = gradient_ramp(RDBU)
    precision = _precision(edges)
    ranges = []
    n = len(edges) - 1
    for i in range(n):
        lower, upper = edges[i], edges[i + 1]
        symbol = base_symbol(layer, ramp.color(i / (n - 1)))
        text = _range_label(lower, upper, precision)
        if i == 0:
            text += " (over-predicted)"
        elif i == n - 1:
            text += " (under-predicted)"
        ranges.append(QgsRendererRange(lower, upper, symbol, text))
    renderer = QgsGraduatedSymbolRenderer(field, ranges)
    renderer.setSourceSymbol(base_symbol(layer, RDBU[5]))
    renderer.setSourceColorRamp(ramp)
    method = QgsClassificationEqualInterval()  # what "Classify" in the style panel will redo
    method.setSymmetricMode(True, 0.0, True)
    method.setLabelPrecision(precision)
    renderer.setClassificationMethod(method)
    layer.setRenderer(renderer)
    layer.setLabelsEnabled(False)
    _title_with_units(layer, label, units)
    layer.triggerRepaint()
    return renderer


def style_embeddings(layer: QgsVectorLayer) -> QgsSingleSymbolRenderer:
    """A light single symbol: the embeddings layer is there for its attribute table."""
    renderer = QgsSingleSymbolRenderer(base_symbol(layer, QColor(236, 236, 236, 160)))
    layer.setRenderer(renderer)
    layer.setLabelsEnabled(False)
    layer.triggerRepaint()
    return renderer


def interval_width_expression(label: str) -> str:
    """``"<label>_hi" - "<label>_lo"``: the width of a region's prediction interval, in the label's units."""
    lo, hi = (QgsExpression.quotedColumnRef(f"{label}{suffix}") for suffix in (common.LO, common.HI))
    return f"{hi} - {lo}"


def _expression_values(layer: QgsVectorLayer, expression: str) -> list[float]:
    """The finite values of ``expression`` over the layer, evaluated by QGIS in one pass (``getValues``), not by
    a Python loop over the features (2.2 s of the main thread for a 250,000-region layer)."""
    values, ok = QgsVectorLayerUtils.getValues(layer, expression)
    if not ok:
        return []
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def style_interval_width(layer: QgsVectorLayer, label: str, classes: int = 5) -> QgsGraduatedSymbolRenderer:
    """Graduated renderer on the interval width ``<label>_hi - <label>_lo`` (quantiles, Oranges).

    The first class reads ``… (narrow: surer)``, the last ``… (wide: less sure)``. Regions without an
    interval (a missing label, fewer than 3 folds) take no class and are not drawn.

    Raises:
        ValueError: If ``<label>_lo`` or ``<label>_hi`` is missing.
    """
    for suffix in (common.LO, common.HI):
        _require_field(layer, f"{label}{suffix}")
    expression = interval_width_expression(label)
    return _graduated(layer, expression, _expression_values(layer, expression), ORANGES, classes,
                      first="narrow: surer", last="wide: less sure")  # fmt: skip


def add_interval_width_style(layer: QgsVectorLayer, label: str) -> bool:
    """Add :data:`INTERVAL_STYLE` to a predictions layer's styles (the layer keeps showing its current style).

    The person switches with the layer's *Styles* menu (layer tree context menu or Layer Properties).

    Returns:
        False when the layer has no ``<label>_lo`` / ``<label>_hi`` (a run without intervals).
    """
    names = layer.fields().names()
    if f"{label}{common.LO}" not in names or f"{label}{common.HI}" not in names:
        return False
    current = QgsMapLayerStyle()
    current.readFromLayer(layer)
    style_interval_width(layer, label)
    width = QgsMapLayerStyle()
    width.readFromLayer(layer)
    current.writeToLayer(layer)
    manager = layer.styleManager()
    if INTERVAL_STYLE in manager.styles():
        manager.removeStyle(INTERVAL_STYLE)
    manager.addStyle(INTERVAL_STYLE, width)
    return True


def _outline_symbol(layer: QgsVectorLayer, colour: QColor | str) -> QgsSymbol:
    """A fill (thin grey outline) plus an outline layer that is red and thick for the top N, black and thick
    for the chosen regions and invisible elsewhere; the outline layer draws in a second pass (symbol
    levels), over every region's fill, so a neighbour never hides half of it."""
    symbol = base_symbol(layer, colour)
    if layer.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
        return symbol
    top = QgsExpression.quotedColumnRef(common.SIMILAR_TOP_FIELD)
    chosen = QgsExpression.quotedColumnRef(common.SIMILAR_CHOSEN_FIELD)
    has_chosen = layer.fields().indexOf(common.SIMILAR_CHOSEN_FIELD) >= 0
    chosen_case = f"WHEN {chosen} = 1 THEN '{CHOSEN_OUTLINE}' " if has_chosen else ""
    chosen_width = f"WHEN {chosen} = 1 THEN {TOP_OUTLINE_WIDTH} " if has_chosen else ""
    outline = QgsSimpleLineSymbolLayer(QColor(TOP_OUTLINE), TOP_OUTLINE_WIDTH)
    outline.setWidthUnit(QgsUnitTypes.RenderUnit.RenderMillimeters)
    outline.setDataDefinedProperty(
        QgsSymbolLayer.Property.PropertyStrokeColor,
        QgsProperty.fromExpression(f"CASE {chosen_case}WHEN {top} = 1 THEN '{TOP_OUTLINE}' ELSE '0,0,0,0' END"),
    )
    outline.setDataDefinedProperty(
        QgsSymbolLayer.Property.PropertyStrokeWidth,
        QgsProperty.fromExpression(f"CASE {chosen_width}WHEN {top} = 1 THEN {TOP_OUTLINE_WIDTH} ELSE 0 END"),
    )
    outline.setRenderingPass(1)
    symbol.appendSymbolLayer(outline)
    return symbol


def style_similarity(layer: QgsVectorLayer, classes: int = 5) -> QgsGraduatedSymbolRenderer:
    """Graduated renderer on ``similarity`` (quantiles, Viridis: bright = most similar), top N outlined.

    The N most similar regions (``top_n = 1``) get a thick red outline, the chosen regions (``chosen = 1``)
    a thick black one.

    Raises:
        ValueError: If ``similarity`` or ``top_n`` is missing.
    """
    field = common.SIMILARITY_FIELD
    _require_field(layer, field)
    _require_field(layer, common.SIMILAR_TOP_FIELD)
    renderer = _graduated(layer, field, numeric_values(layer, field), VIRIDIS, classes,
                          symbol=_outline_symbol(layer, VIRIDIS[0]), min_precision=2, last="most similar")
    renderer.setUsingSymbolLevels(True)  # the outlines of the top N over every fill
    return renderer
