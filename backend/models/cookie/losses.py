"""CooKIE's training objectives.

* :func:`info_nce`: symmetric InfoNCE (CLIP style) between two batches of paired vectors, cosine
  similarity over a fixed temperature. Used across regions for every pair of modalities (stage 2, the
  *shared* part) and, in stage 1, between two augmentations of the same region within one modality.
* :func:`reconstruction_loss`: mean squared error, the alternative intra-view objective.
* :func:`cross_correlation_penalty`: the separation term that keeps a modality's *unique* part from
  duplicating its *shared* parts: the mean squared entry of the batch cross-correlation matrix between the
  two (each column centred and scaled to unit variance over the batch). It is zero exactly when no unique
  coordinate is linearly correlated with any shared coordinate, it lies in [0, 1], and it cannot be
  lowered by shrinking the vectors (the InfoNCE terms only see directions, so a scale-dependent penalty
  such as the plain ``||U^T S||_F^2`` of domain separation networks could be cheated that way). It is a
  second-order (linear) proxy for mutual information, chosen over the CLUB upper bound because it needs no
  variational network and no alternating inner optimisation, keeps training deterministic and the model
  small, which is the point of CooKIE's pairwise design.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["info_nce", "reconstruction_loss", "cross_correlation_penalty"]


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``a`` should match row ``i`` of ``b`` among all rows, and vice versa.

    Args:
        a: B x d vectors (normalised inside).
        b: B x d' vectors, paired row by row with ``a`` (d' = d).
        temperature: Divides the cosine similarities (> 0).

    Returns:
        Scalar: the mean of the two cross-entropies (a -> b and b -> a). ``log(B)`` for uninformative
        vectors, approaching 0 for perfectly matched, well separated pairs.

    Raises:
        ValueError: If the batches differ in size or hold fewer than two rows.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"InfoNCE needs two equally long batches of at least 2 rows; got {a.shape[0]}, {b.shape[0]}.")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / float(temperature)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def reconstruction_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a decoded batch and the clean input batch."""
    return ((reconstructed - original) ** 2).mean()


def cross_correlation_penalty(u: torch.Tensor, s: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean squared cross-correlation between the columns of ``u`` and of ``s`` over the batch.

    Args:
        u: B x p unique representations of one modality.
        s: B x q shared representations of the same modality (same regions, same order).
        eps: Added to each column's variance (a constant column then counts as uncorrelated).

    Returns:
        Scalar in [0, 1]: ``mean_{k,l} corr(u[:, k], s[:, l])**2``.

    Raises:
        ValueError: If the batches differ in size or hold fewer than two rows.
    """
    if u.shape[0] != s.shape[0] or u.shape[0] < 2:
        raise ValueError(f"The penalty needs two equally long batches of >= 2 rows; got {u.shape[0]}, {s.shape[0]}.")
    n = u.shape[0]
    uc = u - u.mean(dim=0, keepdim=True)
    sc = s - s.mean(dim=0, keepdim=True)
    uz = uc / (uc.pow(2).mean(dim=0, keepdim=True) + eps).sqrt()
    sz = sc / (sc.pow(2).mean(dim=0, keepdim=True) + eps).sqrt()
    corr = uz.T @ sz / n
    return corr.pow(2).mean()
