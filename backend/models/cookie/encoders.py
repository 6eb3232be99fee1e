"""CooKIE's trainable per-modality encoders.

Every modality reaches the network as one fixed-length vector per region (see
:mod:`backend.models.cookie.modalities`: log1p counts, land-use shares, mean sentence embeddings of the POI
texts, frozen EfficientNet-Lite0 features of the image chips, OD rows), so each modality's encoder is the
same small MLP trunk with its own weights and input width:
``Linear(d_in, h) -> LayerNorm -> GELU -> Dropout -> Linear(h, h) -> GELU``. The heads that split the trunk
output into unique and shared parts live in :mod:`backend.models.cookie.model`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ModalityEncoder"]


class ModalityEncoder(nn.Module):
    """MLP trunk of one modality.

    Args:
        in_dim: Input features of the modality.
        hidden: Width of the trunk (and of its output).
        dropout: Dropout after the first layer (0 disables it).
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x ``in_dim`` -> B x ``hidden``."""
        return self.net(x)
