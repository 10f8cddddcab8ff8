"""CIFAR-style ResNet (He et al., 2016): three stages of basic blocks, optional
pre-activation blocks, and stochastic depth (Huang et al., 2016)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from trainer_cli.models.blocks import activation as make_activation
from trainer_cli.models.blocks import linear, norm_2d
from trainer_cli.models.init import initialize


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (identity, or a 1x1 conv when the shape changes).

    Post-activation (the original): act(shortcut(x) + norm(conv(act(norm(conv(x)))))).
    Pre-activation (He et al., "Identity mappings"): x' = act(norm(x)),
    shortcut(x or x') + conv(act(norm(conv(x')))).

    Stochastic depth: in training the residual branch is skipped for the whole batch with
    probability `drop_prob`, so the block is its shortcut (the identity when the shape is
    kept); in evaluation every branch runs, multiplied by its survival probability
    1 - drop_prob, as the paper says.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        make_act: Callable[[], nn.Module],
        norm: str = "batch",
        norm_groups: int = 8,
        preact: bool = False,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        bias = norm == "none"
        self.preact, self.drop_prob = preact, drop_prob
        self.norm1 = norm_2d(norm, in_channels if preact else out_channels, norm_groups)
        self.act1 = make_act()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=bias)
        self.norm2 = norm_2d(norm, out_channels, norm_groups)
        self.act2 = make_act()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias)]
            if not preact:
                layers.append(norm_2d(norm, out_channels, norm_groups))
            self.shortcut = nn.Sequential(*layers)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F(x) (for pre-activation, x is already act(norm(input)))."""
        if self.preact:
            return self.conv2(self.act2(self.norm2(self.conv1(x))))
        return self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            activated = self.act1(self.norm1(x))
            shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(activated)
            inner = activated
        else:
            shortcut, inner = self.shortcut(x), x
        if self.training and self.drop_prob > 0 and float(torch.rand(())) < self.drop_prob:
            out = shortcut  # dropped: the block is its shortcut
        elif not self.training and self.drop_prob > 0:
            out = shortcut + (1 - self.drop_prob) * self.branch(inner)
        else:
            out = shortcut + self.branch(inner)
        return out if self.preact else self.act2(out)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}" if self.drop_prob else ""


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem, stages of basic blocks (the first block of each
    later stage halves the size and the next stage's channels), global average pooling
    and a linear head.

    Args:
        depth: 6n+2 (20, 32, 56, 110): three stages of n blocks; ignored when `stages` is set.
        stages: blocks per stage, e.g. [2, 2, 2]; `channels` gives each stage's width.
        preact: pre-activation blocks.
        drop_path: stochastic depth; block l of L is dropped with probability
            drop_path * l / L (the paper's linear decay, reaching drop_path at the last block).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        depth: int = 20,
        stages: Sequence[int] | None = None,
        channels: Sequence[int] = (16, 32, 64),
        preact: bool = False,
        drop_path: float = 0.0,
        activation: str = "relu",
        activation_slope: float = 0.01,
        activation_alpha: float = 1.0,
        activation_gpn: bool = False,
        norm: str = "batch",
        norm_groups: int = 8,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
        init: str = "kaiming_normal",
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if activation == "maxout":
            raise ValueError("model.activation: maxout is not available for resnet (the residual sum fixes the width)")
        if stages is None:
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
                raise ValueError(f"model.depth: expected 6n+2 (20, 32, 56, 110), got '{depth}'")
            stages = [(depth - 2) // 6] * 3
        stages = list(stages)
        channels = list(channels)
        if len(channels) != len(stages):
            raise ValueError(f"model.channels: one width per stage expected ({len(stages)}), got {channels}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"model.drop_path: expected a value in [0, 1), got '{drop_path}'")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout: expected a value in [0, 1), got '{dropout}'")

        def make_act() -> nn.Module:
            return make_activation(activation, activation_slope, activation_alpha, gpn=activation_gpn)

        bias = norm == "none"
        stem: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=bias)]
        if not preact:  # pre-activation blocks normalize their own input
            stem += [norm_2d(norm, channels[0], norm_groups), make_act()]
        self.stem = nn.Sequential(*stem)
        total, index = sum(stages), 0
        blocks_in, stage_modules = channels[0], []
        for stage, (count, width) in enumerate(zip(stages, channels, strict=True)):
            blocks = []
            for i in range(count):
                index += 1
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    BasicBlock(blocks_in, width, stride, make_act, norm, norm_groups, preact, drop_path * index / total)
                )
                blocks_in = width
            stage_modules.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_modules)
        # Pre-activation nets end with the norm and activation the last block left out.
        self.final = nn.Sequential(norm_2d(norm, blocks_in, norm_groups), make_act()) if preact else nn.Identity()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = linear(blocks_in, num_classes, dropconnect)
        initialize(self, init, activation, init_std, activation_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.final(self.stages(self.stem(x))))))
