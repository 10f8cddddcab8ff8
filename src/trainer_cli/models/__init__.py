"""Networks, built from config keys that equal their constructor arguments.

Every model takes `in_channels`, `image_size` and `num_classes` from the data config, and
the lecture's choices (activation, norm, init, dropout, dropconnect) as plain arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from trainer_cli import checks
from trainer_cli.models.blocks import activation as make_activation
from trainer_cli.models.blocks import linear, norm_1d, norm_2d, width_factor
from trainer_cli.models.init import initialize
from trainer_cli.models.resnet import ResNet
from trainer_cli.models.torchvision_models import torchvision_model

__all__ = ["MLP", "CNN", "ResNet", "FractionalMaxPool", "torchvision_model"]


def _check_dropout(dropout: float, dropconnect: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout: expected a value in [0, 1), got '{dropout}'")
    if not 0.0 <= dropconnect < 1.0:
        raise ValueError(f"model.dropconnect: expected a value in [0, 1), got '{dropconnect}'")


class MLP(nn.Sequential):
    """Flatten -> [Linear -> norm -> activation -> dropout] x depth -> Linear.

    With maxout each hidden Linear makes maxout_k times the units and the activation keeps
    the maximum of each group of k; with dropconnect the hidden Linear layers drop weights.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        width: int = 256,
        depth: int = 2,
        widths: Sequence[int] | None = None,
        activation: str = "relu",
        activation_slope: float = 0.01,
        activation_alpha: float = 1.0,
        maxout_k: int = 2,
        activation_gpn: bool = False,
        norm: str = "none",
        norm_groups: int = 8,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
        init: str = "default",
        init_std: float = 0.01,
    ) -> None:
        _check_dropout(dropout, dropconnect)
        if widths is None:
            checks.whole_number("width", width)
            checks.whole_number("depth", depth, minimum=0)  # depth 0: a linear classifier
        for size in widths or []:
            checks.whole_number("widths", size)
        sizes = list(widths) if widths is not None else [width] * depth
        factor = width_factor(activation, maxout_k)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_channels * image_size * image_size
        for size in sizes:
            layers += [
                linear(fan_in, size * factor, dropconnect),
                norm_1d(norm, size * factor, norm_groups),
                make_activation(activation, activation_slope, activation_alpha, maxout_k, activation_gpn),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = size
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)
        initialize(self, init, activation, init_std, activation_slope)


class FractionalMaxPool(nn.Module):
    """Fractional max pooling (Graham, 2014): 2x2 max pooling whose output is `ratio` times
    the input size (1/sqrt(2) in the paper), on pseudo-random pooling regions.

    The regions are random in training; evaluation uses one fixed draw (u = 0.5), so the
    validation and test metrics are deterministic.
    """

    def __init__(self, ratio: float = 0.7071) -> None:
        super().__init__()
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"model.pool_ratio: expected a value in (0, 1), got '{ratio}'")
        self.ratio = ratio

    def output_size(self, size: int) -> int:
        return max(1, int(size * self.ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        samples = None
        if not self.training:
            samples = torch.full((x.shape[0], x.shape[1], 2), 0.5, dtype=x.dtype, device=x.device)
        size = self.output_size(x.shape[-1])
        return F.fractional_max_pool2d(x, 2, output_size=size, _random_samples=samples)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"


class CNN(nn.Sequential):
    """VGG-style: stages of 3x3 convs (conv -> norm -> activation), pooling after each
    (`max`, `avg` 2x2, or `fractional` by `pool_ratio`), then global average pooling,
    dropout and a linear head (with DropConnect when `dropconnect` > 0)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        convs_per_stage: int = 2,
        pool: str = "max",
        pool_ratio: float = 0.7071,
        activation: str = "relu",
        activation_slope: float = 0.01,
        activation_alpha: float = 1.0,
        maxout_k: int = 2,
        activation_gpn: bool = False,
        norm: str = "batch",
        norm_groups: int = 8,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
        init: str = "default",
        init_std: float = 0.01,
    ) -> None:
        if pool not in ("max", "avg", "fractional"):
            raise ValueError(f"model.pool: '{pool}' is not accepted; choose one of max, avg, fractional")
        _check_dropout(dropout, dropconnect)
        for out_channels in channels:
            checks.whole_number("channels", out_channels)
        factor = width_factor(activation, maxout_k)
        layers: list[nn.Module] = []
        size = image_size
        for out_channels in channels:
            for _ in range(convs_per_stage):
                # No conv bias when a norm follows: the norm's shift makes it redundant.
                layers += [
                    nn.Conv2d(in_channels, out_channels * factor, 3, padding=1, bias=norm == "none"),
                    norm_2d(norm, out_channels * factor, norm_groups),
                    make_activation(activation, activation_slope, activation_alpha, maxout_k, activation_gpn),
                ]
                in_channels = out_channels
            if size >= 2:  # small inputs (digits are 8x8) stop pooling at 1x1
                if pool == "fractional":
                    fractional = FractionalMaxPool(pool_ratio)
                    layers.append(fractional)
                    size = fractional.output_size(size)
                else:
                    layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                    size //= 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(linear(in_channels, num_classes, dropconnect))
        super().__init__(*layers)
        initialize(self, init, activation, init_std, activation_slope)
