"""The model summary printed at the start of a run: layers, output shapes, parameter counts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Row:
    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    parameters: int


CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _layers(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """One row per layer or block: plain containers (Sequential, ModuleList) are opened,
    any other module with children (a residual block, a GaussPoincare activation) is one row."""
    rows = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, CONTAINERS):
            rows += _layers(child, f"{full}.")
        elif not isinstance(child, nn.Identity):
            rows.append((full, child))
    return rows


@torch.no_grad()
def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Row], dict[str, int]]:
    """Rows for the layers of `model` with their output shapes for one input of
    `input_shape` (C, H, W), and the totals: parameters, trainable, frozen.

    Runs one forward pass of two zero images in eval mode, so no running statistic moves.
    """
    layers = _layers(model)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in layers:

        def record(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(output.shape[1:])

        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        model(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    rows = [
        Row(name, type(module).__name__, shapes.get(name), sum(p.numel() for p in module.parameters()))
        for name, module in layers
    ]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return rows, {"parameters": trainable + frozen, "trainable": trainable, "frozen": frozen}


def summary_text(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The summary as a plain-text table (printed, and written to the run folder)."""
    rows, totals = summarize(model, input_shape)
    # `#` counts the rows; `module` is the layer's path in the model (the name that TensorBoard's
    # activations/gradients tags, the checkpoint's keys and `finetune.freeze` use), which skips
    # the numbers of the Identity placeholders (no norm, no dropout) the summary leaves out.
    header = ("#", "module", "type", "output shape", "parameters")
    lines = [
        (
            str(index),
            row.name,
            row.kind,
            "x".join(map(str, row.output_shape)) if row.output_shape else "-",
            f"{row.parameters:,}",
        )
        for index, row in enumerate(rows)
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]

    def format_line(cells) -> str:
        return "  ".join(
            str(c).rjust(w) if i in (0, 4) else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [f"input shape: {'x'.join(map(str, input_shape))}", format_line(header)]
    out.append("  ".join("-" * w for w in widths))
    out += [format_line(line) for line in lines]
    out.append(f"parameters: {totals['parameters']:,} (trainable {totals['trainable']:,}, frozen {totals['frozen']:,})")
    return "\n".join(out)
