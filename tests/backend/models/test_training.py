"""The shared training preamble (backend/models/_training.py) changes nothing: one short seeded run per trained
method gives the loss curve and embeddings that main's code gave before the preamble moved
(training_fingerprints.json, computed with main's per-method code on the same tiny city); plus the helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.errors import ConfigError
from backend.models import get_embedder
from backend.models._base import WEIGHTS_FILE
from backend.models._training import TrainedNetwork, make_optimizer, plateau, seeded
from backend.progress import Progress
from tests.backend.models.tiny_city import (
    SHORT_RUNS,
    fast_training,  # noqa: F401  (a fixture)
    fingerprint,
    tiny_views,
)

pytestmark = pytest.mark.usefixtures("fast_training")

PINNED = json.loads((Path(__file__).with_name("training_fingerprints.json")).read_text(encoding="utf-8"))



@pytest.mark.parametrize("method", sorted(SHORT_RUNS))
def test_same_seed_gives_mains_loss_curve_and_embeddings(method: str) -> None:
    views = tiny_views()
    got = fingerprint(get_embedder(method, **SHORT_RUNS[method]).fit(views), views)
    want = PINNED[method]
    # float32 summation order may differ between processes (oneDNN or BLAS kernels, memory alignment: HAFusion's
    # curve moved by 3e-6 in a full test session, and its first embedding values, near 0, by 6e-4 after training);
    # a changed seed, batch order or optimiser moves them by far more
    np.testing.assert_allclose(got["history"], want["history"], rtol=1e-4)
    np.testing.assert_allclose(got["first"], want["first"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose([got["sum"], got["abs"]], [want["sum"], want["abs"]], rtol=1e-3, atol=1e-3)


def test_training_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    views = tiny_views(side=4)
    get_embedder("cookie", **{**SHORT_RUNS["cookie"], "stage1_epochs": 1, "stage2_epochs": 1}).fit(views)
    assert torch.equal(torch.rand(3), expected)


def test_seeded_block_is_reproducible_and_restores_state() -> None:
    torch.manual_seed(7)
    with seeded("cpu", 5):
        a = torch.rand(4)
    after = torch.rand(1)
    with seeded("cpu", 5):
        b = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(a, b) and torch.equal(after, torch.rand(1))


def test_make_optimizer_kinds_and_groups() -> None:
    w = torch.nn.Parameter(torch.ones(2, 2))
    b = torch.nn.Parameter(torch.zeros(2))
    adam = make_optimizer("adam", [w, b], 0.1, 0.01, fused=True)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 0.01
    groups = [{"params": [w], "weight_decay": 0.5}, {"params": [b], "weight_decay": 0.0}]
    adamw = make_optimizer("adamw", groups, 0.1)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.5, 0.0]


def test_plateau_rule() -> None:
    assert not plateau([5, 4, 3], 0, 0.1)
    assert not plateau([5, 4, 3], 2, 0.1)  # fewer than two windows
    assert not plateau([10, 10, 5, 5], 2, 0.1)  # halved: progress
    assert plateau([10, 10, 9.99, 9.99], 2, 0.01)  # 0.1 % < 1 %


def test_nproc_is_checked_and_logged_for_methods_without_data_parallel_training() -> None:
    with pytest.raises(ConfigError, match="nproc"):
        get_embedder("baseline", nproc=0)
    progress = Progress()
    get_embedder("baseline", dim=4, nproc=2).fit(tiny_views(side=4), progress)
    assert any("trains in one process" in m for m in progress.log_messages)


def test_trained_network_files_round_trip(tmp_path: Path) -> None:
    """The weights file holds the network (less its tied keys) and the extra arrays; ``<name>.json`` the record and
    the recorded attributes, which come back on read; an unfitted network says so."""

    class Holder(TrainedNetwork[torch.nn.Linear]):
        name = "holder"
        recorded = ("epochs_run", "loss_terms")

        def __init__(self) -> None:
            self.epochs_run, self.loss_terms = 0, {}

    with pytest.raises(RuntimeError, match="holder: call fit"):
        Holder().network  # noqa: B018
    saved = Holder()
    saved._net = torch.nn.Linear(3, 2)
    saved.epochs_run, saved.loss_terms = 7, {"a": 0.5}
    saved._write_network(tmp_path, {"network": {"width": 3}}, {"extra.mean": torch.ones(2)}, tied=("bias",))
    assert json.loads((tmp_path / "holder.json").read_text(encoding="utf-8")) == {
        "network": {"width": 3}, "epochs_run": 7, "loss_terms": {"a": 0.5}}
    loaded = Holder()
    record, state, arrays = loaded._read_network(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).is_file() and record == {"network": {"width": 3}}
    assert (loaded.epochs_run, loaded.loss_terms) == (7, {"a": 0.5})
    assert list(state) == ["weight"] and torch.equal(state["weight"], saved.network.weight.detach())
    assert list(arrays) == ["extra.mean"] and torch.equal(arrays["extra.mean"], torch.ones(2))
