"""Optimizers the lecture shows that torch does not ship."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class AdamNoBias(torch.optim.Optimizer):
    """The lecture's "Adam (almost)": Adam without bias correction.

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  x -= lr * m / (sqrt(v) + eps)

    Both moments start at zero, so early on m/sqrt(v) is (1-b1)/sqrt(1-b2) ~ 3.2 times the
    gradient's sign instead of ~1: the first steps are much larger than Adam's, which is what
    Adam's bias correction fixes. `weight_decay` is coupled (added to the gradient), as in Adam.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"optimizer.lr: expected a number > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"optimizer.betas: expected two values in [0, 1), got {list(betas)}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                p.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-group["lr"])
        return loss
