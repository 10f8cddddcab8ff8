"""Parameter groups for the optimizer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def parameter_groups(
    model: nn.Module, weight_decay: float, decoupled_l2: float = 0.0, decay_1d: bool = False
) -> list[dict]:
    """Two groups: weight matrices and kernels ("decay") get the decay, 1-D parameters
    ("no_decay") none unless `decay_1d`.

    Biases and normalization scales/shifts are 1-D: decaying them only shrinks the norm
    layers' learned scale, which fights the normalization (as in torchvision's references
    and nanoGPT).

    Args:
        weight_decay: the optimizer's own `weight_decay` (applied as its class defines it).
        decoupled_l2: lambda of `regularization=l2` with `decoupled=true`, applied
            AdamW-style by `penalties.decay_weights_` as W <- W - lr * lambda * W.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 or decay_1d else no_decay).append(parameter)
    if not weight_decay and not decoupled_l2:
        # Nothing decays: one group "all" (a second group costs the optimizer a pass of its
        # own every step, ~1% of a small model's step on the CPU). Its parameters keep the
        # order of the two groups, so a checkpoint that has them (`merge_equal_groups`) loads.
        return [{"params": decay + no_decay, "weight_decay": 0.0, "decoupled_l2": 0.0, "name": "all"}]
    # "decoupled_l2", not "decoupled_weight_decay": torch's Adam reads that key as a flag.
    groups = [{"params": decay, "weight_decay": weight_decay, "decoupled_l2": decoupled_l2, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "decoupled_l2": 0.0, "name": "no_decay"})
    return groups


def merge_equal_groups(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A `load_state_dict` pre-hook: a saved state whose groups "decay" and "no_decay" have
    the same options (a checkpoint written before nothing-decays runs got the one group
    "all") loads into the one group. The parameter indices are those of the two groups in
    order, which "all" keeps; any other mismatch is left for torch to report."""
    saved = state["param_groups"]
    if len(optimizer.param_groups) != 1 or [g.get("name") for g in saved] != ["decay", "no_decay"]:
        return state
    options = [{k: v for k, v in g.items() if k not in ("params", "name")} for g in saved]
    if options[0] != options[1]:
        return state
    merged = {**saved[0], "params": saved[0]["params"] + saved[1]["params"], "name": "all"}
    return {**state, "param_groups": [merged]}


def penalized_parameters(model: nn.Module, decay_1d: bool = False) -> list[nn.Parameter]:
    """The parameters the loss penalties (L1, elastic net, coupled L2) act on: the "decay" group's."""
    return [p for p in model.parameters() if p.requires_grad and (p.ndim >= 2 or decay_1d)]
