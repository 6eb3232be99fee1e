"""The bundled San Francisco sample city and the demo run configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.config import RunConfig, config_from_dict
from regionlens_common import DEFAULT_COVERAGE

__all__ = ["SAMPLE_DIR", "DEMO_METHODS", "demo_config_dict", "demo_config"]

#: resources/sample_data/sf/ of the repository (the plugin folder).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "resources" / "sample_data" / "sf"

_CRIMES = ("Vandalism", "Robbery", "Drugs", "CarTheft")

#: The demo's methods with lighter training lengths than their defaults (CaLLiPer 40 of 100 epochs, CooKIE
#: 20 + 40 of 100 + 200, HAFusion 40 of 300, ReFound 80 of 600 steps, fusion 3 inner folds of 5), the same for
#: every city; a full-length run is the same list without the overrides. Time per method: docs/benchmarks.md,
#: "Demo". The primary layers come from the best method by the run's own cross-validated R2 (``primary = "best"``).
DEMO_METHODS: tuple[dict[str, Any], ...] = (
    {"name": "baseline", "dim": 32, "params": {}},
    {"name": "calliper", "dim": 128, "params": {"epochs": 40}},
    {"name": "cookie", "dim": 64, "params": {"stage1_epochs": 20, "stage2_epochs": 40}},
    {"name": "hafusion", "dim": 144, "params": {"config": "auto", "epochs": 40}},
    {"name": "refound", "dim": 128, "params": {"config": "small", "steps": 80}},
    {"name": "fusion", "dim": 64, "params": {"inner_folds": 3}},
)


def demo_config_dict(output_dir: str | Path, quick: bool = False) -> dict[str, Any]:
    """The demo configuration as a dict (absolute paths).

    Labels are modelled as log1p densities (per km2): SF block groups are drawn to hold similar
    populations, so raw counts are nearly unpredictable while densities are learnable (SPEC section 5).
    The demo runs :data:`DEMO_METHODS` with ridge regression only (5 folds, 2 repeats, both protocols, 90 %
    CV+ intervals).

    Args:
        output_dir: Where the results go.
        quick: The baseline alone with fewer folds and repeats, for tests.
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
        "methods": ([{"name": "baseline", "dim": 16, "params": {}}] if quick
                    else [dict(m, params=dict(m["params"])) for m in DEMO_METHODS]),
        "primary": "auto" if quick else "best",
        "clustering": {"k": "auto"},
        "prediction": {
            "models": ["ridge"],
            "folds": 3 if quick else 5,
            "repeats": 1 if quick else 2,
            "spatial": True,
            "write_model": "ridge",
            "coverage": DEFAULT_COVERAGE,
        },
    }


def demo_config(output_dir: str | Path, quick: bool = False, overwrite: bool = False) -> RunConfig:
    """The demo as a validated :class:`RunConfig`."""
    data = demo_config_dict(output_dir, quick=quick)
    data["overwrite"] = overwrite
    return config_from_dict(data)
