"""Weight penalties added to the loss, and decoupled weight decay applied beside the step.

Loss penalties (each logged as its own curve, `train/penalty/<name>`):
    l2 (coupled):  lambda * sum(W^2)
    l1:            lambda * sum(|W|)
    elastic_net:   lambda * sum(beta * W^2 + |W|)
Decoupled weight decay (Loshchilov & Hutter, "AdamW"): W <- W - lr * lambda * W before the
optimizer's update, for any optimizer; it is not part of the loss.
"""

from __future__ import annotations

import torch


class Penalties:
    """The selected loss penalties over a fixed list of parameters; `__call__` returns one
    tensor per penalty name (on the parameters' device, no host sync)."""

    def __init__(
        self,
        parameters: list[torch.nn.Parameter],
        l2: float = 0.0,
        l1: float = 0.0,
        elastic_net: tuple[float, float] | None = None,
    ) -> None:
        self.parameters = parameters
        self.l2, self.l1, self.elastic_net = l2, l1, elastic_net

    def __call__(self) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.l2 or self.elastic_net:
            squares = torch.stack([p.pow(2).sum() for p in self.parameters]).sum()
        if self.l1 or self.elastic_net:
            absolutes = torch.stack([p.abs().sum() for p in self.parameters]).sum()
        if self.l2:
            terms["l2"] = self.l2 * squares
        if self.l1:
            terms["l1"] = self.l1 * absolutes
        if self.elastic_net:
            strength, l2_ratio = self.elastic_net
            terms["elastic_net"] = strength * (l2_ratio * squares + absolutes)
        return terms


@torch.no_grad()
def decay_weights_(optimizer: torch.optim.Optimizer) -> None:
    """Decoupled weight decay: W <- W * (1 - lr * lambda) for each group with a lambda."""
    for group in optimizer.param_groups:
        decay = group.get("decoupled_l2", 0.0)
        if decay and group["params"]:
            torch._foreach_mul_(group["params"], 1.0 - float(group["lr"]) * decay)
