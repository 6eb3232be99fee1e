"""Run choices: validation messages, the run configuration, exported inputs, per-project storage.

Covers plugin/parameters.py, plugin/input_export.py and plugin/project_settings.py on the real sample
layers and on small memory layers built here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRasterLayer, QgsVectorFileWriter, QgsVectorLayer

from plugin.input_export import (
    MARKER,
    STAGING_MARKER,
    InputExporter,
    gpkg_columns,
    remove_exported_inputs,
    remove_stale_staging,
)
from plugin.parameters import (
    METHODS,
    LabelChoice,
    MethodChoice,
    RunChoices,
    inputs_dir_for,
    label_fields,
    label_name,
    raster_path,
    to_run_config,
    validate,
)
from plugin.project_settings import clear_choices, load_choices, save_choices

#: Every test starts with the baseline-only method registry (conftest ``fresh_registry``).
pytestmark = pytest.mark.usefixtures("fresh_registry")


def sample_choices(sample: dict, output_dir: Path, **changes) -> RunChoices:
    """Valid choices on the sample city (small settings)."""
    choices = RunChoices(
        region_layer_id=sample["block_groups"].id(),
        region_id_field="GEO_ID",
        poi_layer_id=sample["pois"].id(),
        poi_category_field="category",
        poi_name_field="name",
        raster_layer_ids=[sample["landsat"].id()],
        labels=[LabelChoice(field="Population"), LabelChoice(points_layer_id=sample["crime_incidents"].id())],
        methods=[MethodChoice("baseline", 8, {"log1p_counts": True, "neighbourhood_m": 0.0})],
        cluster_k=4,
        folds=3,
        repeats=1,
        output_dir=str(output_dir),
    )
    for key, value in changes.items():
        setattr(choices, key, value)
    return choices


def memory_polygons(ids: list[str | None], name: str = "regions") -> QgsVectorLayer:
    """A polygon memory layer (EPSG:32610) with one square per id in field ``rid``."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32610&field=rid:string(20)&field=pop:integer", name, "memory")
    features = []
    for i, rid in enumerate(ids):
        feature = QgsFeature(layer.fields())
        x = 550_000 + 100 * i
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({x} 0,{x + 100} 0,{x + 100} 100,{x} 100,{x} 0))"))
        feature.setAttributes([rid, i])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    layer.updateExtents()
    return layer


def has(problems: list[str], *words: str) -> bool:
    return any(all(word in problem for word in words) for problem in problems)


# ------------------------------------------------------------------------------------- validate


def test_valid_sample_choices(sample: dict, tmp_path: Path) -> None:
    assert validate(sample_choices(sample, tmp_path / "run"), QgsProject.instance()) == []


def test_no_region_layer(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    problems = validate(RunChoices(output_dir=str(tmp_path / "run")), qgis_new_project)
    assert has(problems, "Choose a region layer")


def test_point_layer_as_regions(sample: dict, tmp_path: Path) -> None:
    choices = sample_choices(sample, tmp_path / "run", region_layer_id=sample["pois"].id(), region_id_field="name")
    assert has(validate(choices), "not a polygon layer", "POIs")


def test_polygons_as_pois(sample: dict, tmp_path: Path) -> None:
    choices = sample_choices(sample, tmp_path / "run", poi_layer_id=sample["block_groups"].id())
    assert has(validate(choices), "POI layer", "not a point layer")


def test_empty_region_layer(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    layer = memory_polygons([])
    qgis_new_project.addMapLayer(layer)
    choices = RunChoices(region_layer_id=layer.id(), region_id_field="rid", output_dir=str(tmp_path / "r"))
    assert has(validate(choices), "has no features")


def test_duplicate_and_null_ids(sample: dict, qgis_new_project: QgsProject, tmp_path: Path) -> None:
    duplicated = memory_polygons(["a", "b", "b", "c"], "dup")
    with_null = memory_polygons(["a", None, "c"], "nulls")
    qgis_new_project.addMapLayers([duplicated, with_null])
    choices = sample_choices(sample, tmp_path / "run", region_layer_id=duplicated.id(), region_id_field="rid")
    choices.labels = []
    problems = validate(choices)
    assert has(problems, "'rid'", "duplicate values", "3 distinct ids for 4 regions"), problems
    choices.region_layer_id = with_null.id()
    assert has(validate(choices), "'rid'", "NULL"), validate(choices)
    choices.region_id_field = "missing"
    assert has(validate(choices), "no field 'missing'", "rid, pop")


def test_duplicate_ids_in_a_geopackage(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    from qgis.core import QgsVectorFileWriter

    memory = memory_polygons(["x", "x"], "dup")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    path = tmp_path / "dup.gpkg"
    error = QgsVectorFileWriter.writeAsVectorFormatV3(memory, str(path), qgis_new_project.transformContext(), options)
    assert error[0] == QgsVectorFileWriter.WriterError.NoError
    layer = QgsVectorLayer(str(path), "dup gpkg", "ogr")
    qgis_new_project.addMapLayer(layer)
    choices = RunChoices(region_layer_id=layer.id(), region_id_field="rid", raster_layer_ids=[],
                         od_path="", output_dir=str(tmp_path / "out"))  # fmt: skip
    assert has(validate(choices), "duplicate values")


def test_no_sources(sample: dict, tmp_path: Path) -> None:
    choices = sample_choices(sample, tmp_path / "run", poi_layer_id="", raster_layer_ids=[])
    problems = validate(choices)
    assert has(problems, "No input for baseline", "POI layer", "raster", "OD table", "land-use layer"), problems
    choices.raster_layer_ids = [sample["landsat"].id()]  # a raster alone is enough
    assert validate(choices) == []


def test_category_field_and_label_field(sample: dict, tmp_path: Path) -> None:
    choices = sample_choices(sample, tmp_path / "run", poi_category_field="kind")
    choices.labels = [LabelChoice(field="NAME")]
    problems = validate(choices)
    assert has(problems, "POI layer has no field 'kind'")
    assert has(problems, "label field 'NAME' is not numeric")
    choices.poi_category_field = ""
    assert has(validate(choices), "Choose the POI category field")


def test_output_folder_not_empty_needs_replace(sample: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("x")
    choices = sample_choices(sample, out)
    assert has(validate(choices), "already holds files", "replace existing results")
    choices.overwrite = True
    assert validate(choices) == []


def test_output_folder_unwritable(sample: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file.txt"
    blocker.write_text("not a folder")
    problems = validate(sample_choices(sample, blocker / "run"))
    assert has(problems, "cannot be created", "is a file"), problems
    assert has(validate(sample_choices(sample, blocker)), "is a file")
    assert has(validate(sample_choices(sample, "")), "Choose an output folder")


def test_inputs_folder_with_foreign_files(sample: dict, tmp_path: Path) -> None:
    foreign = inputs_dir_for(tmp_path / "run")
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user data")
    assert has(validate(sample_choices(sample, tmp_path / "run")), "did not write")
    (foreign / MARKER).write_text("")
    assert validate(sample_choices(sample, tmp_path / "run")) == []


def test_k_device_and_evaluation(sample: dict, tmp_path: Path) -> None:
    choices = sample_choices(sample, tmp_path / "run", cluster_k=1, prediction_models=[], folds=1, device="cuda")
    problems = validate(choices, backend_info={"cuda": False})
    assert has(problems, "at least 2 (or auto)")
    assert has(problems, "prediction model")
    assert has(problems, "at least 2 folds")
    assert has(problems, "no CUDA GPU")
    choices.cluster_k = 0  # auto
    assert not has(validate(choices), "clusters")


def test_raster_must_be_a_local_file(sample: dict, qgis_new_project: QgsProject, tmp_path: Path) -> None:
    assert raster_path(sample["landsat"]) is not None
    remote = QgsRasterLayer("/vsicurl/https://example.invalid/image.tif", "remote", "gdal")
    assert raster_path(remote) is None
    xyz = QgsRasterLayer("type=xyz&url=https://tile.invalid/{z}/{x}/{y}.png", "tiles", "wms")
    qgis_new_project.addMapLayer(xyz, False)
    choices = sample_choices(sample, tmp_path / "run", raster_layer_ids=[xyz.id()])
    assert has(validate(choices), "not a local file")


def test_od_table_columns(sample: dict, tmp_path: Path) -> None:
    od = tmp_path / "trips.csv"
    od.write_text("from,to,trips\n060750101001,060750101002,3\n")
    choices = sample_choices(sample, tmp_path / "run", od_path=str(od))
    assert has(validate(choices), "no column 'origin', 'destination', 'count'", "from, to, trips")
    choices.od_origin_field, choices.od_destination_field, choices.od_count_field = "from", "to", "trips"
    assert validate(choices) == []
    choices.od_path = str(tmp_path / "missing.csv")
    assert has(validate(choices), "does not exist")


def test_methods_from_backend_info(sample: dict, tmp_path: Path, fresh_registry) -> None:
    METHODS.update_from_info({
        "cuda": False,
        "methods": {
            "baseline": {"title": "Baseline", "views": ["poi_counts", "image_stats"], "min_views": 1,
                         "view_inputs": {"poi_counts": "pois", "image_stats": "imagery"},
                         "params": {"log1p_counts": True, "neighbourhood_m": 0.0}},
            "fusion": {"title": "Fusion", "dim": 64, "views": ["poi_counts", "mobility", "landuse"],
                       "view_inputs": {"poi_counts": "pois", "mobility": "od", "landuse": "landuse"},
                       "min_views": 2, "params": {"epochs": 10, "lr": 0.001}},
        },
    })  # fmt: skip
    assert METHODS.names() == ["baseline", "fusion"]
    fusion = METHODS.choice("fusion")
    assert (fusion.dim, fusion.params) == (64, {"epochs": 10, "lr": 0.001})
    choices = sample_choices(sample, tmp_path / "run", methods=[METHODS.choice("baseline"), fusion])
    assert has(validate(choices), "No input for fusion (it needs 2 kinds of input)", "OD table")
    choices.methods = [MethodChoice("nonexistent")]
    assert has(validate(choices), "does not offer the method 'nonexistent'")
    # what gives each view is the backend's to say (``view_inputs``), also for a view the plugin never heard of
    METHODS.update_from_info({"methods": {"roads": {
        "title": "Roads", "views": ["road_graph"], "min_views": 1, "view_inputs": {"road_graph": "landuse"}}}})
    choices.methods = [METHODS.choice("roads")]
    assert has(validate(choices), "No input for roads: add a land-use layer")
    choices.methods = [MethodChoice("fusion", 64, {"epochs": 10, "lr": 0.001})]
    choices.od_path = str(tmp_path / "od.csv")
    assert not any("No input" in p for p in validate(choices))  # POIs and trips: two of fusion's inputs


def test_cached_backend_info_is_used_only_by_the_same_regionlens_version(fresh_registry) -> None:
    """Processing offers the cached methods at start-up; a cache written by another RegionLens version, or before
    the backend's files changed (an updated plugin may have other methods), is ignored: the backend is asked again."""
    from plugin.common import common
    from plugin.parameters import backend_fingerprint, info_cache_path

    cache = info_cache_path()
    before = cache.read_bytes() if cache.is_file() else None
    python = "/opt/backend/bin/python"
    info = {"methods": {"cached_method": {"title": "Cached", "params": {}}}}
    try:
        fresh_registry.update_from_info(info, python)  # writes the cache
        fresh_registry.reset()
        assert fresh_registry.load_cache(python) and "cached_method" in fresh_registry.names()
        fresh_registry.reset()
        assert not fresh_registry.load_cache("/other/python")
        stale = json.loads(cache.read_text(encoding="utf-8"))
        stale["version"] = common.VERSION + ".old"
        cache.write_text(json.dumps(stale), encoding="utf-8")
        assert not fresh_registry.load_cache(python) and "cached_method" not in fresh_registry.names()
        del stale["version"]  # a cache from before versions were recorded
        cache.write_text(json.dumps(stale), encoding="utf-8")
        assert not fresh_registry.load_cache(python)
        stale["version"], stale["fingerprint"] = common.VERSION, "0" * 16  # same version, backend files changed
        cache.write_text(json.dumps(stale), encoding="utf-8")
        assert not fresh_registry.load_cache(python)
        stale["fingerprint"] = backend_fingerprint()
        cache.write_text(json.dumps(stale), encoding="utf-8")
        assert fresh_registry.load_cache(python)
    finally:
        cache.unlink(missing_ok=True)
        if before is not None:
            cache.write_bytes(before)


def test_label_names() -> None:
    assert label_name("Population") == "population"
    assert label_name("Crime incidents 2012 H2 (SFPD)") == "crime_incidents"  # short and readable
    assert label_name("2012 counts") == "counts"
    assert label_name("2012") == "label_2012"
    assert label_name("Population", taken=["population"]) == "population_2"
    assert len(label_name("x" * 80)) == 31


def test_label_fields_leave_out_ids_and_geometry(sample: dict, qgis_new_project: QgsProject, tmp_path: Path) -> None:
    offered = label_fields(sample["block_groups"], "GEO_ID")
    assert {"Population", "Vandalism", "Robbery", "Drugs", "CarTheft"} <= set(offered)
    assert "CENSUSAREA" not in offered and "GEO_ID" not in offered
    # A "Create grid" result saved to a GeoPackage: id, left/top/right/bottom, plus a measured value.
    path = tmp_path / "grid.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("grid", None, ogr.wkbPolygon)
    fields = [("id", ogr.OFTInteger64), ("left", ogr.OFTReal), ("top", ogr.OFTReal), ("right", ogr.OFTReal),
              ("bottom", ogr.OFTReal), ("cell_no", ogr.OFTInteger), ("Shape_Area", ogr.OFTReal),
              ("trees", ogr.OFTInteger)]  # fmt: skip
    for name, kind in fields:
        layer.CreateField(ogr.FieldDefn(name, kind))
    for i in range(6):
        feature = ogr.Feature(layer.GetLayerDefn())
        for name, value in zip([f[0] for f in fields], [i, i, i + 1, i + 1, i, 100 + i, 1.0, i % 3], strict=True):
            feature.SetField(name, value)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({i} 0, {i + 1} 0, {i + 1} 1, {i} 1, {i} 0))"))
        layer.CreateFeature(feature)
    ds = None
    grid = QgsVectorLayer(f"{path}|layername=grid", "grid", "ogr")
    assert label_fields(grid) == ["trees"]  # cell_no: an integer unique per cell numbers the cells


# ------------------------------------------------------------------------------------- config


def test_to_run_config_exports_inputs(sample: dict, tmp_path: Path, backend_python: Path) -> None:
    out = tmp_path / "run"
    config = to_run_config(sample_choices(sample, out))
    inputs = tmp_path / "run_inputs"
    assert not out.exists()  # the results folder stays untouched: the backend writes it atomically
    assert config["output_dir"] == str(out.resolve())
    assert config["regions"] == {"path": str(inputs / "regions.gpkg"), "id_field": "GEO_ID"}
    assert config["pois"]["path"] == str(inputs / "pois.gpkg")
    assert config["pois"]["category_field"] == "category" and config["pois"]["name_field"] == "name"
    assert config["rasters"] == [{"path": str(raster_path(sample["landsat"]).resolve())}]
    assert config["labels"][0] == {"name": "population", "field": "Population", "target": "density", "log1p": True}
    assert config["labels"][1]["name"] == "crime_incidents"
    assert config["labels"][1]["points"] == str(inputs / "label_crime_incidents.gpkg")
    assert config["methods"] == [{"name": "baseline", "dim": 8, "params": {"log1p_counts": True,
                                                                         "neighbourhood_m": 0.0}}]  # fmt: skip
    assert config["clustering"] == {"k": 4}
    assert config["prediction"] == {"models": ["ridge"], "folds": 3, "repeats": 1, "spatial": True,
                                    "write_model": "ridge", "coverage": 0.9}  # fmt: skip
    assert (inputs / MARKER).is_file()
    assert json.loads((inputs / "config.json").read_text()) == config

    regions = QgsVectorLayer(str(inputs / "regions.gpkg"), "r", "ogr")
    assert regions.featureCount() == 579
    assert gpkg_columns(inputs / "regions.gpkg", "regions") == ["GEO_ID", "Population"]  # what the backend reads
    pois = QgsVectorLayer(str(inputs / "pois.gpkg"), "p", "ogr")
    assert pois.featureCount() == 2563
    assert {"category", "name"} <= set(pois.fields().names()) and "osm_id" not in pois.fields().names()

    # The backend accepts the configuration as it is.
    check = "import json,sys; from backend.config import config_from_dict; config_from_dict(json.load(sys.stdin))"
    done = subprocess.run([str(backend_python), "-c", check], input=json.dumps(config), capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr

    # Exporting again replaces the previous inputs; without labels there is no prediction section.
    again = to_run_config(sample_choices(sample, out, labels=[], cluster_k=0))
    assert again["prediction"] is None and again["clustering"] == {"k": "auto"}
    assert not (inputs / "label_crime_incidents.gpkg").exists()


def test_remove_exported_inputs_and_staging(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert remove_exported_inputs(foreign) is False and foreign.exists()
    ours = tmp_path / "run_inputs"
    ours.mkdir()
    (ours / MARKER).write_text("")
    assert remove_exported_inputs(ours) is True and not ours.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    staging = tmp_path / ".run.tmp-abc123"
    staging.mkdir()
    (staging / "regionlens.gpkg").write_text("half")
    (staging / STAGING_MARKER).write_text(json.dumps({"pid": int(dead.stdout)}))
    live = tmp_path / ".run.tmp-live"  # a run still writing: never touched
    live.mkdir()
    (live / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid()}))
    unmarked = tmp_path / ".run.tmp-other"  # not the backend's
    unmarked.mkdir()
    other = tmp_path / ".other.tmp-1"
    other.mkdir()
    assert remove_stale_staging(tmp_path / "run") == [staging.resolve()]
    assert not staging.exists() and live.exists() and unmarked.exists() and other.exists()
    assert remove_stale_staging(tmp_path / "run", pid=os.getpid()) == [live.resolve()]  # the worker that died
    assert unmarked.exists()


# ------------------------------------------------------------------------------------- project settings


def test_choices_round_trip_through_the_project(sample: dict, qgis_new_project: QgsProject, tmp_path: Path) -> None:
    assert load_choices(qgis_new_project) is None
    choices = sample_choices(sample, tmp_path / "run", seed=7, device="cpu", overwrite=True)
    save_choices(choices, qgis_new_project)
    assert load_choices(qgis_new_project) == choices
    project_file = tmp_path / "city.qgz"
    assert qgis_new_project.write(str(project_file))
    qgis_new_project.clear()
    assert load_choices(qgis_new_project) is None
    assert qgis_new_project.read(str(project_file))
    assert load_choices(qgis_new_project) == choices
    clear_choices(qgis_new_project)
    assert load_choices(qgis_new_project) is None


def test_malformed_project_entries_are_ignored(qgis_new_project: QgsProject) -> None:
    qgis_new_project.writeEntry("RegionLens", "run/seed", '"not a number"')
    qgis_new_project.writeEntry("RegionLens", "run/labels", '[{"field": "Population"}, 3, {"bogus": 1}]')
    qgis_new_project.writeEntry("RegionLens", "run/methods", "{broken json")
    qgis_new_project.writeEntry("RegionLens", "run/device", '"cuda"')
    choices = load_choices(qgis_new_project)
    assert choices is not None
    assert choices.seed == 0 and choices.device == "cuda"
    assert [lab.field for lab in choices.labels] == ["Population"]
    assert [m.name for m in choices.methods] == ["baseline"]


def test_geopackage_fid_is_exported_as_a_column(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    """A GeoPackage's key column (fid) shows as a field in QGIS; chosen as the id, it must reach the backend."""
    memory = QgsVectorLayer("Polygon?crs=EPSG:32610&field=regionlens_fid:integer&field=pop:integer", "cells", "memory")
    for i in range(3):
        feature = QgsFeature(memory.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({i} 0,{i + 1} 0,{i + 1} 1,{i} 1,{i} 0))"))
        feature.setAttributes([i, 10 * i])
        memory.dataProvider().addFeature(feature)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    path = str(tmp_path / "cells.gpkg")
    assert QgsVectorFileWriter.writeAsVectorFormatV3(memory, path, qgis_new_project.transformContext(), options)[0] == 0
    cells = QgsVectorLayer(path, "cells", "ogr")
    assert cells.fields().names()[0] == "fid"
    exporter = InputExporter(tmp_path / "inputs")
    exporter.prepare()
    written = exporter.export(cells, "regions", ["fid", "regionlens_fid", "pop"])
    assert gpkg_columns(written, "regions") == ["fid", "regionlens_fid", "pop"]  # a key column name no field uses
    exported = QgsVectorLayer(str(written), "r", "ogr")
    assert sorted(f["fid"] for f in exported.getFeatures()) == [1, 2, 3]

    # Processing exports the same way.
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    from plugin.processing._inputs import export_vector

    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    path = export_vector(cells, tmp_path / "processing.gpkg", context, feedback, "regions")
    assert gpkg_columns(path, "processing") == ["fid", "regionlens_fid", "pop"]


def test_one_exporter_keeps_chosen_fields_and_honours_the_selection(qgis_new_project: QgsProject,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    """The dock, Apply and Processing share write_vector: only the named fields, the selection when asked,
    polygons as multi-polygons, and a cancel that stops the export."""
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsWkbTypes

    from plugin.input_export import ExportCancelled, ExportError, write_vector
    from plugin.processing._inputs import export_vector

    cells = QgsVectorLayer("Polygon?crs=EPSG:32610&field=cell:string&field=pop:integer&field=note:string",
                           "cells", "memory")  # fmt: skip
    for i in range(4):
        feature = QgsFeature(cells.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({i} 0,{i + 1} 0,{i + 1} 1,{i} 1,{i} 0))"))
        feature.setAttributes([f"c{i}", 10 * i, "x"])
        cells.dataProvider().addFeature(feature)
    qgis_new_project.addMapLayer(cells)
    cells.selectByIds([f.id() for f in cells.getFeatures() if f["pop"] >= 20])
    exporter = InputExporter(tmp_path / "inputs")
    exporter.prepare()
    everything = QgsVectorLayer(str(exporter.export(cells, "all", ["cell", "pop", "missing"])), "all", "ogr")
    assert everything.featureCount() == 4 and gpkg_columns(everything.source(), "all") == ["cell", "pop"]
    assert QgsWkbTypes.isMultiType(everything.wkbType())
    selected = QgsVectorLayer(str(exporter.export(cells, "some", ["cell"], selected_only=True)), "some", "ogr")
    assert sorted(f["cell"] for f in selected.getFeatures()) == ["c2", "c3"]

    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    path = export_vector(cells, tmp_path / "processing.gpkg", context, feedback, "regions", ["pop"])
    assert gpkg_columns(path, "processing") == ["pop"]
    feedback.cancel()
    with pytest.raises(Exception, match="Cancelled while exporting the regions layer"):
        export_vector(cells, tmp_path / "cancelled.gpkg", context, feedback, "regions")
    with pytest.raises(ExportCancelled):
        write_vector(cells, tmp_path / "stop.gpkg", is_cancelled=lambda: True)
    assert issubclass(ExportCancelled, ExportError) and issubclass(ExportError, ValueError)


def test_dock_writes_a_raster_that_is_not_a_file_as_geotiff(sample: dict, qgis_new_project: QgsProject,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """A raster inside a zip is exported to the inputs folder, as Processing does, instead of being refused."""
    import zipfile

    landsat = raster_path(sample["landsat"])
    archive = tmp_path / "landsat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(landsat, landsat.name)
    zipped = QgsRasterLayer(f"/vsizip/{archive}/{landsat.name}", "Landsat (zipped)", "gdal")
    assert zipped.isValid() and raster_path(zipped) is None
    qgis_new_project.addMapLayer(zipped)
    choices = sample_choices(sample, tmp_path / "run", raster_layer_ids=[zipped.id()])
    assert not has(validate(choices), "raster")
    config = to_run_config(choices)
    entry = config["rasters"][0]
    assert entry == {"path": str(tmp_path / "run_inputs" / "Landsat_zipped.tif"), "name": "Landsat_zipped"}
    exported = QgsRasterLayer(entry["path"], "exported", "gdal")
    assert (exported.width(), exported.height(), exported.crs()) == (zipped.width(), zipped.height(), zipped.crs())
