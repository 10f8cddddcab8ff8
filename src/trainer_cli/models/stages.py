"""A model as a list of blocks, input first and head last: what transfer learning freezes,
probes and gives per-layer learning rates, for any model (MLP, CNN, ResNet, torchvision)."""

from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)


def _has_weight_layer(module: nn.Module) -> bool:
    return any(isinstance(m, WEIGHT_LAYERS) for m in module.modules())


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's children in order; a container of containers (ResNet's `stages`) is
    opened one level, so each stage is a unit. A Sequential model is its own children."""
    units = []
    for name, child in model.named_children():
        children = list(child.named_children())
        if isinstance(child, nn.Sequential) and children and all(isinstance(c, nn.Sequential) for _, c in children):
            units += [(f"{name}.{sub}", grandchild) for sub, grandchild in children]
        else:
            units.append((name, child))
    return units


def blocks_of(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The model's blocks in forward order, the head (the last weight layer's block) last.

    A block starts at each unit (child, or stage of a container of stages) that holds a
    Linear or Conv2d; units without one (norms, activations, pooling, flatten, dropout) join
    the block before them (or the first block). So an MLP is [Linear, norm, activation]
    blocks, a CNN one block per conv (the pooling with the conv before it), a ResNet
    stem, stage 0, 1, 2 (a pre-activation net's final norm with the last stage), and a
    torchvision ResNet conv1 (with bn1, relu, maxpool), layer1..layer4. Names are
    `block<i>` for Sequential models and the module names otherwise; the last is `head`.
    """
    sequential = isinstance(model, nn.Sequential)
    blocks: list[tuple[str, list[nn.Module]]] = []
    leading: list[nn.Module] = []
    for name, unit in _units(model):
        if _has_weight_layer(unit):
            blocks.append((f"block{len(blocks)}" if sequential else name, [*leading, unit]))
            leading = []
        elif blocks:
            blocks[-1][1].append(unit)
        else:
            leading.append(unit)
    if len(blocks) < 2:
        raise ValueError(f"{type(model).__name__}: needs at least one block before its head to be split into blocks")
    blocks[-1] = ("head", blocks[-1][1])
    return [(name, nn.ModuleList(modules)) for name, modules in blocks]
