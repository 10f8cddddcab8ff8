"""Metric names and which way each is better: the one place that knows.

A metric is named `<split>/<quantity>` (`train/loss`, `val/acc`), or, for averaged weights,
`<split>/<weights>_<quantity>` (`val/ema_acc`, `test/swa_loss`). Losses are minimized,
everything else (accuracies) maximized. Imports no torch.
"""

from __future__ import annotations

import math
from typing import Any

SPLITS = ("train", "val", "test")
QUANTITIES = ("loss", "acc")
AVERAGED_WEIGHTS = ("ema", "swa")  # weights a run may evaluate beside its own


def key(split: str, quantity: str, weights: str | None = None) -> str:
    """`key("val", "acc")` is `val/acc`; `key("test", "acc", "ema")` is `test/ema_acc`."""
    return f"{split}/{weights}_{quantity}" if weights else f"{split}/{quantity}"


def best(metric: str) -> str:
    """The summary key of a metric's best value over the epochs: `best/val/acc`."""
    return f"best/{metric}"


def epoch_metrics() -> list[str]:
    """Every per-epoch metric a run can record (what early stopping and plateau may monitor)."""
    names = [key(split, q) for split in ("train", "val") for q in QUANTITIES]
    return names + [key("val", q, w) for w in ("ema",) for q in QUANTITIES]


def minimized(metric: str) -> bool:
    """Losses go down when the model gets better; accuracies go up."""
    return metric.endswith("loss")


def direction(metric: str) -> str:
    """`min` or `max`, for schedulers and early stopping."""
    return "min" if minimized(metric) else "max"


def improved(value: float, best_so_far: float | None, metric: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best_so_far` by more than `min_delta` (any value beats none)."""
    if best_so_far is None:
        return True
    gain = best_so_far - value if minimized(metric) else value - best_so_far
    return gain > min_delta


def sort_key(value: float | None, metric: str) -> float:
    """Sorts the best first; missing and non-finite values last."""
    if value is None or not math.isfinite(value):
        return math.inf
    return value if minimized(metric) else -value


def objective(summary: dict[str, Any], metric: str) -> float:
    """What `main()` returns to a sweeper: the best value of `metric`, or, for procedures
    that train nothing (ensembles), the test accuracy."""
    value = summary.get(best(metric), summary.get(key("test", "acc")))
    return float("nan") if value is None else float(value)
