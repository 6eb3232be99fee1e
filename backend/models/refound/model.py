"""ReFound's network: one transformer over a region's POI tokens and image patches with geospatial experts.

ReFound (Xiao et al., "ReFound: Crafting a Foundation Model for Urban Region Understanding upon Language and
Visual Foundations", KDD 2024) encodes a region as one sequence

``[CLS_poi] pieces of POI 1 [SEP] pieces of POI 2 [SEP] ... [PAD]...  [CLS_img] patch_1 ... patch_n``

* POI token embedding = word piece + position within the POI's name + position of the POI in the Z-order
  sorted POI sequence + grid cell + category + modality 0, then LayerNorm and dropout.
* Image token embedding = linear projection of a flattened ``patch x patch`` pixel patch (or a learned
  ``[MASK]`` patch embedding where ``patch_mask`` is set) + learned position (the image ``[CLS]`` has
  position 0) + modality 1, then a LayerNorm of its own and dropout. The image LayerNorm is an addition to
  the listed embeddings: the residual stream of a pre-LN transformer keeps the scale of its input, and the
  projected pixels would otherwise be about three times smaller than the normalised POI embeddings.
* Mixture-of-Geospatial-Experts (MoGE) blocks, pre-LN: self-attention shared by both modalities over the
  whole sequence (``F.scaled_dot_product_attention`` with a key-padding mask: padding tokens, and all image
  patches of a sample without imagery, are never attended to; both ``[CLS]`` tokens always are); the
  feed-forward part is a POI expert on POI positions and an image expert on image positions in the lower
  ``layers - fusion_layers`` blocks, and one fusion FFN shared by both modalities in the top
  ``fusion_layers`` blocks. Each FFN carries its own pre-LayerNorm. ``moge=False`` (ablation): one shared FFN
  in every block. A final LayerNorm closes the stack.
* Heads (modules of the net, applied by the training loop to the parts of :class:`RefoundOutput` they need):
  ``mlm`` (dense + GELU + LayerNorm, then logits over word pieces with the decoder weight tied to the piece
  embedding, BERT style, plus a bias), ``mim`` (patch hidden -> visual-token logits), ``cmsa`` (POI token
  hidden -> one logit, "is my grid cell masked in the image"), ``text_distill`` (POI ``[CLS]`` -> language
  teacher space), ``image_distill`` (image ``[CLS]`` -> vision teacher space), ``sim_poi`` / ``sim_img``
  (``[CLS]`` -> ``sim_dim`` projections compared by the similarity distillation), and ``pool``, the small
  attention pooling used by :func:`region_vectors` with ``pooling="attention"``.

Weights are initialised BERT style: normal(0, 0.02) for linear, embedding and free parameters, zero biases,
LayerNorm weight 1 and bias 0. Everything runs in fp32 on a CPU and under ``torch.autocast`` on a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = [
    "PRESETS",
    "AttentionPooling",
    "RefoundConfig",
    "RefoundNet",
    "RefoundOutput",
    "count_parameters",
    "make_config",
    "region_vectors",
]

#: Modality ids of the modality embedding.
POI_MODALITY, IMAGE_MODALITY = 0, 1


@dataclass
class RefoundConfig:
    """Architecture and vocabulary sizes of a :class:`RefoundNet` (saved as JSON with the weights)."""

    layers: int = 4  # transformer blocks
    width: int = 256  # hidden size
    heads: int = 4  # attention heads (width must be divisible by heads)
    ffn: int = 1024  # inner size of every feed-forward expert
    fusion_layers: int = 2  # top blocks with one shared fusion FFN (MoGE)
    moge: bool = True  # False: one shared FFN in every block (ablation)
    dropout: float = 0.1  # embeddings, attention weights, residual branches
    max_tokens: int = 128  # POI tokens per sample (incl. [CLS], [SEP]s and padding)
    image_size: int = 128  # side of the image input in pixels
    patch: int = 16  # side of an image patch in pixels
    bands: int = 3  # image channels
    grid: int = 16  # POI grid is grid x grid cells over the bounding square
    max_name_pos: int = 16  # word pieces per name with their own position id
    max_pois: int = 511  # POI-position ids (1..max_pois)
    n_pieces: int = 5  # compact word-piece vocabulary size (specials included)
    n_categories: int = 2  # category vocabulary size (none and unknown included)
    codebook_size: int = 256  # discrete visual tokens (masked image modelling targets)
    text_dim: int = 384  # language teacher dimension
    image_dim: int = 1280  # vision teacher dimension
    sim_dim: int = 256  # projections compared by the similarity distillation

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads}).")
        if not 0 <= self.fusion_layers <= self.layers:
            raise ValueError(f"fusion_layers must lie in 0..layers ({self.layers}), got {self.fusion_layers}.")
        if self.image_size % self.patch or self.image_size < self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a positive multiple of patch ({self.patch}).")
        if min(self.layers, self.width, self.ffn, self.max_tokens, self.bands, self.grid, self.max_name_pos,
               self.max_pois, self.codebook_size, self.text_dim, self.image_dim, self.sim_dim) < 1:
            raise ValueError("RefoundConfig sizes must be positive.")
        if self.n_pieces < 5 or self.n_categories < 2:
            raise ValueError("n_pieces must count the 5 special pieces and n_categories the 2 special categories.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}.")

    @property
    def patch_grid(self) -> int:
        """Patches per image side (P)."""
        return self.image_size // self.patch

    @property
    def n_patches(self) -> int:
        """Image patches per sample (P * P), the image [CLS] not included."""
        return self.patch_grid**2

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefoundConfig:
        """Inverse of :meth:`to_dict` (missing keys take their defaults).

        Raises:
            ValueError: On an unknown key or invalid sizes.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown RefoundConfig keys: {unknown}.")
        return cls(**d)


#: Named architectures: ``small`` trains on a CPU in minutes, ``full`` is the paper's BERT-base size.
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(layers=4, width=128, heads=4, ffn=512, max_tokens=64, image_size=64, codebook_size=128),
    "full": dict(layers=12, width=768, heads=12, ffn=3072, max_tokens=512, image_size=256, codebook_size=1024),
}


def make_config(preset: str, **overrides: Any) -> RefoundConfig:
    """A preset's configuration with some fields replaced (e.g. the vocabulary sizes).

    Raises:
        ValueError: On an unknown preset or field, or invalid sizes.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown ReFound preset {preset!r}; choose one of {sorted(PRESETS)}.")
    return RefoundConfig.from_dict({**PRESETS[preset], **overrides})


@dataclass
class RefoundOutput:
    """Final hidden states (after the last LayerNorm) of a :class:`RefoundNet` forward pass."""

    poi_hidden: torch.Tensor  # S x L x W, position 0 is the POI [CLS]
    image_hidden: torch.Tensor  # S x n_patches x W (image [CLS] not included)
    poi_cls: torch.Tensor  # S x W
    image_cls: torch.Tensor  # S x W


class _FeedForward(nn.Module):
    """Pre-LN feed-forward expert: LayerNorm, Linear, GELU, Linear, dropout."""

    def __init__(self, width: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, inner)
        self.fc2 = nn.Linear(inner, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(self.norm(x)))))


class _SelfAttention(nn.Module):
    """Pre-LN multi-head self-attention with a key-padding mask."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.attn_dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        s, t, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(s, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        mask = keep[:, None, None, :]  # S x 1 x 1 x T, True = may be attended to
        p = self.attn_dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.drop(self.out(h.transpose(1, 2).reshape(s, t, w)))


class _Block(nn.Module):
    """One MoGE block: shared attention, then modality experts (``experts=True``) or one shared FFN."""

    def __init__(self, cfg: RefoundConfig, experts: bool) -> None:
        super().__init__()
        self.attn = _SelfAttention(cfg.width, cfg.heads, cfg.dropout)
        self.experts = experts
        if experts:
            self.ffn_poi = _FeedForward(cfg.width, cfg.ffn, cfg.dropout)
            self.ffn_img = _FeedForward(cfg.width, cfg.ffn, cfg.dropout)
        else:
            self.ffn = _FeedForward(cfg.width, cfg.ffn, cfg.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, n_poi: int) -> torch.Tensor:
        x = x + self.attn(x, keep)
        if self.experts:
            a = self.ffn_poi(x[:, :n_poi])
            b = self.ffn_img(x[:, n_poi:])
            return x + torch.cat([a, b.to(a.dtype)], dim=1)
        return x + self.ffn(x)


class _MLMHead(nn.Module):
    """BERT-style masked-token head: dense, GELU, LayerNorm, then the tied piece embedding plus a bias."""

    def __init__(self, width: int, piece_embedding: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.decoder = piece_embedding  # weight shared with the input embedding
        self.bias = nn.Parameter(torch.zeros(piece_embedding.num_embeddings))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.norm(F.gelu(self.dense(h)))
        return F.linear(z, self.decoder.weight, self.bias)


class _LogitHead(nn.Module):
    """Linear map to a single logit, returned without the trailing unit dimension."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h).squeeze(-1)


class AttentionPooling(nn.Module):
    """Learned attention over a few vectors: ``score_k = v . tanh(A h_k + b)``, softmax over ``k``.

    Args:
        width: Size of the pooled vectors.
        hidden: Size of the scoring layer (default ``max(16, width // 4)``).
    """

    def __init__(self, width: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(16, width // 4)
        self.proj = nn.Linear(width, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Pool ``S x K x W`` vectors into ``S x W``."""
        a = torch.softmax(self.score(torch.tanh(self.proj(h))).squeeze(-1).float(), dim=1)
        return (a.to(h.dtype).unsqueeze(-1) * h).sum(dim=1)


class RefoundNet(nn.Module):
    """The ReFound network (see the module docstring).

    Args:
        cfg: The architecture and vocabulary sizes.
    """

    def __init__(self, cfg: RefoundConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        # POI token embeddings.
        self.piece = nn.Embedding(cfg.n_pieces, w)
        self.name_pos = nn.Embedding(cfg.max_name_pos + 1, w)
        self.poi_pos = nn.Embedding(cfg.max_pois + 1, w)
        self.grid_cell = nn.Embedding(cfg.grid * cfg.grid + 1, w)
        self.category = nn.Embedding(cfg.n_categories, w)
        self.modality = nn.Embedding(2, w)
        self.poi_norm = nn.LayerNorm(w)
        # Image token embeddings.
        self.patch_proj = nn.Linear(cfg.bands * cfg.patch * cfg.patch, w)
        self.image_pos = nn.Parameter(torch.zeros(cfg.n_patches + 1, w))
        self.image_cls_token = nn.Parameter(torch.zeros(w))
        self.mask_patch = nn.Parameter(torch.zeros(w))
        self.image_norm = nn.LayerNorm(w)
        self.drop = nn.Dropout(cfg.dropout)
        # MoGE stack.
        n_expert = cfg.layers - cfg.fusion_layers if cfg.moge else 0
        self.blocks = nn.ModuleList([_Block(cfg, experts=i < n_expert) for i in range(cfg.layers)])
        self.norm = nn.LayerNorm(w)
        # Heads.
        self.mlm = _MLMHead(w, self.piece)
        self.mim = nn.Linear(w, cfg.codebook_size)
        self.cmsa = _LogitHead(w)
        self.text_distill = nn.Linear(w, cfg.text_dim)
        self.image_distill = nn.Linear(w, cfg.image_dim)
        self.sim_poi = nn.Linear(w, cfg.sim_dim)
        self.sim_img = nn.Linear(w, cfg.sim_dim)
        self.pool = AttentionPooling(w)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT-style initialisation: normal(0, 0.02) weights, zero biases, LayerNorm 1 and 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.image_pos, self.image_cls_token, self.mask_patch):
            nn.init.normal_(p, std=0.02)
        nn.init.zeros_(self.mlm.bias)

    # --------------------------------------------------------------------------------------- embeddings
    def embed_pois(self, ids: torch.Tensor, name_pos: torch.Tensor, poi_pos: torch.Tensor, grid: torch.Tensor,
                   category: torch.Tensor) -> torch.Tensor:
        """POI token embeddings ``S x L x W`` (after LayerNorm and dropout)."""
        cfg = self.cfg
        e = (self.piece(ids) + self.name_pos(name_pos.clamp(0, cfg.max_name_pos))
             + self.poi_pos(poi_pos.clamp(0, cfg.max_pois)) + self.grid_cell(grid) + self.category(category)
             + self.modality.weight[POI_MODALITY])
        return self.drop(self.poi_norm(e))

    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        """``S x bands x H x W`` pixels -> ``S x n_patches x (bands * patch * patch)``, row-major patches."""
        s, b, _, _ = pixels.shape
        p, g = self.cfg.patch, self.cfg.patch_grid
        x = pixels.reshape(s, b, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(s, g * g, b * p * p)

    def embed_image(self, pixels: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Image token embeddings ``S x (1 + n_patches) x W``, the image [CLS] first."""
        e = self.patch_proj(self.patchify(pixels))
        if patch_mask is not None:
            e = torch.where(patch_mask.unsqueeze(-1), self.mask_patch.to(e.dtype), e)
        cls = self.image_cls_token.to(e.dtype).expand(e.shape[0], 1, -1)
        e = torch.cat([cls, e], dim=1) + self.image_pos.to(e.dtype) + self.modality.weight[IMAGE_MODALITY].to(e.dtype)
        return self.drop(self.image_norm(e))

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        ids: torch.Tensor,
        name_pos: torch.Tensor,
        poi_pos: torch.Tensor,
        grid: torch.Tensor,
        category: torch.Tensor,
        valid: torch.Tensor,
        pixels: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        image_valid: torch.Tensor | None = None,
    ) -> RefoundOutput:
        """Encode a batch of samples.

        Args:
            ids: S x L word-piece ids (compact vocabulary; position 0 is [CLS]).
            name_pos: S x L position-within-name ids (clipped to ``max_name_pos``).
            poi_pos: S x L POI-position ids (clipped to ``max_pois``).
            grid: S x L token grid ids (0 none, else cell + 1).
            category: S x L category ids.
            valid: S x L bool, False on padding (never attended to).
            pixels: S x bands x image_size x image_size floats (NaN read as 0).
            patch_mask: Optional S x n_patches bool; True patches are replaced by the learned [MASK] patch.
            image_valid: Optional S bool; False = the sample has no imagery: its patches are never attended to
                (its pixels then cannot affect any output but their own patch positions); its image [CLS] is kept.

        Returns:
            The final hidden states.

        Raises:
            ValueError: On inconsistent shapes.
        """
        cfg = self.cfg
        s, n_poi = ids.shape
        for name, t in (("name_pos", name_pos), ("poi_pos", poi_pos), ("grid", grid), ("category", category),
                        ("valid", valid)):
            if t.shape != ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(ids.shape)} like ids.")
        if tuple(pixels.shape) != (s, cfg.bands, cfg.image_size, cfg.image_size):
            raise ValueError(f"pixels has shape {tuple(pixels.shape)}, expected "
                             f"{(s, cfg.bands, cfg.image_size, cfg.image_size)}.")
        if patch_mask is not None and tuple(patch_mask.shape) != (s, cfg.n_patches):
            raise ValueError(f"patch_mask has shape {tuple(patch_mask.shape)}, expected {(s, cfg.n_patches)}.")
        if image_valid is not None and tuple(image_valid.shape) != (s,):
            raise ValueError(f"image_valid has shape {tuple(image_valid.shape)}, expected {(s,)}.")

        pixels = torch.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
        patch_keep = torch.ones(s, cfg.n_patches, dtype=torch.bool, device=ids.device)
        if image_valid is not None:
            image_valid = image_valid.to(torch.bool)
            pixels = torch.where(image_valid[:, None, None, None], pixels, torch.zeros_like(pixels))
            patch_keep = patch_keep & image_valid[:, None]
        x_poi = self.embed_pois(ids, name_pos, poi_pos, grid, category)
        x_img = self.embed_image(pixels, None if patch_mask is None else patch_mask.to(torch.bool))
        x = torch.cat([x_poi, x_img.to(x_poi.dtype)], dim=1)
        cls_keep = torch.ones(s, 1, dtype=torch.bool, device=ids.device)
        keep = torch.cat([valid.to(torch.bool), cls_keep, patch_keep], dim=1)
        for block in self.blocks:
            x = block(x, keep, n_poi)
        x = self.norm(x)
        return RefoundOutput(poi_hidden=x[:, :n_poi], image_hidden=x[:, n_poi + 1:], poi_cls=x[:, 0],
                             image_cls=x[:, n_poi])


def region_vectors(out: RefoundOutput, pooling: str = "mean", attn: nn.Module | None = None) -> torch.Tensor:
    """Region vectors ``S x W`` from the POI [CLS] and image [CLS] outputs.

    Args:
        out: A forward pass's output.
        pooling: ``"mean"`` (average of the two [CLS] vectors) or ``"attention"`` (learned weights).
        attn: The attention pooling module for ``"attention"`` (a net's ``pool``).

    Raises:
        ValueError: On an unknown pooling or ``"attention"`` without a module.
    """
    if pooling == "mean":
        return 0.5 * (out.poi_cls + out.image_cls)
    if pooling == "attention":
        if attn is None:
            raise ValueError("Attention pooling needs the pooling module (RefoundNet.pool).")
        return attn(torch.stack([out.poi_cls, out.image_cls], dim=1))
    raise ValueError(f"Unknown pooling {pooling!r}; choose 'mean' or 'attention'.")


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters (a tied weight counts once)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)

