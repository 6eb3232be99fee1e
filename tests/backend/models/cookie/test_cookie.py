"""CooKIE: pair enumeration, loss terms on hand-checked cases, the two training stages, modalities (text and
image through replaced encoders), missing modalities, determinism, save/load, inductive transform, cancel.
Tiny sizes, CPU, seeded, offline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from backend.encoders import image as image_encoders
from backend.encoders import text as text_encoders
from backend.errors import Cancelled, ConfigError, InputError
from backend.models import EMBEDDERS, get_embedder, load_embedder
from backend.models.cookie import CooKIEEmbedder
from backend.models.cookie import modalities as cm
from backend.models.cookie.losses import cross_correlation_penalty, info_nce, reconstruction_loss
from backend.models.cookie.model import (
    CooKIEConfig,
    CooKIENet,
    count_flops,
    count_parameters,
    modality_pairs,
    objective_counts,
    split_sizes,
)
from backend.models.cookie.synthetic import synthetic_views
from backend.progress import Progress
from backend.views._base import Views

#: Short training for unit tests.
FAST: dict[str, Any] = {"stage1_epochs": 6, "stage2_epochs": 6, "hidden": 16, "device": "cpu"}


def subset(views: Views, rows: np.ndarray) -> Views:
    """The views of some regions (tables, texts and chips; mobility is dropped: its columns are regions)."""
    ids = views.region_ids[rows]
    return Views(
        region_ids=ids,
        tables={k: t.iloc[rows] for k, t in views.tables.items()},
        poi_texts=None if views.poi_texts is None else [views.poi_texts[i] for i in rows],
        chips={k: v[rows] for k, v in views.chips.items()},
        chip_masks={k: v[rows] for k, v in views.chip_masks.items()},
        centroids=None if views.centroids is None else views.centroids[rows],
    )


class FakeTextEncoder:
    """Deterministic stand-in for the sentence encoder: a fixed random vector per distinct text."""

    calls = 0

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        FakeTextEncoder.calls += 1
        out = []
        for t in texts:
            rng = np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(t)))
            v = rng.normal(size=8)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32)


class FakeImageEncoder(torch.nn.Module):
    """Stand-in for EfficientNet-Lite0: a fixed random convolution to 6 channels on a 7 x 7 grid."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.randn(6, 3, 3, 3, generator=g)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        FakeImageEncoder.calls += 1
        y = torch.nn.functional.conv2d(x, self.weight, padding=1)
        return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(y), 7)


@pytest.fixture
def fake_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the packaged text and image encoders (tests never load real weights)."""
    FakeTextEncoder.calls = 0
    FakeImageEncoder.calls = 0
    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name, device: FakeTextEncoder())
    monkeypatch.setattr(image_encoders, "load_image_encoder", lambda name, device: FakeImageEncoder())


# --------------------------------------------------------------------------------------------- registry
def test_registry_describe_and_parameter_errors() -> None:
    assert EMBEDDERS["cookie"] is CooKIEEmbedder
    info = CooKIEEmbedder.describe()
    assert info["min_views"] == 2 and "chips" in info["views"] and info["params"]["part"] == "all"
    for bad in ({"part": "both"}, {"modalities": "poi"}, {"modalities": "poi,smell"}, {"temperature": 0.0},
                {"intra_objective": "mask"}, {"stage1_epochs": 0, "stage2_epochs": 0}, {"image_encoder": "vit"}):
        with pytest.raises(ConfigError):
            get_embedder("cookie", **bad)


# ------------------------------------------------------------------------------------- pairs and sizes
@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_pairs_and_objectives_grow_quadratically(m: int) -> None:
    names = ["poi", "poi_text", "image", "mobility", "landuse"][:m]
    pairs = modality_pairs(names)
    assert len(pairs) == m * (m - 1) // 2 == len(set(pairs))
    assert all(a != b and names.index(a) < names.index(b) for a, b in pairs)
    counts = objective_counts(m)
    assert counts == {"intra": m, "inter": len(pairs), "separation": 2 * len(pairs),
                      "total": m + 3 * len(pairs), "subsets": 2**m - 1 - m}
    cfg = CooKIEConfig(modalities=names, input_dims=[5] * m, unique_dims=[3] * m, shared_dims=[2] * len(pairs),
                       hidden=4)
    net = CooKIENet(cfg)
    assert len(net.shared) == 2 * len(pairs) and len(net.unique) == m
    per_head = 4 * 2 + 2
    trunk = (5 * 4 + 4) + 2 * 4 + (4 * 4 + 4)
    assert count_parameters(net) == m * (trunk + 4 * 3 + 3) + 2 * len(pairs) * per_head


def test_split_sizes() -> None:
    assert split_sizes(16, 3) == [6, 5, 5]
    assert split_sizes(3, 3, minimum=2) == [2, 2, 2]
    assert split_sizes(10, 0) == []


# --------------------------------------------------------------------------------------------- losses
def test_info_nce_hand_checked() -> None:
    eye = torch.eye(2)
    # Matched pairs, temperature 1: each row's softmax gives e / (e + 1) to the right partner.
    assert float(info_nce(eye, eye, 1.0)) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # Swapped pairs: the right partner gets 1 / (1 + e).
    assert float(info_nce(eye, eye.flip(0), 1.0)) == pytest.approx(math.log(1 + math.e), abs=1e-6)
    # Scale-free (cosine) and sharper with a lower temperature.
    assert float(info_nce(3 * eye, eye, 1.0)) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert float(info_nce(eye, eye, 0.1)) == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-6)
    # Symmetric: asymmetric case averaged over both directions.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert float(info_nce(a, b, 1.0)) == pytest.approx(float(info_nce(b, a, 1.0)), abs=1e-6)
    with pytest.raises(ValueError):
        info_nce(eye[:1], eye[:1], 1.0)


def test_cross_correlation_penalty_hand_checked() -> None:
    u = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    s = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    # corr(u, s0) = 1, corr(u, s1) = 0: mean of squares 0.5.
    assert float(cross_correlation_penalty(u, s)) == pytest.approx(0.5, abs=1e-4)
    assert float(cross_correlation_penalty(u, s[:, 1:])) == pytest.approx(0.0, abs=1e-6)
    assert float(cross_correlation_penalty(u, -s[:, :1])) == pytest.approx(1.0, abs=1e-4)
    # Scale and shift do not change it; a constant column counts as uncorrelated.
    assert float(cross_correlation_penalty(10 * u + 3, s)) == pytest.approx(0.5, abs=1e-4)
    assert float(cross_correlation_penalty(u, torch.ones(4, 1))) == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_loss_hand_checked() -> None:
    assert float(reconstruction_loss(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2))) == pytest.approx(2.5)


# ------------------------------------------------------------------------------------------- training
def test_stage1_then_stage2_lower_both_losses() -> None:
    views, _ = synthetic_views(64, ("poi", "image", "landuse"), seed=1)
    emb = CooKIEEmbedder(dim=12, seed=0, device="cpu", hidden=16, stage1_epochs=30, stage2_epochs=30).fit(views)
    s1, s2 = emb.stage_history["stage1"], emb.stage_history["stage2"]
    assert len(s1) == 30 and len(s2) == 30 and len(emb.history) == 60
    first, last = np.mean([t["intra"] for t in s1[:3]]), np.mean([t["intra"] for t in s1[-3:]])
    assert last < first - 0.2  # stage 1: the intra-view contrastive loss falls
    first, last = np.mean([t["inter"] for t in s2[:3]]), np.mean([t["inter"] for t in s2[-3:]])
    assert last < first - 0.2  # stage 2: the pairwise InfoNCE falls
    assert np.mean([t["intra"] for t in s2[-3:]]) < np.mean([t["intra"] for t in s1[:3]])  # unique parts kept
    assert set(s2[-1]) == {"total", "inter", "separation", "intra"}
    assert 0.0 <= s2[-1]["separation"] <= 1.0


def test_without_stage1_and_reconstruction_objective() -> None:
    views, _ = synthetic_views(40, ("poi", "landuse"), seed=2)
    e0 = CooKIEEmbedder(dim=8, seed=0, device="cpu", hidden=8, stage1_epochs=0, stage2_epochs=4).fit(views)
    assert e0.epochs_run == {"stage1": 0, "stage2": 4} and not e0.stage_history["stage1"]
    er = CooKIEEmbedder(dim=8, seed=0, device="cpu", hidden=8, stage1_epochs=3, stage2_epochs=3,
                        intra_objective="reconstruction").fit(views)
    assert len(er.network.decoders) == 2 and er.transform(views).shape == (40, 8)


def test_parts_layout_and_unit_norms() -> None:
    views, _ = synthetic_views(48, ("poi", "image", "mobility"), seed=3)
    emb = CooKIEEmbedder(dim=18, seed=0, **FAST).fit(views)
    full = emb.transform(views).to_numpy()
    assert full.shape == (48, 18)
    for item in emb.layout:  # each part is a unit vector per region
        norms = np.linalg.norm(full[:, item["start"]:item["stop"]], axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5)
    unique = emb.transform_part(views, "unique").to_numpy()
    shared = emb.transform_part(views, "shared").to_numpy()
    assert np.allclose(np.hstack([unique, shared]), full)
    assert [i["name"] for i in emb.layout] == ["poi", "image", "mobility", "poi+image", "poi+mobility",
                                              "image+mobility"]
    only = CooKIEEmbedder(dim=18, seed=0, part="shared", **FAST).fit(views).transform(views)
    assert np.allclose(only.to_numpy(), shared)
    sized = CooKIEEmbedder(dim=18, seed=0, unique_dim=5, shared_dim=3, **FAST).fit(views)
    assert sized.transform(views).shape == (48, 3 * 5 + 3 * 3)


def test_progress_every_epoch_and_cancel() -> None:
    views, _ = synthetic_views(32, ("poi", "landuse"), seed=4)
    messages: list[str] = []
    progress = Progress(callback=lambda stage, frac, msg: messages.append(msg))
    CooKIEEmbedder(dim=8, seed=0, **FAST).fit(views, progress)
    assert sum("epoch" in m for m in messages) == 12
    cancel = Progress()

    def stop(stage: str, frac: float, msg: str) -> None:
        if "stage 1, epoch 2/" in msg:
            cancel.cancel()

    cancel.callback = stop
    with pytest.raises(Cancelled):
        CooKIEEmbedder(dim=8, seed=0, **FAST).fit(views, cancel)


@pytest.mark.parametrize("checks", [1, 5])
def test_cancel_inside_the_first_epoch(cancel_after, checks: int) -> None:
    """Cancellation is checked per mini-batch and between the network's layers, not once per epoch."""
    views, _ = synthetic_views(32, ("poi", "landuse"), seed=4)
    model = CooKIEEmbedder(dim=8, seed=0, **FAST)
    progress = cancel_after(checks)
    with pytest.raises(Cancelled):
        model.fit(views, progress)
    assert model.epochs_run == {"stage1": 0, "stage2": 0} and model.history == []


def test_cancel_while_hashing_chips_for_the_feature_cache(cancel_after, tmp_path: Path) -> None:
    chips = np.zeros((600, 3, 64, 64), dtype=np.float32)  # 29 MB: several hashing chunks
    loads: list[str] = []
    with pytest.raises(Cancelled):
        image_encoders.image_features(chips, None, cache_dir=tmp_path, progress=cancel_after(2),
                          loader=lambda name, device: loads.append(name) or FakeImageEncoder())
    assert loads == []  # cancelled before the encoder was even loaded
    assert not list(tmp_path.iterdir())


def test_plateau_stops_a_stage_early() -> None:
    views, _ = synthetic_views(32, ("poi", "landuse"), seed=5)
    emb = CooKIEEmbedder(dim=8, seed=0, device="cpu", hidden=8, stage1_epochs=40, stage2_epochs=40,
                         plateau_window=2, plateau_tol=10.0).fit(views)
    assert emb.epochs_run == {"stage1": 4, "stage2": 4}


# ------------------------------------------------------------------------------------------ modalities
def test_needs_two_modalities() -> None:
    views, _ = synthetic_views(20, ("poi",), seed=0)
    with pytest.raises(InputError, match="at least two"):
        CooKIEEmbedder(dim=8, **FAST).fit(views)
    views, _ = synthetic_views(20, ("poi", "landuse", "image"), seed=0)
    with pytest.raises(InputError, match="mobility not in the inputs"):
        CooKIEEmbedder(dim=8, modalities="poi,mobility", **FAST).fit(views)
    emb = CooKIEEmbedder(dim=8, modalities="landuse,poi", **FAST).fit(views)
    assert emb.modalities == ["poi", "landuse"]


def test_missing_modality_at_transform() -> None:
    views, _ = synthetic_views(40, ("poi", "image", "mobility"), seed=6)
    emb = CooKIEEmbedder(dim=12, seed=0, **FAST).fit(views)
    full = emb.transform(views).to_numpy()
    no_mob = Views(region_ids=views.region_ids, tables=dict(views.tables))
    log: list[str] = []
    part = emb.transform(no_mob, Progress(log_callback=log.append)).to_numpy()
    assert part.shape == full.shape and np.isfinite(part).all()
    cols = {i["name"]: slice(i["start"], i["stop"]) for i in emb.layout}
    assert np.allclose(part[:, cols["poi"]], full[:, cols["poi"]], atol=1e-6)  # unaffected parts identical
    assert np.allclose(part[:, cols["poi+image"]], full[:, cols["poi+image"]], atol=1e-6)
    assert np.ptp(part[:, cols["mobility"]], axis=0).max() == 0.0  # the training mean: constant
    assert np.ptp(part[:, cols["poi+mobility"]], axis=0).max() > 0.0  # the POI side alone
    assert any("mobility missing" in m for m in log)
    with pytest.raises(InputError, match="none of them"):
        emb.transform(Views(region_ids=views.region_ids, tables={"landuse": views.tables["poi_counts"]}))


@pytest.mark.usefixtures("fake_encoders")
def test_text_and_image_modalities_through_cached_encoders(tmp_path: Path) -> None:
    views, _ = synthetic_views(24, ("poi", "poi_text"), seed=7)
    rng = np.random.default_rng(0)
    views.chips = {"sat": rng.uniform(0, 1, (24, 3, 16, 16)).astype(np.float32)}
    masks = np.ones((24, 16, 16), dtype=bool)
    masks[0] = False  # a region without valid pixels falls back to the plain mean
    masks[1, :8] = False
    views.chip_masks = {"sat": masks}
    params = dict(dim=12, seed=0, cache_dir=str(tmp_path), image_size=32, **FAST)
    emb = CooKIEEmbedder(**params).fit(views)
    assert emb.meta["sources"] == {"poi": "poi_counts", "poi_text": "poi_texts", "image": "chips"}
    saved = json.loads((emb.save(tmp_path / "model") / "config.json").read_text())["inputs"]
    assert list(saved) == ["regions", "pois", "rasters"]  # the chips' raster is asked for, not lost
    assert saved["rasters"] == {"views": ["chips"], "fields": [], "optional_fields": [], "names": ["sat"],
                               "required": False}
    assert saved["pois"]["views"] == ["poi_counts", "poi_texts"] and saved["pois"]["optional_fields"] == ["name_field"]
    assert FakeTextEncoder.calls >= 1 and FakeImageEncoder.calls >= 1
    inputs = emb.model_inputs(views)
    assert inputs["poi_text"].shape == (24, 9) and inputs["image"].shape == (24, 6)
    # Second run: texts and image features come from the caches, the encoders are not called.
    FakeTextEncoder.calls = FakeImageEncoder.calls = 0
    again = CooKIEEmbedder(**params).fit(views)
    assert FakeTextEncoder.calls == 0 and FakeImageEncoder.calls == 0
    assert np.array_equal(again.transform(views).to_numpy(), emb.transform(views).to_numpy())
    assert len(list((tmp_path / "image").glob("*.npy"))) == 1
    # Another city whose raster has another name: matched by position, same features.
    renamed = Views(region_ids=views.region_ids, tables=views.tables, poi_texts=views.poi_texts,
                    chips={"other": views.chips["sat"]}, chip_masks={"other": views.chip_masks["sat"]})
    assert np.array_equal(emb.transform(renamed).to_numpy(), emb.transform(views).to_numpy())
    # image_encoder="stats" without statistics: the image modality is absent.
    stats = CooKIEEmbedder(image_encoder="stats", **params).fit(views)
    assert "image" not in stats.modalities


def test_text_features_mean_and_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name, device: FakeTextEncoder())
    feats, _ = cm.text_features([["a cafe", "a bank"], [], ["a cafe"]], "x", None, "cpu")
    enc = FakeTextEncoder().encode(["a cafe", "a bank"])
    assert np.allclose(feats[0, :8], enc.mean(axis=0), atol=1e-6)
    assert np.allclose(feats[1], 0.0) and np.allclose(feats[2, :8], enc[0], atol=1e-6)
    assert np.allclose(feats[:, 8], np.log1p([2, 0, 1]))


# --------------------------------------------------------------------------- determinism and storage
def test_determinism() -> None:
    views, _ = synthetic_views(32, ("poi", "image", "landuse"), seed=8)
    a = CooKIEEmbedder(dim=9, seed=3, **FAST).fit_transform(views).to_numpy()
    b = CooKIEEmbedder(dim=9, seed=3, **FAST).fit_transform(views).to_numpy()
    c = CooKIEEmbedder(dim=9, seed=4, **FAST).fit_transform(views).to_numpy()
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_save_load_round_trip(tmp_path: Path) -> None:
    views, _ = synthetic_views(32, ("poi", "image", "mobility"), seed=9)
    emb = CooKIEEmbedder(dim=10, seed=0, part="unique", **FAST).fit(views)
    folder = emb.save(tmp_path / "m")
    assert (folder / "weights.safetensors").is_file() and (folder / "cookie.json").is_file()
    loaded = load_embedder(str(folder))
    assert isinstance(loaded, CooKIEEmbedder) and loaded.params.part == "unique"
    assert np.array_equal(loaded.transform(views).to_numpy(), emb.transform(views).to_numpy())
    assert np.array_equal(loaded.transform_part(views, "all").to_numpy(), emb.transform_part(views, "all").to_numpy())
    assert loaded.vocabulary["poi_counts"] == emb.vocabulary["poi_counts"]
    assert loaded.views_for_transform() == ["poi_counts", "image_stats", "mobility"]
    assert loaded.stage_history == emb.stage_history and loaded.layout == emb.layout


def test_inductive_transform_of_new_regions() -> None:
    views, _ = synthetic_views(60, ("poi", "image", "landuse"), seed=10)
    train, new = subset(views, np.arange(40)), subset(views, np.arange(40, 60))
    emb = CooKIEEmbedder(dim=12, seed=0, **FAST).fit(train)
    out = emb.transform(new)
    assert out.shape == (20, 12) and list(out.index) == list(new.region_ids)
    # Region by region: embedding regions together or apart gives the same rows.
    both = emb.transform(subset(views, np.arange(60))).to_numpy()
    assert np.allclose(both[40:], out.to_numpy(), atol=1e-6)
    # New columns are ignored, absent ones count as zero (same vocabulary).
    shuffled = subset(views, np.arange(40, 60))
    shuffled.tables["poi_counts"] = shuffled.tables["poi_counts"].iloc[:, ::-1].assign(new_cat=1.0)
    assert np.allclose(emb.transform(shuffled).to_numpy(), out.to_numpy(), atol=1e-6)


def test_flops_counter_counts_the_forward_pass() -> None:
    views, _ = synthetic_views(16, ("poi", "landuse"), seed=11)
    emb = CooKIEEmbedder(dim=8, seed=0, **FAST).fit(views)
    xs = {m: torch.from_numpy(x) for m, x in emb.model_inputs(views).items() if x is not None}
    flops = count_flops(emb.network, xs)
    dims = emb.network.cfg
    linear = sum(d * 16 + 16 * 16 + 16 * u for d, u in zip(dims.input_dims, dims.unique_dims, strict=True))
    linear += 2 * 16 * dims.shared_dims[0]
    assert flops == 2 * 16 * linear  # 2 FLOPs per multiply-add, 16 regions


def test_sample_city_smoke(sf_views: Views) -> None:
    emb = CooKIEEmbedder(dim=16, seed=0, image_encoder="stats", modalities="poi,image", **FAST)
    out = emb.fit_transform(sf_views)
    assert out.shape == (len(sf_views), 16) and np.isfinite(out.to_numpy()).all()
    assert isinstance(out, pd.DataFrame) and out.index.name == "region_id"


def test_embedding_every_region_in_one_pass_keeps_reporting_and_can_be_cancelled(
        cancel_at_message, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass over every region (the training means after fitting, the embeddings of transform) is one
    forward call: its layers poll, so a national run keeps its heartbeat and a cancel stops it there."""
    from backend import progress as progress_mod

    views, _ = synthetic_views(32, ("poi", "landuse"), seed=4)
    model = CooKIEEmbedder(dim=8, seed=0, **FAST).fit(views)
    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    polls: list[str] = []
    counting = Progress(callback=lambda stage, frac, msg: polls.append(msg))
    model.transform(views, counting)
    assert len(polls) >= 10  # the network's layers poll during the pass (1 event without them)
    progress, _messages = cancel_at_message("", 3)  # heartbeats carry the last message (none yet)
    with pytest.raises(Cancelled):
        model.transform(views, progress)
