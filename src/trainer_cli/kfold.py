"""k-fold cross-validation (`train data.kfold=5`, i.e. `mode=kfold`): k runs, each validated on
one held-out fold.

Each fold is an ordinary run in `<run folder>/fold_<i>` (its own checkpoints, metrics and
TensorBoard curves, so `tensorboard --logdir <run folder>` shows the folds side by side). The
run folder's metrics.json holds the mean and the standard deviation over the folds, and the
mean is what `main()` returns to a sweeper.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.table import Table

from trainer_cli import checks, metrics
from trainer_cli.config import UserError, derive, resolved
from trainer_cli.train import run

log = logging.getLogger("trainer_cli")


def run_folds(
    cfg: DictConfig, run_dir: Path, hparams: dict[str, Any] | None = None, user_keys: set[str] | None = None
) -> dict[str, Any]:
    """Train one model per fold; return the mean (and std) of each fold's summary metrics."""
    from trainer_cli import build
    from trainer_cli.report import Reporter

    cfg = resolved(cfg)
    k = cfg.data.kfold
    checks.whole_number("data.kfold", k, minimum=2, error=UserError)  # null (one validation split) is no k-fold run
    if cfg.get("resume"):
        raise UserError("resume: a k-fold run cannot be resumed; resume one of its fold_<i> folders instead")
    started = time.perf_counter()
    metric = str(cfg.optimized_metric)
    folds = []
    for fold in range(k):
        log.info(f"fold {fold + 1}/{k}")
        fold_hparams = {**(hparams or {}), "kfold": k, "fold": fold}
        folds.append(run(fold_config(cfg, fold), run_dir / f"fold_{fold}", fold_hparams))

    summary: dict[str, Any] = {"status": "ok", "run_dir": str(run_dir), "kfold": k}
    for key in dict.fromkeys([metrics.best(metric), "best/val/acc", "best/val/loss", "test/acc", "test/loss"]):
        values = [f[key] for f in folds]
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values)  # sample std over the k folds
        summary[f"{key}_folds"] = values
    summary["epochs_run"] = max(f["epochs_run"] for f in folds)
    summary["time_s"] = round(time.perf_counter() - started, 3)
    with Reporter(run_dir, build.loggers(cfg, run_dir)) as reporter:
        final = {key: summary[key] for key in ("best/val/acc", "best/val/loss", "test/acc", "test/loss")}
        reporter.finish(summary, {**(hparams or {}), "kfold": k}, final)
        reporter.print(folds_table(summary, metric))
    return summary


def fold_config(cfg: DictConfig, fold: int) -> DictConfig:
    """One fold's run config: `cfg` with `data.fold` held out, a new config (`cfg` is read-only)."""

    def hold_out(config: DictConfig) -> None:
        config.data.fold = fold

    return derive(cfg, hold_out)


def folds_table(summary: dict[str, Any], metric: str) -> Table:
    """The per-fold table and the mean ± std line."""
    best = metrics.best(metric)
    table = Table(title=f"{summary['kfold']}-fold cross-validation ({summary['run_dir']})")
    for column in ("fold", f"best {metric}", "test acc"):
        table.add_column(column, justify="right")
    for fold, (value, test) in enumerate(zip(summary[f"{best}_folds"], summary["test/acc_folds"], strict=True)):
        table.add_row(str(fold), f"{value:.4f}", f"{test:.4f}")
    table.add_row(
        "mean ± std",
        f"{summary[best]:.4f} ± {summary[f'{best}_std']:.4f}",
        f"{summary['test/acc']:.4f} ± {summary['test/acc_std']:.4f}",
    )
    return table
