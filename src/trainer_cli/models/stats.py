"""Activation statistics (`trainer.log_activations`): each activation layer's output mean,
std and values, as in the lecture's plots of a deep net's activations per layer."""

from __future__ import annotations

import torch
from torch import nn

from trainer_cli.models.blocks import GaussPoincare, Maxout

ACTIVATION_TYPES = (
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, Maxout, GaussPoincare,
)  # fmt: skip


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's activation modules in forward order (not those inside a GaussPoincare)."""
    layers, inside = [], set()
    for name, module in model.named_modules():
        if isinstance(module, GaussPoincare):
            inside.add(f"{name}.activation")
        if isinstance(module, ACTIVATION_TYPES) and name not in inside:
            layers.append((name, module))
    return layers


@torch.no_grad()
def activation_values(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each activation layer's output for `images` (flattened), from a forward pass in the
    model's current mode (training: batch norm uses this batch's statistics, as training
    sees it). Side-effect free: running statistics are restored and the random number
    generators forked, so a run logs the same numbers with or without this.
    A module called twice in one forward is named with its call index."""
    values: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in activation_layers(model):

        def record(_module, _inputs, output, name=name):
            key = name if name not in values else f"{name}#{sum(k.startswith(name) for k in values)}"
            values[key] = output.detach().float().flatten().clone()  # in-place ops later must not change it

        hooks.append(module.register_forward_hook(record))
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return values


def activation_stats(values: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Per layer (mean, std) of the activation values."""
    return {name: (float(v.mean()), float(v.std())) for name, v in values.items()}


# A tanh or sigmoid output this close to its bounds passes back less than 2% of the gradient
# (tanh' = 1 - y^2 < 0.02 for |y| > 0.99; sigmoid' = y(1 - y) < 0.0099 for y outside [0.01, 0.99]).
SATURATION_MARGIN = 0.01


@torch.no_grad()
def unit_fractions(model: nn.Module, values: dict[str, torch.Tensor], batch_size: int) -> dict[str, dict[str, float]]:
    """The lecture's two ways a layer stops learning, on the probe batch `values` came from:
    `dead_fraction` per ReLU layer, the share of its units (every output element is a unit)
    that output 0 for every image of the batch (no gradient flows through them), and
    `saturated_fraction` per tanh/sigmoid layer, the share of its outputs within
    `SATURATION_MARGIN` of the bounds (their local gradient is nearly 0)."""
    modules = dict(model.named_modules())
    fractions: dict[str, dict[str, float]] = {"dead_fraction": {}, "saturated_fraction": {}}
    for name, value in values.items():
        module = modules.get(name.split("#")[0])
        if isinstance(module, nn.ReLU):
            active = (value.view(batch_size, -1) > 0).any(dim=0)
            fractions["dead_fraction"][name] = 1.0 - float(active.float().mean())
        elif isinstance(module, nn.Tanh):
            fractions["saturated_fraction"][name] = float((value.abs() > 1 - SATURATION_MARGIN).float().mean())
        elif isinstance(module, nn.Sigmoid):
            saturated = (value < SATURATION_MARGIN) | (value > 1 - SATURATION_MARGIN)
            fractions["saturated_fraction"][name] = float(saturated.float().mean())
    return fractions
