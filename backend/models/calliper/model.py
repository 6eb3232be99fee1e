"""CaLLiPer's network and loss: location encoder, text projection, symmetric InfoNCE.

Wang et al., "CaLLiPer: Contrastive Language-Location Pre-training for urban region representations",
arXiv 2411.06229. A batch holds B (location, text) pairs of POIs. The frozen sentence encodings of the
texts go through a trainable linear projection to the shared space; the locations through the
:class:`~backend.models.calliper.location.LocationEncoder`. Both are L2-normalised and compared by
cosine similarity scaled by a learnable temperature, ``logits = exp(s) * T L^T`` (``s`` initialised
at ``log(1 / 0.07)``); the loss is the mean of the cross-entropies of the rows (text -> its location)
and of the columns (location -> its text) against the diagonal, as in CLIP.

Two choices differ from the public reference code and are RegionLens's: the projected text features
are L2-normalised like the location features (standard CLIP; the reference leaves them unnormalised,
which lets their norm act as a second, per-text temperature), and the logit scale is clamped at 100
(CLIP's guard against a runaway temperature).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

from backend.models.calliper.location import LocationEncoder

__all__ = ["MAX_LOGIT_SCALE", "CaLLiPerNet", "info_nce", "parameter_groups"]

#: Upper bound of ``exp(logit_scale)``.
MAX_LOGIT_SCALE = 100.0


def info_nce(text: torch.Tensor, location: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of B paired rows.

    Args:
        text: B x d text features (normalised here).
        location: B x d location features (normalised here); row i pairs with ``text`` row i.
        logit_scale: Log of the inverse temperature (a scalar tensor), clamped at ``log(MAX_LOGIT_SCALE)``.

    Returns:
        The scalar loss ``(CE(logits, diag) + CE(logits^T, diag)) / 2`` with ``logits = exp(s) T L^T``.
    """
    t = F.normalize(text, dim=-1)
    loc = F.normalize(location, dim=-1)
    scale = logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
    logits = scale * t @ loc.T
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class CaLLiPerNet(nn.Module):
    """The trainable part of CaLLiPer.

    Args:
        text_dim: Width of the frozen text encodings (384 for all-MiniLM-L6-v2).
        scales: Scales of the grid encoding (metres).
        dim: Shared space (the region embedding size).
        hidden: Width of the location MLP.
        blocks: Residual blocks of the location MLP.
        dropout: Dropout in the residual blocks.
        temperature: Initial temperature of the loss.
    """

    def __init__(self, text_dim: int, scales: np.ndarray, dim: int = 128, hidden: int = 256, blocks: int = 4,
                 dropout: float = 0.5, temperature: float = 0.07) -> None:
        super().__init__()
        self.location = LocationEncoder(scales, dim=dim, hidden=hidden, blocks=blocks, dropout=dropout)
        self.text_projection = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature), dtype=torch.float32))

    def project_text(self, vectors: torch.Tensor) -> torch.Tensor:
        """Frozen text encodings (B x text_dim) -> shared space (B x dim), unnormalised."""
        return self.text_projection(vectors)

    def loss(self, xy: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
        """InfoNCE of a batch: ``xy`` B x 2 relative coordinates, ``text_vectors`` B x text_dim."""
        return info_nce(self.project_text(text_vectors), self.location(xy), self.logit_scale)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: weight decay on weight matrices only, none on biases, norms and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "norm" in name or name.endswith("bias") or "logit_scale" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
