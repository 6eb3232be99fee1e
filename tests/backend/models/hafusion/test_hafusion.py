"""HAFusion: architecture (parameter counts, equivalence with the literal implementation), losses, training,
view subsets, determinism, save/load, cancellation and the scalable configuration. Tiny sizes, CPU, seeded."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from backend.errors import Cancelled, ConfigError, InputError
from backend.models import EMBEDDERS, HAFusionEmbedder, get_embedder, load_embedder
from backend.models.hafusion import model as hm
from backend.models.hafusion.losses import relation_loss, similarity_loss, total_loss
from backend.models.hafusion.naive import naive_from_fused
from backend.progress import Progress
from backend.views._base import Views

#: A reference configuration small enough for unit tests (the published one has ffn 2048, 3 blocks, ...).
TINY = {"config": "reference", "epochs": 4, "ffn_dim": 32, "intra_blocks": 1, "inter_blocks": 1,
        "region_blocks": 1, "heads": 2, "d_prime": 8, "d_m": 8, "lift_channels": 4}


def make_views(n: int = 16, seed: int = 0, poi: bool = True, landuse: bool = True, image: bool = False,
               mobility: bool = True, adjacency: bool = False) -> Views:
    """Synthetic views with some structure: two groups of regions with different POI and flow profiles."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"r{i}" for i in range(n)], name="region_id")
    group = np.arange(n) % 2
    tables = {}
    if poi:
        rates = np.where(group[:, None] == 0, [4.0, 1.0, 0.5, 2.0, 0.2], [0.5, 3.0, 2.0, 0.2, 1.0])
        tables["poi_counts"] = pd.DataFrame(rng.poisson(rates), index=ids, columns=list("abcde"))
    if landuse:
        tables["landuse"] = pd.DataFrame(rng.dirichlet(np.ones(4), n), index=ids, columns=["res", "com", "ind", "park"])
    if image:
        tables["image_stats"] = pd.DataFrame(rng.normal(100.0, 20.0, (n, 6)) + 30.0 * group[:, None], index=ids,
                                             columns=[f"img_b{i}_mean" for i in range(6)])
    mob = None
    if mobility:
        mob = rng.poisson(np.where(group[:, None] == group[None, :], 6.0, 1.0)).astype(float)
    adj = None
    if adjacency:  # a ring of regions
        rows = np.arange(n)
        a = sp.coo_matrix((np.ones(n), (rows, (rows + 1) % n)), shape=(n, n))
        adj = sp.csr_matrix(((a + a.T) > 0).astype(float))
    return Views(region_ids=ids, tables=tables, mobility=mob, adjacency=adj,
                 centroids=rng.uniform(0.0, 1000.0, (n, 2)))


def nyc_config(n: int = 180, preset: str = "nyc", landuse_dim: int = 11) -> hm.HAFusionConfig:
    """The published architecture for N regions (POI 26 categories, land use, mobility), via the embedder."""
    emb = HAFusionEmbedder(dim=144, preset=preset)
    return emb.make_config("reference", ["poi_counts", "landuse", "mobility"], [26, landuse_dim, n], n,
                           ["mobility"], ["poi_counts", "landuse"])


# --------------------------------------------------------------------------------------------- registry
def test_registry_and_describe() -> None:
    assert EMBEDDERS["hafusion"] is HAFusionEmbedder
    info = HAFusionEmbedder.describe()
    assert info["params"]["config"] == "auto" and "mobility" in info["views"]
    assert info["dim"] == 144 and HAFusionEmbedder().dim == 144
    with pytest.raises(ConfigError, match="config must be"):
        get_embedder("hafusion", config="huge")
    with pytest.raises(ConfigError, match="unknown parameters"):
        get_embedder("hafusion", nope=1)
    with pytest.raises(ConfigError, match="loss_scaling"):
        get_embedder("hafusion", loss_scaling="max")
    from backend.models.hafusion.embedder import LOSS_SCALINGS
    from backend.models.hafusion.losses import REDUCTIONS

    assert LOSS_SCALINGS == REDUCTIONS


# ---------------------------------------------------------------------------------------- architecture
@pytest.mark.parametrize(
    ("preset", "n", "landuse_dim", "expected"),
    [("nyc", 180, 11, 12_228_168), ("chicago", 77, 12, 2_456_416)],
)
def test_parameter_counts_match_the_published_model(preset: str, n: int, landuse_dim: int, expected: int) -> None:
    # NYC: 12.2 M, Chicago: 2.46 M parameters (public code, 3 views, 4 decoders, embedding 144).
    cfg = nyc_config(n, preset, landuse_dim)
    with torch.device("meta"):
        net = hm.HAFusionNet(cfg)
    assert hm.count_parameters(net) == expected


def test_fused_reference_equals_literal_implementation() -> None:
    torch.manual_seed(0)
    cfg = hm.HAFusionConfig("reference", ["poi_counts", "landuse", "mobility"], [5, 4, 12], [False, False, True], 12,
                            dim=8, relations=["mobility"], similarities=["poi_counts", "landuse"], heads=3,
                            intra_blocks=2, inter_blocks=2, region_blocks=2, d_prime=6, d_m=5, lift_channels=4,
                            ffn_dim=16)
    net = hm.HAFusionNet(cfg).eval()
    naive = naive_from_fused(net).eval()
    assert hm.count_parameters(naive) == hm.count_parameters(net)
    rng = np.random.default_rng(0)
    x = [torch.tensor(rng.poisson(3.0, (12, d)), dtype=torch.float32) for d in (5, 4, 12)]
    emb, dec = net(x)
    emb2, dec2 = naive(x)
    torch.testing.assert_close(emb, emb2, rtol=1e-4, atol=1e-5)
    for name in dec:
        torch.testing.assert_close(dec[name], dec2[name], rtol=1e-4, atol=1e-5)
    # Same gradients for the same loss (checked on the mixing scalars and the input projection).
    target = torch.rand(12, 12)
    for model in (net, naive):
        model.zero_grad()
        _, d = model(x)
        relation_loss(d["mobility_src"], d["mobility_dst"], target).backward()
    torch.testing.assert_close(net.mix_intra.grad, naive.para1.grad, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(net.inputs["poi_counts"].weight.grad, naive.dense["poi_counts"].weight.grad,
                               rtol=1e-3, atol=1e-5)


def test_conv_lift_equals_convolution_and_gradcheck() -> None:
    torch.manual_seed(1)
    attn = torch.softmax(torch.randn(2, 5, 5, dtype=torch.float64), -1).requires_grad_()
    w = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    edge = attn[:, None] * w[:, :, None, None] + b[:, :, None, None]  # literal 1x1 convolution
    literal = (edge.softmax(-1) * edge).sum(-1).transpose(1, 2)
    torch.testing.assert_close(hm.conv_lift(attn, w, b), literal)
    assert torch.autograd.gradcheck(hm.conv_lift, (attn, w, b))


def test_fast_linear_matches_torch_linear() -> None:
    torch.manual_seed(2)
    lin = hm.ViewLinear(2, 6, 4)
    x = torch.randn(2, 5, 6, requires_grad=True)
    y = lin(x)
    ref = torch.stack([torch.nn.functional.linear(x[v], lin.weight[v], lin.bias[v]) for v in range(2)])
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
    grads_ref = torch.autograd.grad(ref, (x, lin.weight, lin.bias), g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_dropout_keeps_the_right_share() -> None:
    torch.manual_seed(3)
    x = torch.ones(200_000)
    y = hm._dropout(x, 0.1, True)
    kept = (y > 0).float().mean().item()
    assert abs(kept - 0.9) < 0.005
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / 0.9))
    assert hm._dropout(x, 0.1, False) is x


@pytest.mark.parametrize("variant", ["reference", "scalable"])
def test_shapes_and_gradients_reach_every_module(variant: str) -> None:
    torch.manual_seed(0)
    n = 12
    emb = HAFusionEmbedder(dim=8, **{**TINY, "config": variant, "width": 16})
    cfg = emb.make_config(variant, ["poi_counts", "landuse", "mobility"],
                          [5, 4, n if variant == "reference" else 10], n, ["mobility"], ["poi_counts", "landuse"])
    net = hm.HAFusionNet(cfg).train()
    x = [torch.rand(n, d) * 3 for d in cfg.input_dims]
    out, dec = net(x)
    assert out.shape == (n, 8)
    assert set(dec) == {"mobility_src", "mobility_dst", "poi_counts", "landuse"}
    assert all(d.shape == (n, 8) for d in dec.values())
    loss, terms = total_loss(dec, {"mobility": torch.rand(n, n)},
                             {"poi_counts": torch.rand(n, n), "landuse": torch.rand(n, n)},
                             "reference" if variant == "reference" else "mean")
    assert set(terms) == {"mobility", "poi_counts", "landuse"}
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    for name, module in net.named_modules():
        params = list(module.parameters(recurse=False))
        if params:
            assert any(float(p.grad.abs().sum()) > 0 for p in params), f"no gradient reaches {name}"


# ---------------------------------------------------------------------------------------------- losses
def test_relation_loss_hand_checked() -> None:
    src = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I: softmax row = [e/(e+1), 1/(e+1)]; 2 rows x 2 directions, each -log(e/(e+1) + 1e-4).
    p = math.e / (math.e + 1)
    assert relation_loss(src, src, target).item() == pytest.approx(-4 * math.log(p + 1e-4), rel=1e-6)
    # mean: flow-weighted mean cross-entropy (exact log-softmax), averaged over both directions.
    assert relation_loss(src, src, target, "mean").item() == pytest.approx(-math.log(p), rel=1e-6)
    # Asymmetric flows: only region 0 -> 1 (mass 2). Out: -2 log softmax([0, 1])[1]; in: -2 log softmax([1, 0])[0].
    flows = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    dst = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # s . d^T = [[0, 1], [0, 0]]: out row 0 -> P(1|0) = e/(1+e);
    # d . s^T = [[0, 0], [1, 0]]: in row 1 -> P(0|1) = e/(1+e).
    expected = -2 * math.log(p + 1e-4) * 2
    assert relation_loss(s, dst, flows).item() == pytest.approx(expected, rel=1e-6)


def test_similarity_loss_hand_checked() -> None:
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # cos = [[1, 1/sqrt2], [1/sqrt2, 1]] against the identity: (0 + 0.5 + 0.5 + 0) / 4.
    assert similarity_loss(emb, torch.eye(2)).item() == pytest.approx(0.25, rel=1e-6)
    exact = torch.tensor([[1.0, 0.5**0.5], [0.5**0.5, 1.0]])
    assert similarity_loss(emb, exact).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="does not match"):
        similarity_loss(emb, torch.eye(3))


# -------------------------------------------------------------------------------------------- training
def test_fit_transform_shape_and_loss_decreases() -> None:
    views = make_views(n=16)
    model = HAFusionEmbedder(dim=8, seed=0, **{**TINY, "epochs": 40})
    progress = Progress()
    emb = model.fit_transform(views, progress)
    assert emb.shape == (16, 8) and emb.index.name == "region_id"
    assert list(emb.columns) == [f"emb_{i:03d}" for i in range(8)]
    assert np.isfinite(emb.to_numpy()).all()
    assert len(model.history) == 40 and model.variant == "reference"
    assert np.mean(model.history[-5:]) < np.mean(model.history[:5])
    assert set(model.loss_terms) == {"mobility", "poi_counts", "landuse"}
    assert any("reference configuration, 16 regions" in m for m in progress.log_messages)


def test_deterministic_with_a_seed() -> None:
    views = make_views(n=12)
    a = HAFusionEmbedder(dim=8, seed=5, **TINY).fit_transform(views)
    b = HAFusionEmbedder(dim=8, seed=5, **TINY).fit_transform(views)
    c = HAFusionEmbedder(dim=8, seed=6, **TINY).fit_transform(views)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


@pytest.mark.parametrize(
    ("kinds", "relations", "similarities"),
    [
        ({"poi": True, "landuse": True, "mobility": False}, set(), {"poi_counts", "landuse"}),
        ({"poi": True, "landuse": True, "mobility": True}, {"mobility"}, {"poi_counts", "landuse"}),
        ({"poi": True, "landuse": False, "mobility": False, "image": True, "adjacency": True},
         {"adjacency"}, {"poi_counts", "image_stats"}),
        ({"poi": False, "landuse": False, "mobility": True}, {"mobility"}, set()),
    ],
    ids=["poi+landuse", "poi+landuse+mobility", "sample-city-like (no OD)", "mobility only"],
)
def test_view_subsets_train(kinds: dict[str, bool], relations: set[str], similarities: set[str]) -> None:
    views = make_views(n=12, **kinds)
    model = HAFusionEmbedder(dim=8, **TINY)
    emb = model.fit_transform(views)
    assert emb.shape == (12, 8) and np.isfinite(emb.to_numpy()).all()
    assert set(model.network.cfg.relations) == relations
    assert set(model.network.cfg.similarities) == similarities


def test_adjacency_modes_and_missing_views() -> None:
    views = make_views(n=12, adjacency=True)
    auto = HAFusionEmbedder(dim=8, **TINY).fit(views)
    assert auto.network.cfg.relations == ["mobility"]  # adjacency only when there is no OD table
    both = HAFusionEmbedder(dim=8, adjacency_target="always", **TINY).fit(views)
    assert both.network.cfg.relations == ["mobility", "adjacency"]
    only_adj = make_views(n=12, poi=False, landuse=False, mobility=False, adjacency=True)
    with pytest.raises(InputError, match="at least one input view"):
        HAFusionEmbedder(dim=8, **TINY).fit(only_adj)


def test_save_load_round_trip(tmp_path) -> None:
    views = make_views(n=12, image=True)
    model = HAFusionEmbedder(dim=8, seed=1, **TINY).fit(views)
    before = model.transform(views)
    folder = model.save(tmp_path / "m")
    assert (folder / "config.json").is_file() and (folder / "weights.safetensors").is_file()
    inputs = json.loads((folder / "config.json").read_text())["inputs"]
    assert list(inputs) == ["regions", "pois", "rasters", "landuse", "od"]
    assert inputs["rasters"]["views"] == ["image_stats"] and inputs["landuse"]["fields"] == ["class_field"]
    loaded = load_embedder(str(folder))
    assert isinstance(loaded, HAFusionEmbedder) and loaded.history == model.history
    pd.testing.assert_frame_equal(loaded.transform(views), before)


def test_reference_is_transductive() -> None:
    model = HAFusionEmbedder(dim=8, **TINY).fit(make_views(n=12))
    with pytest.raises(InputError, match="embeds only the 12 regions"):
        model.transform(make_views(n=10))


def test_cancel_stops_training_between_epochs() -> None:
    cancel = threading.Event()
    seen: list[float] = []

    def callback(stage: str, fraction: float, message: str) -> None:
        seen.append(fraction)
        if message.startswith("epoch 3/"):
            cancel.set()

    model = HAFusionEmbedder(dim=8, **{**TINY, "epochs": 50})
    with pytest.raises(Cancelled):
        model.fit(make_views(n=12), Progress(callback=callback, cancel_event=cancel))
    assert model.epochs_run == 3


@pytest.mark.parametrize("checks", [1, 4, 40])
def test_cancel_inside_a_full_batch_epoch(cancel_after, checks: int) -> None:
    """The reference configuration trains on all regions at once: cancellation is checked between the
    network's layers (forward and backward), so the first epoch never completes."""
    model = HAFusionEmbedder(dim=8, **{**TINY, "epochs": 50})
    progress = cancel_after(checks)
    with pytest.raises(Cancelled):
        model.fit(make_views(n=12), progress)
    assert model.epochs_run == 0 and model.history == []
    assert progress.cancel_event.checks == checks + 1


def test_cancel_between_mini_batches(cancel_after) -> None:
    model = HAFusionEmbedder(dim=8, **{**TINY, "config": "scalable", "batch_regions": 4, "epochs": 50})
    with pytest.raises(Cancelled):
        model.fit(make_views(n=24), cancel_after(1))  # the first mini-batch check passes, the layers' checks raise
    assert model.epochs_run == 0


def test_plateau_stops_early() -> None:
    model = HAFusionEmbedder(dim=8, **{**TINY, "epochs": 200, "plateau_window": 5, "plateau_tol": 0.5})
    progress = Progress()
    model.fit(make_views(n=12), progress)
    assert 10 <= model.epochs_run < 200
    assert any("plateau" in m for m in progress.log_messages)


# -------------------------------------------------------------------------------------------- scalable
def test_scalable_trains_with_mini_batches() -> None:
    views = make_views(n=200, image=True, adjacency=True)
    model = HAFusionEmbedder(dim=16, seed=0, config="scalable", width=32, heads=4, intra_blocks=1,
                             inter_blocks=1, region_blocks=1, d_prime=8, d_m=8, lift_channels=8,
                             batch_regions=64, epochs=6, learning_rate=2e-3)
    progress = Progress()
    emb = model.fit_transform(views, progress)
    assert emb.shape == (200, 16) and np.isfinite(emb.to_numpy()).all()
    assert model.variant == "scalable" and model.network.cfg.width == 32
    assert any("mini-batches of 64 regions" in m for m in progress.log_messages)
    assert model.history[-1] < model.history[0]
    # Width does not grow with N: the same model size for another city size.
    small = HAFusionEmbedder(dim=16, config="scalable", width=32, heads=4, intra_blocks=1, inter_blocks=1,
                             region_blocks=1, d_prime=8, d_m=8, lift_channels=8, epochs=1).fit(make_views(n=40,
                                                                                                           image=True))
    assert hm.count_parameters(small.network) == hm.count_parameters(model.network)


def test_scalable_embeds_new_regions_without_od() -> None:
    train = make_views(n=30, mobility=False, image=True)
    model = HAFusionEmbedder(dim=8, config="scalable", width=16, heads=2, intra_blocks=1, inter_blocks=1,
                             region_blocks=1, d_prime=4, d_m=4, lift_channels=4, epochs=2).fit(train)
    other = make_views(n=7, seed=3, mobility=False, image=True)
    assert model.transform(other).shape == (7, 8)


def test_auto_config_by_region_count() -> None:
    model = HAFusionEmbedder()
    assert model.resolve_config(180) == "reference"
    assert model.resolve_config(5000) == "scalable"


def test_trains_on_the_sample_city(sf_views: Views) -> None:
    # 579 block groups, POI counts + Landsat statistics + adjacency, no OD table: auto picks the scalable
    # configuration; adjacency becomes the relation target.
    model = HAFusionEmbedder(dim=16, seed=0, epochs=2, width=32, intra_blocks=1, inter_blocks=1, region_blocks=1)
    emb = model.fit_transform(sf_views)
    assert emb.shape == (len(sf_views), 16) and np.isfinite(emb.to_numpy()).all()
    assert model.variant == "scalable"
    assert model.network.cfg.views == ["poi_counts", "image_stats"]
    assert model.network.cfg.relations == ["adjacency"]


def test_scalable_embeds_many_regions_in_seeded_batches_not_one_attention(poll_log: Any) -> None:
    """Above batch_regions the embedding pass runs per batch (attention within a batch, as in training): the
    network sees at most batch_regions regions at a time, every region once, and the result is seeded."""
    from backend.models.hafusion.data import apply_inputs

    views = make_views(n=150, mobility=False, image=True)
    model = HAFusionEmbedder(dim=8, seed=1, config="scalable", width=16, heads=2, intra_blocks=1, inter_blocks=1,
                             region_blocks=1, d_prime=4, d_m=4, lift_channels=4, epochs=1,
                             batch_regions=64).fit(views)
    sizes: list[int] = []
    real = model.network.embed

    def spy(inputs: list[torch.Tensor]) -> torch.Tensor:
        sizes.append(len(inputs[0]))
        return real(inputs)

    model.network.embed = spy  # type: ignore[method-assign]
    first = model.transform(views, poll_log).to_numpy()
    assert sizes == [64, 64, 22] and len(poll_log.polls) == 3  # one pass and one heartbeat/cancel check per batch
    perm = np.random.default_rng(1).permutation(150)
    idx = np.sort(perm[64:128])
    with torch.no_grad():
        inputs = [torch.from_numpy(x)[torch.from_numpy(idx)] for x in
                  apply_inputs(views, model._transforms, model.vocabulary)]
        np.testing.assert_allclose(first[idx], real(inputs).numpy(), rtol=1e-5, atol=1e-6)  # the second batch
    np.testing.assert_array_equal(model.transform(views).to_numpy(), first)  # seeded: the same batches again
    sizes.clear()
    small = make_views(n=40, mobility=False, image=True)
    model.transform(small)
    assert sizes == [40]  # up to batch_regions: all regions attend to each other in one pass
