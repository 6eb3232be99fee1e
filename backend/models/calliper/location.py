"""CaLLiPer's location encoder: multi-scale sinusoidal grid encoding, then a residual MLP.

Wang et al., "CaLLiPer: Contrastive Language-Location Pre-training for urban region representations",
arXiv 2411.06229, encode projected metre coordinates with the Space2Vec "grid" encoding (Mai et al.,
ICLR 2020): for ``S`` scales ``lambda_i`` spaced geometrically between ``min_scale`` and ``max_scale``,

    lambda_i = min_scale * (max_scale / min_scale) ** (i / (S - 1)),      i = 0 .. S - 1
    PE(x, y) = [sin(x / lambda_i), cos(x / lambda_i)]_i  ++  [sin(y / lambda_i), cos(y / lambda_i)]_i

(``4 S`` numbers; with the defaults S = 32, 100 m and 10 km: 128), followed by a residual MLP:
Linear(4S -> 256), ReLU, four residual blocks of width 256 (Linear, ReLU, dropout, Linear, ReLU, plus
the input), and Linear(256 -> d) without bias.

The reference code runs the location encoder in float64 to keep the phases of large coordinates
exact. RegionLens subtracts an origin (the mean training location, stored with the model) in float64
first, so the coordinates the encoder sees are within a few tens of kilometres of zero; the phases then
lose nothing measurable in float32 (``tests/backend/models/calliper/test_calliper.py`` and ``bench/calliper.py``
measure the difference), and float32 is what GPUs and CPUs run fast.

Layout of the encoding (used by the tests): column ``d * 2S + i`` is ``sin(coord_d / lambda_i)`` and
column ``d * 2S + S + i`` is ``cos(coord_d / lambda_i)``, with ``d = 0`` for x (easting) and ``d = 1``
for y (northing).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["GridEncoding", "LocationEncoder", "ResidualBlock", "grid_scales"]


def grid_scales(n: int, min_scale: float, max_scale: float) -> np.ndarray:
    """The ``n`` scales (metres), geometric from ``min_scale`` to ``max_scale`` (float64).

    Raises:
        ValueError: If ``n < 1`` or the scales are not ``0 < min_scale <= max_scale``.
    """
    if n < 1 or not 0 < min_scale <= max_scale or not math.isfinite(max_scale):
        raise ValueError(f"Need n >= 1 and 0 < min_scale <= max_scale; got n={n}, {min_scale}, {max_scale}.")
    if n == 1:
        return np.array([float(min_scale)])
    return float(min_scale) * (float(max_scale) / float(min_scale)) ** (np.arange(n, dtype=np.float64) / (n - 1))


class GridEncoding(nn.Module):
    """Space2Vec grid encoding of 2-D coordinates (see the module docstring); no trainable parameters.

    Args:
        scales: The scales ``lambda_i`` in metres.
    """

    def __init__(self, scales: np.ndarray) -> None:
        super().__init__()
        # Not a buffer: the scales are rebuilt from the saved (min, max, n), and each dtype gets them
        # rounded once from float64 (float64 stays exact; MPS, which has no float64, still works).
        self.inv_scales = 1.0 / np.asarray(scales, dtype=np.float64)
        self._cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    @property
    def out_dim(self) -> int:
        """``4 S``."""
        return 4 * len(self.inv_scales)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        """``B x 2`` coordinates (metres, relative to the origin) -> ``B x 4S`` encoding, in ``xy``'s dtype."""
        key = (xy.dtype, xy.device)
        inv = self._cache.get(key)
        if inv is None:
            inv = self._cache[key] = torch.as_tensor(self.inv_scales, dtype=xy.dtype, device=xy.device)
        angles = xy.unsqueeze(-1) * inv  # B x 2 x S
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


class ResidualBlock(nn.Module):
    """``x + ReLU(W2 Dropout(ReLU(W1 x)))`` at constant width."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        y = self.dropout(torch.relu(self.fc1(x)))
        return x + torch.relu(self.fc2(y))


class LocationEncoder(nn.Module):
    """Grid encoding followed by the residual MLP.

    Args:
        scales: Scales of the grid encoding (metres).
        dim: Output size (the shared text-location space).
        hidden: Width of the MLP.
        blocks: Number of residual blocks.
        dropout: Dropout inside the residual blocks.
    """

    def __init__(self, scales: np.ndarray, dim: int = 128, hidden: int = 256, blocks: int = 4,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.grid = GridEncoding(scales)
        self.inp = nn.Linear(self.grid.out_dim, hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, dropout) for _ in range(blocks)])
        self.out = nn.Linear(hidden, dim, bias=False)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        """``B x 2`` relative metre coordinates -> ``B x dim`` location embeddings."""
        h = torch.relu(self.inp(self.grid(xy)))
        return self.out(self.blocks(h))
