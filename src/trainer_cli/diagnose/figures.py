"""The diagnosis's PNG figures (matplotlib, no display)."""

from __future__ import annotations

import math
from pathlib import Path


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y) and (y > 0 or not log_y)]
        if points:
            axis.plot(*zip(*points, strict=True), label=name)
    for name, x in (marks or {}).items():
        axis.axvline(x, linestyle="--", color="grey")
        axis.annotate(name, (x, 0.95), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right")
    if log_x:
        axis.set_xscale("log")
    if log_y:
        axis.set_yscale("log")
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    if len(series) > 1:
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
