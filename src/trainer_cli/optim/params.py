"""Parameter groups for the optimizer."""

from __future__ import annotations

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
    # "decoupled_l2", not "decoupled_weight_decay": torch's Adam reads that key as a flag.
    groups = [{"params": decay, "weight_decay": weight_decay, "decoupled_l2": decoupled_l2, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "decoupled_l2": 0.0, "name": "no_decay"})
    return groups


def penalized_parameters(model: nn.Module, decay_1d: bool = False) -> list[nn.Parameter]:
    """The parameters the loss penalties (L1, elastic net, coupled L2) act on: the "decay" group's."""
    return [p for p in model.parameters() if p.requires_grad and (p.ndim >= 2 or decay_1d)]
