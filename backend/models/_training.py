"""What every trained embedder (HAFusion, CaLLiPer, CooKIE, ReFound) does around its own training loop.

* :func:`seeded`: the network's weights and the training's random draws come from the embedder's seed
  without touching the caller's random state (``torch.random.fork_rng`` over the CPU and the CUDA device used).
* :func:`make_optimizer`: Adam or AdamW, the fused kernel where asked for and available.
* :func:`plateau`: the "training loss stopped improving" rule of ``plateau_window`` / ``plateau_tol``.
* :class:`TrainedNetwork`: the trained network (:attr:`~TrainedNetwork.network`) and the two files it is saved
  in: ``weights.safetensors`` and the ``<method>.json`` record of what it needs besides (and how it trained).
* :class:`~backend.models._distributed.Ranks` (re-exported): one process, or one rank of a data-parallel
  run; the loops call :meth:`Ranks.check` once per batch (cancel and progress) and report per epoch with
  :meth:`Ranks.report` (rank 0 only).

The device itself is resolved once by :meth:`backend.models._base.Embedder.resolve_device`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from backend.models._base import WEIGHTS_FILE
from backend.models._distributed import Ranks, run_data_parallel

__all__ = ["Ranks", "TrainedNetwork", "make_optimizer", "plateau", "run_data_parallel", "seeded"]

_NET = "net."  # prefix of the network's own tensors in the weights file

N = TypeVar("N")


class TrainedNetwork(Generic[N]):
    """Mixin of an embedder that trains a torch network ``N`` (kept in ``_net``).

    :meth:`_write_network` and :meth:`_read_network` keep the weights file and the ``<name>.json`` record
    in one format for every such method; the attributes named in :attr:`recorded` (how the training went) are
    written into the record and read back without any code of the method.
    """

    #: Attributes of the embedder saved in ``<name>.json`` and restored on load.
    recorded: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str]
    _net: N | None = None

    @property
    def network(self) -> N:
        """The trained torch network (after :meth:`fit` or :meth:`load`)."""
        if self._net is None:
            raise RuntimeError(f"{self.name}: call fit() (or load()) first.")
        return self._net

    def _write_network(self, folder: Path, record: Mapping[str, Any], arrays: Mapping[str, Any] | None = None,
                       tied: Iterable[str] = ()) -> None:
        """Save the network's weights (but the ``tied`` keys, which share another key's tensor) and ``arrays``
        (name -> tensor) into the weights file, and ``record`` plus the :attr:`recorded` attributes into
        ``<name>.json``."""
        from safetensors.torch import save_file

        skip = set(tied)
        tensors = {f"{_NET}{k}": v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()
                   if k not in skip}
        tensors.update(arrays or {})
        save_file(tensors, str(folder / WEIGHTS_FILE))
        record = {**record, **{key: getattr(self, key) for key in self.recorded}}
        (folder / f"{self.name}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    def _read_network(self, folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Read what :meth:`_write_network` wrote: restores the :attr:`recorded` attributes (those the record
        holds) and returns ``(the rest of the record, the network's state dict, the other tensors)``."""
        from safetensors.torch import load_file

        record = json.loads((folder / f"{self.name}.json").read_text(encoding="utf-8"))
        for key in self.recorded:
            if key in record:
                setattr(self, key, record.pop(key))
        tensors = load_file(str(folder / WEIGHTS_FILE))
        state = {k[len(_NET):]: v for k, v in tensors.items() if k.startswith(_NET)}
        return record, state, {k: v for k, v in tensors.items() if not k.startswith(_NET)}


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
