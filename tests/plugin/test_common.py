"""plugin/common.py: a GeoPackage layer's URI and back, with real QGIS layers."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

from plugin.common import gpkg_source, gpkg_uri


def test_gpkg_source_is_the_inverse_of_gpkg_uri(qgis_new_project: QgsProject, tmp_path: Path) -> None:
    memory = QgsVectorLayer("Polygon?crs=EPSG:3857&field=region_id:string", "regions", "memory")
    assert gpkg_source(memory) == (None, "")  # not read from a file
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "clusters_calliper"
    path = tmp_path / "run" / "regionlens.gpkg"
    path.parent.mkdir()
    error = QgsVectorFileWriter.writeAsVectorFormatV3(memory, str(path), qgis_new_project.transformContext(), options)
    assert error[0] == QgsVectorFileWriter.WriterError.NoError
    layer = QgsVectorLayer(gpkg_uri(path, "clusters_calliper"), "clusters", "ogr")
    assert layer.isValid() and gpkg_source(layer) == (path.resolve(), "clusters_calliper")
    assert gpkg_source(QgsVectorLayer(str(path), "whole file", "ogr")) == (path.resolve(), "")  # names no layer
    del layer
