"""ReFound's pre-training masks: masked POI tokens, masked image patches and cross-modal spatial alignment labels.

ReFound (Xiao et al., KDD 2024) masks 15% of the POI word pieces (BERT's 80/10/10 recipe: [MASK], a random
piece, or the piece unchanged) and 40% of the image patches, and asks, for every visible POI token, whether
its grid cell lies under a masked patch (cross-modal spatial alignment, CMSA). All randomness comes from the
``torch.Generator`` passed in, with a fixed number of draws per call, so a seed fixes every mask.
"""

from __future__ import annotations

import math

import torch

from backend.models.refound.tokens import MASK, N_SPECIAL

__all__ = ["IGNORE", "cmsa_labels", "mask_patches", "mask_tokens"]

#: Label of the positions a loss ignores.
IGNORE = -100


def _rand(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws from ``gen`` (on its device), moved to ``device``."""
    return torch.rand(shape, generator=gen, device=gen.device).to(device)


def mask_tokens(
    batch_ids: torch.Tensor, valid: torch.Tensor, n_pieces: int, gen: torch.Generator, rate: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-token inputs and labels (BERT's recipe over the word pieces only).

    Each word piece (id >= 5, valid) is chosen with probability ``rate``; a sample with word pieces but none
    chosen gets one chosen uniformly at random. A chosen piece becomes [MASK] (80%), a random piece in
    ``[5, n_pieces)`` (10%) or stays (10%).

    Args:
        batch_ids: S x L LongTensor of compact piece ids.
        valid: S x L BoolTensor, False for padding.
        n_pieces: Size of the piece vocabulary (specials included).
        gen: The ``torch.Generator``.
        rate: Probability that a word piece is chosen.

    Returns:
        ``(input_ids, labels)``: S x L LongTensors; labels hold the original id at chosen positions and -100
        elsewhere.

    Raises:
        ValueError: If ``rate`` is not in [0, 1] or ``n_pieces`` does not cover the ids.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mask_tokens: rate must be in [0, 1], got {rate}.")
    ids = batch_ids
    if ids.numel() and int(ids.max()) >= n_pieces:
        raise ValueError(f"mask_tokens: piece id {int(ids.max())} is not below n_pieces={n_pieces}.")
    shape, device = tuple(ids.shape), ids.device
    candidates = valid.bool() & (ids >= N_SPECIAL)
    chosen = (_rand(shape, gen, device) < rate) & candidates
    # At least one chosen piece in every sample that has any.
    fallback = _rand(shape, gen, device).masked_fill(~candidates, -1.0).argmax(dim=1, keepdim=True)
    needs = candidates.any(dim=1, keepdim=True) & ~chosen.any(dim=1, keepdim=True)
    chosen |= torch.zeros_like(chosen).scatter(1, fallback, needs)

    action = _rand(shape, gen, device)
    span = max(n_pieces - N_SPECIAL, 1)
    random_ids = N_SPECIAL + torch.randint(0, span, shape, generator=gen, device=gen.device).to(device)
    inputs = ids.clone()
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, MASK), inputs)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def mask_patches(n_samples: int, n_patches: int, gen: torch.Generator, rate: float = 0.4) -> torch.Tensor:
    """Masked image patches: exactly ``round(rate * n_patches)`` per sample, at uniformly random positions.

    Args:
        n_samples: S.
        n_patches: Patches per image.
        gen: The ``torch.Generator``.
        rate: Share of the patches masked.

    Returns:
        S x ``n_patches`` BoolTensor (on the generator's device), True = masked.

    Raises:
        ValueError: If ``rate`` is not in [0, 1].
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mask_patches: rate must be in [0, 1], got {rate}.")
    k = round(rate * n_patches)
    picks = torch.rand((n_samples, n_patches), generator=gen, device=gen.device).argsort(dim=1)[:, :k]
    mask = torch.zeros((n_samples, n_patches), dtype=torch.bool, device=gen.device)
    return mask.scatter(1, picks, True)


def cmsa_labels(
    grid: torch.Tensor, patch_mask: torch.Tensor, token_mask_labels: torch.Tensor, grid_size: int = 16
) -> torch.Tensor:
    """Cross-modal spatial alignment targets: does each visible POI token lie under a masked patch?

    POI grid cell (row, col) lies in patch ``(row * P // G) * P + (col * P // G)`` (G = ``grid_size``,
    P = patches per side).

    Args:
        grid: S x L LongTensor of token grid ids (0 none, else cell id + 1).
        patch_mask: S x P*P BoolTensor, True = masked patch.
        token_mask_labels: S x L labels from :func:`mask_tokens` (-100 = token not masked).
        grid_size: G.

    Returns:
        S x L FloatTensor: 1.0 under a masked patch, 0.0 under a visible one, -1.0 where not a target
        (tokens without a cell: specials, padding; and tokens masked themselves).

    Raises:
        ValueError: If the number of patches is not a square, or a grid id exceeds G * G.
    """
    n_patches = patch_mask.shape[1]
    p = math.isqrt(n_patches)
    if p * p != n_patches:
        raise ValueError(f"cmsa_labels: {n_patches} patches do not form a square grid.")
    if grid.numel() and int(grid.max()) > grid_size * grid_size:
        raise ValueError(f"cmsa_labels: grid id {int(grid.max())} exceeds {grid_size}x{grid_size} cells.")
    cell = (grid - 1).clamp(min=0)
    row, col = cell // grid_size, cell % grid_size
    patch = (row * p // grid_size) * p + (col * p // grid_size)
    under = patch_mask.to(grid.device).gather(1, patch).float()
    target = (grid > 0) & (token_mask_labels == IGNORE)
    return torch.where(target, under, torch.full_like(under, -1.0))
