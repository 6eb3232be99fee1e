"""Fixtures of the method tests: one torch thread (the machine is shared; results are deterministic for a
fixed thread count). A module that needs another count sets it in its own autouse fixture, which runs after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
