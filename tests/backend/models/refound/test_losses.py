"""ReFound losses on tiny hand-checked cases (expected values computed with numpy), ignore masks, row weights,
empty selections and shape errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.models.refound.losses import cmsa_loss, distill_loss, mim_loss, mlm_loss, similarity_kl


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mlm_loss_hand_checked() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]])
    labels = torch.tensor([[0, -100], [-100, 2]])
    # position (0,0): -log(e^2 / (e^2 + 2)); position (1,1): -log(e^3 / (e + e^2 + e^3))
    expected = 0.5 * (-(2 - math.log(math.exp(2) + 2)) - (3 - math.log(math.e + math.e**2 + math.e**3)))
    assert mlm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # already selected positions (N x V) give the same value
    sel = labels != -100
    assert mlm_loss(logits[sel], labels[sel]).item() == pytest.approx(expected, rel=1e-6)
    none = torch.full((2, 2), -100)
    z = mlm_loss(logits.requires_grad_(), none)
    assert z.item() == 0.0 and z.requires_grad
    with pytest.raises(ValueError):
        mlm_loss(logits, labels[:, :1])


def test_mim_loss_hand_checked() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5)).astype(np.float32)
    targets = rng.integers(0, 5, size=(2, 4))
    mask = np.array([[True, False, False, True], [False, True, False, False]])
    lsm = _log_softmax(logits.astype(np.float64))
    expected = -np.mean([lsm[i, j, targets[i, j]] for i, j in zip(*np.nonzero(mask), strict=True)])
    got = mim_loss(torch.from_numpy(logits), torch.from_numpy(targets), torch.from_numpy(mask))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    none = torch.zeros(2, 4, dtype=torch.bool)
    assert mim_loss(torch.from_numpy(logits), torch.from_numpy(targets), none).item() == 0
    with pytest.raises(ValueError):
        mim_loss(torch.from_numpy(logits), torch.from_numpy(targets), torch.zeros(2, 3, dtype=torch.bool))


def test_cmsa_loss_hand_checked() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [3.0, 0.5, 9.0]])
    labels = torch.tensor([[1.0, 0.0, -1.0], [-1.0, 1.0, -1.0]])

    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    expected = -(math.log(sig(0.0)) + math.log(1 - sig(2.0)) + math.log(sig(0.5))) / 3
    assert cmsa_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert cmsa_loss(logits, torch.full((2, 3), -1.0)).item() == 0.0
    with pytest.raises(ValueError):
        cmsa_loss(logits, labels[:1])


def test_distill_loss_hand_checked() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    # cosines 1, 1/sqrt(2), -1 -> losses 0, 1 - 1/sqrt(2), 2
    per_row = np.array([0.0, 1 - 1 / math.sqrt(2), 2.0])
    assert distill_loss(student, teacher).item() == pytest.approx(per_row.mean(), rel=1e-6)
    w = torch.tensor([1.0, 1.0, 0.0])
    assert distill_loss(student, teacher, w).item() == pytest.approx(per_row[:2].mean(), rel=1e-6)
    assert distill_loss(student, teacher, torch.zeros(3)).item() == 0.0
    # no gradient flows into the teacher
    t = teacher.clone().requires_grad_()
    s = student.clone().requires_grad_()
    distill_loss(s, t).backward()
    assert t.grad is None and s.grad is not None
    with pytest.raises(ValueError):
        distill_loss(student, teacher[:, :1])


def test_similarity_kl_hand_checked() -> None:
    rng = np.random.default_rng(1)
    poi = rng.normal(size=(4, 3))
    img = rng.normal(size=(4, 3))
    teacher = rng.normal(size=(4, 6))
    t = 0.07
    ls = _log_softmax(_unit(poi) @ _unit(img).T / t)
    lt = _log_softmax(_unit(teacher) @ _unit(teacher).T / t)
    expected = np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1))
    got = similarity_kl(torch.tensor(poi, dtype=torch.float32), torch.tensor(img, dtype=torch.float32),
                        torch.tensor(teacher, dtype=torch.float32), temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-4)
    # weights drop rows and columns
    keep = np.array([True, False, True, True])
    ls = _log_softmax(_unit(poi[keep]) @ _unit(img[keep]).T / t)
    lt = _log_softmax(_unit(teacher[keep]) @ _unit(teacher[keep]).T / t)
    expected_w = np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1))
    got_w = similarity_kl(torch.tensor(poi, dtype=torch.float32), torch.tensor(img, dtype=torch.float32),
                          torch.tensor(teacher, dtype=torch.float32), t, weight=torch.from_numpy(keep).float())
    assert got_w.item() == pytest.approx(expected_w, rel=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        similarity_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), temperature=0.0)
    with pytest.raises(ValueError):
        similarity_kl(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4))


def test_similarity_kl_is_zero_when_similarities_match() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(5, 7)
    # student similarities cos(poi_i, img_j) equal cos(teacher_i, teacher_j) when both sides are the teacher,
    # even after scaling each row and rotating both sides by the same orthogonal matrix
    q, _ = torch.linalg.qr(torch.randn(7, 7))
    poi = (teacher @ q) * torch.rand(5, 1).add(0.5)
    img = (teacher @ q) * torch.rand(5, 1).add(0.5)
    assert similarity_kl(poi, img, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert similarity_kl(poi.flip(0), img, teacher).item() > 0.1
    # non-negative on random inputs; gradient reaches both student sides only
    p = torch.randn(5, 3, requires_grad=True)
    v = torch.randn(5, 3, requires_grad=True)
    tt = teacher.clone().requires_grad_()
    loss = similarity_kl(p, v, tt)
    assert loss.item() >= 0
    loss.backward()
    assert p.grad is not None and v.grad is not None and tt.grad is None
    z = similarity_kl(p, v, teacher, weight=torch.zeros(5))
    assert z.item() == 0.0 and z.requires_grad


def test_losses_accept_half_precision_inputs() -> None:
    logits = torch.randn(2, 3, 5).to(torch.bfloat16)
    labels = torch.tensor([[1, -100, 4], [-100, 0, -100]])
    out = mlm_loss(logits, labels)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    s = similarity_kl(torch.randn(4, 3).half(), torch.randn(4, 3).half(), torch.randn(4, 6).half())
    assert s.dtype == torch.float32 and torch.isfinite(s)
