"""The base-class contract of every method: a saved model names the views it needs to embed new regions
(``views_for_transform``, saved as ``inputs`` in config.json), and those views are enough: embedding with only
the inputs that give them yields the same embedding as with every input. Also what each method declares it
learns from (``input_needs``, the worker's ``info``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.models import EMBEDDERS, get_embedder, load_embedder
from backend.views._base import Views
from backend.views.build import VIEW_SOURCES

#: Short training per method (tests only).
QUICK: dict[str, dict[str, Any]] = {
    "baseline": {},
    "hafusion": {"config": "reference", "epochs": 2, "ffn_dim": 16, "intra_blocks": 1, "inter_blocks": 1,
                 "region_blocks": 1, "heads": 2, "d_prime": 8, "d_m": 8, "lift_channels": 4},
    "calliper": {"epochs": 1},
    "cookie": {"stage1_epochs": 2, "stage2_epochs": 2, "hidden": 8, "image_encoder": "stats"},
    "refound": {"steps": 2, "batch_size": 8, "checkpoint_dir": "none"},
    "fusion": {"inner_folds": 2},
    "pretrained": {"pca": True},
}


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Caches under tmp_path, a tiny ReFound network (one torch thread: the folder's conftest)."""
    from backend.models.refound import model as refound_model

    monkeypatch.setitem(refound_model.PRESETS, "small", {"layers": 2, "width": 32, "heads": 2, "ffn": 64,
                                                         "fusion_layers": 1, "max_tokens": 24, "image_size": 32,
                                                         "codebook_size": 8})
    monkeypatch.setenv("REGIONLENS_CACHE_DIR", str(tmp_path / "cache"))


def subset(views: Views, n: int) -> Views:
    """The first ``n`` regions of the sample city with every view they have."""
    rows = np.arange(n)
    ids = views.region_ids[rows]
    pts = views.poi_points
    keep = set(map(str, ids))
    return Views(
        region_ids=ids, tables={k: t.iloc[rows] for k, t in views.tables.items()},
        adjacency=views.adjacency[rows][:, rows], poi_points=pts[pts["region_id"].isin(keep)].copy(),
        poi_texts=[views.poi_texts[i] for i in rows],
        chips={k: v[rows] for k, v in views.chips.items()},
        chip_masks={k: v[rows] for k, v in views.chip_masks.items()},
        areas_km2=views.areas_km2.iloc[rows], centroids=views.centroids[rows], geometry=views.geometry.iloc[rows],
    )


def only(views: Views, kinds: set[str]) -> Views:
    """``views`` as built from the regions and the input kinds ``kinds`` alone."""
    return Views(
        region_ids=views.region_ids,
        tables={k: t for k, t in views.tables.items() if VIEW_SOURCES[k] in kinds},
        adjacency=views.adjacency,
        poi_points=views.poi_points if "pois" in kinds else None,
        poi_texts=views.poi_texts if "pois" in kinds else None,
        chips=views.chips if "rasters" in kinds else {}, chip_masks=views.chip_masks if "rasters" in kinds else {},
        mobility=views.mobility if "od" in kinds else None,
        areas_km2=views.areas_km2, centroids=views.centroids, geometry=views.geometry,
    )


@pytest.fixture(scope="module")
def city(sf_views: Views) -> Views:
    """40 regions of the sample city, with a satellite-embedding view (unit rows) for ``pretrained``."""
    import pandas as pd

    views = subset(sf_views, 40)
    emb = np.random.default_rng(0).normal(size=(40, 32))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    views.tables["embedding"] = pd.DataFrame(emb, index=views.region_ids, columns=[f"e{i}" for i in range(32)])
    return views


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_a_saved_model_needs_only_the_views_it_names(name: str, city: Views, tmp_path: Path) -> None:
    model = get_embedder(name, dim=4, seed=0, device="cpu", **QUICK[name])
    sources: dict[str, Any] = {}
    if name == "fusion":  # fusion combines the run's other methods: a baseline here
        base = get_embedder("baseline", dim=4).fit(city)
        model.set_sources({"baseline": base.transform(city)})
    model.fit(city)
    folder = model.save(tmp_path / name)
    needed = model.views_for_transform()
    assert set(needed) <= set(model.uses_views)
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))["inputs"]
    assert sorted(v for entry in saved.values() for v in entry["views"]) == sorted(needed)
    assert set(saved) == {"regions", *(VIEW_SOURCES[v] for v in needed)}

    loaded = load_embedder(str(folder))
    assert loaded.views_for_transform() == needed
    kinds = {VIEW_SOURCES[v] for v in needed}
    restricted = only(city, kinds)
    if name == "fusion":
        sources = {"baseline": base.transform(city)}  # the sources embed the regions from their own inputs
        loaded.set_sources(sources)
    full = loaded.transform(city)
    if name == "fusion":
        loaded.set_sources(sources)
    alone = loaded.transform(restricted)
    np.testing.assert_allclose(alone.to_numpy(), full.to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_each_method_declares_the_inputs_it_learns_from(name: str) -> None:
    cls = EMBEDDERS[name]
    needs = cls.describe()["inputs"]
    assert needs == cls.input_needs()
    assert needs["required"][0] == "regions" and not set(needs["required"]) & set(needs["optional"])
    assert set(needs["required"]) | set(needs["optional"]) == {"regions", *(VIEW_SOURCES[v] for v in cls.uses_views)}
    # a required input is one the method cannot learn without: removing its views leaves too few
    for kind in needs["required"][1:]:
        assert len([v for v in cls.uses_views if VIEW_SOURCES[v] != kind]) < cls.min_views


def test_calliper_needs_its_pois_and_baseline_any_input() -> None:
    assert EMBEDDERS["calliper"].input_needs() == {"required": ["regions", "pois"], "optional": []}
    assert EMBEDDERS["baseline"].input_needs()["required"] == ["regions"]
    assert set(EMBEDDERS["refound"].input_needs()["optional"]) == {"pois", "rasters"}
