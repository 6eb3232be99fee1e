"""read_city: the whole sample city in one call, progress and cancellation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from backend.config import config_from_dict
from backend.errors import Cancelled, InputError
from backend.io import CityData, read_city
from backend.progress import Progress


def test_sf_city(sf_city: CityData) -> None:
    assert sf_city.crs.to_epsg() == 32610
    assert len(sf_city.regions) == 579 and sf_city.regions.crs == sf_city.crs
    assert sf_city.pois is not None and len(sf_city.pois) == 2551
    assert [r.name for r in sf_city.rasters] == ["sf_landsat7_3857_30m"]
    assert sf_city.od is None and sf_city.landuse is None
    assert sf_city.labels is not None and sf_city.labels.shape == (579, 4)


def test_progress_reaches_the_end_and_cancel_stops(sf_dir: Path, sf_config_dict: dict[str, Any]) -> None:
    cfg_dict = copy.deepcopy(sf_config_dict)
    cfg_dict.pop("labels")
    cfg_dict.pop("rasters")
    seen: list[float] = []
    city = read_city(config_from_dict(cfg_dict, sf_dir), Progress(callback=lambda s, f, m: seen.append(f)))
    assert seen[-1] == 1.0 and seen == sorted(seen) and city.labels is None

    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        read_city(config_from_dict(cfg_dict, sf_dir), progress)


def test_bad_section_is_reported_with_its_name(sf_dir: Path, sf_config_dict: dict[str, Any]) -> None:
    sf_config_dict["pois"]["category_field"] = "amenity"
    with pytest.raises(InputError, match=r"\[pois\] layer .*sf_pois_osm\.geojson: the category field 'amenity'"):
        read_city(config_from_dict(sf_config_dict, sf_dir))


def test_duplicate_raster_names_are_made_unique(sf_dir: Path, sf_config_dict: dict[str, Any]) -> None:
    sf_config_dict["rasters"] = [
        {"path": "sf_landsat7_3857_30m.tif", "name": "img"},
        {"path": "sf_landsat7_3857_30m.tif", "name": "img", "bands": [2]},
    ]
    sf_config_dict.pop("labels")
    sf_config_dict.pop("pois")
    city = read_city(config_from_dict(sf_config_dict, sf_dir))
    assert [(r.name, r.bands) for r in city.rasters] == [("img", [1, 2, 3]), ("img_2", [2])]


def test_a_slow_layer_read_keeps_reporting_and_can_be_cancelled(sf_dir: Path, sf_config_dict: dict[str, Any],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 cancel_at_message: Any) -> None:
    """A layer read is one long call (minutes for 10 M POIs): heartbeats continue and a cancel stops the run."""
    import threading

    from backend import progress as progress_mod
    from backend.io import vectors

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = vectors.read_pois

    def slow_read_pois(*args: Any) -> Any:
        release.wait(5.0)
        return real(*args)

    monkeypatch.setattr(vectors, "read_pois", slow_read_pois)
    cfg_dict = copy.deepcopy(sf_config_dict)
    cfg_dict.pop("labels")
    cfg_dict.pop("rasters")
    progress, messages = cancel_at_message("reading POIs", 3)
    with pytest.raises(Cancelled):
        read_city(config_from_dict(cfg_dict, sf_dir), progress)
    release.set()
    assert messages.count("reading POIs") == 3 and "inputs read" not in messages
