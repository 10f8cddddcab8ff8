"""Parameter groups for the optimizer."""

from __future__ import annotations

from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices and kernels get `weight_decay`, 1-D parameters none.

    Biases and normalization scales/shifts are 1-D: decaying them only shrinks the norm
    layers' learned scale, which fights the normalization (as in torchvision's references
    and nanoGPT).
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
