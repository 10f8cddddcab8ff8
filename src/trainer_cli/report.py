"""What the user sees: TensorBoard event files, the rich progress bar and result tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

console = Console()

# Every scalar tag the run writes, by group, so the curves line up across runs.
AVERAGES = ("ema", "swa")  # averaged weights a run may report beside its own
EPOCH_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/ema_loss", "val/ema_acc")


class Reporter:
    """Writes scalars to TensorBoard and shows a progress bar with live metrics.

    `purge_step`: on resume, the first step that will be logged again; TensorBoard drops
    whatever a killed run had written from that step on, so no step is there twice.
    """

    def __init__(self, run_dir: Path, epochs: int, steps_per_epoch: int, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = None
        self.last_step = 0

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
        self.writer.close()

    def start_epoch(self, epoch: int, step: int) -> None:
        self.task = self.progress.add_task("", total=self.steps_per_epoch, epoch=epoch, epochs=self.epochs, stats="")
        self.epoch_start_step = step

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.progress.update(
            self.task,
            completed=step - self.epoch_start_step,
            stats=(
                f"loss {scalars['train/loss_step']:.4f}  acc {scalars['train/acc_step']:.3f}  "
                f"lr {scalars['lr']:.2e}  {scalars['samples_per_s']:,.0f} samples/s"
            ),
        )

    def end_epoch(self, step: int, metrics: dict[str, float]) -> None:
        for tag in EPOCH_TAGS:
            if tag in metrics:
                self.writer.add_scalar(tag, metrics[tag], step)
        self.writer.add_scalar("epoch", metrics["epoch"], step)
        self.progress.update(
            self.task,
            completed=self.steps_per_epoch,
            stats=(
                f"loss {metrics['train/loss']:.4f}  acc {metrics['train/acc']:.3f}  "
                f"val_loss {metrics['val/loss']:.4f}  val_acc {metrics['val/acc']:.3f}  lr {metrics['lr']:.2e}"
            ),
        )

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_activations(self, step: int, values: dict[str, Any]) -> None:
        """Each activation layer's mean and std (scalars) and its histogram."""
        for name, v in values.items():
            self.writer.add_scalar(f"activations/{name}/mean", float(v.mean()), step)
            self.writer.add_scalar(f"activations/{name}/std", float(v.std()), step)
            self.writer.add_histogram(f"activations/{name}", v, step)

    def flush(self) -> None:
        self.writer.flush()

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Register this run in TensorBoard's HParams tab, in the run's own event file,
        so the hyperparameters sit beside the run's curves."""
        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        final = {f"hparam/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        experiment, session_start, session_end = hparams_summary(clean, final)
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        self.writer.file_writer.add_summary(session_end)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, 0)
        self.writer.flush()


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_metrics(run_dir: Path, history: list[dict[str, float]], summary: dict[str, Any] | None = None) -> None:
    """Per-epoch `metrics.csv` (rewritten whole, so a resumed run has no stale rows) and,
    at the end, `metrics.json`."""
    if history:
        columns = list(history[0].keys())
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
    if summary is not None:
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")


def print_results(summary: dict[str, Any]) -> None:
    """The results table printed at the end of a run."""
    table = Table(title=f"Results ({summary['run_dir']})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("best val acc", f"{summary['best/val/acc']:.4f} (epoch {summary['best_epoch']})"),
        ("best val loss", f"{summary['best/val/loss']:.4f}"),
        ("test acc (best-on-val checkpoint)", f"{summary['test/acc']:.4f}"),
        ("test loss", f"{summary['test/loss']:.4f}"),
        *[
            (f"test acc ({name} weights)", f"{summary[f'test/{name}_acc']:.4f}")
            for name in AVERAGES
            if f"test/{name}_acc" in summary
        ],
        *([("test acc with TTA", f"{summary['test/acc_tta']:.4f}")] if "test/acc_tta" in summary else []),
        ("epochs run", f"{summary['epochs_run']}" + (" (early stop)" if summary.get("early_stopped") else "")),
        ("time", f"{summary['time_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def print_activation_table(stats: dict[str, tuple[float, float]]) -> None:
    """The per-layer activation mean and std, printed at the start of a run."""
    table = Table(title="Activations at step 0 (first validation batch)", show_header=True)
    for column in ("layer", "mean", "std"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, (mean, std) in stats.items():
        table.add_row(name, f"{mean:.4f}", f"{std:.4f}")
    console.print(table)
