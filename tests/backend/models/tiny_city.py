"""A tiny synthetic city for training-loop tests (no file reads, seconds to train on a CPU).

``fast_training``: a fixture (import it, then ``pytest.mark.usefixtures("fast_training")``) with one torch
thread, the hash text encoder, the tiny ReFound network and caches under ``tmp_path``.

``tiny_views()``: a grid of 200 m squares in EPSG:32610 with POIs of five categories (named), POI-count and
land-use tables, and image statistics; every method that trains (HAFusion, CaLLiPer, CooKIE, ReFound) learns
from it. ``short_runs()`` lists one short, seeded configuration per method, and ``fingerprint()`` reduces a
fitted model to the numbers the regression and distributed tests compare (loss curve, embeddings).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from backend.views._base import Views

UTM10 = "EPSG:32610"
CATEGORIES = ("cafe", "bank", "school", "park", "shop")


def tiny_views(side: int = 8, pois_per_region: int = 12, seed: int = 0) -> Views:
    """``side`` x ``side`` squares of 200 m with POIs (each square favours one category), tables and polygons."""
    import geopandas as gpd
    from shapely.geometry import box

    rng = np.random.default_rng(seed)
    x0, y0, size = 550_000.0, 4_180_000.0, 200.0
    squares = [box(x0 + i * size, y0 + j * size, x0 + (i + 1) * size, y0 + (j + 1) * size)
               for j in range(side) for i in range(side)]
    n = len(squares)
    ids = pd.Index([f"r{k:03d}" for k in range(n)], name="region_id")
    rows = []
    for k, sq in enumerate(squares):
        minx, miny, _, _ = sq.bounds
        favourite = k % len(CATEGORIES)
        for m in range(pois_per_region):
            cat = CATEGORIES[favourite] if rng.random() < 0.6 else CATEGORIES[rng.integers(len(CATEGORIES))]
            name = f"{cat} {m}" if m % 3 else None
            rows.append((minx + rng.uniform(10, 190), miny + rng.uniform(10, 190), ids[k], cat, name))
    pts = pd.DataFrame(rows, columns=["x", "y", "region_id", "category", "name"])
    pts["text"] = [c if nm is None else f"{nm} ({c})" for c, nm in zip(pts["category"], pts["name"], strict=True)]
    counts = pd.crosstab(pts["region_id"], pts["category"]).reindex(index=ids, fill_value=0).astype(np.float64)
    landuse = pd.DataFrame(rng.dirichlet(np.ones(4), size=n), index=ids, columns=[f"lu_{c}" for c in "abcd"])
    image = pd.DataFrame(rng.normal(size=(n, 6)) + np.arange(n)[:, None] % 3, index=ids,
                         columns=[f"img_b{b}_{s}" for b in (1, 2, 3) for s in ("mean", "std")])
    geometry = gpd.GeoSeries(squares, index=ids, crs=UTM10)
    centroids = np.array([[g.centroid.x, g.centroid.y] for g in squares])
    return Views(region_ids=ids, tables={"poi_counts": counts, "landuse": landuse, "image_stats": image},
                 poi_points=pts, geometry=geometry, centroids=centroids)


class HashEncoder:
    """A sentence encoder stand-in: a fixed unit vector per text (seeded by its CRC)."""

    dim = 16

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


#: One short seeded run per training method: (method, constructor keyword arguments).
SHORT_RUNS: dict[str, dict[str, Any]] = {
    "hafusion": {"dim": 8, "seed": 3, "device": "cpu", "config": "scalable", "width": 16, "epochs": 4,
                 "batch_regions": 24, "region_blocks": 1, "intra_blocks": 1, "inter_blocks": 1, "heads": 2,
                 "d_prime": 8, "d_m": 4, "lift_channels": 4, "ffn_dim": 32},
    "calliper": {"dim": 8, "seed": 3, "device": "cpu", "hidden": 16, "blocks": 1, "scales": 4, "epochs": 3,
                 "batch_size": 96, "names": "no", "cache_dir": "none", "region_points": 4, "val_share": 0.1,
                 "patience": 0},
    "cookie": {"dim": 8, "seed": 3, "device": "cpu", "modalities": "poi,landuse,image", "image_encoder": "stats",
               "hidden": 16, "stage1_epochs": 2, "stage2_epochs": 3, "batch_size": 24, "cache_dir": "none"},
    "refound": {"dim": 16, "seed": 3, "device": "cpu", "steps": 6, "batch_size": 8, "checkpoint_dir": "none",
                "masked_image": False, "alignment": False, "distill_text": False, "distill_image": False,
                "distill_similarity": False, "use_grid": False},
}

#: The ReFound network of the tests (in place of the small preset).
TINY_REFOUND = dict(layers=2, width=16, heads=2, ffn=32, fusion_layers=1, max_tokens=24, image_size=32,
                    codebook_size=8)


def fingerprint(model: Any, views: Views) -> dict[str, Any]:
    """The loss curve and a few embedding numbers of a fitted model."""
    emb = model.transform(views).to_numpy()
    return {"history": [float(v) for v in model.history], "first": emb[0, :4].tolist(),
            "sum": float(emb.sum()), "abs": float(np.abs(emb).sum())}


@pytest.fixture
def fast_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """One torch thread, the hash text encoder, the tiny ReFound network, caches under tmp_path."""
    import torch

    from backend.encoders import text as text_mod
    from backend.models.refound import model as refound_model

    monkeypatch.setattr(text_mod, "load_text_encoder", lambda name, device: HashEncoder())
    monkeypatch.setitem(refound_model.PRESETS, "small", TINY_REFOUND)
    monkeypatch.setenv("REGIONLENS_CACHE_DIR", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
