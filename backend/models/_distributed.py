"""Data-parallel training on ``torch.distributed`` (``nproc`` processes, one per GPU on CUDA).

How a trained embedder uses it (HAFusion ``scalable``, CaLLiPer, CooKIE, ReFound pre-training):

* It prepares its training data in the calling process as before, then hands a picklable *job* and a
  module-level *rank function* to :func:`run_data_parallel`. With ``nproc`` = 1 (the default, and what the
  QGIS worker uses) the rank function simply runs here with a single-process :class:`Ranks`: nothing changes.
* With ``nproc`` = N > 1 this process becomes rank 0 and starts N - 1 helper processes (from a fork server
  that imported torch once, or ``spawn`` where there is none); all join
  one process group (gloo on the CPU, NCCL on CUDA with rank r on ``cuda:r``). Every rank builds the network
  from the same seed, wraps it in ``DistributedDataParallel`` (gradients all-reduced, averaged) and draws the
  same global batches; each rank computes its shard of every batch (DistributedSampler's rule: rank r takes
  positions r, r + N, r + 2N, ...). Methods whose loss compares the samples of a batch with each other
  (contrastive losses) all-gather the per-sample outputs (:meth:`Ranks.gather`), so their loss is the loss of
  the whole global batch, exactly as in one process.
* Rank 0 alone talks to the caller's :class:`~backend.progress.Progress`: it reports progress, and before every
  batch it looks at the cancel request and broadcasts a stop flag (:meth:`Ranks.check`), so a cancel stops
  every rank at the same batch. A cancel raised inside a forward pass on rank 0, or any error, terminates the
  helpers. Only rank 0 returns the trained network and writes checkpoints and outputs.
* Launched by ``torchrun`` (a process group already exists) the rank function runs in every rank of that
  group instead; rank 0 is then the one whose result the caller uses.
* ``python -m backend run`` launched by ``torchrun`` (:func:`torchrun_launch`) joins torchrun's group
  (:func:`join_torchrun`) instead of starting helpers: rank 0 runs the whole job (reading, views, clustering,
  prediction, writing, progress, cancel) and hands every training job to the other ranks over a gloo group
  of its own (:func:`run_data_parallel`); those ranks only serve these jobs (:func:`serve_training_jobs`)
  until rank 0 says the run is over (:func:`leave_torchrun`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np

from backend.errors import Cancelled, ConfigError, RegionLensError
from backend.progress import Progress

__all__ = ["Ranks", "TIMEOUT_S", "check_nproc_device", "join_torchrun", "leave_torchrun", "run_data_parallel",
           "serve_training_jobs", "shard_positions", "torchrun_launch"]

#: Seconds a rank waits for the others in one collective before the run fails.
TIMEOUT_S = 600
#: Seconds a serving rank waits for rank 0's next training job (rank 0 reads, clusters, predicts meanwhile; a
#: failed rank 0 ends the run through torchrun, which stops the other ranks).
SERVE_TIMEOUT_S = 7 * 24 * 3600
#: This process's part in a ``python -m backend run`` launched by torchrun (see :func:`join_torchrun`):
#: ``group`` (the gloo group training jobs are handed out on), ``local`` (its local rank) and ``in_job``.
_LAUNCH: dict[str, Any] = {}

T = TypeVar("T")


def shard_positions(n: int, rank: int, world: int) -> np.ndarray:
    """Positions of a batch of ``n`` samples that ``rank`` of ``world`` computes (DistributedSampler's
    strided rule, without padding: no sample is counted twice)."""
    return np.arange(rank, n, world)


@dataclass
class Ranks:
    """This process's place in a training run: rank ``rank`` of ``world`` processes, on ``device``.

    The single-process default (``world`` = 1) makes every method a no-op, so one training loop serves both.
    """

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True on rank 0 (the rank that reports progress, writes and returns the model)."""
        return self.rank == 0

    # ------------------------------------------------------------------------------------------ data
    def shard(self, batch: T) -> T:
        """This rank's samples of a global batch (an index array or tensor, or a tensor of rows)."""
        if not self.distributed:
            return batch
        return batch[self.rank::self.world]  # type: ignore[index]

    def gathered_order(self, n: int) -> np.ndarray:
        """Positions in the global batch of the rows :meth:`gather` returns (rank 0's shard first, ...)."""
        if not self.distributed:
            return np.arange(n)
        return np.concatenate([shard_positions(n, r, self.world) for r in range(self.world)])

    def gather(self, rows: Any, n: int) -> Any:
        """The rows of every rank's shard of a global batch of ``n`` samples, in :meth:`gathered_order`.

        The other ranks' rows are constants here; this rank's rows stay in the graph with their gradient
        multiplied by the world size, so that after DistributedDataParallel averages the gradients every
        parameter gets exactly the gradient of the global batch's loss (parameters used after the gather,
        such as a learnt temperature, see the whole batch on every rank and are averaged unchanged).
        """
        if not self.distributed:
            return rows
        import torch
        import torch.distributed as dist

        sizes = [len(shard_positions(n, r, self.world)) for r in range(self.world)]
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: len(rows)] = rows.detach()
        buffers = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(buffers, padded.contiguous())
        parts = [buffers[r][: sizes[r]] for r in range(self.world)]
        parts[self.rank] = _scale_grad(rows, float(self.world))
        return torch.cat(parts)

    # ------------------------------------------------------------------------------------------ model
    def wrap(self, net: Any, find_unused: bool = False) -> Callable[..., Any]:
        """``step(fn, *args)`` that runs ``fn(net, *args)``: directly in one process, through
        DistributedDataParallel (gradient all-reduce in the backward pass) across processes.

        ``find_unused``: some parameters get no gradient in some steps (switched-off objectives, stages).
        """
        if not self.distributed:
            return lambda fn, *args: fn(net, *args)
        from torch.nn.parallel import DistributedDataParallel

        index = [_cuda_index(self.device)] if self.device.startswith("cuda") else None
        ddp = DistributedDataParallel(_Objective(net), device_ids=index, find_unused_parameters=find_unused)
        return lambda fn, *args: ddp(fn, *args)

    # ------------------------------------------------------------------------------------- reporting
    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (the value itself in one process)."""
        if not self.distributed:
            return float(value)
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def check(self, progress: Progress, fraction: float | None = None, message: str = "") -> None:
        """Before a batch: rank 0 looks at the cancel request (and reports progress at the heartbeat, see
        :meth:`Progress.poll`) and broadcasts a stop flag; every rank raises :class:`Cancelled` on it."""
        if not self.distributed:
            progress.poll(fraction, message)
            return
        import torch
        import torch.distributed as dist

        stop = 0
        if self.main:
            try:
                progress.poll(fraction, message)
            except Cancelled:
                stop = 1
        flag = torch.tensor([stop], dtype=torch.int32, device=self._comm_device())
        dist.broadcast(flag, src=0)
        if int(flag.item()):
            raise Cancelled("Run cancelled by the user; no output was written.")

    def report(self, progress: Progress, fraction: float, message: str = "") -> None:
        """Progress of the run (rank 0 only; across processes a cancel seen here stops every rank at the next
        :meth:`check`)."""
        if not self.main:
            return
        if not self.distributed:
            progress.update(fraction, message)
            return
        with contextlib.suppress(Cancelled):
            progress.update(fraction, message)

    def log(self, progress: Progress, message: str) -> None:
        """A log line (rank 0 only)."""
        if self.main:
            progress.log(message)

    def _comm_device(self) -> str:
        return self.device if self.device.startswith("cuda") else "cpu"


def _cuda_index(device: str) -> int:
    import torch

    return torch.device(device).index or 0


_SCALE: list[Any] = []


def _scale_grad(x: Any, factor: float) -> Any:
    """``x`` unchanged, its gradient multiplied by ``factor``."""
    if not _SCALE:
        import torch

        class ScaleGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, t: Any, f: float) -> Any:  # noqa: ANN401
                ctx.factor = f
                return t.view_as(t)

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:  # noqa: ANN401
                return grad * ctx.factor, None

        _SCALE.append(ScaleGrad)
    return _SCALE[0].apply(x, factor)


def _objective_module() -> type:
    import torch

    class Objective(torch.nn.Module):
        """The network plus a loss function, so that DistributedDataParallel sees one forward per step."""

        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
            return fn(self.net, *args)

    return Objective


def _Objective(net: Any) -> Any:  # noqa: N802 - built lazily (torch is imported on use only)
    return _objective_module()(net)


# ------------------------------------------------------------------------------------------ launching
def _plan(nproc: int, device: str) -> tuple[str, list[str]]:
    """Process-group backend and per-rank devices for ``nproc`` local ranks on ``device``."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("nproc > 1 needs torch.distributed, which this torch build lacks; set nproc = 1.")
    if device.startswith("cuda"):
        have = torch.cuda.device_count()
        if have < nproc:
            raise ConfigError(f"nproc = {nproc} runs one process per GPU, but torch sees {have} CUDA GPU(s). "
                              f"Set nproc to at most {have}, or device = 'cpu'.")
        return ("nccl" if dist.is_nccl_available() else "gloo"), [f"cuda:{r}" for r in range(nproc)]
    if device != "cpu":
        raise ConfigError(f"nproc > 1 trains on the CPU or on CUDA GPUs, not on '{device}'; set device = 'cpu' "
                          "or 'cuda', or nproc = 1.")
    return "gloo", ["cpu"] * nproc


def check_nproc_device(nproc: int, device: str) -> None:
    """Raise :class:`ConfigError` when ``nproc`` processes cannot train on ``device`` (:func:`run_data_parallel`).

    Under torchrun (:func:`join_torchrun`) torchrun placed the processes; nothing is checked.
    """
    if nproc > 1 and not _LAUNCH:
        _plan(nproc, device)


# --------------------------------------------------------------------------------------------- torchrun
def torchrun_launch() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when torchrun (or another launcher setting its environment:
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) started this process as one of several, else None.

    Raises:
        ConfigError: The variables are set but are not integers with 0 <= rank < world size.
    """
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not all(os.environ.get(n) for n in names):
        return None
    try:
        rank, world, local = (int(os.environ[n]) for n in names)
    except ValueError as exc:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {exc}") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"RANK = {rank}, WORLD_SIZE = {world}, LOCAL_RANK = {local}: need 0 <= RANK < WORLD_SIZE.")
    return (rank, world, local) if world > 1 else None


def join_torchrun(device: str) -> Ranks:
    """Join the process group torchrun set up (``env://``; gloo on the CPU, NCCL on CUDA with local rank r on
    ``cuda:r``), and a gloo group on which rank 0 hands out the training jobs.

    Returns:
        This process's rank, world size and device.

    Raises:
        ConfigError: Not launched by torchrun, or on a device data-parallel training does not run on.
    """
    import torch
    import torch.distributed as dist

    launch = torchrun_launch()
    if launch is None:
        raise ConfigError("not launched by torchrun with more than one process (RANK, WORLD_SIZE, LOCAL_RANK).")
    rank, world, local = launch
    if not dist.is_available():
        raise ConfigError("torchrun needs torch.distributed, which this torch build lacks.")
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} needs GPU cuda:{local}, but torch sees "
                              f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node.")
        here, backend = f"cuda:{local}", ("nccl" if dist.is_nccl_available() else "gloo")
        torch.cuda.set_device(here)
    elif device == "cpu":
        here, backend = "cpu", "gloo"
    else:
        raise ConfigError(f"torchrun trains on the CPU or on CUDA GPUs, not on '{device}'; set device = 'cpu' "
                          "or 'cuda'.")
    dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=SERVE_TIMEOUT_S))
    _LAUNCH.update(group=group, local=local, in_job=False)
    return Ranks(rank, world, here)


def _local_device(device: str) -> str:
    return f"cuda:{_LAUNCH['local']}" if device.startswith("cuda") else device


def serve_training_jobs() -> int:
    """On a rank other than 0 (:func:`join_torchrun`): run every training job rank 0 hands out, as one rank of
    it, until rank 0 says the run is over; returns the number of jobs served.

    A job stopped by a cancel (rank 0 broadcast the stop flag) or by bad input (rank 0 meets and reports it
    too) is left and the next one awaited.
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    os.dup2(2, 1)  # a serving rank never writes to stdout (rank 0's terminal output): its output goes to stderr
    sys.stdout = sys.stderr
    served = 0
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=_LAUNCH["group"])
        if box[0] is None:
            return served
        fn, job, device = box[0]
        served += 1
        with contextlib.suppress(Cancelled, RegionLensError):
            fn(Ranks(rank, world, _local_device(device)), job, Progress())


def leave_torchrun() -> None:
    """End this process's part: rank 0 tells the serving ranks the run is over (unless a training job failed
    on it part-way: the others may be inside that job; rank 0's failure then ends them through torchrun),
    then the process group is left."""
    import torch.distributed as dist

    try:
        if dist.is_initialized() and dist.get_rank() == 0 and not _LAUNCH.get("in_job"):
            dist.broadcast_object_list([None], src=0, group=_LAUNCH["group"])
    finally:
        _LAUNCH.clear()
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init(backend: str, port: int, rank: int, world: int, device: str) -> None:
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=TIMEOUT_S))


def _helper(rank: int, world: int, port: int, backend: str, device: str, threads: int,
            fn: Callable[[Ranks, Any, Progress], Any], job: Any) -> None:
    """A helper rank: the same rank function on a private copy of the job; its result is dropped."""
    import torch
    import torch.distributed as dist

    os.dup2(2, 1)  # a helper never writes to stdout (the worker's protocol channel): its output goes to stderr
    sys.stdout = sys.stderr
    torch.set_num_threads(threads)
    job = copy.deepcopy(job)  # tensors arrive in shared memory: train on private copies
    _init(backend, port, rank, world, device)
    try:
        fn(Ranks(rank, world, device), job, Progress())
    except (Cancelled, RegionLensError):
        pass  # rank 0 broadcast the stop flag, or meets the same bad input and reports it
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing of a helper outlives its work: skip the interpreter's (slow) teardown


def _context() -> Any:
    """Where helper processes come from: a fork server that imported torch once (Linux; later runs start in
    a fraction of a second and inherit no threads), else ``spawn``."""
    import multiprocessing

    import torch

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = torch.multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "torch.distributed", __name__])
        return context
    return torch.multiprocessing.get_context("spawn")


def _load_torch_compiler() -> None:
    """Import ``torch._dynamo`` (what torch's optimisers import when the first one is made)."""
    importlib.import_module("torch._dynamo")


def run_data_parallel(fn: Callable[[Ranks, Any, Progress], T], job: Any, nproc: int, device: str,
                      progress: Progress) -> T:
    """Run ``fn(ranks, job, progress)`` on ``nproc`` ranks and return rank 0's result (see the module docstring).

    Args:
        fn: A module-level function (helpers receive it pickled).
        job: Its picklable input (numpy arrays, the embedder); helpers get a copy.
        nproc: Number of processes; 1 runs ``fn`` here.
        device: The resolved device (``cpu`` or ``cuda``: rank r uses ``cuda:r``).
        progress: The caller's progress (rank 0 only).

    Raises:
        ConfigError: ``nproc`` more than the GPUs, or a device data-parallel training does not run on.
        RuntimeError: A helper rank failed.
    """
    import torch
    import torch.distributed as dist

    if "torch._dynamo" not in sys.modules:
        # torch's optimisers import torch._dynamo when the first one is made: 1.5 s of CPU in one call (a progress
        # gap at the start of every run's first training); imported here under wait, with a heartbeat
        progress.wait(_load_torch_compiler, "loading torch")
    if _LAUNCH and dist.get_rank() == 0:  # python -m backend run under torchrun: hand the job to every rank
        if nproc <= 1:
            return fn(Ranks(device=device), job, progress)
        world = dist.get_world_size()
        progress.log(f"data-parallel training: {world} processes started by torchrun")
        _LAUNCH["in_job"] = True
        dist.broadcast_object_list([(fn, job, device)], src=0, group=_LAUNCH["group"])
        result = fn(Ranks(0, world, _local_device(device)), job, progress)
        _LAUNCH["in_job"] = False
        return result
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:  # launched by torchrun
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        here = f"cuda:{local}" if device.startswith("cuda") else device
        return fn(Ranks(rank, world, here), job, progress if rank == 0 else Progress())
    if nproc <= 1:
        return fn(Ranks(device=device), job, progress)
    backend, devices = _plan(nproc, device)
    threads_before = torch.get_num_threads()
    threads = max(1, threads_before // nproc)
    port = _free_port()
    context = _context()
    helpers = [context.Process(target=_helper, args=(r, nproc, port, backend, devices[r], threads, fn, job),
                               name=f"regionlens-rank{r}", daemon=True) for r in range(1, nproc)]
    progress.log(f"data-parallel training: {nproc} processes ({backend}, {', '.join(dict.fromkeys(devices))})")
    for h in helpers:
        h.start()
    torch.set_num_threads(threads)
    failed = False
    try:
        _init(backend, port, 0, nproc, devices[0])
        return fn(Ranks(0, nproc, devices[0]), job, progress)
    except BaseException as exc:
        failed = True
        bad = [f"rank {i + 1} (exit code {h.exitcode})" for i, h in enumerate(helpers) if h.exitcode not in (None, 0)]
        for h in helpers:
            if h.is_alive():
                h.terminate()
        if bad and not isinstance(exc, Cancelled | KeyboardInterrupt | RegionLensError):
            raise RuntimeError(f"data-parallel training failed in {', '.join(bad)}: {exc}") from exc
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for h in helpers:
            h.join(timeout=None if not failed else 10)
        torch.set_num_threads(threads_before)
