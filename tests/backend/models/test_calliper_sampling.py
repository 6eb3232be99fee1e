"""CaLLiPer at scale: points inside polygons and POI texts, vectorised, equal to their one-at-a-time definitions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely

from backend.models.calliper import embedder as emb_mod
from backend.models.calliper.embedder import sample_in_polygons
from backend.progress import Progress


def _one_by_one(geoms: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition: the first k Halton points of each bounding box inside the polygon, else a point on it."""
    base = emb_mod._halton(emb_mod._HALTON_SIZE)
    parts, owners = [], []
    for i, geom in enumerate(geoms):
        if geom is None or geom.is_empty:
            continue
        minx, miny, maxx, maxy = geom.bounds
        w, h = maxx - minx, maxy - miny
        ratio = w * h / geom.area if geom.area > 0 else math.inf
        m = int(min(emb_mod._HALTON_SIZE, max(k, math.ceil(2 * k * ratio)))) if math.isfinite(ratio) else 0
        pts = np.empty((0, 2))
        if m and w > 0 and h > 0:
            cand = base[:m] * (w, h) + (minx, miny)
            pts = np.array([p for p in cand if geom.contains(shapely.Point(p))][:k]).reshape(-1, 2)
        if not len(pts):
            rep = geom.representative_point()
            pts = np.array([[rep.x, rep.y]])
        parts.append(pts)
        owners += [i] * len(pts)
    return np.vstack(parts), np.array(owners)


@pytest.fixture
def polygons() -> list:
    rng = np.random.default_rng(0)
    out: list = [shapely.Point(float(x), float(y)).buffer(float(r), quad_segs=4)
                 for x, y, r in rng.uniform([0, 0, 5], [5000, 5000, 300], size=(40, 3))]
    out += [None, shapely.Polygon(), shapely.box(0, 0, 1000, 0.5), shapely.Polygon([(0, 0), (10, 0), (0, 1e-4)]),
            shapely.Polygon([(0, 0), (400, 0), (400, 400), (200, 50), (0, 400)])]  # thin, degenerate, concave
    return out


@pytest.mark.parametrize("k", [1, 7, 32])
def test_vectorised_sampling_equals_the_definition(polygons: list, k: int) -> None:
    xy, own = sample_in_polygons(polygons, k)
    ref_xy, ref_own = _one_by_one(polygons, k)
    np.testing.assert_array_equal(own, ref_own)
    np.testing.assert_allclose(xy, ref_xy, rtol=0, atol=1e-9)


def test_sampling_runs_in_blocks_and_polls_progress(polygons: list, monkeypatch: pytest.MonkeyPatch,
                                                    poll_log: Any) -> None:
    whole = sample_in_polygons(polygons, 5)
    monkeypatch.setattr(emb_mod, "_SAMPLE_BLOCK", 4)
    blocked = sample_in_polygons(polygons, 5, poll_log)
    assert len(poll_log.polls) == math.ceil(len(polygons) / 4)  # one heartbeat/cancel check per block
    np.testing.assert_array_equal(blocked[1], whole[1])
    np.testing.assert_array_equal(blocked[0], whole[0])  # blocks change nothing


def test_texts_are_built_once_per_distinct_category_and_name() -> None:
    """build_texts equals the one-POI-at-a-time description and formats each distinct pair once."""
    from backend.models.calliper import text as text_mod

    rng = np.random.default_rng(1)
    cats = list(rng.choice(["cafe", "atm", "place_of_worship", "estate_agent"], size=500))
    names = list(rng.choice(np.array(["Blue Bottle", "  Blue Bottle ", "", "   ", None, 7], dtype=object), size=500))
    template, name_template = "{article} {category}", "{name}, {article} {category}"

    def one(cat: str, name: object) -> str:
        label = text_mod.category_label(cat)
        article = "an" if label[:1].lower() in "aeiou" else "a"
        name = name.strip() if isinstance(name, str) else ""
        return (name_template if name else template).format(category=label, name=name, article=article).strip()

    formatted: list[int] = []

    class Counting(str):
        def format(self, *args: object, **kwargs: object) -> str:
            formatted.append(1)
            return str.format(self, *args, **kwargs)

    out = text_mod.build_texts(cats, names, Counting(template), Counting(name_template))
    assert out == [one(c, n) for c, n in zip(cats, names, strict=True)]
    assert len(formatted) == len(set(out)) == 8  # 4 categories x (named, unnamed), not 500


def test_describe_pois_gives_distinct_texts_and_an_index_equal_to_build_texts() -> None:
    """describe_pois (what CaLLiPer's fit uses: no per-POI string) reads a Series as it is, and its distinct
    texts and index give build_texts' list and encode_texts' own factorisation."""
    import pandas as pd

    from backend.encoders.text import encode_texts
    from backend.models.calliper import text as text_mod

    rng = np.random.default_rng(2)
    cats = pd.Series(rng.choice(["cafe", "atm", "bank"], size=300), index=np.arange(1000, 1300))
    names = pd.Series(rng.choice(np.array(["", "Nook", None, " Nook "], dtype=object), size=300), index=cats.index)
    # "{category}" for both: a named and an unnamed POI of one category read the same (one text, not two)
    texts, index = text_mod.describe_pois(cats, names, "{category}", "{category}")
    assert len(set(texts)) == len(texts) == 3
    assert [texts[i] for i in index] == text_mod.build_texts(list(cats), list(names), "{category}", "{category}")
    texts, index = text_mod.describe_pois(cats, names)
    listed = text_mod.build_texts(list(cats), list(names))
    assert [texts[i] for i in index] == listed

    class Encoder:
        def encode(self, chunk: list[str], **_: object) -> np.ndarray:
            return np.array([[len(t), t.count("a"), 1.0] for t in chunk], dtype=np.float32)

    whole = encode_texts(listed, loader=lambda *_: Encoder())
    given = encode_texts(texts, loader=lambda *_: Encoder(), index=index)
    assert given.texts == whole.texts
    np.testing.assert_array_equal(given.index, whole.index)
    np.testing.assert_array_equal(given.vectors, whole.vectors)
    with pytest.raises(ValueError, match="distinct"):
        encode_texts([texts[0], texts[0]], loader=lambda *_: Encoder(), index=np.array([0, 1]))


def test_embedding_many_points_polls_progress_per_chunk_and_can_be_cancelled(poll_log: Any) -> None:
    import torch

    from backend.errors import Cancelled
    from backend.models.calliper import CaLLiPerEmbedder

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 4)

        def location(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    model = CaLLiPerEmbedder(dim=4, device="cpu")
    model._net, model.meta = Net(), {"origin": [0.0, 0.0], "crs": None}
    xy = np.random.default_rng(0).normal(size=(1000, 2))
    out = model.embed_points(xy, batch=300, progress=poll_log)
    assert poll_log.polls == [f"embedding points {s:,}/1,000" for s in (0, 300, 600, 900)]  # before every chunk
    np.testing.assert_allclose(out, model.embed_points(xy), rtol=1e-6)  # chunking changes nothing
    stop = Progress()
    stop.cancel()
    with pytest.raises(Cancelled):
        model.embed_points(xy, batch=300, progress=stop)


def test_region_means_are_summed_per_chunk_and_equal_the_definition() -> None:
    """Region embeddings in polygon mode: the mean of each region's point embeddings, summed chunk by chunk, so
    that memory holds the regions and one chunk, never every point's embedding (8 M x dim at 250,000 regions)."""
    import tracemalloc

    import torch

    from backend.models.calliper import CaLLiPerEmbedder

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 64)

        def location(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.lin(x / 1000.0))

    torch.manual_seed(0)
    model = CaLLiPerEmbedder(dim=64, device="cpu")
    model._net, model.meta = Net(), {"origin": [0.0, 0.0], "crs": None}
    rng = np.random.default_rng(0)
    n_regions, per_region = 2_000, 32
    xy = rng.normal(scale=5_000.0, size=(n_regions * per_region, 2))
    owner = rng.permutation(np.repeat(np.arange(n_regions), per_region))

    every_point = model.embed_points(xy).astype(np.float64)  # the definition: all points, then the means
    expected = np.stack([every_point[owner == r].mean(axis=0) for r in range(n_regions)])
    tracemalloc.start()
    means = model.region_means(xy, owner, n_regions, batch=4_096)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_allclose(means, expected, rtol=1e-9, atol=1e-12)
    all_embeddings = every_point.size * 4  # what holding every point's float32 embedding takes: 16 MB
    assert peak < all_embeddings / 2, f"peak {peak / 1e6:.1f} MB of numpy memory for {all_embeddings / 1e6:.1f} MB"


def test_describe_pois_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Factorised a few values at a time (short calls under the heartbeat), with missing categories and names
    spread over the chunks, the texts and index are those of one pass."""
    import pandas as pd

    from backend.models.calliper import text as text_mod

    rng = np.random.default_rng(7)
    cats = pd.Series(rng.choice(np.array(["cafe", "atm", None, np.nan, "bank"], dtype=object), size=400))
    names = pd.Series(rng.choice(np.array(["", "Nook", None, " Nook ", np.nan, 3], dtype=object), size=400))
    whole = text_mod.describe_pois(cats, names)
    monkeypatch.setattr(text_mod, "FACTORIZE_CHUNK", 7)
    chunked = text_mod.describe_pois(cats, names)
    assert chunked[0] == whole[0]
    np.testing.assert_array_equal(chunked[1], whole[1])
    assert [chunked[0][i] for i in chunked[1]] == text_mod.build_texts(list(cats), list(names))
