"""Headless rendering of a run: project file and PNG maps (plugin/render_demo.py)."""

from __future__ import annotations

import os
import subprocess  # nosec B404 # runs the module's own command line with this interpreter
import sys
import zipfile
from pathlib import Path

import pytest
from qgis.core import QgsProject
from qgis.PyQt.QtGui import QImage

from plugin.render_demo import main, render_demo


def _check_png(path: Path) -> None:
    image = QImage(str(path))
    assert not image.isNull(), path
    assert image.width() >= 1200
    assert image.height() == 1000
    colours = set()
    non_white = 0
    for y in range(0, image.height(), 7):
        for x in range(0, image.width(), 7):
            rgb = image.pixel(x, y) & 0xFFFFFF
            colours.add(rgb)
            non_white += rgb != 0xFFFFFF
    assert len(colours) > 2, path
    assert non_white > 0.2 * len(range(0, image.height(), 7)) * len(range(0, image.width(), 7)), path


def test_render_demo(run_gpkg: Path) -> None:
    folder = run_gpkg.parent
    written = render_demo(folder)
    assert written == {
        "project": folder / "regionlens_demo.qgz",
        "clusters": folder / "map_clusters.png",
        "population": folder / "map_population.png",
    }
    for path in written.values():
        assert path.is_file()
    _check_png(written["clusters"])
    _check_png(written["population"])

    with zipfile.ZipFile(written["project"]) as archive:
        qgs = next(name for name in archive.namelist() if name.endswith(".qgs"))
        text = archive.read(qgs).decode("utf-8")
    assert "./regionlens.gpkg|layername=clusters" in text  # relative paths
    assert str(folder) not in text

    project = QgsProject()
    assert project.read(str(written["project"]))
    layers = list(project.mapLayers().values())
    assert len(layers) == 8  # every label's predictions and residuals maps
    assert all(layer.isValid() for layer in layers)
    assert project.layerTreeRoot().findGroup("RegionLens \u2014 run_small") is not None
    project.clear()


def test_render_demo_falls_back_to_first_label(make_run_gpkg, tmp_path: Path) -> None:
    gpkg = make_run_gpkg(tmp_path / "run_robbery", labels=("robbery",))
    written = render_demo(gpkg.parent)
    assert written["robbery"] == gpkg.parent / "map_robbery.png"
    _check_png(written["robbery"])


def test_main_without_geopackage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "regionlens.gpkg does not exist" in capsys.readouterr().err


def test_command_line(run_gpkg: Path, repo_root: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run(  # nosec B603 # this interpreter, fixed arguments, no shell
        [sys.executable, "-m", "plugin.render_demo", str(run_gpkg.parent)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    printed = completed.stdout.split()
    assert str(run_gpkg.parent / "map_clusters.png") in printed
    assert str(run_gpkg.parent / "map_population.png") in printed
    assert str(run_gpkg.parent / "regionlens_demo.qgz") in printed
