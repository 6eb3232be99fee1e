"""CooKIE's network: per-modality trunks, one unique head per modality, two shared heads per pair.

For modalities ``m_1 .. m_M`` the network holds

* a trunk ``E_m`` per modality (:class:`~backend.models.cookie.encoders.ModalityEncoder`);
* a unique head ``U_m: h -> unique_dims[m]`` per modality (trained in stage 1, kept in stage 2);
* for every unordered pair ``(i, j)`` (``M(M-1)/2`` of them, :func:`modality_pairs`) two shared
  projection heads ``S_ij^i`` and ``S_ij^j: h -> shared_dims[pair]``, one on each side, whose outputs are
  pulled together by InfoNCE across regions;
* with the reconstruction intra-view objective, a linear decoder ``D_m: unique -> d_in`` per modality.

The region embedding (:meth:`CooKIENet.embed`) is, per modality, the L2-normalised unique vector and, per
pair, the L2-normalised sum of the two normalised shared projections (the point halfway between them on
the sphere; when one side's modality is missing, the other side alone). Each part thus has unit length, so
every modality and every pair weighs the same in distances and clustering.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from backend.models.cookie.encoders import ModalityEncoder

__all__ = [
    "MODALITIES",
    "CooKIEConfig",
    "CooKIENet",
    "count_flops",
    "count_parameters",
    "modality_pairs",
    "objective_counts",
    "split_sizes",
]

#: Modalities CooKIE knows, in the order they enter the network.
MODALITIES = ("poi", "poi_text", "image", "mobility", "landuse", "embedding")


def modality_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of distinct modalities, in input order (``M(M-1)/2`` pairs)."""
    return list(itertools.combinations(list(names), 2))


def objective_counts(m: int) -> dict[str, int]:
    """Number of loss terms for ``m`` modalities (grows with ``m**2``; all subsets would be ``2**m``).

    Returns:
        ``intra`` (one per modality), ``inter`` (one InfoNCE per pair), ``separation`` (unique part of each
        modality against each of its ``m - 1`` shared parts), ``total``, and for comparison ``subsets``, the
        number of modality subsets of size two or more that a method modelling every subset would need.
    """
    pairs = m * (m - 1) // 2
    out = {"intra": m, "inter": pairs, "separation": 2 * pairs}
    out["total"] = sum(out.values())
    out["subsets"] = 2**m - 1 - m
    return out


def split_sizes(total: int, parts: int, minimum: int = 2) -> list[int]:
    """Split ``total`` dimensions into ``parts`` near-equal sizes (the first ones one larger), each >= ``minimum``.

    When ``total`` is too small, every part gets ``minimum`` (the sum then exceeds ``total``).
    """
    if parts <= 0:
        return []
    base, extra = divmod(max(total, 0), parts)
    return [max(minimum, base + (1 if i < extra else 0)) for i in range(parts)]


@dataclass
class CooKIEConfig:
    """Architecture of a :class:`CooKIENet` (saved as JSON with the weights)."""

    modalities: list[str]  # in network order
    input_dims: list[int]  # input features per modality
    unique_dims: list[int]  # unique part per modality
    shared_dims: list[int]  # shared part per pair, in the order of modality_pairs(modalities)
    hidden: int = 64  # trunk width
    dropout: float = 0.0
    reconstruction: bool = False  # add per-modality decoders (reconstruction intra-view objective)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The modality pairs, in the order of ``shared_dims``."""
        return modality_pairs(self.modalities)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def _head_key(pair: tuple[str, str], side: str) -> str:
    return f"{pair[0]}__{pair[1]}__{side}"


class CooKIENet(nn.Module):
    """The CooKIE network (see the module docstring).

    Args:
        cfg: The architecture.

    Raises:
        ValueError: With fewer than two modalities or mismatched size lists.
    """

    def __init__(self, cfg: CooKIEConfig) -> None:
        super().__init__()
        m = len(cfg.modalities)
        if m < 2:
            raise ValueError(f"CooKIE needs at least two modalities, got {cfg.modalities}.")
        if len(cfg.input_dims) != m or len(cfg.unique_dims) != m or len(cfg.shared_dims) != len(cfg.pairs):
            raise ValueError("CooKIEConfig: one input and unique size per modality and one shared size per pair.")
        self.cfg = cfg
        self.encoders = nn.ModuleDict(
            {name: ModalityEncoder(d, cfg.hidden, cfg.dropout) for name, d in zip(cfg.modalities, cfg.input_dims,
                                                                                   strict=True)}
        )
        self.unique = nn.ModuleDict(
            {name: nn.Linear(cfg.hidden, d) for name, d in zip(cfg.modalities, cfg.unique_dims, strict=True)}
        )
        heads = {}
        for pair, d in zip(cfg.pairs, cfg.shared_dims, strict=True):
            for side in pair:
                heads[_head_key(pair, side)] = nn.Linear(cfg.hidden, d)
        self.shared = nn.ModuleDict(heads)
        self.decoders = nn.ModuleDict(
            {name: nn.Linear(du, d) for name, du, d in zip(cfg.modalities, cfg.unique_dims, cfg.input_dims,
                                                            strict=True)}
            if cfg.reconstruction else {}
        )

    # ------------------------------------------------------------------------------------------- parts
    def trunks(self, xs: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """Trunk output of every modality present in ``xs`` (missing or None modalities are skipped)."""
        return {m: self.encoders[m](x) for m, x in xs.items() if x is not None and m in self.encoders}

    def unique_parts(self, h: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unique vectors (not normalised) of the modalities in ``h``."""
        return {m: self.unique[m](v) for m, v in h.items()}

    def shared_parts(self, h: Mapping[str, torch.Tensor]) -> dict[tuple[str, str], tuple[torch.Tensor | None, ...]]:
        """Per pair, the two shared projections (None on a side whose modality is missing)."""
        out: dict[tuple[str, str], tuple[torch.Tensor | None, ...]] = {}
        for pair in self.cfg.pairs:
            out[pair] = tuple(self.shared[_head_key(pair, side)](h[side]) if side in h else None for side in pair)
        return out

    def forward(
        self, xs: Mapping[str, torch.Tensor | None]
    ) -> tuple[dict[str, torch.Tensor], dict[tuple[str, str], tuple[torch.Tensor | None, ...]]]:
        """Unique vectors per modality and shared projection pairs per modality pair."""
        h = self.trunks(xs)
        return self.unique_parts(h), self.shared_parts(h)

    def decode(self, u: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reconstructed inputs from unique vectors (reconstruction objective only)."""
        return {m: self.decoders[m](v) for m, v in u.items()}

    @torch.no_grad()
    def embed(
        self, xs: Mapping[str, torch.Tensor | None]
    ) -> tuple[dict[str, torch.Tensor], dict[tuple[str, str], torch.Tensor]]:
        """Normalised embedding parts of the modalities present.

        Returns:
            ``(unique, shared)``: unit vectors per present modality, and per pair with at least one present
            side the normalised sum of the normalised projections.
        """
        u, s = self.forward(xs)
        unique = {m: F.normalize(v, dim=1) for m, v in u.items()}
        shared = {}
        for pair, sides in s.items():
            present = [F.normalize(v, dim=1) for v in sides if v is not None]
            if present:
                shared[pair] = F.normalize(torch.stack(present).sum(dim=0), dim=1)
        return unique, shared


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_flops(fn: Any, *args: Any) -> int:
    """Floating-point operations of one call ``fn(*args)`` (torch.utils.flop_counter; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())
