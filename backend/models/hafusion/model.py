"""Torch modules of HAFusion.

Sun, Qi, Chang, Fan, Karunasekera and Tanin, "Urban Region Representation Learning with Attentive
Fusion", ICDE 2024 (arXiv 2312.04606); public code github.com/MiRuacle24/HAFusion.

Two configurations share these modules:

``reference``
    The published architecture, parameter for parameter. Every view is a matrix with one row per region;
    POI and land-use rows are projected to width N (the number of regions) by Linear + ReLU + Dropout, the
    mobility row (N trips) is used as it is. Per view, IntraAFL stacks post-LayerNorm self-attention blocks
    over the N region tokens whose head-averaged attention map is lifted to ``c`` edge channels by a 1 x 1
    convolution, pooled per row by a softmax over the row, projected back and added to the attention output;
    then DeepFc(N, N). InterAFL is external attention across the views with a learnable memory; the two
    are mixed by two learnable scalars, ViewFusion weighs the views, RegionFusion (post-LN transformer
    blocks + DeepFc) mixes regions, and DeepFc(N, dim) gives the embedding. Decoders (one Linear(dim, dim)
    per target) feed the loss (:mod:`backend.models.hafusion.losses`).

    Speed (same function, same initial distributions, same dropout semantics as the literal architecture;
    :mod:`backend.models.hafusion.naive` checks the equivalence): the per-view IntraAFL stacks run as *one*
    stack over the views (weights stored as ``V x out x in`` tensors); on CPU every such linear map, forward
    and backward, goes through oneDNN's fp32 kernel, about twice as fast as the default BLAS path on AVX-512
    machines; the attention map is computed once and reused for the attention output and the edge lift; the
    1 x 1 convolution lift is evaluated in closed form (for a channel with weight ``w`` and bias ``b``,
    ``sum_j softmax_j(w A_ij + b) (w A_ij + b) = w sum_j softmax_j(w A_ij) A_ij + b``: the bias cancels in the
    softmax) with a hand-written backward, so no ``c x N x N`` convolution output or its intermediates are
    kept; dropout masks come from one uniform draw per element (half the cost of the Bernoulli sampler).

``scalable``
    Widths that do not grow with N: every view (mobility included, through a truncated SVD of its log1p
    flows, computed in :mod:`backend.models.hafusion.data`) is projected to a fixed width ``d``; attention
    over regions runs through :func:`torch.nn.functional.scaled_dot_product_attention` (memory-efficient
    kernels, no N x N map kept; these kernels take no dropout on the attention weights, so the scalable
    blocks drop out their residual branches only); ViewFusion projects each region's feature vector instead of
    each feature's region vector. The attention-map edge lift cannot be evaluated without the N x N map, so
    it is replaced by an *attention-selectivity* lift computed from what the fused kernel returns: per head,
    the share of the values' spread that region ``i``'s attention output keeps,
    ``||o_i - mean_j v_j||^2 / mean_j ||v_j - mean_j v_j||^2``. It is zero when region ``i`` attends uniformly,
    about one when it attends to a single typical region (it measures how concentrated the attention row is,
    as the reference's softmax-pooled edge channels do), costs O(N d) on top of the attention, and is lifted
    by Linear(heads, c) + LeakyReLU + Linear(c, d), as the reference lifts its ``c`` channels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from torch import nn

__all__ = [
    "VARIANTS",
    "LIFTS",
    "HAFusionConfig",
    "ViewLinear",
    "ViewLayerNorm",
    "ViewDeepFc",
    "AttentionBlock",
    "IntraAFL",
    "InterAFL",
    "ViewFusion",
    "RegionFusion",
    "HAFusionNet",
    "conv_lift",
    "count_parameters",
]

#: Configurations of the network.
VARIANTS = ("reference", "scalable")
#: Edge lifts of an attention block: the reference's attention-map convolution, the scalable attention
#: selectivity, or none (RegionFusion blocks).
LIFTS = ("conv", "selectivity", "none")

_LEAK = 0.3  # negative slope of every LeakyReLU in HAFusion
_ONEDNN: bool | None = None  # whether oneDNN's fp32 linear kernel is usable here (probed once)


def _onednn_linear_available() -> bool:
    """True if ``torch.ops.mkldnn._linear_pointwise`` runs and agrees with :func:`torch.nn.functional.linear`."""
    global _ONEDNN
    if _ONEDNN is None:
        try:
            op = torch.ops.mkldnn._linear_pointwise
            x, w, b = torch.randn(5, 3), torch.randn(4, 3), torch.randn(4)
            _ONEDNN = bool(torch.backends.mkldnn.is_available()) and torch.allclose(
                op(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-5)
        except (AttributeError, RuntimeError):
            _ONEDNN = False
    return _ONEDNN


def _mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` through oneDNN (``a``: M x K, ``b``: N x K; views are fine)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


class _ViewLinearFn(torch.autograd.Function):
    """``y[v] = x[v] W[v]^T + b[v]`` for every view ``v`` with oneDNN's fp32 kernels (forward and backward).

    On CPUs with AVX-512 oneDNN's sgemm runs about twice as fast as the default BLAS path for these
    shapes; the arithmetic is the same fp32 matrix product (only the summation order differs).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        outs = [torch.ops.mkldnn._linear_pointwise(x[v], weight[v], None if bias is None else bias[v],
                                                   "none", [], "") for v in range(x.shape[0])]
        return outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        views = range(x.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.stack([_mm_nt(grad[v], weight[v].t()) for v in views])
        if ctx.needs_input_grad[1]:
            gw = torch.stack([_mm_nt(grad[v].t(), x[v].t()) for v in views])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(dim=1)
        return gx, gw, gb


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (as :func:`torch.nn.functional.dropout`) with a cheaper mask on CPU.

    Each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``. On CPU the mask comes
    from ``rand >= p``, about twice as fast as the Bernoulli sampler behind ``F.dropout``.
    """
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


@dataclass
class HAFusionConfig:
    """Architecture of one :class:`HAFusionNet` (JSON-serialisable; saved next to the weights).

    Attributes:
        variant: ``"reference"`` or ``"scalable"``.
        views: Names of the input views, in the order of the inputs.
        input_dims: Columns of every input view.
        identity: Per view, True if the view enters as it is (reference mobility rows, whose width must
            equal ``width``); False if it is projected by Linear + ReLU + Dropout.
        width: Hidden width (reference: the number of regions).
        dim: Embedding size (the paper: 144).
        relations: Relation targets (``mobility``, ``adjacency``); each has a source and a target decoder.
        similarities: Similarity targets (one decoder each).
        heads: Attention heads (IntraAFL and RegionFusion).
        intra_blocks: IntraAFL blocks per view.
        inter_blocks: InterAFL blocks.
        region_blocks: RegionFusion blocks.
        d_prime: ViewFusion hidden size.
        d_m: InterAFL memory units.
        lift_channels: Edge channels ``c`` of the IntraAFL lift.
        ffn_dim: Feed-forward width of the attention blocks.
        dropout: Dropout everywhere (inputs, attention, blocks).
    """

    variant: str
    views: list[str]
    input_dims: list[int]
    identity: list[bool]
    width: int
    dim: int = 144
    relations: list[str] = field(default_factory=list)
    similarities: list[str] = field(default_factory=list)
    heads: int = 4
    intra_blocks: int = 3
    inter_blocks: int = 3
    region_blocks: int = 3
    d_prime: int = 64
    d_m: int = 72
    lift_channels: int = 32
    ffn_dim: int = 2048
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown HAFusion variant '{self.variant}'; use one of {VARIANTS}.")
        if not self.views:
            raise ValueError("HAFusion needs at least one input view.")
        if not (len(self.views) == len(self.input_dims) == len(self.identity)):
            raise ValueError("views, input_dims and identity must have the same length.")
        for name, dim_in, ident in zip(self.views, self.input_dims, self.identity, strict=True):
            if ident and dim_in != self.width:
                raise ValueError(f"View '{name}' enters as it is, so its width {dim_in} must equal {self.width}.")
        if self.width % self.heads:
            raise ValueError(f"The width {self.width} is not divisible by {self.heads} attention heads.")
        if not (self.relations or self.similarities):
            raise ValueError("HAFusion needs at least one training target.")

    @property
    def decoders(self) -> list[str]:
        """Decoder names: ``<relation>_src`` and ``<relation>_dst`` per relation, then one per similarity."""
        names = [f"{r}_{end}" for r in self.relations for end in ("src", "dst")]
        return names + list(self.similarities)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


# --------------------------------------------------------------------------------------- building blocks
class ViewLinear(nn.Module):
    """``V`` independent linear maps applied to a stack of ``V`` inputs in one batched product.

    Each map is initialised like :class:`torch.nn.Linear` (uniform in +-1/sqrt(in_features)).

    Args:
        views: Number of maps ``V``.
        in_features: Input width.
        out_features: Output width.
        bias: Whether each map has a bias.
    """

    def __init__(self, views: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(views, out_features, in_features))
        self.bias: nn.Parameter | None = nn.Parameter(torch.empty(views, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform initialisation as :class:`torch.nn.Linear` does it."""
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape ``V x M x in`` to ``V x M x out``."""
        if x.device.type == "cpu" and x.dtype == torch.float32 and _onednn_linear_available():
            return _ViewLinearFn.apply(x, self.weight, self.bias)
        if self.bias is None:
            return torch.bmm(x, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class ViewLayerNorm(nn.Module):
    """``V`` independent LayerNorms over the last axis of a ``V x M x E`` stack."""

    def __init__(self, views: int, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(views, width))
        self.bias = nn.Parameter(torch.zeros(views, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every row of every view, then scale and shift per view."""
        y = F.layer_norm(x, (x.shape[-1],), eps=self.eps)
        return torch.addcmul(self.bias.unsqueeze(1), y, self.weight.unsqueeze(1))


class ViewDeepFc(nn.Module):
    """DeepFc of HAFusion for ``V`` views at once.

    ``DeepFc(a, b) = Linear(a, 2a), Linear(2a, 2a), LeakyReLU(0.3), Linear(2a, b), LeakyReLU(0.3)``
    (no activation between the first two layers, as in the paper's code).
    """

    def __init__(self, views: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = ViewLinear(views, in_features, 2 * in_features)
        self.fc2 = ViewLinear(views, 2 * in_features, 2 * in_features)
        self.fc3 = ViewLinear(views, 2 * in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``V x M x a`` to ``V x M x b``."""
        x = F.leaky_relu(self.fc2(self.fc1(x)), _LEAK)
        return F.leaky_relu(self.fc3(x), _LEAK)


class _SoftPoolFn(torch.autograd.Function):
    """``s[v, i, k] = sum_j softmax_j(w[v, k] A[v, i, j]) A[v, i, j]`` with a hand-written backward.

    With ``p = softmax_j(w A_ij)``: ``ds_i/dA_ij = p_ij (1 + w (A_ij - s_i))`` and
    ``ds_i/dw = sum_j p_ij A_ij^2 - s_i^2``. Only ``p`` is kept for the backward pass (autograd would keep
    the scaled map, the softmax and the product as well); the sums over ``j`` are fused multiply-reductions.
    """

    @staticmethod
    def forward(ctx: Any, attn: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        prob = torch.softmax(attn.unsqueeze(2) * weight[:, None, :, None], dim=-1)  # V x N x c x M
        pooled = torch.linalg.vecdot(prob, attn.unsqueeze(2))  # V x N x c
        ctx.save_for_backward(attn, weight, prob, pooled)
        return pooled

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        attn, weight, prob, pooled = ctx.saved_tensors
        w = weight.unsqueeze(1)  # V x 1 x c
        coef = torch.stack([grad * (1.0 - w * pooled), grad * w], dim=-2)  # V x N x 2 x c
        both = torch.matmul(coef, prob)  # V x N x 2 x M
        grad_attn = torch.addcmul(both[:, :, 0], attn, both[:, :, 1])
        second = torch.linalg.vecdot(prob, (attn * attn).unsqueeze(2))  # sum_j p A^2
        grad_weight = (grad * (second - pooled * pooled)).sum(dim=1)
        return grad_attn, grad_weight


def conv_lift(attn: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The reference edge lift of an attention map, in closed form.

    The reference lifts the map ``A`` (``N x N``) by a 1 x 1 convolution to ``c`` channels
    ``E_k = w_k A + b_k``, takes a softmax over the last axis and sums ``softmax(E_k) * E_k`` over it.
    Since a softmax ignores a constant shift, this equals ``w_k sum_j softmax_j(w_k A_ij) A_ij + b_k``.

    Args:
        attn: Attention maps, ``V x N x M``.
        weight: Convolution weights, ``V x c``.
        bias: Convolution biases, ``V x c``.

    Returns:
        ``V x N x c`` edge features.
    """
    pooled = _SoftPoolFn.apply(attn, weight)
    return torch.addcmul(bias.unsqueeze(1), pooled, weight.unsqueeze(1))


class AttentionBlock(nn.Module):
    """A post-LayerNorm transformer block over region tokens, for ``V`` views at once.

    ``x = LN(x + Dropout(MHA(x) + lift)); x = LN(x + Dropout(FFN(x)))`` with ``FFN = Linear, ReLU, Dropout,
    Linear``. ``lift = "conv"`` is the reference IntraAFL edge lift of the head-averaged attention map (the
    map is computed explicitly, after attention dropout as :class:`torch.nn.MultiheadAttention` returns it);
    ``"selectivity"`` is the scalable lift on top of
    :func:`torch.nn.functional.scaled_dot_product_attention`; ``"none"`` is a plain block (RegionFusion);
    it uses the explicit attention when ``explicit`` is True (reference) and the fused kernel otherwise.

    Args:
        views: Number of independent stacks ``V``.
        width: Token width ``E``.
        heads: Attention heads (must divide ``width``).
        ffn_dim: Feed-forward width.
        dropout: Dropout probability.
        lift: One of :data:`LIFTS`.
        channels: Lift channels ``c``.
        explicit: Compute the attention map explicitly (reference) instead of the fused kernel.
    """

    def __init__(
        self,
        views: int,
        width: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        lift: str = "none",
        channels: int = 32,
        explicit: bool = True,
    ) -> None:
        super().__init__()
        if lift not in LIFTS:
            raise ValueError(f"Unknown lift '{lift}'; use one of {LIFTS}.")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads.")
        self.heads, self.width, self.dropout, self.lift = heads, width, dropout, lift
        self.explicit = explicit or lift == "conv"
        self.qkv = ViewLinear(views, width, 3 * width)
        self.out = ViewLinear(views, width, width)
        # torch.nn.MultiheadAttention's initialisation: Xavier-uniform input projection, zero biases.
        for v in range(views):
            nn.init.xavier_uniform_(self.qkv.weight.data[v])
        assert self.qkv.bias is not None and self.out.bias is not None
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)
        if lift == "conv":
            # Conv2d(1, c, 1): fan-in 1, so weight and bias are uniform in [-1, 1].
            self.lift_weight = nn.Parameter(torch.empty(views, channels).uniform_(-1.0, 1.0))
            self.lift_bias = nn.Parameter(torch.empty(views, channels).uniform_(-1.0, 1.0))
            self.lift_proj = ViewLinear(views, channels, width)
        elif lift == "selectivity":
            self.lift_in = ViewLinear(views, heads, channels)
            self.lift_proj = ViewLinear(views, channels, width)
        self.norm1 = ViewLayerNorm(views, width)
        self.norm2 = ViewLayerNorm(views, width)
        self.ff1 = ViewLinear(views, width, ffn_dim)
        self.ff2 = ViewLinear(views, ffn_dim, width)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention output plus the edge lift, ``V x N x E``."""
        v_, n, e = x.shape
        h = self.heads
        dh = e // h
        qkv = self.qkv(x).view(v_, n, 3, h, dh).permute(2, 0, 3, 1, 4)  # 3 x V x H x N x dh
        q, k, v = qkv.unbind(0)
        p = self.dropout if self.training else 0.0
        lifted: torch.Tensor | None = None
        if self.explicit:
            attn = torch.softmax(torch.matmul(q * dh**-0.5, k.transpose(-1, -2)), dim=-1)  # V x H x N x N
            attn = _dropout(attn, p, self.training)
            o = torch.matmul(attn, v)
            if self.lift == "conv":
                lifted = self.lift_proj(conv_lift(attn.mean(1), self.lift_weight, self.lift_bias))
        else:  # fused kernel; it takes no attention dropout (the residual branch is dropped out instead)
            o = F.scaled_dot_product_attention(q, k, v)
            if self.lift == "selectivity":
                centred = v - v.mean(dim=2, keepdim=True)  # V x H x N x dh
                spread = centred.square().sum(-1).mean(-1, keepdim=True)  # V x H x 1
                kept = (o - v.mean(dim=2, keepdim=True)).square().sum(-1) / (spread + 1e-6)  # V x H x N
                lifted = self.lift_proj(F.leaky_relu(self.lift_in(kept.transpose(1, 2)), _LEAK))
        o = self.out(o.transpose(1, 2).reshape(v_, n, e))
        return o if lifted is None else o + lifted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``V x N x E`` to ``V x N x E``."""
        p, train = self.dropout, self.training
        x = self.norm1(x + _dropout(self._attend(x), p, train))
        ff = self.ff2(_dropout(F.relu(self.ff1(x)), p, train))
        return self.norm2(x + _dropout(ff, p, train))


# ------------------------------------------------------------------------------------------------ stages
class IntraAFL(nn.Module):
    """Intra-view attentive feature learning: per view, attention blocks over regions, then DeepFc."""

    def __init__(self, cfg: HAFusionConfig) -> None:
        super().__init__()
        v, e = len(cfg.views), cfg.width
        reference = cfg.variant == "reference"
        self.blocks = nn.ModuleList(
            AttentionBlock(v, e, cfg.heads, cfg.ffn_dim, cfg.dropout, lift="conv" if reference else "selectivity",
                           channels=cfg.lift_channels, explicit=reference)
            for _ in range(cfg.intra_blocks)
        )
        self.fc = ViewDeepFc(v, e, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``V x N x E`` to ``V x N x E``."""
        for block in self.blocks:
            x = block(x)
        return self.fc(x)


class InterAFL(nn.Module):
    """Inter-view attentive feature learning: external attention across the views with a learnable memory.

    Per block: ``Linear(E, d_m)`` (no bias), softmax over the *view* axis, normalisation over the memory
    axis, ``Linear(d_m, E)`` (no bias); weights drawn from N(0, 0.001^2). Then DeepFc(E, E) shared by views.
    """

    def __init__(self, cfg: HAFusionConfig) -> None:
        super().__init__()
        e, m = cfg.width, cfg.d_m
        self.keys = nn.ModuleList(nn.Linear(e, m, bias=False) for _ in range(cfg.inter_blocks))
        self.values = nn.ModuleList(nn.Linear(m, e, bias=False) for _ in range(cfg.inter_blocks))
        for lin in [*self.keys, *self.values]:
            nn.init.normal_(lin.weight, std=0.001)
        self.fc = ViewDeepFc(1, e, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``V x N x E`` to ``V x N x E``."""
        v, n, e = x.shape
        out = x.transpose(0, 1)  # N x V x E: each region attends across its views
        for mk, mv in zip(self.keys, self.values, strict=True):
            attn = torch.softmax(mk(out), dim=1)
            out = mv(attn / attn.sum(dim=2, keepdim=True))
        return self.fc(out.reshape(1, n * v, e)).view(n, v, e).transpose(0, 1)


class ViewFusion(nn.Module):
    """One attention weight per view, shared by all regions; returns the weights (softmax over views).

    Reference: for every feature ``f`` the vector of the N regions' values in view ``v`` is projected to
    ``d'`` (``proj``, no bias); two scores ``f1`` and ``f2`` are added pairwise over views, passed through
    LeakyReLU(0.3), averaged over the partner view and over features; softmax over views. The scalable
    variant swaps the roles of regions and features (each region's ``d``-vector is projected), so the
    projection does not depend on N and works on mini-batches.
    """

    def __init__(self, in_features: int, d_prime: int, over_regions: bool) -> None:
        super().__init__()
        self.over_regions = over_regions
        self.proj = nn.Linear(in_features, d_prime, bias=False)
        self.f1 = nn.Linear(d_prime, 1)
        self.f2 = nn.Linear(d_prime, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weights (``V``) of the views of ``x`` (``V x N x E``)."""
        seq = self.proj(x.permute(2, 0, 1) if self.over_regions else x.transpose(0, 1))  # S x V x d'
        f1, f2 = self.f1(seq).squeeze(-1), self.f2(seq).squeeze(-1)  # S x V
        logits = f2.unsqueeze(2) + f1.unsqueeze(1)  # S x V x V: [s, u, v] = f2[s, u] + f1[s, v]
        return torch.softmax(F.leaky_relu(logits, _LEAK).mean(dim=-1).mean(dim=0), dim=-1)


class RegionFusion(nn.Module):
    """Post-LN transformer blocks over the fused region tokens, then DeepFc(E, E)."""

    def __init__(self, cfg: HAFusionConfig) -> None:
        super().__init__()
        reference = cfg.variant == "reference"
        self.blocks = nn.ModuleList(
            AttentionBlock(1, cfg.width, cfg.heads, cfg.ffn_dim, cfg.dropout, lift="none", explicit=reference)
            for _ in range(cfg.region_blocks)
        )
        self.fc = ViewDeepFc(1, cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``1 x N x E`` to ``1 x N x E``."""
        for block in self.blocks:
            x = block(x)
        return self.fc(x)


# ---------------------------------------------------------------------------------------------- network
class HAFusionNet(nn.Module):
    """The whole HAFusion network: inputs -> embedding -> decoded target embeddings.

    Args:
        cfg: The architecture.
    """

    def __init__(self, cfg: HAFusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e = cfg.width
        self.inputs = nn.ModuleDict(
            {name: nn.Linear(d, e) for name, d, ident in zip(cfg.views, cfg.input_dims, cfg.identity, strict=True)
             if not ident}
        )
        self.intra = IntraAFL(cfg)
        self.inter = InterAFL(cfg)
        # Learnable mix of InterAFL (weight p2) and IntraAFL (weight p1) outputs.
        self.mix_intra = nn.Parameter(torch.tensor([0.1]))
        self.mix_inter = nn.Parameter(torch.tensor([0.9]))
        self.view_fusion = ViewFusion(e, cfg.d_prime, over_regions=cfg.variant == "reference")
        self.region_fusion = RegionFusion(cfg)
        self.head = ViewDeepFc(1, e, cfg.dim)
        self.decoders = nn.ModuleDict({name: nn.Linear(cfg.dim, cfg.dim) for name in cfg.decoders})

    def embed(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Region embeddings (``M x dim``) of the regions whose input rows are given.

        Args:
            inputs: One ``M x input_dim`` tensor per view, in the order of ``cfg.views`` (the reference
                configuration needs all N regions, M = N).

        Returns:
            ``M x dim`` embeddings.
        """
        cfg = self.cfg
        if len(inputs) != len(cfg.views):
            raise ValueError(f"Expected {len(cfg.views)} input views ({cfg.views}), got {len(inputs)}.")
        p = cfg.dropout
        rows = []
        for name, x in zip(cfg.views, inputs, strict=True):
            if name in self.inputs:
                x = _dropout(F.relu(self.inputs[name](x)), p, self.training)
            rows.append(x)
        intra = self.intra(torch.stack(rows))  # V x M x E
        inter = self.inter(intra)
        total = self.mix_intra + self.mix_inter
        mixed = inter * (self.mix_inter / total) + intra * (self.mix_intra / total)
        coef = self.view_fusion(mixed)
        fused = torch.einsum("v,vne->ne", coef, mixed).unsqueeze(0)
        return self.head(self.region_fusion(fused)).squeeze(0)

    def decode(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded embedding of every target (see :attr:`HAFusionConfig.decoders`)."""
        return {name: dec(emb) for name, dec in self.decoders.items()}

    def forward(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embeddings and decoded embeddings (see :meth:`embed` and :meth:`decode`)."""
        emb = self.embed(inputs)
        return emb, self.decode(emb)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
