"""Fine-tuning a small head on a label: the option beside ReFound's frozen, feature-based use.

The pre-trained network stays frozen; a small head learns from the label: attention pooling over the
region's POI and image [CLS] outputs (learned weights instead of the plain mean of the frozen embedding),
then a two-layer MLP to the standardised label. Honest by construction: :func:`finetune_predictions`
trains a fresh head per fold on the training regions only, for a fixed number of epochs (no early stopping
on anything), and returns out-of-fold predictions, so its scores compare directly with a ridge on the frozen
embedding under the same folds (``bench/refound.py`` reports both).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from backend.errors import InputError
from backend.models.refound.model import AttentionPooling
from backend.progress import Progress

__all__ = ["FinetuneHead", "finetune_predictions"]


class FinetuneHead(nn.Module):
    """Attention pooling of the two [CLS] outputs, then Linear-GELU-Dropout-Linear to one value."""

    def __init__(self, width: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.pool = AttentionPooling(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        """``S x 2 x W`` [CLS] outputs to ``S`` values."""
        return self.mlp(self.pool(self.norm(cls))).squeeze(-1)


def finetune_predictions(
    cls: np.ndarray,
    y: np.ndarray,
    fold_of: np.ndarray,
    epochs: int = 100,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    seed: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """Out-of-fold predictions of a fine-tuned head on the frozen [CLS] outputs.

    Args:
        cls: N x 2 x W POI and image [CLS] outputs (:meth:`RefoundEmbedder.cls_outputs`).
        y: N model-space label values (finite).
        fold_of: N fold numbers (0..K-1); each fold is predicted by a head trained on the others.
        epochs: Fixed number of passes over the training regions per fold.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: Regions per step.
        seed: Seed of the head weights, dropout and batches.
        progress: Reported once per fold; cancellation is checked every mini-batch.

    Returns:
        N predictions in the label's units.

    Raises:
        InputError: On mismatched shapes, non-finite values or a fold with no training regions.
    """
    x = np.asarray(cls, dtype=np.float32)
    ya = np.asarray(y, dtype=np.float64).ravel()
    folds = np.asarray(fold_of)
    if x.ndim != 3 or x.shape[1] != 2 or len(x) != len(ya) or len(folds) != len(ya):
        raise InputError(f"finetune: expected N x 2 x W [CLS] outputs and N labels and folds, got {x.shape}, "
                         f"{ya.shape}, {folds.shape}.")
    if not (np.isfinite(x).all() and np.isfinite(ya).all()):
        raise InputError("finetune: the [CLS] outputs and labels must be finite (drop regions without a label).")
    progress = progress or Progress()
    pred = np.full(len(ya), np.nan)
    fold_ids = sorted(set(folds.tolist()))
    for k, f in enumerate(fold_ids):
        progress.update(k / len(fold_ids), f"fine-tuning fold {k + 1}/{len(fold_ids)}")
        train = folds != f
        if train.sum() < 2:
            raise InputError(f"finetune: fold {f} leaves fewer than 2 training regions.")
        mu, sd = ya[train].mean(), ya[train].std() or 1.0
        xt = torch.from_numpy(x[train])
        yt = torch.from_numpy(((ya[train] - mu) / sd).astype(np.float32))
        with torch.random.fork_rng():
            torch.manual_seed(seed * 7919 + k)
            head = FinetuneHead(x.shape[2])
            opt = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
            rng = np.random.default_rng([seed, k])
            head.train()
            for _ in range(epochs):
                order = rng.permutation(len(yt))
                for s in range(0, len(order), batch_size):
                    progress.poll()
                    idx = torch.from_numpy(order[s:s + batch_size])
                    loss = torch.nn.functional.mse_loss(head(xt[idx]), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            head.eval()
            with torch.no_grad():
                out = head(torch.from_numpy(x[~train])).numpy().astype(np.float64)
        pred[~train] = out * sd + mu
    progress.update(1.0, "fine-tuning done")
    return pred
