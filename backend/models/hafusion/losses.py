"""Training losses of HAFusion (Sun et al., ICDE 2024, arXiv 2312.04606).

Two kinds of targets:

* A *relation* ``T`` (``N x N``, non-negative: trips of an OD table, or spatial adjacency) is learnt with a
  source and a destination decoder: the softmax over destinations ``j`` of ``src_i . dst_j`` should put its
  mass where region ``i``'s flows go, and symmetrically for arrivals (cross-entropy in both directions).
* A *similarity* ``S`` (``N x N``, e.g. the cosine similarity of POI profiles) is learnt with one decoder: the
  cosine similarity of the decoded embeddings should equal ``S`` (mean squared error).

``reduction="reference"`` reproduces the paper's scaling: ``T`` is divided by its mean (done by
:mod:`backend.models.hafusion.data`), the cross-entropy is *summed* over all N x N pairs with
``log(softmax + 1e-4)``, the similarity errors are averaged; the terms are added unweighted (so the relation
terms, growing with N^2, dominate). ``reduction="mean"`` (the scalable configuration, and mini-batches)
divides each relation term by the total mass of ``T`` (a flow-weighted mean cross-entropy with an exact
``log_softmax``), so that every term is an average and none grows with the batch size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)

__all__ = ["REDUCTIONS", "relation_loss", "similarity_loss", "total_loss"]

#: Loss scalings: the paper's (sums over pairs) or per-pair means.
REDUCTIONS = ("reference", "mean")
_EPS = 1e-4  # added to the softmax before the log, as in the reference code


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "reference":
        return -(target * torch.log(torch.softmax(logits, dim=-1) + _EPS)).sum()
    mass = target.sum()
    return -(target * torch.log_softmax(logits, dim=-1)).sum() / mass.clamp_min(torch.finfo(mass.dtype).tiny)


def relation_loss(src: torch.Tensor, dst: torch.Tensor, target: torch.Tensor,
                  reduction: str = "reference") -> torch.Tensor:
    """Cross-entropy of a relation in both directions (departures and arrivals).

    Args:
        src: ``M x d`` source embeddings (decoded).
        dst: ``M x d`` destination embeddings (decoded).
        target: ``M x M`` non-negative relation (row ``i``: what leaves region ``i``).
        reduction: One of :data:`REDUCTIONS`.

    Returns:
        ``sum_ij -T_ij log P(j | i) + sum_ij -T_ji log P'(j | i)`` with ``P(.|i) = softmax_j(src_i . dst_j)`` and
        ``P'(.|i) = softmax_j(dst_i . src_j)`` (reference), or that divided by ``2 sum(T)`` (mean).

    Raises:
        ValueError: On an unknown reduction or mismatched shapes.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction '{reduction}'; use one of {REDUCTIONS}.")
    if target.shape != (src.shape[0], dst.shape[0]):
        raise ValueError(f"Relation target of shape {tuple(target.shape)} does not match {src.shape[0]} regions.")
    logits = src @ dst.T
    loss = _cross_entropy(logits, target, reduction) + _cross_entropy(logits.T, target.T, reduction)
    return loss if reduction == "reference" else loss / 2


def similarity_loss(emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the pairwise cosine similarity of ``emb`` and ``target``.

    Args:
        emb: ``M x d`` decoded embeddings.
        target: ``M x M`` target similarities.

    Returns:
        ``mean_ij (cos(emb_i, emb_j) - S_ij)^2``.

    Raises:
        ValueError: On mismatched shapes.
    """
    if target.shape != (emb.shape[0], emb.shape[0]):
        raise ValueError(f"Similarity target of shape {tuple(target.shape)} does not match {emb.shape[0]} regions.")
    unit = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return F.mse_loss(unit @ unit.T, target)


def total_loss(
    decoded: Mapping[str, torch.Tensor],
    relations: Mapping[str, torch.Tensor],
    similarities: Mapping[str, torch.Tensor],
    reduction: str = "reference",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Unweighted sum of every relation and similarity term.

    Args:
        decoded: Decoder outputs by name (``<relation>_src``, ``<relation>_dst``, ``<similarity>``).
        relations: Relation targets by name.
        similarities: Similarity targets by name.
        reduction: Scaling of the relation terms, one of :data:`REDUCTIONS`.

    Returns:
        ``(total, terms)``: the loss and each term by target name.
    """
    terms: dict[str, torch.Tensor] = {}
    for name, target in relations.items():
        terms[name] = relation_loss(decoded[f"{name}_src"], decoded[f"{name}_dst"], target, reduction)
    for name, target in similarities.items():
        terms[name] = similarity_loss(decoded[name], target)
    total = torch.stack(list(terms.values())).sum()
    return total, terms
