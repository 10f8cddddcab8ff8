"""The lecture's building blocks by name: activations (with maxout and Gaussian-Poincaré
normalization), normalization layers and DropConnect."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from trainer_cli import checks

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu", "maxout")
NORMS_1D = ("none", "batch", "layer", "group")
NORMS_2D = ("none", "batch", "layer", "group", "instance")


class Maxout(nn.Module):
    """max(w1ᵀx+b1, ..., wkᵀx+bk) (Goodfellow et al., 2013): the layer before it produces
    k times the features, and this takes the maximum over each group of k (dimension 1, so
    it serves Linear and Conv2d outputs alike)."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (x.shape[1] // self.k, self.k)).amax(2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def gpn_constants(phi: nn.Module, points: int = 200_000, limit: float = 12.0) -> tuple[float, tuple[float, float]]:
    """a and the two roots b of Gaussian-Poincaré normalization for the activation `phi`.

    a·φ(h)+b has E[(a·φ(h)+b)²] = E[(a·φ'(h))²] = 1 for h ~ N(0,1). The second condition
    gives a = 1/sqrt(E[φ'²]); the first is a quadratic in b, b² + 2aE[φ]b + a²E[φ²] - 1 = 0,
    with roots -aE[φ] ± sqrt(1 - a²Var[φ]). The expectations are midpoint-rule integrals on
    [-limit, limit] in float64 (no grid point falls on ReLU's kink at 0), φ' by autograd.
    Returns (a, (larger root, smaller root)).
    """
    step = 2 * limit / points
    h = (-limit + (torch.arange(points, dtype=torch.float64) + 0.5) * step).requires_grad_()
    weight = torch.exp(-(h.detach() ** 2) / 2) / math.sqrt(2 * math.pi) * step
    phi = copy.deepcopy(phi).double()  # PReLU's slope too, so the integral is float64 throughout
    value = phi(h)
    (derivative,) = torch.autograd.grad(value.sum(), h)
    value = value.detach()
    mean, square, derivative_square = (float((v * weight).sum()) for v in (value, value**2, derivative**2))
    a = 1 / math.sqrt(derivative_square)
    root = math.sqrt(max(0.0, 1 - a * a * (square - mean * mean)))
    return a, (-a * mean + root, -a * mean - root)


class GaussPoincare(nn.Module):
    """a·φ(h)+b: `activation` rescaled so that, for h ~ N(0,1), the output and its derivative
    both have second moment 1 (Gaussian-Poincaré normalization). b is the larger root of
    the quadratic (the one that keeps ReLU's zero: b=0), as the lecture's table has it for
    tanh, ReLU, leaky ReLU, ELU and SELU. Its GELU row (a 1.4915, b -0.9097) is x·σ(1.702x)
    with the smaller root; torch's exact GELU with the larger root gives a 1.4811, b 0.0739.
    For a learned activation (PReLU) a and b are computed once, at its initial parameters."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.activation = activation
        self.a, (self.b, _) = gpn_constants(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * self.activation(x) + self.b

    def extra_repr(self) -> str:
        return f"a={self.a:.4f}, b={self.b:.4f}"


def activation(name: str, slope: float = 0.01, alpha: float = 1.0, maxout_k: int = 2, gpn: bool = False) -> nn.Module:
    """A fresh activation module by name (one of ACTIVATIONS).

    Args:
        slope: leaky_relu's negative slope (PReLU's learned slope starts at 0.25).
        alpha: ELU's saturation value for large negative inputs.
        maxout_k: maxout's number of linear pieces (the layer before must make k× the features).
        gpn: wrap it in Gaussian-Poincaré normalization (GaussPoincare).
    """
    if name == "maxout":
        checks.whole_number("model.maxout_k", maxout_k)
        if gpn:
            raise ValueError("model.activation_gpn: not defined for maxout (it is not a function of one input)")
        return Maxout(maxout_k)
    simple = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(slope),
        "prelu": nn.PReLU,
        "elu": lambda: nn.ELU(alpha),
        "selu": nn.SELU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
    }
    if name not in simple:
        raise ValueError(f"model.activation: '{name}' is not accepted; choose one of {', '.join(ACTIVATIONS)}")
    module = simple[name]()
    return GaussPoincare(module) if gpn else module


def width_factor(activation_name: str, maxout_k: int) -> int:
    """How many times its features a layer feeding this activation must produce."""
    return maxout_k if activation_name == "maxout" else 1


def norm_1d(name: str, features: int, groups: int = 8) -> nn.Module:
    """Normalization after a Linear layer (before its nonlinearity)."""
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm1d(features)
    if name == "layer":
        return nn.LayerNorm(features)
    if name == "group":
        return nn.GroupNorm(_groups(groups, features), features)
    raise ValueError(f"model.norm: '{name}' is not accepted for this model; choose one of {', '.join(NORMS_1D)}")


def norm_2d(name: str, channels: int, groups: int = 8) -> nn.Module:
    """Normalization after a conv layer (before its nonlinearity)."""
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "layer":  # over channels and positions of each sample: one group
        return nn.GroupNorm(1, channels)
    if name == "group":
        return nn.GroupNorm(_groups(groups, channels), channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"model.norm: '{name}' is not accepted for this model; choose one of {', '.join(NORMS_2D)}")


def _groups(groups: int, channels: int) -> int:
    """`groups`, capped at the channel count (a narrow layer cannot have more groups)."""
    checks.whole_number("model.norm_groups", groups)
    groups = min(groups, channels)
    if channels % groups:
        raise ValueError(f"model.norm_groups: {groups} groups do not divide a layer of {channels} channels")
    return groups


class DropConnectLinear(nn.Linear):
    """A Linear layer whose weights, not activations, are dropped (Wan et al., 2013).

    In training, each weight is zeroed with probability p (one mask per forward pass, shared
    by the batch) and the kept ones are scaled by 1/(1-p), so the expected weight is the
    full weight; evaluation uses the full weight matrix.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5) -> None:
        super().__init__(in_features, out_features, bias)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"model.dropconnect: expected a value in [0, 1), got '{p}'")
        self.p = p

    def weight_in_use(self) -> torch.Tensor:
        """The weight matrix this forward pass uses: masked and rescaled in training."""
        if not self.training or self.p == 0.0:
            return self.weight
        mask = torch.rand_like(self.weight) >= self.p
        return self.weight * mask / (1 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_in_use(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


def linear(in_features: int, out_features: int, dropconnect: float = 0.0, bias: bool = True) -> nn.Linear:
    """nn.Linear, or DropConnectLinear when `dropconnect` > 0."""
    if dropconnect > 0:
        return DropConnectLinear(in_features, out_features, bias, p=dropconnect)
    return nn.Linear(in_features, out_features, bias)
