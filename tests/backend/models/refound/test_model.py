"""ReFound network: configuration and presets, output shapes, parameter counts by formula, key padding,
missing imagery, masked patches, the moge=False ablation, gradient coverage, pooling, determinism.
Tiny sizes, CPU, seeded."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from backend.models.refound.model import (
    PRESETS,
    RefoundConfig,
    RefoundNet,
    RefoundOutput,
    count_parameters,
    make_config,
    region_vectors,
)

#: Tiny architecture: 3 blocks (1 with experts, 2 fusion), width 32, 32 x 32 images of 8 x 8 patches.
TINY: dict[str, Any] = dict(layers=3, width=32, heads=4, ffn=64, fusion_layers=2, dropout=0.0, max_tokens=12,
                            image_size=32, patch=8, grid=4, max_name_pos=4, max_pois=6, n_pieces=20,
                            n_categories=6, codebook_size=10, text_dim=12, image_dim=14, sim_dim=8)


def _net(seed: int = 0, **overrides: Any) -> RefoundNet:
    torch.manual_seed(seed)
    net = RefoundNet(RefoundConfig(**{**TINY, **overrides}))
    net.eval()
    return net


def _batch(cfg: RefoundConfig, s: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random inputs; sample i has 12 - 3 i valid tokens (the rest padding), [CLS] first."""
    g = torch.Generator().manual_seed(seed)
    n = cfg.max_tokens
    ids = torch.randint(5, cfg.n_pieces, (s, n), generator=g)
    ids[:, 0] = 1
    valid = torch.zeros(s, n, dtype=torch.bool)
    for i in range(s):
        valid[i, : n - 3 * i] = True
    batch = {
        "ids": torch.where(valid, ids, torch.zeros_like(ids)),
        "name_pos": torch.randint(0, cfg.max_name_pos + 1, (s, n), generator=g) * valid,
        "poi_pos": torch.randint(0, cfg.max_pois + 1, (s, n), generator=g) * valid,
        "grid": torch.randint(0, cfg.grid**2 + 1, (s, n), generator=g) * valid,
        "category": torch.randint(0, cfg.n_categories, (s, n), generator=g) * valid,
        "valid": valid,
        "pixels": torch.rand(s, cfg.bands, cfg.image_size, cfg.image_size, generator=g),
    }
    return batch


def _params_by_formula(c: RefoundConfig) -> int:
    """Parameter count of a RefoundNet written out independently of the implementation."""
    w, f = c.width, c.ffn
    emb = (c.n_pieces + c.max_name_pos + 1 + c.max_pois + 1 + c.grid**2 + 1 + c.n_categories + 2) * w + 2 * w
    img = (c.bands * c.patch**2 * w + w) + (c.n_patches + 1) * w + w + w + 2 * w
    attn = 2 * w + (w * 3 * w + 3 * w) + (w * w + w)
    ffn = 2 * w + (w * f + f) + (f * w + w)
    n_ffn = (2 * (c.layers - c.fusion_layers) + c.fusion_layers) if c.moge else c.layers
    trunk = c.layers * attn + n_ffn * ffn + 2 * w
    mlm = (w * w + w) + 2 * w + c.n_pieces  # dense, LayerNorm, bias (decoder weight tied to the piece embedding)
    heads = (mlm + (w * c.codebook_size + c.codebook_size) + (w + 1) + (w * c.text_dim + c.text_dim)
             + (w * c.image_dim + c.image_dim) + 2 * (w * c.sim_dim + c.sim_dim))
    hidden = max(16, w // 4)
    pool = (w * hidden + hidden) + hidden
    return emb + img + trunk + heads + pool


# ----------------------------------------------------------------------------------------------- config
def test_presets_and_config_roundtrip() -> None:
    small = make_config("small", n_pieces=300, n_categories=7)
    assert (small.layers, small.width, small.heads, small.ffn) == (4, 128, 4, 512)
    assert (small.max_tokens, small.image_size, small.codebook_size) == (64, 64, 128)
    assert small.patch_grid == 4 and small.n_patches == 16 and small.fusion_layers == 2 and small.moge
    full = make_config("full")
    assert (full.layers, full.width, full.heads, full.ffn, full.max_tokens, full.image_size) == (
        12, 768, 12, 3072, 512, 256)
    assert full.n_patches == 256 and full.codebook_size == 1024
    assert set(PRESETS) == {"small", "full"}
    assert RefoundConfig.from_dict(small.to_dict()) == small
    with pytest.raises(ValueError, match="preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="Unknown"):
        make_config("small", colour=3)
    with pytest.raises(ValueError, match="divisible"):
        RefoundConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="fusion_layers"):
        RefoundConfig(layers=2, fusion_layers=3)
    with pytest.raises(ValueError, match="multiple"):
        RefoundConfig(image_size=100, patch=16)


# ------------------------------------------------------------------------------------------------ shapes
def test_output_shapes_and_heads() -> None:
    net = _net()
    cfg = net.cfg
    b = _batch(cfg)
    out = net(**b)
    assert isinstance(out, RefoundOutput)
    s, n, w = 3, cfg.max_tokens, cfg.width
    assert out.poi_hidden.shape == (s, n, w)
    assert out.image_hidden.shape == (s, cfg.n_patches, w)
    assert out.poi_cls.shape == (s, w) and out.image_cls.shape == (s, w)
    assert torch.equal(out.poi_cls, out.poi_hidden[:, 0])
    assert torch.isfinite(out.poi_hidden).all() and torch.isfinite(out.image_hidden).all()
    assert net.mlm(out.poi_hidden).shape == (s, n, cfg.n_pieces)
    assert net.mim(out.image_hidden).shape == (s, cfg.n_patches, cfg.codebook_size)
    assert net.cmsa(out.poi_hidden).shape == (s, n)
    assert net.text_distill(out.poi_cls).shape == (s, cfg.text_dim)
    assert net.image_distill(out.image_cls).shape == (s, cfg.image_dim)
    assert net.sim_poi(out.poi_cls).shape == (s, cfg.sim_dim) and net.sim_img(out.image_cls).shape == (s, cfg.sim_dim)
    assert net.mlm.decoder.weight is net.piece.weight  # tied
    mean = region_vectors(out)
    assert torch.allclose(mean, (out.poi_cls + out.image_cls) / 2)
    att = region_vectors(out, "attention", net.pool)
    assert att.shape == (s, w)
    # attention pooling is a convex combination of the two [CLS] vectors
    lo = torch.minimum(out.poi_cls, out.image_cls) - 1e-5
    hi = torch.maximum(out.poi_cls, out.image_cls) + 1e-5
    assert ((att >= lo) & (att <= hi)).all()
    with pytest.raises(ValueError, match="module"):
        region_vectors(out, "attention")
    with pytest.raises(ValueError, match="pooling"):
        region_vectors(out, "max")
    with pytest.raises(ValueError, match="pixels"):
        net(**{**b, "pixels": b["pixels"][:, :, :16]})
    with pytest.raises(ValueError, match="grid"):
        net(**{**b, "grid": b["grid"][:, :5]})


def test_shorter_sequences_are_accepted() -> None:
    net = _net()
    b = {k: (v[:, :7] if v.dim() == 2 else v) for k, v in _batch(net.cfg).items()}
    out = net(**b)
    assert out.poi_hidden.shape[1] == 7 and out.image_hidden.shape[1] == net.cfg.n_patches


# ---------------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("overrides", [dict(), dict(moge=False), dict(fusion_layers=0), dict(fusion_layers=3)])
def test_parameter_count_formula_tiny(overrides: dict[str, Any]) -> None:
    net = _net(**overrides)
    assert count_parameters(net) == _params_by_formula(net.cfg)


def test_parameter_count_full_preset() -> None:
    cfg = make_config("full", n_pieces=30522, n_categories=100)
    with torch.device("meta"):  # no memory, no initialisation cost
        net = RefoundNet(cfg)
    n = count_parameters(net)
    assert n == _params_by_formula(cfg)
    # BERT-base-sized trunk plus the lower blocks' second FFN expert
    assert 150_000_000 < n < 170_000_000


def test_moge_false_shares_one_ffn() -> None:
    moge = _net()
    plain = _net(moge=False)
    w, f = TINY["width"], TINY["ffn"]
    per_ffn = 2 * w + w * f + f + f * w + w
    assert count_parameters(moge) - count_parameters(plain) == (TINY["layers"] - TINY["fusion_layers"]) * per_ffn
    for block in plain.blocks:
        assert not block.experts and not hasattr(block, "ffn_poi")
    assert [blk.experts for blk in moge.blocks] == [True, False, False]
    # both modalities go through the same FFN: outputs of the ablation still have the right shapes
    out = plain(**_batch(plain.cfg))
    assert out.image_hidden.shape == (3, plain.cfg.n_patches, w)


# -------------------------------------------------------------------------------------------- isolation
def test_key_padding_isolates_padding() -> None:
    net = _net()
    b = _batch(net.cfg)
    out = net(**b)
    g = torch.Generator().manual_seed(7)
    pad = ~b["valid"]
    changed = dict(b)
    c = net.cfg
    for key, hi in (("ids", c.n_pieces), ("name_pos", c.max_name_pos + 1), ("poi_pos", c.max_pois + 1),
                    ("grid", c.grid**2 + 1), ("category", c.n_categories)):
        changed[key] = torch.where(pad, torch.randint(0, hi, b[key].shape, generator=g), b[key])
    assert not torch.equal(changed["ids"], b["ids"])
    out2 = net(**changed)
    v = b["valid"]
    assert torch.allclose(out.poi_hidden[v], out2.poi_hidden[v], atol=1e-6)
    assert torch.allclose(out.image_hidden, out2.image_hidden, atol=1e-6)
    assert torch.allclose(out.image_cls, out2.image_cls, atol=1e-6)


def test_missing_imagery_makes_pois_independent_of_pixels() -> None:
    net = _net()
    b = _batch(net.cfg)
    image_valid = torch.tensor([True, False, False])
    out = net(**b, image_valid=image_valid)
    noisy = b["pixels"].clone()
    noisy[1:] = torch.randn_like(noisy[1:]) * 5
    noisy[2, 0, 0, 0] = float("nan")
    out2 = net(**{**b, "pixels": noisy}, image_valid=image_valid)
    for i in (1, 2):
        assert torch.allclose(out.poi_hidden[i], out2.poi_hidden[i], atol=1e-6)
        assert torch.allclose(out.poi_cls[i], out2.poi_cls[i], atol=1e-6)
        assert torch.allclose(out.image_cls[i], out2.image_cls[i], atol=1e-6)
    assert torch.isfinite(out2.image_hidden).all()
    # the sample with imagery does depend on its pixels
    brighter = b["pixels"].clone()
    brighter[0] = 1 - brighter[0]
    out3 = net(**{**b, "pixels": brighter}, image_valid=image_valid)
    assert not torch.allclose(out.poi_cls[0], out3.poi_cls[0], atol=1e-4)
    # the patches are really dropped, not just blanked: zero pixels with imagery give other outputs
    blank = b["pixels"].clone()
    blank[1] = 0.0
    out5 = net(**{**b, "pixels": blank}, image_valid=torch.ones(3, dtype=torch.bool))
    assert not torch.allclose(out.poi_cls[1], out5.poi_cls[1], atol=1e-4)
    # image_valid all True equals no image_valid
    out4 = net(**b, image_valid=torch.ones(3, dtype=torch.bool))
    assert torch.allclose(net(**b).poi_hidden, out4.poi_hidden, atol=1e-6)


def test_patch_mask_replaces_patch_embedding() -> None:
    net = _net()
    cfg = net.cfg
    b = _batch(cfg)
    p, grid = cfg.patch, cfg.patch_grid
    mask = torch.zeros(3, cfg.n_patches, dtype=torch.bool)
    mask[:, [0, 5, 10, 15]] = True
    out = net(**b, patch_mask=mask)
    noisy = b["pixels"].clone()
    for k in (0, 5, 10, 15):
        r, c = divmod(k, grid)
        noisy[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = torch.rand(3, cfg.bands, p, p)
    out2 = net(**{**b, "pixels": noisy}, patch_mask=mask)
    assert torch.allclose(out.poi_hidden, out2.poi_hidden, atol=1e-6)
    assert torch.allclose(out.image_hidden, out2.image_hidden, atol=1e-6)
    # without the mask those pixels matter
    assert not torch.allclose(net(**b).image_hidden, net(**{**b, "pixels": noisy}).image_hidden, atol=1e-4)
    # masked patch embeddings equal the learned [MASK] embedding plus position
    emb = net.embed_image(b["pixels"], mask)
    emb2 = net.embed_image(torch.zeros_like(b["pixels"]), mask)
    assert torch.allclose(emb[:, 1], emb2[:, 1]) and not torch.allclose(emb[:, 2], emb2[:, 2])


def test_patchify_is_row_major_from_top_left() -> None:
    net = _net()
    cfg = net.cfg
    pixels = torch.zeros(1, cfg.bands, cfg.image_size, cfg.image_size)
    p = cfg.patch
    pixels[0, :, p:2 * p, 2 * p:3 * p] = 1.0  # patch row 1, column 2
    flat = net.patchify(pixels)
    assert flat.shape == (1, cfg.n_patches, cfg.bands * p * p)
    hot = flat.sum(dim=2).nonzero()[:, 1].tolist()
    assert hot == [1 * cfg.patch_grid + 2]


# ------------------------------------------------------------------------------------------- gradients
def test_gradients_reach_every_parameter() -> None:
    net = _net(dropout=0.1)
    net.train()
    b = _batch(net.cfg)
    mask = torch.zeros(3, net.cfg.n_patches, dtype=torch.bool)
    mask[:, :3] = True
    out = net(**b, patch_mask=mask, image_valid=torch.tensor([True, True, False]))
    loss = (net.mlm(out.poi_hidden).square().mean() + net.mim(out.image_hidden).square().mean()
            + net.cmsa(out.poi_hidden).square().mean() + net.text_distill(out.poi_cls).square().mean()
            + net.image_distill(out.image_cls).square().mean() + net.sim_poi(out.poi_cls).square().mean()
            + net.sim_img(out.image_cls).square().mean()
            + region_vectors(out, "attention", net.pool).square().mean())
    loss.backward()
    missing = [name for name, prm in net.named_parameters() if prm.grad is None or not prm.grad.abs().sum() > 0]
    assert missing == []


# ------------------------------------------------------------------------------------------ determinism
def test_seeded_determinism() -> None:
    a, b_ = _net(seed=3, dropout=0.1), _net(seed=3, dropout=0.1)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b_.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    batch = _batch(a.cfg)
    a.train()
    b_.train()
    torch.manual_seed(11)
    o1 = a(**batch)
    torch.manual_seed(11)
    o2 = b_(**batch)
    assert torch.equal(o1.poi_hidden, o2.poi_hidden) and torch.equal(o1.image_hidden, o2.image_hidden)
    assert not torch.equal(_net(seed=4).piece.weight, a.piece.weight)


def test_initialisation_is_bert_style() -> None:
    torch.manual_seed(0)
    net = RefoundNet(RefoundConfig(**{**TINY, "width": 64, "ffn": 256}))
    w = net.blocks[0].ffn_poi.fc1.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    assert torch.equal(net.blocks[0].attn.qkv.bias, torch.zeros_like(net.blocks[0].attn.qkv.bias))
    assert torch.equal(net.norm.weight, torch.ones(64)) and torch.equal(net.norm.bias, torch.zeros(64))
    assert abs(float(net.piece.weight.detach().std()) - 0.02) < 0.004


def test_runs_under_cpu_autocast() -> None:
    from backend.models.refound.losses import mim_loss, mlm_loss, similarity_kl

    net = _net()
    b = _batch(net.cfg)
    mask = torch.zeros(3, net.cfg.n_patches, dtype=torch.bool)
    mask[:, :2] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(**b, patch_mask=mask, image_valid=torch.tensor([True, False, True]))
        labels = torch.full(b["ids"].shape, -100)
        labels[:, 1] = b["ids"][:, 1]
        loss = (mlm_loss(net.mlm(out.poi_hidden), labels)
                + mim_loss(net.mim(out.image_hidden), torch.zeros(3, net.cfg.n_patches, dtype=torch.long), mask)
                + similarity_kl(net.sim_poi(out.poi_cls), net.sim_img(out.image_cls), torch.randn(3, 5))
                + region_vectors(out, "attention", net.pool).float().square().mean())
    assert torch.isfinite(loss)
    loss.backward()
    assert net.piece.weight.grad is not None and torch.isfinite(net.piece.weight.grad).all()
