"""The sweep report: one table of every job of a multirun, also written as summary.csv.

Runs as a Hydra callback at the end of every multirun, and imports no torch.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table


def collect(sweep_dir: Path, metric: str) -> list[dict[str, Any]]:
    """One row per job folder under `sweep_dir`, best first by `metric`."""
    rows = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        overrides = " ".join(OmegaConf.load(overrides_file))
        metrics_file = job_dir / "metrics.json"
        row: dict[str, Any] = {"job": job_dir.name, "overrides": overrides}
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            row.update(
                status=metrics.get("status", "ok"),
                best_val=metrics.get(f"best/{metric}"),
                test_acc=metrics.get("test/acc"),
                epochs=metrics.get("epochs_run"),
                time_s=metrics.get("time_s"),
            )
        else:
            row.update(status="failed", best_val=None, test_acc=None, epochs=None, time_s=None)
        rows.append(row)
    minimize = metric.endswith("loss")

    def key(row: dict[str, Any]) -> float:
        value = row["best_val"]
        if value is None or not math.isfinite(value):
            return math.inf
        return value if minimize else -value

    return sorted(rows, key=key)


def report(sweep_dir: Path, metric: str = "val/acc", console: Console | None = None) -> list[dict[str, Any]]:
    """Print the sweep's table and write `summary.csv` in the sweep folder."""
    rows = collect(sweep_dir, metric)
    columns = ["job", "overrides", "best_val", "test_acc", "epochs", "time_s", "status"]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    table = Table(title=f"Sweep {sweep_dir} (sorted by best {metric})")
    for column in columns:
        table.add_column(f"best {metric}" if column == "best_val" else column.replace("_", " "))

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    def fmt_row(row: dict[str, Any]) -> list[str]:
        cells = [fmt(row[c]) for c in columns]
        if row["time_s"] is not None:
            cells[columns.index("time_s")] = f"{row['time_s']:.1f}"
        return cells

    for row in rows:
        table.add_row(*fmt_row(row))
    (console or Console()).print(table)
    return rows


class SweepSummary(Callback):
    """Hydra callback: the sweep report at the end of each multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            report(sweep_dir, str(config.get("optimized_metric", "val/acc")))
