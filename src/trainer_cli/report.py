"""What the user sees and what the run folder keeps: the reporter owns every write.

`Reporter` shows the rich console (progress bar, tables) and fans every number out to its
sinks: the run folder's own record (`RunFiles`: metrics.csv, metrics.json; always there) and
the loggers `'logger=[...]'` selects (`TensorBoard` by default). A sink is a class with the
`Sink` methods it needs; a new logger is one such class and one YAML file in conf/logger/.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from trainer_cli import distributed, metrics
from trainer_cli.faults import Preempted

log = logging.getLogger("trainer_cli")

# Output that is not a terminal (a pipe, `nohup`, SLURM's file) has no width: rich would cut
# it at 80 columns. Lines there are as long as they need (up to this), tables too.
PLAIN_WIDTH = 240


def make_console() -> Console:
    """rich's console on a terminal; elsewhere one that never wraps at 80 columns."""
    probe = Console()
    if probe.is_terminal or "COLUMNS" in os.environ:
        return probe
    return Console(width=PLAIN_WIDTH, soft_wrap=True)


console = make_console()


class ConsoleFilter(logging.Filter):
    """Records logged with `extra={"console": False}` go to train.log only (the console
    already shows them: the progress bar's epoch, a printed table); inside `quiet_console`,
    so do all but warnings and errors."""

    quiet = False

    def filter(self, record: logging.LogRecord) -> bool:
        if ConsoleFilter.quiet and record.levelno < logging.WARNING:
            return False
        return getattr(record, "console", True)


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """Runs inside a procedure (a diagnosis's grid points) that keep their files and logs but
    leave the console to the procedure: warnings and errors still show."""
    was = console.quiet, ConsoleFilter.quiet
    console.quiet, ConsoleFilter.quiet = True, True
    try:
        yield
    finally:
        console.quiet, ConsoleFilter.quiet = was


def console_handler() -> logging.Handler:
    """The console's log handler (conf/hydra/job_logging/rich.yaml): rich's on a terminal;
    elsewhere plain timestamped lines on stdout, flushed one by one, never wrapped."""
    if console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    handler.addFilter(ConsoleFilter())
    return handler


def show(renderable: Any) -> None:
    """Print a table (or any rich renderable) on the console, and its text into train.log."""
    console.print(renderable)
    text = io.StringIO()
    Console(file=text, width=PLAIN_WIDTH, color_system=None).print(renderable)
    log.info("\n" + text.getvalue().rstrip(), extra={"console": False})


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# The per-epoch curves every sink records, so they line up across runs.
EPOCH_TAGS = tuple(metrics.epoch_metrics())


class Sink:
    """A destination for a run's numbers. Each method does nothing unless a sink needs it.

    Methods are called by the `Reporter` only: `log_scalars` (any step), `log_epoch` (the
    end of an epoch: its row and the whole history so far), `log_histogram`, `log_image`,
    `log_hparams` (the run's hyperparameters and final metrics), `log_summary` (the end of
    the run), then `end` (how the run ended: "ok", "stopped" or "failed") and `close`.
    """

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_epoch(self, step: int, row: dict[str, Any], history: list[dict[str, Any]]) -> None: ...

    def log_histogram(self, tag: str, values: Any, step: int) -> None: ...

    def log_image(self, tag: str, image: Any, step: int) -> None: ...

    def log_params(self, hparams: dict[str, Any]) -> None: ...  # at the start (a tracker that shows them early)

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None: ...

    def log_summary(self, summary: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def end(self, outcome: str) -> None: ...

    def close(self) -> None: ...


def outcome(error: BaseException | None) -> str:
    """How a run ended, for the sinks: "ok", "stopped" (a stop request or Ctrl-C: it can be
    resumed) or "failed"."""
    if error is None:
        return "ok"
    return "stopped" if isinstance(error, (Preempted, KeyboardInterrupt)) else "failed"


class RunFiles(Sink):
    """The run folder's record: `metrics.csv`, one row per epoch (rewritten whole, so a
    resumed run has no stale rows), and `metrics.json`, the summary at the end."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        self.run_dir = run_dir

    def log_epoch(self, step: int, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        write_history(self.run_dir, history)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")


class TensorBoard(Sink):
    """TensorBoard event files in `<run folder>/tensorboard`.

    `purge_step`: on resume, the first step that will be logged again; TensorBoard drops
    whatever a killed run had written from that step on, so no step is there twice.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """A step's scalars as one event: one summary with a value per tag (as TensorFlow's
        merged summaries), read by TensorBoard as the same curves as an event per tag, at
        about a tenth of the cost (each event is framed and checksummed in Python)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        if values:
            self.writer.file_writer.add_summary(Summary(value=values), step)

    def log_epoch(self, step: int, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        # No scalar of the epoch counter: it was TensorBoard's first card, a straight line that
        # says nothing (metrics.csv maps epochs to steps).
        self.log_scalars(step, {tag: row[tag] for tag in EPOCH_TAGS if tag in row})

    def log_histogram(self, tag: str, values: Any, step: int) -> None:
        self.writer.add_histogram(tag, values, step)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """Register the run in TensorBoard's HParams tab, in the run's own event file, so
        the hyperparameters sit beside the run's curves."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        scores = {f"hparam/{k}": v for k, v in final.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        # The session's start and end, not torch's per-run experiment: TensorBoard takes the first
        # experiment it finds for all runs, so a sweep's (swept keys first) must be the only one.
        for part in hparams_summary(clean, scores)[1:]:
            self.writer.file_writer.add_summary(part)
        for tag, value in scores.items():
            self.writer.add_scalar(tag, value, 0)
        self.writer.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Reporter:
    """The run's console and its sinks (see the module doc); a context manager that closes
    the sinks and stops the progress bar on the way out, also when the run fails."""

    def __init__(self, run_dir: Path, sinks: list[Sink] = (), epochs: int = 0, steps_per_epoch: int = 0) -> None:
        self.run_dir = run_dir
        self.sinks: list[Sink] = [RunFiles(run_dir), *sinks]
        if not distributed.is_main():  # several processes: rank 0 alone writes files and the console
            self.sinks, console.quiet = [], True
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.progress: Progress | None = None
        self.task = None
        self.epoch_start_step = 0
        self.history: list[dict[str, Any]] = []  # the epochs so far, for curves.png at the end
        # Not a terminal: no live bar (it would appear only at the end); a plain line per
        # epoch as it ends, and within long epochs a step line every `plain_step_seconds`.
        self.plain = not console.is_terminal
        self.plain_step_seconds = 60.0
        self.epoch = 0
        self.first_epoch: int | None = None
        self.started = self.last_line = time.monotonic()
        # The epoch's training-health readings, for its row (`epoch_health`): every
        # update/weight ratio logged in it, and the last probe's dead/saturated unit fractions.
        self.update_ratios: list[float] = []
        self.unit_fractions: dict[str, dict[str, float]] = {}

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, exc_type: Any, error: BaseException | None, traceback: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
        for sink in self.sinks:
            sink.end(outcome(error))
            sink.close()

    # Console ------------------------------------------------------------------------------
    def print(self, *renderables: Any) -> None:
        for renderable in renderables:
            show(renderable)

    def start_epoch(self, epoch: int, step: int) -> None:
        self.epoch, self.epoch_start_step = epoch, step
        if self.first_epoch is None:
            self.first_epoch, self.started = epoch, time.monotonic()
        if self.plain:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
            )
            self.progress.start()
        self.task = self.progress.add_task("", total=self.steps_per_epoch, epoch=epoch, epochs=self.epochs, stats="")

    def eta(self) -> float | None:
        """Seconds left in the run, from the mean time of the epochs this process has run."""
        if self.first_epoch is None or self.epoch < self.first_epoch:
            return None
        per_epoch = (time.monotonic() - self.started) / (self.epoch - self.first_epoch + 1)
        return per_epoch * max(0, self.epochs - self.epoch)

    # Numbers ------------------------------------------------------------------------------
    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """The training scalars of the last `log_every_n_steps` steps."""
        self.log_scalars(step, scalars)
        self.update_ratios += [value for tag, value in scalars.items() if tag.startswith("update_ratio/")]
        if self.plain and time.monotonic() - self.last_line >= self.plain_step_seconds:
            self.last_line = time.monotonic()
            log.info(
                f"epoch {self.epoch}/{self.epochs} step {step - self.epoch_start_step}/{self.steps_per_epoch}  "
                f"loss {scalars['train/loss_step']:.4f}  acc {scalars['train/acc_step']:.3f}  "
                f"lr {scalars['lr']:.2e}  {scalars['samples_per_s']:,.0f} samples/s"
            )
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=step - self.epoch_start_step,
                stats=(
                    f"loss {scalars['train/loss_step']:.4f}  acc {scalars['train/acc_step']:.3f}  "
                    f"lr {scalars['lr']:.2e}  {scalars['samples_per_s']:,.0f} samples/s"
                ),
            )

    def end_epoch(self, step: int, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.history = history
        for sink in self.sinks:
            sink.log_epoch(step, row, history)
        elapsed, left = time.monotonic() - self.started, self.eta()
        # The epoch's line: on the console when there is no bar, in train.log always.
        log.info(
            f"epoch {row['epoch']}/{self.epochs}  train loss {row['train/loss']:.4f} acc {row['train/acc']:.4f}  "
            f"val loss {row['val/loss']:.4f} acc {row['val/acc']:.4f}  lr {row['lr']:.2e}  "
            f"elapsed {duration(elapsed)}" + (f"  eta {duration(left)}" if left is not None else ""),
            extra={"console": self.plain},
        )
        self.last_line = time.monotonic()
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=self.steps_per_epoch,
                stats=(
                    f"loss {row['train/loss']:.4f}  acc {row['train/acc']:.3f}  "
                    f"val_loss {row['val/loss']:.4f}  val_acc {row['val/acc']:.3f}  lr {row['lr']:.2e}"
                ),
            )

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log_scalars(step, scalars)

    def log_params(self, hparams: dict[str, Any]) -> None:
        """The run's hyperparameters before its first step (a failed or stopped run has them too)."""
        for sink in self.sinks:
            sink.log_params(hparams)

    def log_activations(
        self, step: int, values: dict[str, Any], fractions: dict[str, dict[str, float]] | None = None
    ) -> None:
        """Each activation layer's mean and std (scalars) and its histogram; with `fractions`
        (`models.stats.unit_fractions`), each ReLU layer's `dead_fraction` and each tanh/sigmoid
        layer's `saturated_fraction`, kept for the epoch's row too."""
        for name, v in values.items():
            self.log_scalars(
                step, {f"activations/{name}/mean": float(v.mean()), f"activations/{name}/std": float(v.std())}
            )
            for sink in self.sinks:
                sink.log_histogram(f"activations/{name}", v, step)
        if fractions is not None:
            scalars = {
                f"activations/{name}/{kind}": x for kind, layers in fractions.items() for name, x in layers.items()
            }
            self.log_scalars(step, scalars)
            self.unit_fractions = fractions

    def log_gradients(self, step: int, named_parameters: Any) -> None:
        """A histogram of each parameter tensor's gradient (`gradients/<name>`), as the last
        optimizer step left it."""
        for name, parameter in named_parameters:
            if parameter.grad is not None:
                for sink in self.sinks:
                    sink.log_histogram(f"gradients/{name}", parameter.grad.detach().float(), step)

    def epoch_health(self) -> dict[str, Any]:
        """The epoch's training-health columns for its row (metrics.csv), read by the curves
        diagnosis: `update_ratio`, the median of the update/weight ratios logged in the epoch
        (every weight matrix, every log window), and with `trainer.log_activations` the worst
        layer's `dead_fraction` / `saturated_fraction` at the epoch's last probe, and its name."""
        health: dict[str, Any] = {}
        if self.update_ratios:
            ordered = sorted(self.update_ratios)
            health["update_ratio"] = ordered[len(ordered) // 2]
        for kind, layers in self.unit_fractions.items():
            if layers:
                layer = max(layers, key=layers.__getitem__)
                health.update({kind: layers[layer], kind.replace("fraction", "layer"): layer})
        self.update_ratios = []
        return health

    def log_image(self, tag: str, image: Any, step: int) -> None:
        for sink in self.sinks:
            sink.log_image(tag, image, step)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def finish(self, summary: dict[str, Any], hparams: dict[str, Any], final: dict[str, float]) -> None:
        """The end of a run: its hyperparameters beside its final metrics, the summary, and
        `curves.png` (loss, accuracy and LR against the epoch) when epochs were run."""
        for sink in self.sinks:
            sink.log_hparams(hparams, final)
            sink.log_summary(summary)
        # Rank 0 alone, as for every file: two ranks putting one temporary file in place race.
        if self.history and distributed.is_main():
            from trainer_cli.figures import save_curves

            save_curves(self.history, self.run_dir / "curves.png")


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """`metrics.csv`: one row per epoch."""
    if not history:
        return
    columns = list(dict.fromkeys(key for row in history for key in row))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def record_failure(
    run_dir: Path, error: BaseException, hparams: dict[str, Any], sinks: list[Sink] = (), status: str = "failed"
) -> None:
    """A failed sweep job: metrics.json says status failed and why, and the job's
    hyperparameters still reach the loggers (TensorBoard's HParams tab lists it, with no
    metrics), so every job of a sweep is there, the failed ones too. `status="preempted"`: a
    job stopped by a signal, its checkpoint written; the error says how to continue it."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    summary = {"status": status, "run_dir": str(run_dir), "error": f"{type(error).__name__}: {reason}"}
    with Reporter(run_dir, list(sinks)) as reporter:
        reporter.finish(summary, {**hparams, "status": status} if hparams else {}, {})


def print_results(summary: dict[str, Any]) -> None:
    """The results table printed at the end of a run."""
    # The folder goes on its own line after the table: in the title, rich wrapped a long path
    # at the table's width, and the printed path no longer existed as printed.
    table = Table(title="Results", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        # Both at the best epoch by `optimized_metric` (the checkpoint the test uses), so the
        # loss is not labelled "best": a later epoch may have had a lower one.
        ("best epoch", f"{summary['best_epoch']}"),
        ("val acc at best epoch", f"{summary['best/val/acc']:.4f}"),
        ("val loss at best epoch", f"{summary['best/val/loss']:.4f}"),
        ("test acc (best-on-val checkpoint)", f"{summary['test/acc']:.4f}"),
        ("test loss", f"{summary['test/loss']:.4f}"),
        *[
            (f"test acc ({name} weights)", f"{summary[metrics.key('test', 'acc', name)]:.4f}")
            for name in metrics.AVERAGED_WEIGHTS
            if metrics.key("test", "acc", name) in summary
        ],
        *([("test acc with TTA", f"{summary['test/acc_tta']:.4f}")] if "test/acc_tta" in summary else []),
        ("epochs run", f"{summary['epochs_run']}" + (" (early stop)" if summary.get("early_stopped") else "")),
        ("time", f"{summary['time_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    show(table)
    where = f"results: {Path(summary['run_dir']) / 'metrics.json'}"
    console.print(where, soft_wrap=True, highlight=False)  # soft_wrap: never a newline inside the path
    log.info(where, extra={"console": False})


def print_activation_table(stats: dict[str, tuple[float, float]]) -> None:
    """The per-layer activation mean and std, printed at the start of a run."""
    table = Table(title="Activations at step 0 (first validation batch)", show_header=True)
    for column in ("layer", "mean", "std"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, (mean, std) in stats.items():
        table.add_row(name, f"{mean:.4f}", f"{std:.4f}")
    show(table)


def per_class_table(summary: dict[str, Any]) -> Table:
    """`mode=evaluate`'s table: the test metrics and each class's accuracy."""
    # The checkpoint's path in a caption that rich may wrap would no longer be a path: it is
    # printed on its own line by the caller's log ("checkpoint: ..."); the title names the data.
    table = Table(title=f"Evaluation on {summary['data']}", show_header=True)
    table.add_column("class")
    table.add_column("test acc", justify="right")
    for name, acc in summary["test/per_class_acc"].items():
        table.add_row(name, f"{acc:.4f}")
    table.add_row(
        "all", f"{summary['test/acc']:.4f} (loss {summary['test/loss']:.4f}, {summary['test/num_samples']} images)"
    )
    return table
