"""Loading a run GeoPackage as styled, file-backed layers (plugin/results.py, plugin/styling.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from plugin.results import (
    LAYER_KEYS,
    gpkg_layer_names,
    label_names,
    load_run_outputs,
    run_group_name,
    run_methods,
)
from plugin.styling import (
    CLUSTER_COLOURS,
    cluster_colour,
    run_label_units,
    style_clusters,
    style_predictions,
    symmetric_breaks,
    units_title,
)


def test_load_run_outputs(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    assert list(layers) == list(LAYER_KEYS)  # the primary method's layers, first label

    group = qgis_new_project.layerTreeRoot().findGroup("RegionLens \u2014 run_small")
    assert group is not None and layers.group is group
    assert run_group_name(run_gpkg) == group.name()
    assert [child.name() for child in group.children()] == ["baseline", "Metrics (run_small)"]
    method_group = group.findGroup("baseline")
    assert [node.layer().name() for node in method_group.findLayers()] == [
        "Clusters (baseline, run_small)",
        "Predicted population (baseline, run_small) (modelled as log1p(per km\u00b2))",
        "Residuals population, observed \u2212 predicted (baseline, run_small) (modelled as log1p(per km\u00b2))",
        "Predicted robbery (baseline, run_small) (modelled as log1p(per km\u00b2))",
        "Residuals robbery, observed \u2212 predicted (baseline, run_small) (modelled as log1p(per km\u00b2))",
        "Embeddings (baseline, run_small)",
        "Cluster profiles (baseline, run_small)",
    ]
    visible = [node.layer() for node in group.findLayers() if node.itemVisibilityChecked()]
    assert visible == [layers["clusters"]]

    for entry in layers.entries:
        table = "predictions" if entry.key == "residuals" else entry.key
        assert entry.layer.isValid(), entry
        assert entry.layer.providerType() == "ogr"
        assert entry.layer.source() == f"{run_gpkg.resolve()}|layername={table}"
        assert qgis_new_project.mapLayer(entry.layer.id()) is entry.layer
    assert layers["metrics"].isSpatial() is False
    assert layers["metrics"].featureCount() == 4
    assert layers["cluster_profiles"].isSpatial() is False
    assert layers["clusters"].crs().authid() == "EPSG:32610"


def test_every_method_and_label_is_loaded_and_grouped(
    qgis_new_project: QgsProject, make_run_gpkg, tmp_path: Path
) -> None:
    gpkg = make_run_gpkg(tmp_path / "two", labels=("population", "robbery"), methods=("baseline", "calliper"))
    layers = load_run_outputs(gpkg, qgis_new_project)
    assert run_methods(gpkg) == ["baseline", "calliper"]  # no run.json: primary named by the metrics table
    assert layers.methods == ["baseline", "calliper"]

    loaded = {entry.layer.source().split("layername=")[1] for entry in layers.entries}
    assert loaded == set(gpkg_layer_names(gpkg))  # every layer of the GeoPackage reaches the map
    group = layers.group
    calliper = group.findGroup("calliper")
    assert [child.name() for child in group.children()] == ["baseline", "calliper", "Metrics (two)"]
    names = [node.layer().name() for node in calliper.findLayers()]
    assert names == [
        "Clusters (calliper, two)",
        "Predicted population (calliper, two) (modelled as log1p(per km\u00b2))",
        "Residuals population, observed \u2212 predicted (calliper, two) (modelled as log1p(per km\u00b2))",
        "Predicted robbery (calliper, two) (modelled as log1p(per km\u00b2))",
        "Residuals robbery, observed \u2212 predicted (calliper, two) (modelled as log1p(per km\u00b2))",
        "Embeddings (calliper, two)",
        "Cluster profiles (calliper, two)",
    ]
    robbery = layers.layer("predictions", "calliper", "robbery")
    assert robbery.source().endswith("layername=predictions_calliper")
    assert robbery.renderer().classAttribute() == "robbery_pred"
    assert layers.layer("residuals", "calliper", "robbery").renderer().classAttribute() == "robbery_res"
    assert isinstance(layers.layer("clusters", "calliper").renderer(), QgsCategorizedSymbolRenderer)
    assert calliper.isExpanded() is False and group.findGroup("baseline").isExpanded() is True
    assert all(not node.itemVisibilityChecked() for node in calliper.findLayers())

    # The run's manifest names the methods and the primary one.
    manifest = {"methods": ["calliper", "baseline"], "primary_method": "baseline"}
    (gpkg.parent / "run.json").write_text(json.dumps(manifest))
    assert run_methods(gpkg) == ["baseline", "calliper"]
    (gpkg.parent / "run.json").write_text(json.dumps({"methods": ["hafusion"], "primary_method": "hafusion"}))
    assert run_methods(gpkg) == ["baseline", "calliper"]  # a manifest that does not match is not trusted


def test_clusters_are_categorized(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layer = load_run_outputs(run_gpkg, qgis_new_project)["clusters"]
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "cluster"
    categories = renderer.categories()
    assert [c.value() for c in categories] == [0, 1, 2, 3]
    assert categories[0].label() == "Cluster 0 \u2014 more cafes, banks"  # the backend's cluster_name
    assert [c.symbol().color().name() for c in categories] == CLUSTER_COLOURS[:4]
    outline = categories[0].symbol().symbolLayer(0).strokeWidth()
    assert 0 < outline <= 0.2  # thin outline
    assert layer.labelsEnabled()
    assert layer.labeling().settings().fieldName == "cluster"


def test_predictions_and_residuals(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    predictions, residuals = layers["predictions"], layers["residuals"]
    assert label_names(predictions) == ["population", "robbery"]

    renderer = predictions.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer)
    assert renderer.classAttribute() == "population_pred"
    assert len(renderer.ranges()) == 5
    assert renderer.ranges()[0].lowerValue() == pytest.approx(1000.0)  # the minimum prediction

    renderer = residuals.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer)
    assert renderer.classAttribute() == "population_res"
    ranges = renderer.ranges()
    assert len(ranges) == 7
    lowers = [r.lowerValue() for r in ranges]
    uppers = [r.upperValue() for r in ranges]
    assert lowers[0] == pytest.approx(-uppers[-1])  # symmetric around 0
    assert lowers[3] == pytest.approx(-uppers[3])  # the middle class straddles 0
    assert uppers[-1] == pytest.approx(160.0)  # the largest |residual| in the fixture
    for i in range(3):
        assert lowers[i] == pytest.approx(-uppers[6 - i])
    first, middle, last = (ranges[i].symbol().color() for i in (0, 3, 6))
    assert first.red() > first.blue()  # red: over-predicted
    assert last.blue() > last.red()  # blue: under-predicted
    assert min(middle.red(), middle.green(), middle.blue()) > 220  # near white
    assert residuals.name().startswith("Residuals population")

    assert isinstance(layers["embeddings"].renderer(), QgsSingleSymbolRenderer)


def test_choose_label(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project, label="robbery", group_name="mine")
    assert layers["predictions"].renderer().classAttribute() == "robbery_pred"
    assert layers["residuals"].renderer().classAttribute() == "robbery_res"
    assert qgis_new_project.layerTreeRoot().findGroup("mine") is not None
    with pytest.raises(ValueError, match="population, robbery"):
        load_run_outputs(run_gpkg, qgis_new_project, label="crime")


def test_missing_or_foreign_geopackage(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_run_outputs(tmp_path / "nope" / "regionlens.gpkg", qgis_new_project)
    other = tmp_path / "other.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(other))
    ds.CreateLayer("roads", None, ogr.wkbNone).CreateField(ogr.FieldDefn("name", ogr.OFTString))
    ds = None
    with pytest.raises(ValueError, match="no RegionLens layers"):
        load_run_outputs(other, qgis_new_project)
    assert not qgis_new_project.mapLayers()


def test_save_default_styles(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    load_run_outputs(run_gpkg, qgis_new_project, save_styles=True)
    ds = ogr.Open(str(run_gpkg))
    assert "layer_styles" in [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
    ds = None
    assert "layer_styles" not in gpkg_layer_names(run_gpkg)  # QGIS hides it from the layer list
    reopened = QgsVectorLayer(f"{run_gpkg}|layername=clusters", "clusters", "ogr")  # loads the default style
    assert isinstance(reopened.renderer(), QgsCategorizedSymbolRenderer)
    assert reopened.renderer().classAttribute() == "cluster"


def test_symmetric_breaks() -> None:
    assert symmetric_breaks([]) == [0.25, 0.5, 0.75, 1.0]
    b = symmetric_breaks([-4.0, -1.0, 0.5, 2.0, 3.0, -8.0])
    assert b[-1] == 8.0
    assert all(0 < x < y for x, y in zip(b[:-1], b[1:], strict=True))
    assert symmetric_breaks([2.0, 2.0, -2.0]) == [0.5, 1.0, 1.5, 2.0]  # equal steps when quartiles tie


def test_map_and_figure_palettes_agree_for_0_to_30_clusters() -> None:
    import regionlens_common
    from plugin.common import common

    assert common is regionlens_common  # the one module the backend's figures use (backend/viz/colors.py)
    for k in range(31):
        assert [cluster_colour(i).name() for i in range(k)] == regionlens_common.cluster_colours(k)
    # Before, cluster 1 was orange on the map and light blue in a figure of more than 10 clusters.
    assert cluster_colour(1).name() == regionlens_common.cluster_colours(12)[1] == "#ff7f0e"


def test_cluster_legend_uses_names_never_codes(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    """An older run's ``cluster_label`` codes (``b1_mean-``) are not shown; ``cluster_name`` is."""
    path = tmp_path / "old.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("clusters", None, ogr.wkbPoint)
    for name, kind in (("cluster", ogr.OFTInteger), ("cluster_label", ogr.OFTString)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    for c, code in enumerate(["sf_landsat7_3857_30m_b2_mean+", "emb_000+ emb_001-"]):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("cluster", c)
        feature.SetField("cluster_label", code)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({c} 0)"))
        layer.CreateFeature(feature)
    ds = None
    old = QgsVectorLayer(f"{path}|layername=clusters", "old", "ogr")
    renderer = style_clusters(old)
    assert [c.label() for c in renderer.categories()] == ["Cluster 0", "Cluster 1"]


def test_prediction_legend_titles_carry_the_units(qgis_new_project: QgsProject, run_gpkg: Path) -> None:
    layers = load_run_outputs(run_gpkg, qgis_new_project)
    assert run_label_units(layers["predictions"], "population") == "log1p(per km\u00b2)"
    assert layers["predictions"].name().endswith("(modelled as log1p(per km\u00b2))")
    assert layers["residuals"].name().endswith("(modelled as log1p(per km\u00b2))")
    style_predictions(layers["predictions"], "population")  # restyling does not repeat the units
    assert layers["predictions"].name().count("modelled as") == 1
    assert units_title("Predicted x", "") == units_title("Predicted x", "count") == "Predicted x"


def test_cluster_colours_are_distinct() -> None:
    assert len(set(CLUSTER_COLOURS)) == len(CLUSTER_COLOURS) == 20
    assert CLUSTER_COLOURS[:10] == [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]  # fmt: skip
    assert cluster_colour(3) == QColor("#d62728")
    assert cluster_colour(25).isValid()


def _big_run_layer(path: Path, n: int, k: int) -> QgsVectorLayer:
    """A GeoPackage ``clusters``-like layer of ``n`` squares: cluster i % k named ``name i % k``, a residual."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("clusters", None, ogr.wkbPolygon)
    for name, kind in (("cluster", ogr.OFTInteger), ("cluster_name", ogr.OFTString), ("pop_res", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    layer.StartTransaction()
    for i in range(n):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("cluster", (i * 7) % k)
        feature.SetField("cluster_name", f"name {(i * 7) % k}")
        if i % 10:  # every tenth region without a residual (no label)
            feature.SetField("pop_res", float(i % 101) - 50.0)
        x, y = i % 100, i // 100
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x} {y}, {x + 1} {y}, {x + 1} {y + 1}, {x} {y}))"))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    ds = None
    return QgsVectorLayer(f"{path}|layername=clusters", "big", "ogr")


def test_styling_a_large_layer_has_no_python_loop_over_its_features(qgis_new_project: QgsProject, tmp_path: Path,
                                                                     count_feature_reads) -> None:
    """Cluster numbers come from the provider's distinct values, one feature per cluster gives its name, and the
    residual classes read the values in one QGIS pass: Python sees k features, never all of them."""
    from plugin.styling import numeric_values, style_residuals

    n, k = 3000, 6
    layer = _big_run_layer(tmp_path / "big.gpkg", n, k)
    seen = count_feature_reads(layer)
    renderer = style_clusters(layer)
    assert [c.value() for c in renderer.categories()] == list(range(k))
    assert [c.label() for c in renderer.categories()] == [f"Cluster {c} \u2014 name {c}" for c in range(k)]
    assert len(seen) == k  # one feature per cluster, not one per region

    seen.clear()
    values = numeric_values(layer, "pop_res")
    assert len(values) == n - n // 10 and sorted(values)[0] == -50.0 and sorted(values)[-1] == 50.0  # NULLs skipped
    style_residuals(layer, "pop", units="count")
    assert seen == []  # read by QGIS in one pass, not feature by feature from Python
    assert layer.renderer().ranges()[-1].upperValue() == pytest.approx(50.0)


def _grid_layer(crs: str, n: int, cell: float, origin: tuple[float, float] = (0.0, 0.0)) -> QgsVectorLayer:
    """A memory layer of ``n`` square cells (50 per row) with a ``cluster`` field."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsRectangle
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer(f"Polygon?crs={crs}", "grid", "memory")
    layer.dataProvider().addAttributes([QgsField("cluster", QVariant.Int)])
    layer.updateFields()
    features = []
    for i in range(n):
        x, y = origin[0] + (i % 50) * cell, origin[1] + (i // 50) * cell
        feature = QgsFeature(layer.fields())
        feature.setAttribute("cluster", i % 5)
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y, x + cell, y + cell)))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


def test_cluster_labels_of_a_large_layer_show_only_when_zoomed_in(qgis_new_project: QgsProject) -> None:
    """250,000 cluster labels took 99 s and 1.5 GB to draw: a layer of more than LABELLED_REGIONS regions is
    labelled only at scales where a 1600 x 1000 px view holds about that many (counted with QGIS's own map
    settings); a small layer is always labelled; a geographic layer gets the same limit as a projected one."""
    from qgis.core import QgsFeatureRequest, QgsMapSettings
    from qgis.PyQt.QtCore import QSize

    from plugin.styling import LABELLED_REGIONS, label_scale_limit

    small = _grid_layer("EPSG:32610", 600, 300.0)
    style_clusters(small)
    assert label_scale_limit(small) == 0.0 and not small.labeling().settings().scaleVisibility

    big = _grid_layer("EPSG:32610", 5000, 300.0)  # 50 x 100 cells of 300 m
    style_clusters(big)
    settings = big.labeling().settings()
    limit = label_scale_limit(big)
    assert settings.scaleVisibility and settings.minimumScale == pytest.approx(limit) and limit > 0
    view = QgsMapSettings()
    view.setDestinationCrs(big.crs())
    view.setOutputSize(QSize(1600, 1000))
    view.setOutputDpi(96)
    view.setExtent(big.extent())
    # zoom to the limit's scale around the centre and count the regions QGIS would show
    factor = limit / view.scale()
    extent = view.extent()
    extent.scale(factor)
    view.setExtent(extent)
    assert view.scale() == pytest.approx(limit, rel=0.02)
    shown = sum(1 for _ in big.getFeatures(QgsFeatureRequest().setFilterRect(view.visibleExtent())))
    assert 0.8 * LABELLED_REGIONS <= shown <= 1.25 * LABELLED_REGIONS

    # the same cells in degrees near San Francisco (300 m is about 0.0027 degrees of latitude)
    geographic = _grid_layer("EPSG:4326", 5000, 0.0027, origin=(-122.5, 37.7))
    ratio = label_scale_limit(geographic) / limit
    assert 0.85 < ratio < 1.15
