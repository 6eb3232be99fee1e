"""Bad inputs end with exit 2, a message that names the fault, nothing written and every input untouched.

Each case starts from the small real city of ``conftest.small_city`` (GeoPackages written in ``tmp_path``),
breaks one thing, runs ``python -m backend run`` in-process (:func:`backend.cli.main`) and checks the exit code,
the words the message must (and must not) contain, that no output or staging folder is left and that every file
in the case folder is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import Point, Polygon

from backend.cli import main
from tests.backend.conftest import TOY_X0, TOY_Y0

Patch = Callable[[dict[str, Any], Path], "str | None"]


def _write(gdf: gpd.GeoDataFrame, path: Path) -> None:
    path.unlink(missing_ok=True)
    gdf.to_file(path, engine="pyogrio")


def _regions(folder: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(folder / "regions.gpkg")


def _set(section: str, **values: Any) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        cfg[section] = {**(cfg.get(section) or {}), **values}

    return patch


def _method(**values: Any) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        cfg["methods"][0].update(values)

    return patch


def _label(**values: Any) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        cfg["labels"][0].update(values)

    return patch


def _top(**values: Any) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        cfg.update(values)

    return patch


def _drop(key: str) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        cfg.pop(key)

    return patch


def _calliper_without_pois(cfg: dict[str, Any], folder: Path) -> None:
    cfg.pop("pois")
    cfg["methods"] = [{"name": "calliper"}]


def _toml_typo(cfg: dict[str, Any], folder: Path) -> str:
    return 'output_dir = "out"\n[regions\npath = "regions.gpkg"\n'


def _duplicate_ids(cfg: dict[str, Any], folder: Path) -> None:
    gdf = _regions(folder)
    gdf.loc[3, "rid"] = 1
    _write(gdf, folder / "regions.gpkg")


def _regions_as_points(cfg: dict[str, Any], folder: Path) -> None:
    gdf = _regions(folder)
    _write(gdf.set_geometry(gdf.geometry.centroid), folder / "regions.gpkg")


def _no_crs(cfg: dict[str, Any], folder: Path) -> None:
    gdf = _regions(folder)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _write(gpd.GeoDataFrame(gdf.drop(columns="geometry"), geometry=list(gdf.geometry)), folder / "regions.gpkg")


def _pois_far_away(cfg: dict[str, Any], folder: Path) -> None:
    pois = gpd.read_file(folder / "pois.gpkg")
    _write(pois.set_geometry(pois.geometry.translate(50_000, 0)), folder / "pois.gpkg")


def _flat_region(cfg: dict[str, Any], folder: Path) -> None:
    gdf = _regions(folder)
    flat = Polygon([(TOY_X0, TOY_Y0 + 500), (TOY_X0 + 50, TOY_Y0 + 550), (TOY_X0 + 100, TOY_Y0 + 600)])
    extra = gpd.GeoDataFrame({"rid": [99], "pop": [1.0], "kind": ["e"]}, geometry=[flat], crs=gdf.crs)
    _write(gpd.GeoDataFrame(pd_concat(gdf, extra), crs=gdf.crs), folder / "regions.gpkg")


def pd_concat(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def _keep_regions(n: int) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        _write(_regions(folder).iloc[:n], folder / "regions.gpkg")

    return patch


def _single_region(cfg: dict[str, Any], folder: Path) -> None:
    _keep_regions(1)(cfg, folder)
    cfg.pop("labels")


def _single_region_pois_elsewhere(cfg: dict[str, Any], folder: Path) -> None:
    _single_region(cfg, folder)
    _pois_far_away(cfg, folder)


def _empty_regions(cfg: dict[str, Any], folder: Path) -> None:
    _write(_regions(folder).iloc[:0], folder / "regions.gpkg")


def _raster(path: str, **extra: Any) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        cfg["rasters"] = [{"path": path, **extra}]

    return patch


def _od_negative(cfg: dict[str, Any], folder: Path) -> None:
    (folder / "od.csv").write_text("origin,destination,count\n1,2,5\n2,3,-4\n")
    cfg["od"] = {"path": "od.csv"}


def _point_label(path: str = "crimes.gpkg", **extra: Any) -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        pts = gpd.GeoDataFrame({"type": ["theft", "fraud"]},
                               geometry=[Point(TOY_X0 + 10, TOY_Y0 + 10), Point(TOY_X0 + 110, TOY_Y0 + 10)],
                               crs="EPSG:32610")
        _write(pts, folder / "crimes.gpkg")
        cfg["labels"] = [{"name": "crime", "points": path, **extra}]

    return patch


def _garbage_regions(cfg: dict[str, Any], folder: Path) -> None:
    (folder / "regions.gpkg").write_bytes(b"this is not a GeoPackage\n" * 10)


def _output_folder(files: dict[str, str], overwrite: bool, name: str = "out") -> Patch:
    def patch(cfg: dict[str, Any], folder: Path) -> None:
        (folder / name).mkdir()
        for rel, text in files.items():
            (folder / name / rel).write_text(text)
        cfg["output_dir"] = name
        cfg["overwrite"] = overwrite

    return patch


def _run_folder_holding_input(cfg: dict[str, Any], folder: Path) -> None:
    (folder / "prev").mkdir()
    (folder / "prev" / "run.json").write_text(json.dumps({"regionlens": "0.1.0"}))
    shutil.move(folder / "regions.gpkg", folder / "prev" / "regions.gpkg")
    cfg["regions"]["path"] = "prev/regions.gpkg"
    cfg["output_dir"] = "prev"
    cfg["overwrite"] = True


def _output_is_a_file(cfg: dict[str, Any], folder: Path) -> None:
    (folder / "out").write_text("notes")


# (id, patch, exit code, words the message must contain, words it must not contain)
CASES: list[tuple[str, Patch, int, list[str], list[str]]] = [
    # configuration: types, ranges, contradictions (checked before any input is read)
    ("dim-text", _method(dim="sixteen"), 2, ["methods[0].dim", "integer", "sixteen"], []),
    ("dim-zero", _method(dim=0), 2, ["methods[0].dim", "between 1"], []),
    ("dim-huge", _method(dim=10**9), 2, ["methods[0].dim"], []),
    ("param-text", _method(params={"neighbourhood_m": "far"}), 2, ["neighbourhood_m", "number"], []),
    ("param-infinite", _method(params={"neighbourhood_m": float("inf")}), 2, ["neighbourhood_m", "finite"], []),
    ("param-unknown", _method(params={"depth": 3}), 2, ["depth", "allowed"], []),
    ("param-range", lambda c, f: c.update(methods=[{"name": "hafusion", "params": {"dropout": 1.5}}]), 2,
     ["dropout"], []),
    ("method-unknown", _method(name="word2vec"), 2, ["word2vec", "available"], []),
    ("method-twice", lambda c, f: c.update(methods=[{"name": "baseline"}, {"name": "baseline"}]), 2, ["once"], []),
    ("calliper-without-pois", _calliper_without_pois, 2, ["calliper", "POI layer"], ["imagery"]),
    ("folds-text", _set("prediction", folds="3"), 2, ["prediction.folds", "integer"], []),
    ("folds-one", _set("prediction", folds=1), 2, ["prediction.folds", "between 2"], []),
    ("repeats-zero", _set("prediction", repeats=0), 2, ["prediction.repeats"], []),
    ("models-string", _set("prediction", models="gbm"), 2, ["prediction.models", '["gbm"]'], ["'b'"]),
    ("models-unknown", _set("prediction", models=["svm"]), 2, ["svm", "ridge"], []),
    ("models-empty", _set("prediction", models=[]), 2, ["prediction.models", "empty"], []),
    ("write-model", _set("prediction", models=["ridge"], write_model="gbm"), 2, ["write_model"], []),
    ("spatial-text", _set("prediction", spatial="no"), 2, ["prediction.spatial", "true or false"], []),
    ("k-one", _set("clustering", k=1), 2, ["clustering.k"], []),
    ("k-text", _set("clustering", k="three"), 2, ["clustering.k", "three"], []),
    ("k-range", _set("clustering", k="auto", k_min=5, k_max=3), 2, ["clustering.k_max"], []),
    ("cluster-method", _set("clustering", method="dbscan"), 2, ["clustering.method", "dbscan"], []),
    ("seed-negative", _top(seed=-1), 2, ["seed"], []),
    ("device-unknown", _top(device="gpu"), 2, ["device", "gpu"], []),
    ("chip-size", _top(chip_size=0), 2, ["chip_size"], []),
    ("overwrite-text", _top(overwrite="yes"), 2, ["overwrite", "true or false"], []),
    ("unknown-key", _top(outputdir="x"), 2, ["Unknown configuration keys", "outputdir"], []),
    ("output-empty", _top(output_dir=""), 2, ["output_dir"], []),
    ("no-regions", _drop("regions"), 2, ["[regions]"], []),
    ("toml-typo", _toml_typo, 2, ["Cannot parse"], []),
    ("label-name", _label(name="1pop"), 2, ["start with a letter"], []),
    ("label-target", _label(target="ratio"), 2, ["target", "ratio"], []),
    ("label-log1p-text", _label(log1p="yes"), 2, ["labels[0].log1p", "true or false"], []),
    ("label-field-and-points", _label(points="x.gpkg"), 2, ["exactly one"], []),
    ("label-rate-no-per", _label(target="rate"), 2, ["per_field"], []),
    ("raster-band-zero", _raster("img.tif", bands=[0]), 2, ["rasters[0].bands"], []),
    # inputs
    ("regions-missing", lambda c, f: c["regions"].update(path="nope.gpkg"), 2, ["nope.gpkg"], []),
    ("regions-garbage", _garbage_regions, 2, ["regions.gpkg"], []),
    ("regions-empty", _empty_regions, 2, ["regions"], []),
    ("id-field-missing", lambda c, f: c["regions"].update(id_field="GEOID"), 2, ["GEOID", "rid"], []),
    ("ids-duplicated", _duplicate_ids, 2, ["not unique"], []),
    ("regions-points", _regions_as_points, 2, ["polygons"], []),
    ("regions-no-crs", _no_crs, 2, ["coordinate reference system"], []),
    ("region-no-area", _flat_region, 2, ["no area left after repair", "'99'"], []),
    ("single-region", _single_region, 2, ["1 region", "at least 3"], ["CRS"]),
    ("single-region-pois-elsewhere", _single_region_pois_elsewhere, 2, ["1 region", "at least 3"], ["CRS"]),
    ("k-above-regions", _set("clustering", k=50), 2, ["clustering.k", "16 regions", "between 2 and 15"],
     ["smaller k"]),
    ("too-few-for-labels", _keep_regions(8), 2, ["8 regions", "at least 10"], []),
    ("category-missing", lambda c, f: c["pois"].update(category_field="kategorie"), 2, ["kategorie"], []),
    ("pois-far-away", _pois_far_away, 2, ["none of the 48 POIs"], []),
    ("label-field-missing", _label(field="popul"), 2, ["popul", "not a field"], []),
    ("label-field-text", _label(field="kind"), 2, ["kind", "no numeric value"], []),
    ("raster-missing", _raster("img.tif"), 2, ["img.tif"], []),
    ("od-negative", _od_negative, 2, ["od.csv", "negative"], []),
    ("label-points-missing", _point_label("thefts.gpkg"), 2, ["thefts.gpkg"], []),
    ("label-points-filter", _point_label(points_filter_field="type", points_filter_value="arson"), 2,
     ["arson", "no point has"], []),
    # output folder
    ("output-dot-overwrite", _top(output_dir=".", overwrite=True), 2, ["contains", "input"], []),
    ("output-dot", _top(output_dir="."), 2, ["contains"], []),
    ("output-parent-overwrite", _top(output_dir="..", overwrite=True), 2, ["contains"], []),
    ("output-unrelated-overwrite", _output_folder({"notes.txt": "mine"}, overwrite=True), 2,
     ["no RegionLens run", "run.json"], []),
    ("output-unrelated", _output_folder({"notes.txt": "mine"}, overwrite=False), 2, ["already holds files"], []),
    ("output-run-holding-input", _run_folder_holding_input, 2, ["contains an input"], []),
    ("output-is-file", _output_is_a_file, 2, ["is a file"], []),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (hidden ones too) with a hash of each file's bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


@pytest.mark.parametrize(("patch", "code", "words", "absent"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(small_city: dict[str, Any], tmp_path: Path, capsys, patch: Patch, code: int, words: list[str],
                   absent: list[str]) -> None:
    cfg = json.loads(json.dumps(small_city))
    text = patch(cfg, tmp_path)
    config = tmp_path / ("config.toml" if text is not None else "config.json")
    config.write_text(text if text is not None else json.dumps(cfg))
    before = _snapshot(tmp_path)
    capsys.readouterr()

    assert main(["run", str(config), "--quiet"]) == code
    err = capsys.readouterr().err
    assert err.startswith("Error ("), err
    for word in words:
        assert word in err, (word, err)
    for word in absent:
        assert word not in err, (word, err)
    assert _snapshot(tmp_path) == before  # inputs byte-identical, no output and no staging folder
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.tmp-*"))


def test_suite_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_the_small_city_itself_runs(small_city: dict[str, Any], tmp_path: Path, capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps(small_city))
    assert main(["run", str(tmp_path / "config.json"), "--quiet"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "run.json").is_file()
    assert not list(tmp_path.glob(".out.tmp-*"))
