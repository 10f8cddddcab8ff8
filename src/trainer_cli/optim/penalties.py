"""Weight penalties added to the loss, and decoupled weight decay applied beside the step.

Each penalty is a class configured by `conf/regularization/<name>.yaml` (keys = constructor
arguments) and logged as its own curve, `train/penalty/<name>`:
    L2 (coupled):  lambda * sum(W^2)
    L1:            lambda * sum(|W|)
    ElasticNet:    lambda * sum(beta * W^2 + |W|)
They act on weight matrices and kernels (1-D parameters too with `decay_1d`).
Decoupled weight decay (Loshchilov & Hutter, "AdamW"): W <- W - lr * lambda * W before the
optimizer's update, for any optimizer; it is not part of the loss. Adding a penalty is one
subclass of `Penalty` and one YAML file.
"""

from __future__ import annotations

import torch

from trainer_cli import checks


class Penalty:
    """A term `__call__(weights) -> tensor` added to the loss.

    `name` is its curve's name; `decay_1d` puts 1-D parameters (biases, norm scales) among
    the weights; `decoupled` asks for AdamW-style decay by `decoupled_weight_decay` beside
    the step instead of a loss term.
    """

    name = "penalty"
    decay_1d = False
    decoupled = False
    decoupled_weight_decay = 0.0

    @property
    def in_loss(self) -> bool:
        return not self.decoupled

    def __call__(self, weights: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


def _sum_of_squares(weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([w.pow(2).sum() for w in weights]).sum()


def _sum_of_absolutes(weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([w.abs().sum() for w in weights]).sum()


class L2(Penalty):
    """L2 weight decay: the loss penalty lambda * sum(W^2) (gradient 2 lambda W), or with
    `decoupled` the AdamW-style W <- W - lr * lambda * W beside any optimizer's step."""

    name = "l2"

    def __init__(self, weight_decay: float = 5e-4, decoupled: bool = False, decay_1d: bool = False) -> None:
        self.weight_decay = checks.number("weight_decay", weight_decay, low=0.0)
        self.decay_1d, self.decoupled = bool(decay_1d), bool(decoupled)
        self.decoupled_weight_decay = self.weight_decay if decoupled else 0.0

    def __call__(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return self.weight_decay * _sum_of_squares(weights)


class L1(Penalty):
    """lambda * sum(|W|): drives many weights to (near) zero."""

    name = "l1"

    def __init__(self, strength: float = 1e-4) -> None:
        self.strength = checks.number("strength", strength, low=0.0)

    def __call__(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return self.strength * _sum_of_absolutes(weights)


class ElasticNet(Penalty):
    """lambda * sum(beta * W^2 + |W|): L1's sparsity with some of L2's shrinkage."""

    name = "elastic_net"

    def __init__(self, strength: float = 1e-4, l2_ratio: float = 0.5) -> None:
        self.strength = checks.number("strength", strength, low=0.0)
        self.l2_ratio = checks.number("l2_ratio", l2_ratio, low=0.0)

    def __call__(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return self.strength * (self.l2_ratio * _sum_of_squares(weights) + _sum_of_absolutes(weights))


class Penalties:
    """The selected loss penalties over a fixed list of weights; `__call__` returns one
    tensor per penalty name (on the weights' device, no host sync)."""

    def __init__(self, penalties: list[Penalty], weights: list[torch.nn.Parameter]) -> None:
        self.penalties = [p for p in penalties if p.in_loss]
        self.weights = weights

    def __bool__(self) -> bool:
        return bool(self.penalties)

    def __call__(self) -> dict[str, torch.Tensor]:
        return {p.name: p(self.weights) for p in self.penalties}


@torch.no_grad()
def decay_weights_(optimizer: torch.optim.Optimizer, skipped: torch.Tensor | None = None) -> None:
    """Decoupled weight decay: W <- W * (1 - lr * lambda) for each group with a lambda.

    `skipped`: a 0-d tensor on the device, 1.0 when the optimizer step is skipped (the fp16
    grad scaler found an overflow, or the loss was not finite): then the weights are left as
    they are too, decided on the device without a host sync. Like torch's AdamW, only the
    parameters that have a gradient decay: a block still frozen (`finetune.unfreeze_at_epoch`)
    stays exactly as it is.
    """
    for group in optimizer.param_groups:
        decay = group.get("decoupled_l2", 0.0)
        params = [p for p in group["params"] if p.grad is not None] if decay else None
        if params:
            factor = 1.0 - float(group["lr"]) * decay
            if skipped is not None:
                factor = 1.0 - (1.0 - factor) * (1.0 - skipped)
            torch._foreach_mul_(params, factor)
