"""Progress: heartbeat reports from poll(), cancellable waits, and cancellation between a network's layers."""

from __future__ import annotations

import threading

import pytest
import torch

import backend.progress as bp
from backend.errors import Cancelled
from backend.progress import Progress


def test_poll_reports_only_after_the_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(bp.time, "monotonic", lambda: clock[0])
    seen: list[tuple[str, float, str]] = []
    progress = Progress(callback=lambda *a: seen.append(a)).stage("train", 0.0, 0.5)
    progress.update(0.2, "epoch 1")
    progress.poll(0.3, "batch")
    assert len(seen) == 2  # stage start and epoch 1: no time has passed
    clock[0] += bp.HEARTBEAT_S
    progress.poll(message="batch")
    assert seen[-1] == ("train", 0.1, "batch")  # the last fraction (0.2 of a stage worth 0.5), reported again
    child = progress.sub("child", 0.5, 1.0)
    child.poll()
    assert len(seen) == 3  # the child shares the parent's clock: it just reported
    clock[0] += bp.HEARTBEAT_S
    child.poll(0.5)
    assert seen[-1] == ("child", 0.375, "")


def test_poll_raises_when_cancelled(cancel_after) -> None:
    progress = cancel_after(2)
    progress.poll()
    progress.poll()
    with pytest.raises(Cancelled):
        progress.poll()


def test_wait_returns_values_and_reraises_errors() -> None:
    progress = Progress()
    assert progress.wait(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        progress.wait(lambda: 1 / 0)


def test_wait_is_cancelled_while_the_work_is_still_running(cancel_after) -> None:
    release, finished = threading.Event(), threading.Event()

    def load() -> str:
        release.wait(30)
        finished.set()
        return "model"

    with pytest.raises(Cancelled):
        cancel_after(3).wait(load, "loading")
    assert not finished.is_set()  # the caller did not wait for the load to end
    release.set()


def test_watch_cancels_inside_forward_and_backward_and_removes_its_hooks(cancel_after) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(5)])
    x = torch.randn(3, 4)
    layers_run: list[int] = []
    for i, layer in enumerate(net):
        layer.register_forward_hook(lambda *_, i=i: layers_run.append(i))

    progress = cancel_after(3)  # the container and two layers pass; the third layer's check raises
    with pytest.raises(Cancelled), progress.watch(net):
        net(x)
    assert layers_run == [0, 1]

    progress = cancel_after(6)  # a forward pass checks 6 times (container + 5 layers): cancelled in backward
    grads: list[int] = []
    net[0].weight.register_hook(lambda g: grads.append(1))
    with progress.watch(net):
        loss = net(x).sum()
        with pytest.raises(Cancelled):
            loss.backward()
    assert grads == []  # the first layer's gradient was never reached

    checks = progress.cancel_event.checks
    net(x).sum().backward()  # outside the block: no hooks are left
    assert progress.cancel_event.checks == checks
