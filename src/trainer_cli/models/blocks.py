"""The lecture's building blocks by name: activations and normalization layers."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
NORMS_1D = ("none", "batch", "layer")
NORMS_2D = ("none", "batch", "group", "instance")


def activation(name: str) -> nn.Module:
    """A fresh activation module; `name` is one of ACTIVATIONS."""
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation: '{name}' is not accepted; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def norm_1d(name: str, features: int) -> nn.Module:
    """Normalization after a Linear layer (before its nonlinearity)."""
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm1d(features)
    if name == "layer":
        return nn.LayerNorm(features)
    raise ValueError(f"model.norm: '{name}' is not accepted for this model; choose one of {', '.join(NORMS_1D)}")


def norm_2d(name: str, channels: int, groups: int = 8) -> nn.Module:
    """Normalization after a conv layer (before its nonlinearity)."""
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"model.norm: '{name}' is not accepted for this model; choose one of {', '.join(NORMS_2D)}")
