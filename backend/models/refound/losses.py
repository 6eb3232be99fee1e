"""ReFound's pre-training objectives (Xiao et al., KDD 2024), one function per objective.

* :func:`mlm_loss`: masked POI-token prediction, cross-entropy over the chosen word-piece positions.
* :func:`mim_loss`: masked image modelling, cross-entropy of the discrete visual token of each masked patch.
* :func:`cmsa_loss`: cross-modal spatial alignment, binary cross-entropy of "is this POI token's grid cell
  covered by a masked patch" over the target tokens.
* :func:`distill_loss`: feature distillation, ``1 - cosine`` between a student projection and a teacher vector.
* :func:`similarity_kl`: similarity distillation, row-wise ``KL(teacher || student)`` between the softmaxed
  teacher image-image cosine similarities and the student POI-image cosine similarities.

Every loss is computed in float32 (also under autocast) and returns a scalar tensor; when nothing is selected
(no masked token, no row with a teacher) it returns a zero that is still connected to the inputs, so a training
step may always call ``backward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["cmsa_loss", "distill_loss", "mim_loss", "mlm_loss", "similarity_kl"]


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A float32 zero connected to the graphs of ``tensors``."""
    return sum((t.float().sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def _row_weight(weight: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    if weight is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    if weight.shape != (n,):
        raise ValueError(f"weight must have shape {(n,)}, got {tuple(weight.shape)}.")
    return weight.to(device) > 0


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-token cross-entropy.

    Args:
        logits: S x L x V piece logits, or N x V logits of already selected positions.
        labels: S x L (or N) original piece ids at the chosen positions, -100 elsewhere.

    Returns:
        Mean cross-entropy over the chosen positions (0 when there are none).

    Raises:
        ValueError: If the shapes disagree.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree.")
    flat = logits.reshape(-1, logits.shape[-1]).float()
    target = labels.reshape(-1)
    if not bool((target != -100).any()):
        return _zero(logits)
    return F.cross_entropy(flat, target, ignore_index=-100)


def mim_loss(logits: torch.Tensor, targets: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
    """Masked-image-modelling cross-entropy over the masked patches.

    Args:
        logits: S x n_patches x K visual-token logits.
        targets: S x n_patches visual-token ids (0..K-1).
        patch_mask: S x n_patches bool; only True patches count (AND it with the samples' image validity).

    Returns:
        Mean cross-entropy over the masked patches (0 when there are none).

    Raises:
        ValueError: If the shapes disagree.
    """
    if logits.shape[:-1] != targets.shape or targets.shape != patch_mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and patch_mask "
                         f"{tuple(patch_mask.shape)} disagree.")
    sel = patch_mask.to(torch.bool)
    if not bool(sel.any()):
        return _zero(logits)
    return F.cross_entropy(logits[sel].float(), targets[sel].long())


def cmsa_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-modal spatial alignment: binary cross-entropy with logits over the target tokens.

    Args:
        logits: S x L logits ("the token's grid cell lies in a masked patch").
        labels: S x L 1.0 / 0.0 targets, -1.0 (any negative value) where the token is not a target.

    Returns:
        Mean binary cross-entropy over the targets (0 when there are none).

    Raises:
        ValueError: If the shapes disagree.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree.")
    sel = labels >= 0
    if not bool(sel.any()):
        return _zero(logits)
    return F.binary_cross_entropy_with_logits(logits[sel].float(), labels[sel].float())


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Feature distillation: mean over rows of ``1 - cos(student_i, teacher_i)``.

    Args:
        student: S x D projections of the student.
        teacher: S x D teacher vectors (no gradient flows into them).
        weight: Optional S 0/1 row mask (e.g. samples with imagery); rows with 0 are left out.

    Returns:
        Scalar in [0, 2] (0 when no row is kept).

    Raises:
        ValueError: If the shapes disagree.
    """
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be equal S x D.")
    keep = _row_weight(weight, student.shape[0], student.device)
    if not bool(keep.any()):
        return _zero(student)
    cos = F.cosine_similarity(student[keep].float(), teacher[keep].detach().float().to(student.device), dim=1)
    return (1.0 - cos).mean()


def similarity_kl(poi_vec: torch.Tensor, img_vec: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.07,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Similarity distillation: the POI-image similarity matrix should follow the teacher's image-image one.

    Student logits ``s_ij = cos(poi_i, img_j) / t``, teacher logits ``u_ij = cos(teacher_i, teacher_j) / t``;
    the loss is ``mean_i KL(softmax_j(u_i.) || softmax_j(s_i.))``.

    Args:
        poi_vec: S x D1 POI-side projections.
        img_vec: S x D1 image-side projections.
        teacher: S x D2 teacher image features (no gradient flows into them).
        temperature: Divides both cosine matrices (> 0).
        weight: Optional S 0/1 mask; rows and columns with 0 (e.g. samples without imagery) are left out.

    Returns:
        Scalar >= 0, exactly 0 when the student similarities equal the teacher's (0 when no row is kept).

    Raises:
        ValueError: If the shapes disagree or the temperature is not positive.
    """
    if poi_vec.shape != img_vec.shape or poi_vec.dim() != 2 or teacher.dim() != 2 or \
            teacher.shape[0] != poi_vec.shape[0]:
        raise ValueError(f"poi_vec {tuple(poi_vec.shape)}, img_vec {tuple(img_vec.shape)} and teacher "
                         f"{tuple(teacher.shape)} must be S x D1, S x D1 and S x D2.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    keep = _row_weight(weight, poi_vec.shape[0], poi_vec.device)
    if not bool(keep.any()):
        return _zero(poi_vec, img_vec)
    p = F.normalize(poi_vec[keep].float(), dim=1)
    v = F.normalize(img_vec[keep].float(), dim=1)
    u = F.normalize(teacher[keep].detach().float().to(poi_vec.device), dim=1)
    log_student = F.log_softmax(p @ v.T / temperature, dim=1)
    log_teacher = F.log_softmax(u @ u.T / temperature, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return kl.mean()
