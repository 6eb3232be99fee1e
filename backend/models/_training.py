"""What every trained embedder (HAFusion, CaLLiPer, CooKIE, ReFound) does around its own training loop.

* :func:`seeded`: the network's weights and the training's random draws come from the embedder's seed
  without touching the caller's random state (``torch.random.fork_rng`` over the CPU and the CUDA device used).
* :func:`make_optimizer`: Adam or AdamW, the fused kernel where asked for and available.
* :func:`plateau`: the "training loss stopped improving" rule of ``plateau_window`` / ``plateau_tol``.
* :class:`~backend.models._distributed.Ranks` (re-exported): one process, or one rank of a data-parallel
  run; the loops call :meth:`Ranks.check` once per batch (cancel and progress) and report per epoch with
  :meth:`Ranks.report` (rank 0 only).

The device itself is resolved once by :meth:`backend.models._base.Embedder.resolve_device`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from backend.models._distributed import Ranks, run_data_parallel

__all__ = ["Ranks", "make_optimizer", "plateau", "run_data_parallel", "seeded"]


@contextlib.contextmanager
def seeded(device: str, seed: int) -> Iterator[None]:
    """Inside the block torch's global generator (and that of a CUDA ``device``) starts from ``seed``; the
    caller's random state is restored afterwards."""
    import torch

    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def make_optimizer(kind: str, params: Iterable[Any], lr: float, weight_decay: float | None = None,
                   fused: bool = False) -> Any:
    """``torch.optim.Adam`` or ``AdamW`` (``kind``) over ``params`` (tensors or parameter groups).

    Args:
        kind: ``"adam"`` or ``"adamw"``.
        params: Parameters or groups (groups may carry their own weight decay).
        lr: Step size.
        weight_decay: Penalty; None leaves the optimiser's default (or the groups' own).
        fused: Try the fused kernel (one pass over all parameters); falls back where the device lacks it.
    """
    import torch

    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    params = list(params)
    kwargs: dict[str, Any] = {"lr": lr}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    if fused:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # a device without the fused kernel
            pass
    return cls(params, **kwargs)


def plateau(history: Sequence[float], window: int, tol: float) -> bool:
    """True when the mean of the last ``window`` values improved less than ``tol`` (relative) on the window
    before (never with ``window`` <= 0 or fewer than ``2 * window`` values)."""
    if window <= 0 or len(history) < 2 * window:
        return False
    before, last = float(np.mean(history[-2 * window:-window])), float(np.mean(history[-window:]))
    return before - last < tol * abs(before)
