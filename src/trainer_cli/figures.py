"""PNG figures a person looks at instead of reading numbers: every run's `curves.png`, and
the diagnosis's plots (matplotlib, no display)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def _figure(**options: Any):
    """A matplotlib Figure drawn by Agg, without pyplot: no display, no global figure list to
    close, and not pyplot's import (a third of a tiny run's plotting cost)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def save(figure: Any, path: Path, **options: Any) -> Path:
    """Write a figure as a PNG beside `path`, then put it in place (`os.replace`): a link at
    `path` (a shared folder's `compare.png -> ~/.bashrc`) is replaced, never written through."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", **options)
    os.replace(temporary, path)
    return path


def smoothed(values: list[float], window: int) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with the start-up bias removed
    (each value divided by 1 - weight^n, as Adam does its moments), so the line starts at the
    first point instead of far from it; weight 1 - 2 / (window + 1), the EMA whose centre of
    mass matches a `window`-point mean (window 1: the raw points). Non-finite values are skipped
    (their epoch repeats the last smoothed value; NaN before the first finite one)."""
    weight = 1 - 2 / (window + 1)
    out, average, count = [], 0.0, 0
    for value in values:
        if math.isfinite(value):
            average, count = weight * average + (1 - weight) * value, count + 1
        out.append(average / (1 - weight**count) if count else math.nan)
    return out


def save_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """`curves.png`: train and val loss (left) and accuracy (right) against the epoch, raw
    points plus a smoothed line (TensorBoard's bias-corrected EMA, `smoothed`; its span a fifth
    of the epochs, odd, from 1 to 9), and the learning rate on a second axis."""
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    window = min(9, max(1, len(epochs) // 5) | 1)
    figure = _figure(figsize=(11, 4), dpi=100)
    loss_axis, acc_axis = figure.subplots(1, 2)
    for axis, quantity in ((loss_axis, "loss"), (acc_axis, "acc")):
        for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
            name = f"{split}/{quantity}"
            values = [float(row.get(name, math.nan)) for row in history]
            axis.scatter(epochs, values, s=12, alpha=0.4, color=colour)
            label = f"{name} (EMA, span {window})" if window > 1 else name
            axis.plot(epochs, smoothed(values, window), color=colour, label=label)
        axis.set(xlabel="epoch", ylabel=quantity, title="Loss" if quantity == "loss" else "Accuracy")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        axis.grid(alpha=0.3)
        axis.legend(loc="center right" if quantity == "loss" else "lower right", fontsize=8)
    if all("lr" in row for row in history):
        lr_axis = loss_axis.twinx()
        lr_axis.plot(epochs, [float(row["lr"]) for row in history], color="grey", linestyle="--", linewidth=1)
        lr_axis.set_ylabel("learning rate (dashed)", color="grey")
    # Fixed margins, room for the learning-rate axis between the panels: `tight_layout` measured
    # every label first, a third of the figure's time (this PNG is drawn for every sweep job).
    figure.subplots_adjust(left=0.08, right=0.985, bottom=0.12, top=0.92, wspace=0.45)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(figure, path)
    return path


def line_plot(
    path: Path,
    series: dict[str, tuple[list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    log_x: bool = False,
    log_y: bool = False,
    marks: dict[str, float] | None = None,
) -> Path:
    """One axis of named (x, y) series, non-finite points dropped; `marks` are vertical lines."""
    figure = _figure(figsize=(6, 4), dpi=100)
    axis = figure.subplots()
    for name, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y) and (y > 0 or not log_y)]
        if points:  # markers where the points are few: each is a run, not a sample of a curve
            axis.plot(*zip(*points, strict=True), label=name, marker="o" if len(points) < 20 else None)
    for name, x in (marks or {}).items():
        axis.axvline(x, linestyle="--", color="grey")
        axis.annotate(name, (x, 0.95), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right")
    if log_x:
        axis.set_xscale("log")
    if log_y:
        from matplotlib.ticker import ScalarFormatter

        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(ScalarFormatter())
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    if len(series) > 1:
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save(figure, path)
    return path


def first_layer_filters(model: Any, tile: int = 32) -> Any:
    """The lecture's "visualize the first layer": the first convolution's kernels as a grid,
    each scaled to [0, 1] on its own (RGB when it reads 3 channels, else one grey tile per
    input channel's mean), enlarged pixel for pixel to about `tile` pixels; None for a model
    without convolutions."""
    import torch

    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        return None
    import torchvision

    kernels = conv.weight.detach().float().cpu()
    if kernels.shape[1] != 3:
        kernels = kernels.mean(dim=1, keepdim=True)
    low = kernels.amin(dim=(1, 2, 3), keepdim=True)
    high = kernels.amax(dim=(1, 2, 3), keepdim=True)
    kernels = (kernels - low) / (high - low).clamp_min(1e-12)
    zoom = max(1, tile // kernels.shape[-1])
    kernels = kernels.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    return torchvision.utils.make_grid(kernels, nrow=8, padding=2, pad_value=1.0)


def save_first_layer(model: Any, path: Path) -> Any:
    """`first_layer.png` (see `first_layer_filters`); returns the grid, or None."""
    grid = first_layer_filters(model)
    if grid is not None:
        import torchvision  # only for a conv net: an MLP run never imports it

        path.parent.mkdir(parents=True, exist_ok=True)
        torchvision.utils.save_image(grid, str(path))
    return grid
