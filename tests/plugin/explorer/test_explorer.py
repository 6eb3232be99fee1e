"""The embedding explorer (plugin/explorer/) on a small run GeoPackage, in real QGIS offscreen."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent
from matplotlib.colors import to_rgba
from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtGui import QImage

from plugin.explorer import EmbeddingExplorer, available_projections, find_run_layers, open_explorer, project
from plugin.explorer import projection as projection_module
from plugin.explorer.data import read_explorer_data
from plugin.main import RegionLensPlugin
from plugin.results import load_run_outputs
from plugin.styling import cluster_colour

N_REGIONS, N_CLUSTERS, EMB_DIM = 12, 4, 4  # tests/plugin/conftest.py


@pytest.fixture
def run_layers(run_gpkg: Path, qgis_new_project: QgsProject) -> dict[str, QgsVectorLayer]:
    return load_run_outputs(run_gpkg, qgis_new_project)


@pytest.fixture
def explorer(run_layers, qgis_iface) -> EmbeddingExplorer:
    dock = open_explorer(qgis_iface)
    yield dock
    dock.close()
    dock.deleteLater()


def _region_ids(layer: QgsVectorLayer, fids) -> set[str]:
    return {layer.getFeature(int(fid))["region_id"] for fid in fids}


def _reference_matrix(layer: QgsVectorLayer) -> tuple[list[str], np.ndarray]:
    names = [f"emb_{j:03d}" for j in range(EMB_DIM)]
    rows = [(f["region_id"], [f[n] for n in names]) for f in layer.getFeatures()]
    return [r for r, _ in rows], np.array([v for _, v in rows], dtype=float)


def test_explorer_finds_the_run_and_plots_every_region(explorer: EmbeddingExplorer, run_layers) -> None:
    assert explorer.embeddings_layer() is run_layers["embeddings"]
    assert explorer.clusters_layer() is run_layers["clusters"]
    assert len(explorer.data) == N_REGIONS
    assert explorer.coordinates.shape == (N_REGIONS, 2)
    assert len(explorer.plot.points.get_offsets()) == N_REGIONS
    assert "PCA" in explorer.projection_combo.currentText()
    assert "12 regions" in explorer.status.text()


def test_point_colours_are_the_cluster_colours(explorer: EmbeddingExplorer, run_layers) -> None:
    clusters = run_layers["clusters"]
    by_region = {f["region_id"]: f["cluster"] for f in clusters.getFeatures()}
    colours = explorer.point_colours()
    assert colours.shape == (N_REGIONS, 4)
    for row, region in enumerate(explorer.data.region_ids):
        expected = to_rgba(cluster_colour(by_region[region]).name())
        assert tuple(colours[row]) == pytest.approx(expected)
    legend = [text.get_text() for text in explorer.plot.axes.get_legend().get_texts()]
    assert legend[0] == "0: more cafes, banks" and legend[1] == "1: darker image"  # tests/plugin/conftest.py


def test_pca_matches_numpy_svd(explorer: EmbeddingExplorer, run_layers) -> None:
    region_ids, matrix = _reference_matrix(run_layers["embeddings"])
    assert region_ids == explorer.data.region_ids
    centred = matrix - matrix.mean(axis=0)
    u, s, _vt = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :2] * s[:2]
    coords = explorer.coordinates
    for k in range(2):  # a component's sign is a convention
        sign = np.sign(coords[:, k] @ reference[:, k])
        np.testing.assert_allclose(coords[:, k], sign * reference[:, k], atol=1e-10)
    variance = s**2 / (s**2).sum()
    assert explorer.plot.axes.get_xlabel().startswith(f"PC1 ({variance[0]:.0%}")


def test_rectangle_in_plot_selects_regions_on_the_map(explorer: EmbeddingExplorer, run_layers) -> None:
    coords = explorer.coordinates
    x_mid = float(np.median(coords[:, 0]))
    expected_rows = np.flatnonzero(coords[:, 0] >= x_mid)
    expected = {explorer.data.region_ids[i] for i in expected_rows}
    assert 0 < len(expected) < N_REGIONS

    count = explorer.select_in_plot(x_mid, coords[:, 0].max() + 1, coords[:, 1].min() - 1, coords[:, 1].max() + 1)
    assert count == len(expected)
    clusters, embeddings = run_layers["clusters"], run_layers["embeddings"]
    assert _region_ids(clusters, clusters.selectedFeatureIds()) == expected
    assert _region_ids(embeddings, embeddings.selectedFeatureIds()) == expected
    assert sorted(explorer.highlighted) == sorted(expected_rows)
    assert len(explorer.plot.highlight.get_offsets()) == len(expected)

    explorer.select_in_plot(1e9, 2e9, 1e9, 2e9)  # an empty rectangle clears the selection
    assert clusters.selectedFeatureCount() == 0 and len(explorer.highlighted) == 0

    explorer.mode_combo.setCurrentIndex(explorer.mode_combo.findData("lasso"))
    assert type(explorer.plot.selector).__name__ == "LassoSelector"
    lo, hi = coords.min(axis=0) - 1, coords.max(axis=0) + 1
    triangle = [(lo[0], lo[1]), (hi[0], lo[1]), (lo[0], hi[1])]  # the lower-left half of the plot
    explorer.plot.selector.onselect(triangle)
    rel = (coords - lo) / (hi - lo)
    expected = {explorer.data.region_ids[i] for i in np.flatnonzero(rel.sum(axis=1) < 1)}
    assert expected and _region_ids(clusters, clusters.selectedFeatureIds()) == expected


def test_drag_with_the_rectangle_selector(explorer: EmbeddingExplorer, run_layers) -> None:
    """Mouse events through matplotlib's RectangleSelector, as a user drag produces them."""
    canvas, ax = explorer.plot.canvas, explorer.plot.axes
    canvas.resize(600, 450)
    canvas.draw()
    coords = explorer.coordinates
    target = int(np.argmax(coords[:, 1]))  # the topmost point
    lo = coords[target] - 1e-3 * np.ptp(coords, axis=0) - 1e-9
    hi = coords[target] + 1e-3 * np.ptp(coords, axis=0) + 1e-9
    (x0, y0), (x1, y1) = ax.transData.transform([lo, hi])
    # a few pixels around the point
    x0, y0, x1, y1 = x0 - 4, y0 - 4, x1 + 4, y1 + 4
    for name, x, y in (("button_press_event", x0, y0), ("motion_notify_event", x1, y1),
                       ("button_release_event", x1, y1)):  # fmt: skip
        canvas.callbacks.process(name, MouseEvent(name, canvas, x, y, button=1))
    inside = explorer.plot.rows_in_rectangle(*ax.transData.inverted().transform([(x0, y0), (x1, y1)]).T.ravel())
    assert target in inside
    clusters = run_layers["clusters"]
    assert _region_ids(clusters, clusters.selectedFeatureIds()) == {explorer.data.region_ids[i] for i in inside}


def test_map_selection_highlights_points(explorer: EmbeddingExplorer, run_layers) -> None:
    clusters = run_layers["clusters"]
    fids = [f.id() for f in clusters.getFeatures() if f["region_id"] in ("r00", "r05", "r11")]
    clusters.selectByIds(fids)
    rows = explorer.highlighted
    assert sorted(explorer.data.region_ids[i] for i in rows) == ["r00", "r05", "r11"]
    offsets = explorer.plot.highlight.get_offsets()
    np.testing.assert_allclose(np.asarray(offsets), explorer.coordinates[rows])
    assert explorer.plot.highlight.get_sizes()[0] > explorer.plot.points.get_sizes()[0]
    assert tuple(explorer.plot.highlight.get_edgecolors()[0]) == pytest.approx(to_rgba("black"))

    embeddings = run_layers["embeddings"]  # the embeddings layer is linked too
    embeddings.selectByIds([f.id() for f in embeddings.getFeatures() if f["region_id"] == "r03"])
    assert [explorer.data.region_ids[i] for i in explorer.highlighted] == ["r03"]
    clusters.removeSelection()
    assert len(explorer.highlighted) == 0


def test_colour_by_a_prediction(explorer: EmbeddingExplorer) -> None:
    titles = explorer.colour_titles()
    assert titles[0] == "Cluster"
    assert "population_pred" in titles and "robbery_res" in titles
    assert not any(title.startswith("emb_") for title in titles)
    explorer.set_colouring("population_pred")
    colours = explorer.point_colours()
    assert len({tuple(c) for c in colours}) == N_REGIONS  # a continuous scale: all values differ
    assert explorer.plot.axes.get_legend() is None
    explorer.set_colouring("Cluster")
    assert explorer.plot.axes.get_legend() is not None


def test_save_figure_writes_a_png(explorer: EmbeddingExplorer, tmp_path: Path) -> None:
    path = explorer.save_figure(tmp_path / "embedding.png")
    image = QImage(str(path))
    assert not image.isNull() and image.width() > 100
    colours = {image.pixel(x, y) for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)}
    assert len(colours) > 10  # not blank


def test_projections_offered_are_the_importable_ones(monkeypatch) -> None:
    assert available_projections()[0] == "PCA"
    monkeypatch.setattr(projection_module.importlib.util, "find_spec", lambda name: None)
    assert available_projections() == ["PCA"]
    with pytest.raises(ValueError, match="at least 5"):
        project(np.zeros((3, 4)), "t-SNE")


def test_set_layers_and_errors(run_layers, qgis_iface) -> None:
    found = find_run_layers(QgsProject.instance())
    assert found == {"embeddings": run_layers["embeddings"], "clusters": run_layers["clusters"]}
    with pytest.raises(ValueError, match="no embedding fields"):
        read_explorer_data(run_layers["clusters"])
    dock = EmbeddingExplorer(qgis_iface)
    try:
        with pytest.raises(ValueError, match="embedding fields"):
            dock.set_layers(run_layers["predictions"], None)
        with pytest.raises(ValueError, match="cluster fields"):
            dock.set_layers(run_layers["embeddings"], run_layers["predictions"])
        combo = dock.embeddings_combo  # the combos offer only layers of the right kind
        assert [combo.layer(i) for i in range(combo.count())] == [run_layers["embeddings"]]
        dock.set_layers(run_layers["embeddings"])  # the clusters layer is found next to it
        assert dock.clusters_layer() is run_layers["clusters"]
        assert len(dock.data) == N_REGIONS
    finally:
        dock.close()
        dock.deleteLater()


def test_tsne_when_installed(explorer: EmbeddingExplorer, monkeypatch) -> None:
    """With scikit-learn importable the combo offers t-SNE and the plot uses it (a stand-in TSNE here)."""
    calls = []

    class FakeTSNE:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, x):
            return np.column_stack([np.arange(len(x)), -np.arange(len(x))]).astype(float)

    sklearn, manifold = types.ModuleType("sklearn"), types.ModuleType("sklearn.manifold")
    manifold.TSNE = FakeTSNE
    sklearn.manifold = manifold
    for module in (sklearn, manifold):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
        monkeypatch.setitem(sys.modules, module.__name__, module)
    assert available_projections()[:2] == ["PCA", "t-SNE"]
    explorer.projection_combo.addItem("t-SNE")  # the combo was filled when the dock was built
    explorer.set_projection("t-SNE")
    assert calls and calls[0]["n_components"] == 2 and calls[0]["perplexity"] < N_REGIONS
    np.testing.assert_allclose(explorer.coordinates[:, 0], np.arange(N_REGIONS))
    assert explorer.plot.axes.get_xlabel() == "t-SNE 1"


def test_plugin_menu_opens_explorer_and_follows_new_runs(
    run_gpkg: Path, make_run_gpkg, tmp_path: Path, qgis_iface, qgis_new_project: QgsProject
) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        texts = [action.text() for action in plugin.actions]
        assert "Embedding explorer" in texts and "Export layer\u2026" in texts
        assert plugin.layer_export_action is not None
        first = plugin.open_run_results(run_gpkg)
        plugin.explorer_action.trigger()
        explorer = plugin.explorer
        assert explorer is not None and explorer.embeddings_layer() is first["embeddings"]
        second = plugin.open_run_results(make_run_gpkg(tmp_path / "run_two"))
        assert plugin.explorer is explorer  # one explorer, now showing the new run
        assert explorer.embeddings_layer() is second["embeddings"]
        assert explorer.clusters_layer() is second["clusters"]
        assert len(explorer.data) == N_REGIONS
    finally:
        plugin.unload()
    assert plugin.explorer is None and plugin.layer_export_action is None


def test_layers_removed_and_dock_reopened(explorer: EmbeddingExplorer, run_layers, qgis_iface) -> None:
    clusters, embeddings = run_layers["clusters"], run_layers["embeddings"]
    explorer.close()  # closed: no longer follows the map
    clusters.selectByIds([clusters.getFeatures().__next__().id()])
    assert len(explorer.highlighted) == 0
    assert open_explorer(qgis_iface, explorer=explorer) is explorer  # reopened: linked again
    clusters.selectByIds([f.id() for f in clusters.getFeatures() if f["region_id"] == "r07"])
    assert [explorer.data.region_ids[i] for i in explorer.highlighted] == ["r07"]

    QgsProject.instance().removeMapLayer(clusters.id())  # the points turn grey, nothing breaks
    assert explorer.clusters_layer() is None
    assert len(explorer.data) == N_REGIONS and (explorer.data.cluster == -1).all()
    assert [t.get_text() for t in explorer.plot.axes.get_legend().get_texts()] == ["no cluster"]
    QgsProject.instance().removeMapLayer(embeddings.id())
    assert explorer.embeddings_layer() is None or explorer.embeddings_layer() is not embeddings


def test_docked_at_its_first_size_the_legend_fits_without_warnings(qtbot) -> None:
    """QGIS first gives the dock about 305 x 352 px: the plot keeps a usable size, the legend stays inside the
    figure (below the axes), and matplotlib never warns that the axes collapsed."""
    import warnings

    from plugin.explorer.plot import LEGEND_CHARS, LEGEND_MAX, MIN_CANVAS_SIZE, PlotContent, ScatterPlot

    dock = EmbeddingExplorer(None)
    qtbot.addWidget(dock)
    dock.resize(305, 352)
    dock.show()
    assert dock.minimumSizeHint().width() >= MIN_CANVAS_SIZE[0]
    assert dock.plot.canvas.width() >= MIN_CANVAS_SIZE[0] and dock.plot.canvas.height() >= MIN_CANVAS_SIZE[1]

    plot = dock.plot
    rng = np.random.default_rng(0)
    legend = [(f"{c}: many cafes, few offices, bright roofs and long labels {c}", "#1f77b4") for c in range(14)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot.draw(PlotContent(rng.normal(size=(50, 2)), colours=np.tile([0.1, 0.4, 0.7, 1.0], (50, 1)),
                              legend=legend, title="Embeddings", axis_labels=("PC 1", "PC 2")))  # fmt: skip
        plot.canvas.draw()
        hidden = ScatterPlot(None)  # a canvas that never got a size: drawing it is skipped, not warned about
        hidden.canvas.resize(0, 0)
        hidden.figure.set_size_inches(0.01, 0.01)
        hidden.canvas.draw()
    assert not [w for w in caught if "collapsed" in str(w.message)], [str(w.message) for w in caught]
    box = plot.axes.get_legend().get_window_extent()
    figure = plot.figure.bbox
    assert box.x0 >= figure.x0 - 1 and box.x1 <= figure.x1 + 1 and box.y0 >= figure.y0 - 1
    texts = [t.get_text() for t in plot.axes.get_legend().get_texts()]
    assert len(texts) == LEGEND_MAX and texts[-1] == "\u2026 and 5 more"
    assert all(len(t) <= LEGEND_CHARS for t in texts)


def test_a_wide_explorer_shows_cluster_names_in_full_and_cuts_them_again_when_narrowed(qtbot) -> None:
    """The legend's names are cut only as much as the plot's width needs: in full at 900 px (README
    screenshot size), cut again when the dock is made narrow, always inside the figure."""
    from plugin.explorer.plot import LEGEND_CHARS, PlotContent

    dock = EmbeddingExplorer(None)
    qtbot.addWidget(dock)
    dock.resize(900, 700)
    dock.show()
    qtbot.waitUntil(lambda: dock.plot.canvas.width() > 800)
    plot = dock.plot
    names = [f"{c}: less green image; darker image; more varied image" for c in range(4)]  # 52 characters
    plot.draw(PlotContent(np.random.default_rng(0).normal(size=(40, 2)),
                          colours=np.tile([0.1, 0.4, 0.7, 1.0], (40, 1)),
                          legend=[(name, "#1f77b4") for name in names], title="Embeddings"))  # fmt: skip
    plot.canvas.draw()

    def shown() -> list[str]:
        return [t.get_text() for t in plot.axes.get_legend().get_texts()]

    def inside() -> bool:
        box, figure = plot.axes.get_legend().get_window_extent(), plot.figure.bbox
        return box.x0 >= figure.x0 - 1 and box.x1 <= figure.x1 + 1

    assert shown() == names and inside()
    dock.resize(305, 500)
    qtbot.waitUntil(lambda: plot.canvas.width() < 500)
    plot.canvas.draw()
    assert all(len(t) <= LEGEND_CHARS and t.endswith("\u2026") for t in shown()) and inside()
    assert plot.legend_texts == names
