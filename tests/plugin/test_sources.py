"""POI files (.osm.pbf, GeoParquet) and satellite-embedding rasters in the run dock and Processing, with real QGIS:
the widgets (plugin/ui/source_widgets.py), the shared request entries (plugin/sources.py), validation, the
project settings, and the run configuration both build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import gdal, osr
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt

from plugin.parameters import METHODS, MethodChoice, RunChoices, sources_of, to_run_config, validate
from plugin.project_settings import load_choices, save_choices
from plugin.sample_data import load_sample_data
from plugin.sources import POI_FILE_FILTER, poi_file_config, poi_file_problem, raster_config
from plugin.ui.run_dock import RunDock
from plugin.ui.source_widgets import RasterKinds
from tests.plugin.processing import test_processing
from tests.plugin.processing.test_processing import BLOCKS, RecordingFeedback

processing_module = test_processing.processing_module  # the Processing fixtures
provider = test_processing.provider


@pytest.fixture(autouse=True)
def _fresh_registry():
    METHODS.reset()
    yield
    METHODS.reset()


@pytest.fixture
def sample(qgis_new_project: QgsProject) -> dict:
    return load_sample_data(qgis_new_project)


def write_multiband(path: Path, bands: int) -> Path:
    """A small GeoTIFF of ``bands`` float32 bands over central San Francisco (EPSG:32610)."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, bands, gdal.GDT_Float32)
    ds.SetGeoTransform((550_000.0, 10.0, 0.0, 4_180_080.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32610)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(1, bands + 1):
        ds.GetRasterBand(b).Fill(float(b))
    ds = None
    return path


@pytest.fixture
def embedding_layer(qgis_new_project: QgsProject, tmp_path: Path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(write_multiband(tmp_path / "alphaearth.tif", 64)), "alphaearth")
    assert layer.isValid() and layer.bandCount() == 64
    qgis_new_project.addMapLayer(layer)
    return layer


@pytest.fixture
def pbf(tmp_path: Path) -> Path:
    path = tmp_path / "city.osm.pbf"
    path.write_bytes(b"\x00\x00\x00\x0d")  # the plugin passes the file on; the backend reads it
    return path


def _choices(sample: dict, tmp_path: Path, **changes) -> RunChoices:
    choices = RunChoices(region_layer_id=sample["block_groups"].id(), region_id_field="GEO_ID",
                         methods=[MethodChoice("baseline", 8, {})], cluster_k=4, output_dir=str(tmp_path / "run"))
    for key, value in changes.items():
        setattr(choices, key, value)
    return choices


def test_request_entries(tmp_path: Path, pbf: Path) -> None:
    assert poi_file_config(str(pbf), "ignored", "ignored") == {"path": str(pbf.resolve())}  # categories from tags
    parquet = tmp_path / "places.parquet"
    assert poi_file_config(str(parquet)) == {"path": str(parquet.resolve())}  # Overture's columns by default
    assert poi_file_config(str(parquet), "kind", "label") == {"path": str(parquet.resolve()), "category_field": "kind",
                                                              "name_field": "label"}
    assert raster_config({"path": "a.tif"}, "embedding") == {"path": "a.tif", "kind": "embedding"}
    assert raster_config({"path": "a.tif"}, "imagery") == {"path": "a.tif"}
    with pytest.raises(ValueError, match="Unknown raster kind"):
        raster_config({"path": "a.tif"}, "dem")
    assert "*.osm.pbf" in POI_FILE_FILTER and "*.parquet" in POI_FILE_FILTER
    assert "neither an OpenStreetMap extract nor GeoParquet" in poi_file_problem(str(tmp_path / "pois.csv"))
    assert "does not exist" in poi_file_problem(str(tmp_path / "gone.osm.pbf"))
    assert poi_file_problem(str(pbf)) is None


def test_poi_file_and_embedding_raster_reach_the_run_config(sample: dict, embedding_layer, pbf: Path,
                                                            tmp_path: Path, backend_info: dict) -> None:
    METHODS.update_from_info(backend_info)
    assert "pretrained" in METHODS.names()  # from the backend's info, like every method
    choices = _choices(sample, tmp_path, poi_file=str(pbf),
                       raster_layer_ids=[sample["landsat"].id(), embedding_layer.id()],
                       embedding_raster_ids=[embedding_layer.id()],
                       methods=[METHODS.choice("pretrained"), MethodChoice("baseline", 8, {})])
    assert sources_of(choices) == {"regions", "pois", "imagery", "embedding"}
    assert validate(choices) == []
    config = to_run_config(choices)
    assert config["pois"] == {"path": str(pbf.resolve())}
    assert config["rasters"] == [{"path": str(Path(sample["landsat"].source()).resolve())},
                                 {"path": str((tmp_path / "alphaearth.tif").resolve()), "kind": "embedding"}]


def test_poi_file_and_embedding_problems_are_explained(sample: dict, embedding_layer, pbf: Path, tmp_path: Path,
                                                       backend_info: dict) -> None:
    METHODS.update_from_info(backend_info)
    both = _choices(sample, tmp_path, poi_file=str(pbf), poi_layer_id=sample["pois"].id(),
                    poi_category_field="category")
    assert any("either a POI layer or a POI file" in p for p in validate(both))
    wrong = _choices(sample, tmp_path, poi_file=str(tmp_path / "pois.csv"))
    assert any("neither an OpenStreetMap extract nor GeoParquet" in p for p in validate(wrong))
    # pretrained with the embedding raster declared as imagery: nothing for it to use
    imagery = _choices(sample, tmp_path, raster_layer_ids=[embedding_layer.id()],
                       methods=[METHODS.choice("pretrained")])
    problems = validate(imagery)
    assert any("No input for pretrained" in p and "satellite-embedding raster" in p for p in problems), problems
    # what gives a view is the backend's description (``view_inputs``), which the plugin reads and never repeats
    described = {name: METHODS.get(name).view_inputs for name in ("pretrained", "refound")}
    assert described == {"pretrained": {"embedding": "embedding"},
                         "refound": {"poi_points": "pois", "chips": "imagery", "samples": "regions"}}


def test_dock_offers_the_poi_file_and_suggests_the_embedding_kind(
    plugin_dock: RunDock, sample: dict, embedding_layer, pbf: Path, qgis_new_project: QgsProject, qtbot
) -> None:
    dock = plugin_dock
    listed = {dock.raster_list.item(i).data(Qt.ItemDataRole.UserRole): dock.raster_list.item(i)
              for i in range(dock.raster_list.count())}
    assert RasterKinds.kind(listed[embedding_layer.id()]) == "embedding"  # 64 bands: suggested
    assert listed[embedding_layer.id()].text() == "alphaearth (embedding)"
    assert RasterKinds.kind(listed[sample["landsat"].id()]) == "imagery"
    for item in listed.values():
        item.setCheckState(Qt.CheckState.Checked)
    dock.poi_combo.setLayer(None)
    dock.poi_file.setFilePath(str(pbf))
    choices = dock.choices()
    assert choices.poi_file == str(pbf) and choices.poi_layer_id == ""
    assert choices.embedding_raster_ids == [embedding_layer.id()]
    assert set(choices.raster_layer_ids) == {embedding_layer.id(), sample["landsat"].id()}

    # The planner declares the Landsat image an embedding too, then takes it back, with the kind dropdown.
    dock.raster_list.setCurrentItem(listed[sample["landsat"].id()])
    assert dock.raster_kinds.combo.isEnabled() and dock.raster_kinds.combo.currentData() == "imagery"
    dock.raster_kinds.combo.setCurrentIndex(dock.raster_kinds.combo.findData("embedding"))
    dock.raster_kinds.combo.activated.emit(dock.raster_kinds.combo.currentIndex())
    assert set(dock.choices().embedding_raster_ids) == {embedding_layer.id(), sample["landsat"].id()}
    dock.raster_kinds.combo.setCurrentIndex(dock.raster_kinds.combo.findData("imagery"))
    dock.raster_kinds.combo.activated.emit(dock.raster_kinds.combo.currentIndex())
    assert dock.choices().embedding_raster_ids == [embedding_layer.id()]
    assert listed[sample["landsat"].id()].text() == sample["landsat"].name()

    # Stored with the project and shown again as stored (a 64-band raster kept as imagery stays imagery).
    choices = dock.choices()
    choices.embedding_raster_ids = []
    save_choices(choices, qgis_new_project)
    restored = load_choices(qgis_new_project)
    assert restored.poi_file == str(pbf) and restored.embedding_raster_ids == []
    dock.set_choices(restored)
    assert dock.poi_file.filePath() == str(pbf) and dock.choices().embedding_raster_ids == []
    assert RasterKinds.kind(dock.raster_list.findItems("alphaearth", Qt.MatchFlag.MatchExactly)[0]) == "imagery"


@pytest.fixture
def plugin_dock(qgis_iface, qtbot, qgis_new_project):
    from plugin.main import RegionLensPlugin

    plugin = RegionLensPlugin(qgis_iface)
    widget = RunDock(plugin, None, qgis_new_project, fetch_info=False)
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    widget.disconnect_project()


def test_processing_takes_a_poi_file_and_embedding_rasters(provider, processing_module, embedding_layer,
                                                           pbf: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    from plugin.processing import embed as embed_module

    sent: list[dict] = []

    def capture(_python, action, config, _feedback):
        sent.append(json.loads(json.dumps(config)))
        raise QgsProcessingException("stop here")

    monkeypatch.setattr(embed_module, "run_backend", capture)
    params = {"REGIONS": str(BLOCKS), "REGION_ID": "GEO_ID", "POI_FILE": str(pbf),
              "EMBEDDING_RASTERS": [embedding_layer.source()], "OUTPUT_DIR": str(tmp_path / "out")}
    with pytest.raises(QgsProcessingException, match="stop here"):
        processing_module.run("regionlens:embed", params, feedback=RecordingFeedback())
    (config,) = sent
    assert config["pois"] == poi_file_config(str(pbf))
    assert config["rasters"] == [{"path": str(Path(embedding_layer.source()).resolve()), "kind": "embedding"}]

    algorithm = provider.algorithm("embed")
    context = QgsProcessingContext()
    both = {**params, "POIS": str(BLOCKS.parent / "sf_pois_osm.geojson"), "POI_CATEGORY": "category"}
    assert "either a POI layer or a POI file" in algorithm.problem(both, context)
    wrong = {**params, "POI_FILE": str(tmp_path / "pois.csv")}
    assert "neither an OpenStreetMap extract nor GeoParquet" in algorithm.problem(wrong, context)
