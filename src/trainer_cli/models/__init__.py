"""Networks, built from config keys that equal their constructor arguments."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from trainer_cli.models.blocks import activation as make_activation
from trainer_cli.models.blocks import norm_1d, norm_2d

__all__ = ["MLP", "CNN"]


class MLP(nn.Sequential):
    """Flatten -> [Linear -> norm -> activation -> dropout] x depth -> Linear."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        width: int = 256,
        depth: int = 2,
        widths: Sequence[int] | None = None,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        sizes = list(widths) if widths is not None else [width] * depth
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_channels * image_size * image_size
        for size in sizes:
            layers += [nn.Linear(fan_in, size), norm_1d(norm, size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = size
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """VGG-style: stages of 3x3 convs (conv -> norm -> activation), 2x2 pooling after each,
    then global average pooling, dropout and a linear head."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        convs_per_stage: int = 2,
        pool: str = "max",
        activation: str = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        if pool not in ("max", "avg"):
            raise ValueError(f"model.pool: '{pool}' is not accepted; choose max or avg")
        layers: list[nn.Module] = []
        size = image_size
        for out_channels in channels:
            for _ in range(convs_per_stage):
                # No conv bias when a norm follows: the norm's shift makes it redundant.
                layers += [
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm == "none"),
                    norm_2d(norm, out_channels),
                    make_activation(activation),
                ]
                in_channels = out_channels
            if size >= 2:  # small inputs (digits are 8x8) stop pooling at 1x1
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                size //= 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_channels, num_classes))
        super().__init__(*layers)
