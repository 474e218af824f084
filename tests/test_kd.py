"""Hinton KD loss against a hand computation (the frozen teacher: tests/test_harness_methods.py)."""

from __future__ import annotations

import math

import torch

from methods.kd import kd_loss


def test_kd_loss_matches_hand_computation() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    temp = 2.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    total = 0.0
    for srow, trow in zip(s.tolist(), t.tolist(), strict=True):
        ps, pt = softmax(srow), softmax(trow)
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    expected = total / 2 * temp**2
    assert math.isclose(float(kd_loss(s, t, temp)), expected, rel_tol=1e-6)


def test_kd_loss_zero_for_equal_logits_and_gradient_reaches_the_student() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    loss = kd_loss(s, s.detach().clone(), 4.0)
    assert float(loss.detach()) < 1e-6
    kd_loss(s, s.detach() + torch.randn(3, 4), 4.0).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
