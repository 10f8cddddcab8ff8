"""The `loss` group: each option's formula, checked against the lecture's definition."""

from __future__ import annotations

import pytest
import torch

from trainer_cli import build
from trainer_cli.config import resolve

SCORES = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])  # the lecture's cat/car/frog
LABELS = torch.tensor([0, 1, 2])


def multiclass_svm(scores: torch.Tensor, labels: torch.Tensor, power: int, margin: float = 1.0) -> float:
    """The lecture's L_i = sum over j != y_i of max(0, s_j - s_y + margin)^power, averaged over i."""
    total = 0.0
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        total += sum(max(0.0, s[j] - s[y] + margin) ** power for j in range(len(s)) if j != y)
    return total / len(labels)


@pytest.mark.parametrize(("option", "power"), [("hinge", 1), ("squared_hinge", 2)])
def test_hinge_losses_are_the_lectures_svm_loss(option, power, make_cfg):
    loss_fn = build.loss(resolve(make_cfg(f"loss={option}")))
    assert float(loss_fn(SCORES, LABELS)) == pytest.approx(multiclass_svm(SCORES, LABELS, power), rel=1e-6)
    if power == 1:  # the lecture's worked example by hand: losses 2.9, 0, 12.9 (mean 5.27)
        assert float(loss_fn(SCORES, LABELS)) == pytest.approx((2.9 + 0 + 12.9) / 3, rel=1e-6)
    # torch's MultiMarginLoss form, named: the same sum divided by C
    torch_form = build.loss(resolve(make_cfg(f"loss={option}", "loss.divide_by_classes=true")))
    expected = multiclass_svm(SCORES, LABELS, power) / SCORES.shape[1]
    assert float(torch_form(SCORES, LABELS)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_is_minus_log_softmax_of_the_true_class(make_cfg):
    loss_fn = build.loss(resolve(make_cfg("loss=cross_entropy")))
    expected = -SCORES.log_softmax(1)[torch.arange(3), LABELS].mean()
    assert float(loss_fn(SCORES, LABELS)) == pytest.approx(float(expected), rel=1e-6)


def test_a_hinge_run_trains(make_cfg, tmp_path):
    from trainer_cli.train import run

    summary = run(make_cfg("loss=hinge", "epochs=2", "logger=[]"), tmp_path)
    assert summary["best/val/acc"] > 0.8  # the SVM loss trains the digits MLP
