"""Losses the lectures define that torch writes differently."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer_cli import checks


class MulticlassSVMLoss(nn.Module):
    """The multiclass SVM (hinge) loss as the lecture writes it: L_i = sum over the wrong
    classes j != y_i of max(0, s_j - s_{y_i} + margin)^p, averaged over the batch.

    torch's `MultiMarginLoss` divides that sum by the number of classes C, which also weighs a
    coupled L2 penalty C times more against it; `divide_by_classes=true` gives torch's form.
    """

    def __init__(self, p: int = 1, margin: float = 1.0, divide_by_classes: bool = False) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"p: expected 1 (hinge) or 2 (squared hinge), got '{p}'")
        self.p, self.margin = p, checks.number("margin", margin)
        self.divide_by_classes = divide_by_classes

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.multi_margin_loss(scores, labels, p=self.p, margin=self.margin)  # the sum / C, batch mean
        return loss if self.divide_by_classes else loss * scores.shape[1]
