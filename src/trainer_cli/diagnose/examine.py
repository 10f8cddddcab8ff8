"""Train a configured run and gather the evidence the rules read: its per-epoch history
(`metrics.csv`), and the `signals` readings on a fixed probe batch at the start (a fresh
build, seeded as the run is) and at the end (the run's last checkpoint restored)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer_cli.diagnose import signals

Evidence = dict[str, Any]


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """The run's per-epoch rows as numbers (empty when it wrote none)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]


def probe(cfg: DictConfig, checkpoint_path: Path | None = None) -> dict[str, float]:
    """The signals on a fresh build of `cfg` (its initial weights), or with the weights of
    `checkpoint_path` restored."""
    from trainer_cli import checkpoint
    from trainer_cli.diagnose.context import fresh

    pieces = fresh(cfg)
    if checkpoint_path is not None:
        checkpoint.restore(pieces.stateful(), checkpoint.load(checkpoint_path))
    images, labels = signals.probe_batch(pieces.data, pieces.device)
    return signals.read(pieces.model, images, labels, pieces.penalties)


def relative_fall(before: float, after: float) -> float:
    """(before - after) / before; 0 when it is not a positive finite number."""
    return (before - after) / before if math.isfinite(before) and math.isfinite(after) and before > 0 else 0.0


def history_features(history: list[dict[str, float]], num_classes: int) -> Evidence:
    """The curves' numbers the rules compare (first, last, best; the last epochs' slope)."""
    if not history:
        return {"epochs": 0}
    train_loss = [r.get("train/loss", math.nan) for r in history]
    val_loss = [r.get("val/loss", math.nan) for r in history]
    train_acc = [r.get("train/acc", 0.0) for r in history]
    val_acc = [r.get("val/acc", 0.0) for r in history]
    finite = [x for x in train_loss if math.isfinite(x)]
    tail = min(len(history), max(2, len(history) // 4))  # a run stopped after one epoch has one row
    ratios = sorted(r["update_ratio"] for r in history if "update_ratio" in r)
    return {
        "epochs": len(history),
        "chance loss": math.log(num_classes),
        "train loss first": train_loss[0],
        "train loss last": train_loss[-1],
        "train loss best": min(finite) if finite else math.nan,
        "val loss last": val_loss[-1],
        "val loss best": min((x for x in val_loss if math.isfinite(x)), default=math.nan),
        "train acc last": train_acc[-1],
        "train acc best": max(train_acc),
        "val acc last": val_acc[-1],
        "val acc best": max(val_acc),
        # relative fall of the validation loss over the last quarter of the epochs
        "val loss tail fall": relative_fall(val_loss[-tail], val_loss[-1]),
        "train loss tail fall": relative_fall(train_loss[-tail], train_loss[-1]),
        "update ratio": ratios[len(ratios) // 2] if ratios else math.nan,
    }


def examine(cfg: DictConfig, run_dir: Path) -> Evidence:
    """Train `cfg` in `run_dir` (a run that stops on a NaN loss is evidence too) and return
    every number the rules read: the history's features, `start:` and `end:` signals."""
    from trainer_cli.loop import NonFiniteLoss
    from trainer_cli.train import run

    evidence: Evidence = {"diverged": False}
    try:
        run(cfg, run_dir)
    except NonFiniteLoss:
        evidence["diverged"] = True
    record = run_dir / "resolved_config.yaml"  # the run record: the class count the build found
    num_classes = OmegaConf.load(record).data.num_classes if record.is_file() else cfg.data.num_classes
    evidence.update(history_features(read_history(run_dir), int(num_classes)))
    evidence.update({f"start {k}": v for k, v in probe(cfg).items()})
    from trainer_cli.run_folder import last_checkpoint

    last = last_checkpoint(run_dir)
    if last.is_file():
        evidence.update({f"end {k}": v for k, v in probe(cfg, last).items()})
    return evidence
