"""The bundled San Francisco sample city and the demo run configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.config import RunConfig, config_from_dict

__all__ = ["SAMPLE_DIR", "demo_config_dict", "demo_config"]

#: resources/sample_data/sf/ of the repository (the plugin folder).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "resources" / "sample_data" / "sf"

_CRIMES = ("Vandalism", "Robbery", "Drugs", "CarTheft")


def demo_config_dict(output_dir: str | Path, quick: bool = False) -> dict[str, Any]:
    """The demo configuration as a dict (absolute paths).

    Labels are modelled as log1p densities (per km2): SF block groups are drawn to hold similar
    populations, so raw counts are nearly unpredictable while densities are learnable (SPEC section 5).

    Args:
        output_dir: Where the results go.
        quick: Fewer folds and repeats, for tests.
    """
    sf = SAMPLE_DIR
    labels: list[dict[str, Any]] = [
        {"name": "population", "field": "Population", "target": "density", "log1p": True},
    ]
    labels += [{"name": c.lower(), "field": c, "target": "density", "log1p": True} for c in _CRIMES]
    labels.append({"name": "incidents", "points": str(sf / "sf_crime_incidents_2012h2.geojson"),
                   "target": "density", "log1p": True})
    return {
        "output_dir": str(output_dir),
        "seed": 0,
        "device": "auto",
        "regions": {"path": str(sf / "sf_block_groups_crime_pop.geojson"), "id_field": "GEO_ID"},
        "pois": {"path": str(sf / "sf_pois_osm.geojson"), "category_field": "category", "name_field": "name"},
        "rasters": [{"path": str(sf / "sf_landsat7_3857_30m.tif"), "name": "landsat"}],
        "labels": labels,
        "methods": [{"name": "baseline", "dim": 16 if quick else 32, "params": {}}],
        "clustering": {"k": "auto"},
        "prediction": {
            "models": ["ridge"] if quick else ["ridge", "gbm"],
            "folds": 3 if quick else 5,
            "repeats": 1 if quick else 3,
            "spatial": True,
            "write_model": "ridge",
        },
    }


def demo_config(output_dir: str | Path, quick: bool = False, overwrite: bool = False) -> RunConfig:
    """The demo as a validated :class:`RunConfig`."""
    data = demo_config_dict(output_dir, quick=quick)
    data["overwrite"] = overwrite
    return config_from_dict(data)
