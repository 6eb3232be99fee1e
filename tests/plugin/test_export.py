"""Export to shapefile and GeoPackage (plugin/export.py) in real QGIS."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsVectorFileWriter, QgsVectorLayer
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QMessageBox

from plugin import export as export_module
from plugin.common import common
from plugin.export import ExportDialog, export_layer, export_layer_dialog, shapefile_field_names

PREDICTION_FIELDS = [
    "region_id",
    "population_obs", "population_pred", "population_res",
    "robbery_obs", "robbery_pred", "robbery_res",
]  # fmt: skip


def _layer(gpkg: Path, name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
    assert layer.isValid()
    return layer


def _rows(layer: QgsVectorLayer) -> list[tuple[list, str]]:
    """(attributes, geometry) per feature, ordered by region id (field 'region_id')."""
    index = layer.fields().indexOf("region_id")
    rows = [(f.attributes(), f.geometry()) for f in layer.getFeatures()]
    return sorted(rows, key=lambda row: row[0][index])


def _null(value: object) -> bool:
    return value is None or (hasattr(value, "isNull") and value.isNull())


# ------------------------------------------------------------------------------------ field names


def test_shapefile_field_names_rule() -> None:
    names = [
        "fid", "region_id", "emb_000", "emb_001", "cluster", "cluster_name",
        *PREDICTION_FIELDS[1:],
        "popularity_pred", "theft1_obs", "theft1_pred", "theft1_res", "crime_obs", "crime_pred",
        "a_very_long_field_name", "a_very_long_field_name_2", "A_VERY_LON", "Bevölkerungsdichte",
    ]  # fmt: skip
    mapping = shapefile_field_names(names)
    assert list(mapping) == names  # every name, in order
    new = list(mapping.values())
    assert all(len(n) <= 10 and len(n.encode("utf-8")) <= 10 for n in new)
    assert len({n.lower() for n in new}) == len(new)  # unique, ignoring case (DBF)
    for kept in ("fid", "region_id", "emb_000", "emb_001", "cluster", "crime_obs", "crime_pred", "A_VERY_LON"):
        assert mapping[kept] == kept
    # prediction groups keep their suffix and share one stem per label
    assert [mapping[f"population_{s}"] for s in ("obs", "pred", "res")] == ["popul_obs", "popul_pred", "popul_res"]
    assert [mapping[f"robbery_{s}"] for s in ("obs", "pred", "res")] == ["robbe_obs", "robbe_pred", "robbe_res"]
    assert [mapping[f"theft1_{s}"] for s in ("obs", "pred", "res")] == ["theft_obs", "theft_pred", "theft_res"]
    assert mapping["popularity_pred"].endswith("_pred") and mapping["popularity_pred"] != "popul_pred"
    assert mapping["cluster_name"] == "cluster_na"
    # plain truncation, numbered on a clash (also with a kept name in another case)
    assert mapping["a_very_long_field_name"] == "a_very_l_1"  # "a_very_lon" is taken by A_VERY_LON
    assert mapping["a_very_long_field_name_2"] == "a_very_l_2"
    assert mapping["Bevölkerungsdichte"] == "Bevölkeru"  # 9 characters, 10 bytes
    # stable: the same input gives the same names
    assert shapefile_field_names(list(names)) == mapping


def test_shapefile_field_names_embeddings_unchanged() -> None:
    names = ["region_id"] + [f"emb_{j:03d}" for j in range(144)]
    assert shapefile_field_names(names) == {name: name for name in names}


def test_shapefile_field_names_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="Duplicate"):
        shapefile_field_names(["a", "a"])


# ------------------------------------------------------------------------------------ export_layer


def test_export_predictions_to_shapefile(run_gpkg: Path, tmp_path: Path) -> None:
    source = _layer(run_gpkg, "predictions")
    out = tmp_path / "export"
    out.mkdir()
    result = export_layer(source, out / "predictions", "ESRI Shapefile")

    assert result.path == out / "predictions.shp"
    expected = {
        "population_obs": "popul_obs", "population_pred": "popul_pred", "population_res": "popul_res",
        "robbery_obs": "robbe_obs", "robbery_pred": "robbe_pred", "robbery_res": "robbe_res",
    }  # fmt: skip
    assert result.renamed == expected
    assert result.message() == (
        "Exported 12 features to predictions.shp. 6 fields renamed for the shapefile (see Details)."
    )
    details = result.details()
    for old, new in expected.items():
        assert f"{old} \u2192 {new}" in details

    written = QgsVectorLayer(str(result.path), "written", "ogr")
    assert written.isValid()
    source_names = source.fields().names()
    assert written.fields().names() == [expected.get(name, name) for name in source_names]  # same order
    assert written.featureCount() == source.featureCount() == 12
    assert written.crs() == source.crs()
    for (attrs_in, geom_in), (attrs_out, geom_out) in zip(_rows(source), _rows(written), strict=True):
        assert geom_out.isGeosEqual(geom_in)
        assert len(attrs_in) == len(attrs_out)
        for a, b in zip(attrs_in, attrs_out, strict=True):
            if _null(a) or _null(b):
                assert _null(a) and _null(b)
            elif isinstance(a, float):
                assert b == pytest.approx(a, rel=1e-12)
            else:
                assert a == b

    assert (out / "predictions.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    assert {p.name for p in out.iterdir()} == {
        "predictions.shp", "predictions.shx", "predictions.dbf", "predictions.prj", "predictions.cpg",
        "predictions_fields.csv",
    }  # fmt: skip  # nothing temporary left
    with (out / "predictions_fields.csv").open(encoding="utf-8") as handle:
        assert dict(list(csv.reader(handle))[1:]) == expected
    assert set(result.files) == {p for p in out.iterdir()}


def test_export_embeddings_keeps_column_order(run_gpkg: Path, tmp_path: Path) -> None:
    source = _layer(run_gpkg, "embeddings")
    result = export_layer(source, tmp_path / "emb.shp")
    assert result.renamed == {}
    assert not (tmp_path / "emb_fields.csv").exists()
    written = QgsVectorLayer(str(result.path), "written", "ogr")
    names = written.fields().names()
    assert names == source.fields().names()
    assert [n for n in names if n.startswith("emb_")] == ["emb_000", "emb_001", "emb_002", "emb_003"]
    for (a, _ga), (b, _gb) in zip(_rows(source), _rows(written), strict=True):
        assert b[2:] == pytest.approx(a[2:], rel=1e-12)


def test_export_geopackage_keeps_names(run_gpkg: Path, tmp_path: Path) -> None:
    source = _layer(run_gpkg, "predictions")
    result = export_layer(source, tmp_path / "out.gpkg", "GPKG")
    assert result.renamed == {}
    assert "renamed" not in result.message() and "renamed" not in result.details()
    written = QgsVectorLayer(f"{result.path}|layername=out", "written", "ogr")
    assert written.isValid()
    assert written.fields().names() == source.fields().names()
    assert written.featureCount() == 12
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_table_to_dbf(run_gpkg: Path, tmp_path: Path) -> None:
    result = export_layer(_layer(run_gpkg, "metrics"), tmp_path / "metrics.shp")
    assert result.path == tmp_path / "metrics.dbf"
    assert QgsVectorLayer(str(result.path), "metrics", "ogr").featureCount() == 4


def test_export_refuses_to_overwrite(run_gpkg: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    clusters = _layer(run_gpkg, "clusters")
    first = export_layer(clusters, tmp_path / "layer.shp")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    predictions = _layer(run_gpkg, "predictions")
    with pytest.raises(FileExistsError, match="already exists"):
        export_layer(predictions, tmp_path / "layer.shp")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched, no temp files

    again = export_layer(predictions, tmp_path / "layer.shp", overwrite=True)
    assert again.path == first.path
    written = QgsVectorLayer(str(again.path), "written", "ogr")
    assert "popul_pred" in written.fields().names()
    mapping = {row[0]: row[1] for row in csv.reader((tmp_path / "layer_fields.csv").open(encoding="utf-8"))}
    assert "cluster_name" not in mapping and mapping["population_pred"] == "popul_pred"
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []

    export_layer(predictions, tmp_path / "p.gpkg", "GPKG")
    with pytest.raises(FileExistsError):
        export_layer(clusters, tmp_path / "p.gpkg", "GPKG")
    export_layer(clusters, tmp_path / "p.gpkg", "GPKG", overwrite=True)
    assert QgsVectorLayer(f"{tmp_path / 'p.gpkg'}|layername=p", "p", "ogr").fields().names()[-1] == "cluster_name"


def test_export_unwritable_paths(run_gpkg: Path, tmp_path: Path) -> None:
    layer = _layer(run_gpkg, "clusters")
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        export_layer(layer, tmp_path / "missing" / "out.shp")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        export_layer(layer, tmp_path / "a_file" / "out.shp")
    with pytest.raises(ValueError, match="Unsupported format"):
        export_layer(layer, tmp_path / "out.csv", "CSV")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "run_small"]


def test_export_writer_failure_leaves_nothing(run_gpkg: Path, tmp_path: Path, monkeypatch) -> None:
    layer = _layer(run_gpkg, "clusters")
    out = tmp_path / "out"
    out.mkdir()

    def failing_writer(lyr, path, context, options):
        for ext in (".shp", ".dbf"):  # a half-written shapefile
            Path(path).with_suffix(ext).write_bytes(b"partial")
        return QgsVectorFileWriter.WriterError.ErrFeatureWriteFailed, "disk full", "", ""

    monkeypatch.setattr(export_module.QgsVectorFileWriter, "writeAsVectorFormatV3", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        export_layer(layer, out / "clusters.shp")
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------ dialog


def test_export_dialog_reports_renamed_fields(
    run_gpkg: Path, tmp_path: Path, qgis_iface, qgis_new_project, monkeypatch
) -> None:
    layer = _layer(run_gpkg, "predictions")
    qgis_new_project.addMapLayer(layer)
    target = tmp_path / "pred_export"

    def accept(dialog: ExportDialog) -> int:
        assert dialog.layer() is layer  # preselected
        dialog.format_combo.setCurrentIndex(dialog.format_combo.findData("ESRI Shapefile"))
        dialog.path_edit.setText(str(target))
        return 1  # QDialog.DialogCode.Accepted

    monkeypatch.setattr(ExportDialog, "exec", accept)
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    result = export_layer_dialog(qgis_iface, layer)
    assert result is not None and result.path == tmp_path / "pred_export.shp"
    # a success (green), short, with the renamed fields behind Details and a button to open the folder
    items = [item for item in bar.items() if item.text().startswith("Exported")]
    assert len(items) == 1 and items[0].level() == Qgis.MessageLevel.Success
    assert not bar.get_messages(Qgis.MessageLevel.Warning)
    assert len(items[0].text()) < 100 and "pred_export.shp" in items[0].text()
    assert [b.text() for b in items[0].action_buttons] == ["Open folder"]
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    items[0].action_buttons[0].click()
    assert opened == [str(tmp_path)]
    items[0].details_button.click()
    assert "population_obs \u2192 popul_obs" in items[0].details_dialog.text()
    items[0].details_dialog.close()

    # the file exists now: the dialog asks before replacing it
    asked = []
    def refuse(*args, **kwargs):
        asked.append(args)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", refuse)
    before = result.path.read_bytes()
    assert export_layer_dialog(qgis_iface, layer) is None
    assert len(asked) == 1 and result.path.read_bytes() == before


def test_shapefile_names_keep_prediction_intervals_with_their_label() -> None:
    names = ["region_id", *(f"population{s}" for s in common.PREDICTION_SUFFIXES), "crime_lo", "crime_hi"]
    mapping = shapefile_field_names(names)
    assert [mapping[f"population{s}"] for s in common.PREDICTION_SUFFIXES] == [
        "popul_obs", "popul_pred", "popul_res", "popul_lo", "popul_hi"]
    assert mapping["crime_lo"] == "crime_lo" and mapping["crime_hi"] == "crime_hi"
