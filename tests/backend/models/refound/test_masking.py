"""ReFound masks: masked POI tokens (15%, 80/10/10), masked patches (40%), CMSA labels."""

from __future__ import annotations

import pytest
import torch

from backend.models.refound.masking import IGNORE, cmsa_labels, mask_patches, mask_tokens
from backend.models.refound.tokens import CLS, MASK, PAD, SEP

N_PIECES = 1000


def _batch(n_samples: int = 400, length: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences: [CLS], pieces with a [SEP] every 4th token, then padding from a random length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, N_PIECES, (n_samples, length), generator=g)
    ids[:, 0] = CLS
    ids[:, 4::4] = SEP
    lengths = torch.randint(length // 2, length + 1, (n_samples,), generator=g)
    valid = torch.arange(length)[None, :] < lengths[:, None]
    ids[~valid] = PAD
    return ids, valid


def test_mask_tokens_rates_and_split():
    ids, valid = _batch()
    inputs, labels = mask_tokens(ids, valid, N_PIECES, torch.Generator().manual_seed(1))
    candidates = valid & (ids >= 5)
    chosen = labels != IGNORE
    assert not (chosen & ~candidates).any()  # specials and padding are never chosen
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])
    n = int(chosen.sum())
    assert abs(n / int(candidates.sum()) - 0.15) < 0.01
    masked = int((inputs[chosen] == MASK).sum()) / n
    same = int((inputs[chosen] == ids[chosen]).sum()) / n
    replaced = 1.0 - masked - same
    assert abs(masked - 0.8) < 0.02 and abs(replaced - 0.1) < 0.015 and abs(same - 0.1) < 0.015
    random_ids = inputs[chosen & (inputs != MASK) & (inputs != ids)]
    assert random_ids.min() >= 5 and random_ids.max() < N_PIECES
    assert inputs.dtype == torch.int64 and labels.dtype == torch.int64


def test_mask_tokens_at_least_one_per_sample_with_pieces():
    ids = torch.tensor([[CLS, 7, SEP, PAD], [CLS, 8, 9, SEP], [CLS, PAD, PAD, PAD], [CLS, SEP, PAD, PAD]])
    valid = ids != PAD
    _, labels = mask_tokens(ids, valid, 10, torch.Generator().manual_seed(0), rate=0.0)
    chosen = labels != IGNORE
    assert chosen.sum(dim=1).tolist() == [1, 1, 0, 0]
    assert chosen[0, 1] and (chosen[1, 1] or chosen[1, 2])
    # A padded piece (valid False) is never a candidate even if its id looks like a piece.
    _, labels = mask_tokens(torch.tensor([[CLS, 7, 8]]), torch.tensor([[True, True, False]]), 10,
                            torch.Generator().manual_seed(0), rate=1.0)
    assert labels.tolist() == [[IGNORE, 7, IGNORE]]


def test_mask_tokens_is_deterministic():
    ids, valid = _batch(20, 32)
    a = mask_tokens(ids, valid, N_PIECES, torch.Generator().manual_seed(5))
    b = mask_tokens(ids, valid, N_PIECES, torch.Generator().manual_seed(5))
    c = mask_tokens(ids, valid, N_PIECES, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mask_tokens_rejects_bad_arguments():
    ids, valid = _batch(2, 8)
    with pytest.raises(ValueError, match="rate"):
        mask_tokens(ids, valid, N_PIECES, torch.Generator(), rate=1.5)
    with pytest.raises(ValueError, match="n_pieces"):
        mask_tokens(ids, valid, 5, torch.Generator())


@pytest.mark.parametrize(("n_patches", "expected"), [(64, 26), (256, 102)])
def test_mask_patches_exact_count(n_patches, expected):
    mask = mask_patches(2000, n_patches, torch.Generator().manual_seed(3))
    assert mask.dtype == torch.bool and mask.shape == (2000, n_patches)
    assert (mask.sum(dim=1) == expected).all()
    # Uniform positions: every patch is masked in about expected / n_patches of the samples.
    share = mask.float().mean(dim=0)
    assert (share - expected / n_patches).abs().max() < 0.06


def test_mask_patches_is_deterministic():
    a = mask_patches(8, 64, torch.Generator().manual_seed(9))
    assert torch.equal(a, mask_patches(8, 64, torch.Generator().manual_seed(9)))
    assert not torch.equal(a, mask_patches(8, 64, torch.Generator().manual_seed(10)))
    assert mask_patches(3, 16, torch.Generator(), rate=0.0).sum() == 0
    assert mask_patches(3, 16, torch.Generator(), rate=1.0).all()


def test_cmsa_labels_hand_made():
    # Tokens: [CLS]; cell (0, 0); cell (3, 5) = 53; [SEP]; cell (15, 15) = 255; cell (2, 2) = 34 (masked token).
    grid = torch.tensor([[0, 1, 54, 0, 256, 35]])
    token_labels = torch.tensor([[IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 42]])

    # P = 8: cell (r, c) lies in patch (r // 2) * 8 + c // 2 -> 0, 10, 63, 9.
    patches8 = torch.zeros(1, 64, dtype=torch.bool)
    patches8[0, [10, 9]] = True
    labels = cmsa_labels(grid, patches8, token_labels, grid_size=16)
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[-1.0, 0.0, 1.0, -1.0, 0.0, -1.0]]

    # P = 16: patch = cell.
    patches16 = torch.zeros(1, 256, dtype=torch.bool)
    patches16[0, [255, 34, 0]] = True
    labels = cmsa_labels(grid, patches16, token_labels, grid_size=16)
    assert labels.tolist() == [[-1.0, 1.0, 0.0, -1.0, 1.0, -1.0]]


def test_cmsa_labels_rejects_non_square_patches():
    with pytest.raises(ValueError, match="square"):
        cmsa_labels(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 60, dtype=torch.bool),
                    torch.full((1, 3), IGNORE))
