"""Weight initialization schemes (`model.init`), applied to every Linear and Conv2d layer."""

from __future__ import annotations

from torch import nn

INITS = (
    "default",
    "constant",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "lecun_normal",
    "kaiming_normal",
    "kaiming_uniform",
    "orthogonal",
)


def nonlinearity(activation: str, slope: float = 0.01) -> tuple[str, float]:
    """The (nonlinearity, negative slope) torch's gain formulas know for an activation.

    ELU, GELU, SiLU and maxout are ReLU-like (≈ half the variance passes), so they take
    ReLU's gain; PReLU takes leaky ReLU's at its initial slope of 0.25.
    """
    if activation in ("tanh", "sigmoid", "relu", "selu"):
        return activation, 0.0
    if activation == "leaky_relu":
        return "leaky_relu", slope
    if activation == "prelu":
        return "leaky_relu", 0.25
    return "relu", 0.0


def initialize(
    model: nn.Module, scheme: str = "default", activation: str = "relu", std: float = 0.01, slope: float = 0.01
) -> None:
    """Re-initialize the weights of every Linear and Conv2d layer of `model` in place.

    Biases start at zero (except under `default`, which keeps PyTorch's own scheme).
    Normalization layers keep their scale 1 and shift 0.

    Args:
        scheme: one of INITS. `constant` sets every weight to `std` (the lecture's symmetry
            failure); `normal` draws N(0, std²) (the lecture's "small random numbers");
            `lecun_normal` has std 1/sqrt(fan_in); kaiming and orthogonal take their gain
            from `activation`; xavier uses gain 1.
        activation: the model's activation name, for the gain.
        std: see `constant` and `normal`.
        slope: leaky_relu's negative slope, for its gain.
    """
    if scheme not in INITS:
        raise ValueError(f"model.init: '{scheme}' is not accepted; choose one of {', '.join(INITS)}")
    if scheme == "default":
        return
    name, negative_slope = nonlinearity(activation, slope)
    gain = nn.init.calculate_gain(name, negative_slope)
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        weight = module.weight
        if scheme == "constant":
            nn.init.constant_(weight, std)
        elif scheme == "normal":
            nn.init.normal_(weight, 0.0, std)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(weight)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(weight)
        elif scheme == "lecun_normal":
            nn.init.kaiming_normal_(weight, nonlinearity="linear")  # gain 1: std = 1/sqrt(fan_in)
        elif scheme == "kaiming_normal":
            nn.init.kaiming_normal_(weight, a=negative_slope, nonlinearity=name)
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, a=negative_slope, nonlinearity=name)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(weight, gain=gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
