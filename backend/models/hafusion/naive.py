"""A literal, unfused implementation of the HAFusion reference architecture, for checking and timing only.

Sun et al., "Urban Region Representation Learning with Attentive Fusion", ICDE 2024 (arXiv 2312.04606).

It follows the description in SPEC section 4.1 operation by operation, the way the public code is
organised: a Python loop over views, :class:`torch.nn.MultiheadAttention` returning the head-averaged
attention map, a real ``Conv2d(1, c, 1)`` lift producing ``c x N x N`` edge features, one module per
view. :func:`naive_from_fused` copies the weights of a fused :class:`~backend.models.hafusion.model.HAFusionNet`
(reference configuration) into it, so tests can check that both compute the same function and the
benchmark can time both under the same load. RegionLens never trains with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from torch import nn

from backend.models.hafusion.model import AttentionBlock, HAFusionConfig, HAFusionNet, ViewDeepFc

__all__ = ["NaiveHAFusion", "naive_from_fused"]


class _DeepFc(nn.Sequential):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(nn.Linear(a, 2 * a), nn.Linear(2 * a, 2 * a), nn.LeakyReLU(0.3),
                         nn.Linear(2 * a, b), nn.LeakyReLU(0.3))


class _Block(nn.Module):
    def __init__(self, e: int, heads: int, ffn: int, dropout: float, c: int | None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(e, heads, dropout=dropout, batch_first=True)
        self.expand = nn.Conv2d(1, c, kernel_size=1) if c else None
        self.proj = nn.Linear(c, e) if c else None
        self.norm1, self.norm2 = nn.LayerNorm(e), nn.LayerNorm(e)
        self.linear1, self.linear2 = nn.Linear(e, ffn), nn.Linear(ffn, e)
        self.drop, self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, src: torch.Tensor) -> torch.Tensor:  # 1 x N x E
        out, attn = self.attn(src, src, src)
        if self.expand is not None and self.proj is not None:
            edge = self.expand(attn[:, None])  # 1 x c x N x N
            w = (edge.softmax(dim=-1) * edge).sum(-1).transpose(-1, -2)  # 1 x N x c
            out = out + self.proj(w)
        src = self.norm1(src + self.drop1(out))
        src2 = self.linear2(self.drop(F.relu(self.linear1(src))))
        return self.norm2(src + self.drop2(src2))


class NaiveHAFusion(nn.Module):
    """The reference architecture written out literally (see the module docstring)."""

    def __init__(self, cfg: HAFusionConfig) -> None:
        super().__init__()
        if cfg.variant != "reference":
            raise ValueError("The naive implementation covers the reference configuration only.")
        self.cfg = cfg
        e = cfg.width
        self.dense = nn.ModuleDict({n: nn.Linear(d, e) for n, d, i in zip(cfg.views, cfg.input_dims, cfg.identity,
                                                                           strict=True) if not i})
        self.intra = nn.ModuleList(
            nn.ModuleList([*(_Block(e, cfg.heads, cfg.ffn_dim, cfg.dropout, cfg.lift_channels)
                             for _ in range(cfg.intra_blocks)), _DeepFc(e, e)])
            for _ in cfg.views
        )
        self.mk = nn.ModuleList(nn.Linear(e, cfg.d_m, bias=False) for _ in range(cfg.inter_blocks))
        self.mv = nn.ModuleList(nn.Linear(cfg.d_m, e, bias=False) for _ in range(cfg.inter_blocks))
        self.inter_fc = _DeepFc(e, e)
        self.para1, self.para2 = nn.Parameter(torch.tensor([0.1])), nn.Parameter(torch.tensor([0.9]))
        self.vf_w = nn.Conv1d(e, cfg.d_prime, kernel_size=1, bias=False)
        self.vf_f1, self.vf_f2 = nn.Conv1d(cfg.d_prime, 1, kernel_size=1), nn.Conv1d(cfg.d_prime, 1, kernel_size=1)
        self.region = nn.ModuleList(_Block(e, cfg.heads, cfg.ffn_dim, cfg.dropout, None)
                                    for _ in range(cfg.region_blocks))
        self.region_fc = _DeepFc(e, e)
        self.fc = _DeepFc(e, cfg.dim)
        self.decoders = nn.ModuleDict({n: nn.Linear(cfg.dim, cfg.dim) for n in cfg.decoders})
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embedding and decoded embeddings, as :meth:`HAFusionNet.forward`."""
        views = []
        for v, (name, x) in enumerate(zip(self.cfg.views, inputs, strict=True)):
            if name in self.dense:
                x = self.drop(F.relu(self.dense[name](x)))
            out = x[None]
            for block in self.intra[v][:-1]:
                out = block(out)
            views.append(self.intra[v][-1](out[0]))
        intra = torch.stack(views)  # V x N x E
        out = intra.transpose(0, 1)
        for mk, mv in zip(self.mk, self.mv, strict=True):
            attn = mk(out).softmax(dim=1)
            out = mv(attn / attn.sum(dim=2, keepdim=True))
        inter = self.inter_fc(out).transpose(0, 1)
        p1 = self.para1 / (self.para1 + self.para2)
        p2 = self.para2 / (self.para1 + self.para2)
        mixed = inter * p2 + intra * p1
        seq = self.vf_w(mixed.transpose(0, 2))
        logits = self.vf_f1(seq) + self.vf_f2(seq).transpose(1, 2)
        coef = F.softmax(F.leaky_relu(logits, 0.3).mean(dim=-1).mean(dim=0), dim=-1)
        fused = sum(coef[v] * mixed[v] for v in range(len(views)))
        out = fused[None]
        for block in self.region:
            out = block(out)
        emb = self.fc(self.region_fc(out[0]))
        return emb, {n: d(emb) for n, d in self.decoders.items()}


def _copy_deepfc(dst: _DeepFc, src: ViewDeepFc, v: int) -> None:
    for i, lin in zip((0, 1, 3), (src.fc1, src.fc2, src.fc3), strict=True):
        dst[i].weight.copy_(lin.weight[v])
        assert lin.bias is not None
        dst[i].bias.copy_(lin.bias[v])


def _copy_block(dst: _Block, src: AttentionBlock, v: int) -> None:
    assert src.qkv.bias is not None and src.out.bias is not None
    dst.attn.in_proj_weight.copy_(src.qkv.weight[v])
    dst.attn.in_proj_bias.copy_(src.qkv.bias[v])
    dst.attn.out_proj.weight.copy_(src.out.weight[v])
    dst.attn.out_proj.bias.copy_(src.out.bias[v])
    if dst.expand is not None and dst.proj is not None:
        dst.expand.weight.copy_(src.lift_weight[v].view(-1, 1, 1, 1))
        dst.expand.bias.copy_(src.lift_bias[v])
        dst.proj.weight.copy_(src.lift_proj.weight[v])
        assert src.lift_proj.bias is not None
        dst.proj.bias.copy_(src.lift_proj.bias[v])
    for d_norm, s_norm in ((dst.norm1, src.norm1), (dst.norm2, src.norm2)):
        d_norm.weight.copy_(s_norm.weight[v])
        d_norm.bias.copy_(s_norm.bias[v])
    for d_lin, s_lin in ((dst.linear1, src.ff1), (dst.linear2, src.ff2)):
        d_lin.weight.copy_(s_lin.weight[v])
        assert s_lin.bias is not None
        d_lin.bias.copy_(s_lin.bias[v])


@torch.no_grad()
def naive_from_fused(net: HAFusionNet) -> NaiveHAFusion:
    """A :class:`NaiveHAFusion` holding exactly the weights of the fused reference network ``net``."""
    naive = NaiveHAFusion(net.cfg)
    for name, lin in net.inputs.items():
        naive.dense[name].load_state_dict(lin.state_dict())
    for v in range(len(net.cfg.views)):
        for b, block in enumerate(net.intra.blocks):
            _copy_block(naive.intra[v][b], block, v)
        _copy_deepfc(naive.intra[v][-1], net.intra.fc, v)
    for i in range(net.cfg.inter_blocks):
        naive.mk[i].weight.copy_(net.inter.keys[i].weight)
        naive.mv[i].weight.copy_(net.inter.values[i].weight)
    _copy_deepfc(naive.inter_fc, net.inter.fc, 0)
    naive.para1.copy_(net.mix_intra)
    naive.para2.copy_(net.mix_inter)
    naive.vf_w.weight.copy_(net.view_fusion.proj.weight[:, :, None])
    naive.vf_f1.weight.copy_(net.view_fusion.f1.weight[:, :, None])
    naive.vf_f1.bias.copy_(net.view_fusion.f1.bias)
    naive.vf_f2.weight.copy_(net.view_fusion.f2.weight[:, :, None])
    naive.vf_f2.bias.copy_(net.view_fusion.f2.bias)
    for b, block in enumerate(net.region_fusion.blocks):
        _copy_block(naive.region[b], block, 0)
    _copy_deepfc(naive.region_fc, net.region_fusion.fc, 0)
    _copy_deepfc(naive.fc, net.head, 0)
    for name, dec in net.decoders.items():
        naive.decoders[name].load_state_dict(dec.state_dict())
    return naive
