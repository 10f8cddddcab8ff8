"""One training run, as a short script of named steps.

`run(cfg, run_dir) -> summary`: build the pieces, restore them when resuming, the epoch loop,
the final evaluation, the summary. Each step is a function that other procedures (k-fold,
ensembles, diagnosis, evaluation of a checkpoint) call instead of copying it. The command
line is a layer above (cli.py); nothing here knows of argv or Hydra.

Torch is imported inside the functions, after the config has been checked, so config
mistakes are reported before it loads.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from trainer_cli import faults, metrics, run_folder, trust
from trainer_cli.config import UserError, derive, resolved

if TYPE_CHECKING:
    from trainer_cli.build import Pieces
    from trainer_cli.report import Reporter

log = logging.getLogger("trainer_cli")


def run(
    cfg: DictConfig, run_dir: Path, hparams: dict[str, Any] | None = None, user_keys: set[str] | None = None
) -> dict[str, Any]:
    """Train, validate every epoch, test the best-on-validation checkpoint once.

    Returns the run's summary metrics (never the model). With `cfg.resume` set to a run
    folder, continues that run from its last checkpoint, in that folder. `cfg` is read, never
    written (a config composed in Python is resolved here; the command line's already is).
    `user_keys` (the mode contract's): the resolved config already holds what they decide.
    """
    started = time.perf_counter()
    cfg, run_dir, resumed = resume_point(resolved(cfg), run_dir)
    from trainer_cli import distributed
    from trainer_cli.search import trial_pruning

    # One writer per run folder (rank 0 for several processes), held until run returns.
    lock = faults.lock_run_folder(run_dir) if distributed.is_main() else None
    if distributed.is_main():
        faults.remove_orphans(run_dir)
    if resumed is not None and (done := finished(cfg, run_dir, resumed)) is not None:
        return done
    from trainer_cli import build, callbacks, checkpoint, transfer
    from trainer_cli.report import Reporter, print_results

    build.check_loggers(cfg)  # a missing optional package: before anything is built or written
    seed_everything(int(cfg.seed), bool(cfg.trainer.deterministic))
    pieces = build.pieces(cfg, init_weights=resumed is None)
    if resumed is not None:
        checkpoint.restore(pieces.stateful(), resumed)
    elif distributed.is_main():
        write_run_record(pieces, run_dir)
    state, metric, stopping = pieces.loop, str(cfg.optimized_metric), pieces.early_stopping
    sinks = build.loggers(cfg, run_dir, purge_step=state.step + 1 if resumed is not None else None)
    run_hparams = {"lr": cfg.optimizer.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed}
    with Reporter(run_dir, sinks, planned_epochs(pieces), pieces.steps_per_epoch) as reporter:
        reporter.log_params({**run_hparams, **(hparams or {})})  # a failed or stopped run carries them too
        announce(pieces, run_dir)
        stop = distributed.StopVote()  # several processes stop at the same step
        pruning = trial_pruning(metric) if distributed.world_size() == 1 else None  # a sweep job with a pruner
        listed = [*build.callbacks(cfg), *([pruning] if pruning is not None else [])]
        hooks = callbacks.Hooks(listed, callbacks.Run(pieces, reporter, run_dir, stop))
        hooks.train_start()
        if resumed is None:
            check_initial_loss(pieces, reporter)
        early_stopped = False
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if steps_left(pieces) == 0:
                break
            reporter.start_epoch(epoch, state.step)
            pieces.finetune.start_epoch(pieces.model, epoch)  # gradual unfreezing: what trains this epoch
            train_metrics, state.step = pieces.train_epoch(
                pieces.step_parts,
                pieces.data.train,
                step=state.step,
                on_log=hooks.log_step,
                on_step=hooks.step_end,
                totals=state.partial if distributed.is_main() else None,
            )
            row = end_of_epoch(pieces, epoch, train_metrics, started)
            row.update(reporter.epoch_health())  # update/weight ratio, dead/saturated units: for the curves rules
            hooks.epoch_end(epoch, row)
            improved, early_stopped = state.end_epoch(row, metric, stopping)
            reporter.end_epoch(state.step, row, state.history)
            reporter.flush()  # curves first, then checkpoints: a resume never lacks a step before its checkpoint
            save_checkpoints(pieces, run_dir, best=improved)
            if stop.now(faults.stop_requested()):
                raise faults.preempted(run_dir, state.epoch, state.step, writer=distributed.is_main())
            if early_stopped:
                log.info(f"early stopping: {stopping.monitor} did not improve for {stopping.patience} epochs")
                break
            if pruning is not None and pruning.stop_training:  # the sweep's pruner stopped this trial (not a failure)
                break
        summary = summarize(pieces, run_dir, final_evaluation(pieces, run_dir), started, early_stopped)
        if pruning is not None and pruning.stop_training:
            summary["status"] = "pruned"
        if distributed.is_main():
            transfer.merge_saved_models(pieces.finetune, pieces.model, run_dir)  # LoRA: saved as a plain model
        hooks.end(summary)
        reporter.log_scalars(state.step, {k: v for k, v in summary.items() if k.startswith(("test/", "val/"))})
        final = {k: summary[k] for k in ("best/val/acc", "best/val/loss", "test/acc", "test/loss")}
        reporter.finish(summary, {**run_hparams, **(hparams or {})}, final)
    print_results(summary)
    if lock is not None:
        (run_dir / faults.PREEMPTED_MARK).unlink(missing_ok=True)  # the run is whole: nothing to continue
        lock.close()
    return summary


def resume_point(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, Path, dict[str, Any] | None]:
    """A new run: the config as given, in `run_dir`. With `resume=<run folder>`: that
    folder, its last checkpoint, and the config saved in it (checked like any config)."""
    if not cfg.get("resume"):
        return cfg, run_dir, own_stopped_checkpoint(cfg, run_dir)
    from trainer_cli import checkpoint

    run_dir = Path(str(cfg.resume))
    resumed = checkpoint.load_run(run_folder.last_checkpoint(run_dir))
    log.info(f"resuming {run_dir} at {faults.progress(resumed['epoch'], resumed['step'])}")
    saved = OmegaConf.create(resumed["config"])
    # `train resume=<run> epochs=N` (cli.rewrite_argv passes it as resume_with.epochs): extend.
    changes = cfg.get("resume_with") or {}
    if changes.get("epochs") is not None:
        if isinstance(changes.epochs, bool) or not isinstance(changes.epochs, int) or changes.epochs < saved.epochs:
            raise UserError(
                f"epochs: a resumed run can be extended, not shortened: give epochs >= {saved.epochs}, "
                f"got '{changes.epochs}'"
            )
        resumed["saved_epochs"] = int(saved.epochs)

    fixed = trust.saved_config_changes(saved, str(run_dir))  # a shared run's config fetches nothing

    def continued(config: DictConfig) -> None:  # the saved config, with what `resume_with` changes
        for key, value in fixed.items():
            OmegaConf.update(config, key, value)
        if changes.get("epochs") is not None:
            config.epochs = changes.epochs
        if changes.get("trainer", {}).get("device") is not None:
            config.trainer.device = changes.trainer.device

    # The saved config is another input (checked like any config: it is code too).
    return derive(saved, continued), run_dir, resumed


def own_stopped_checkpoint(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """A run started in a folder that holds its own stopped run continues it: a sweep job that
    submitit requeued after preemption, or that is run again in its sweep folder, a pod
    restarted with the same command. Only `last.pt` marked by the stop handler (`preempted.json`,
    at the same step), and only when the config saved in it is this run's own config, so no
    file in the folder decides what runs; it loads with the safe loader, as any resume."""
    mark = faults.preempted_mark(run_dir)
    path = run_folder.last_checkpoint(run_dir)
    if mark is None or not path.is_file():
        return None
    from trainer_cli import checkpoint

    state = checkpoint.load_run(path)
    if state["step"] != mark["step"] or state["config"] != OmegaConf.to_yaml(cfg):
        log.warning(f"{run_dir} holds a stopped run of another config (or a later checkpoint); starting anew")
        return None
    log.info(f"continuing the run stopped by {mark.get('signal')} in {run_dir} (epoch {state['epoch']}, "
             f"step {state['step']})")  # fmt: skip
    return state


def finished(cfg: DictConfig, run_dir: Path, resumed: dict[str, Any]) -> dict[str, Any] | None:
    """A resumed run that already finished (and is not extended) changes nothing: its summary."""
    saved_epochs = int(resumed.get("saved_epochs", cfg.epochs))
    summary = faults.finished_summary(run_dir, int(resumed["epoch"]), int(cfg.epochs), saved_epochs)
    if summary is not None:
        log.info(
            f"{run_dir} already finished ({summary['epochs_run']} epochs); nothing to do. To train it "
            f"longer: {faults.resume_command(run_dir)} epochs=<more than {saved_epochs}>"
        )
    return summary


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every random number generator a run draws from (torch, Python, NumPy)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def write_run_record(pieces: Pieces, run_dir: Path) -> None:
    """`resolved_config.yaml` (the effective values, after shortcuts and the data's class
    count) and `model_summary.txt` (what was built, before anything trains)."""
    from trainer_cli.models.summary import summary_text

    cfg = pieces.cfg
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "resolved_config.yaml")
    shape = (int(cfg.data.in_channels), int(cfg.data.image_size), int(cfg.data.image_size))
    text = summary_text(pieces.model, shape)
    (run_dir / "model_summary.txt").write_text(text + "\n")
    log.info(f"model summary\n{text}")


def announce(pieces: Pieces, run_dir: Path) -> None:
    """What runs, where: the lines every run starts with."""
    cfg, data = pieces.cfg, pieces.data
    num_parameters = sum(p.numel() for p in pieces.model.parameters())
    log.info(
        f"run folder: {run_dir}\n"
        f"data: {cfg.data.name} ({data.train.num_samples} train / {data.val.num_samples} val / "
        f"{data.test.num_samples} test, {data.num_classes} classes) on {pieces.device}\n"
        f"model: {type(pieces.model).__name__} with {num_parameters:,} parameters; "
        f"optimizer {type(pieces.optimizer).__name__} lr {cfg.optimizer.lr:g}; {plan(pieces)}"
    )


def planned_epochs(pieces: Pieces) -> int:
    """The epochs the run will reach: `epochs`, fewer when `trainer.max_steps` stops it first
    (what the epoch lines count to and the ETA plans for)."""
    max_steps = pieces.cfg.trainer.get("max_steps")
    if max_steps is None or pieces.steps_per_epoch < 1:
        return int(pieces.cfg.epochs)
    return min(int(pieces.cfg.epochs), math.ceil(int(max_steps) / pieces.steps_per_epoch))


def plan(pieces: Pieces) -> str:
    """`20 epochs of 21 steps`, or with `trainer.max_steps` the steps that really run."""
    epochs, per_epoch = planned_epochs(pieces), pieces.steps_per_epoch
    words = f"{epochs} epoch{'' if epochs == 1 else 's'} of {per_epoch} steps"
    max_steps = pieces.cfg.trainer.get("max_steps")
    if max_steps is not None and int(max_steps) < int(pieces.cfg.epochs) * per_epoch:
        return f"{max_steps} steps (trainer.max_steps: {words}, the last cut short)"
    return words


def check_initial_loss(pieces: Pieces, reporter: Reporter) -> dict[str, float]:
    """The lecture's first sanity check: with C classes and small random weights the
    initial loss should be close to ln C. Logged as the validation curves' step 0, with its
    verdict in the verdict's colour (`train diagnose=initial_loss` explains it)."""
    from trainer_cli.loop import evaluate
    from trainer_cli.verdict import COLOURS
    from trainer_cli.verdict import judge_initial_loss as judge

    initial = evaluate(pieces.model, pieces.data.val, pieces.device, pieces.options.precision, pieces.loss_fn)
    # The ln C rule is the softmax cross-entropy's; the curves' step 0 is the run's own loss.
    verdict = judge(initial["cross_entropy"], pieces.data.num_classes)
    log.info(  # train.log only: the console gets the coloured verdict below, the same numbers
        f"initial val loss (cross-entropy) {initial['cross_entropy']:.4f} "
        f"(ln C = {math.log(pieces.data.num_classes):.4f}): {verdict.status}",
        extra={"console": False},
    )
    reporter.print(f"[{COLOURS[verdict.status]}]initial loss {verdict.status}[/]: {verdict.summary}")
    reporter.log_scalars(0, {metrics.key("val", "loss"): initial["loss"], metrics.key("val", "acc"): initial["acc"]})
    return initial


def steps_left(pieces: Pieces) -> int | None:
    """`trainer.max_steps`: the optimizer steps left (None: no limit); the next epoch's
    training batches are cut to them, so the run ends at exactly max_steps."""
    from trainer_cli import loop

    max_steps = pieces.cfg.trainer.get("max_steps")
    if max_steps is None:
        return None
    left = max(0, int(max_steps) - pieces.loop.step)
    if pieces.train_epoch is not loop.train_full_batch:  # a full-batch step needs every batch
        train = pieces.data.train
        train.limit = min(train.epoch_limit, left * pieces.options.accumulate_grad_batches)
    return left


def end_of_epoch(pieces: Pieces, epoch: int, train_metrics: dict[str, float], started: float) -> dict[str, Any]:
    """Validate, then the once-per-epoch updates (SWA's average, the plateau schedule);
    returns the epoch's row of metrics."""
    from trainer_cli.loop import evaluate

    precision = pieces.options.precision
    val_metrics = evaluate(pieces.model, pieces.data.val, pieces.device, precision, pieces.loss_fn)
    row: dict[str, Any] = {"epoch": epoch, "step": pieces.loop.step}
    row.update({metrics.key("train", q): train_metrics[q] for q in metrics.QUANTITIES})
    row.update({metrics.key("val", q): val_metrics[q] for q in metrics.QUANTITIES})
    row.update(lr=pieces.scheduler.get_last_lr()[0], time_s=round(time.perf_counter() - started, 3))
    if pieces.ema is not None:
        ema_metrics = evaluate(pieces.ema.module, pieces.data.val, pieces.device, precision, pieces.loss_fn)
        row.update({metrics.key("val", q, "ema"): ema_metrics[q] for q in metrics.QUANTITIES})
    if pieces.swa is not None and epoch >= pieces.cfg.trainer.swa_start_epoch:
        pieces.swa.update_parameters(pieces.model)
    pieces.scheduler.end_epoch(row)
    return row


def save_checkpoints(pieces: Pieces, run_dir: Path, best: bool) -> None:
    """`last.pt` every epoch (for resume) and `best.pt` when the epoch is the best so far
    (written by rank 0 alone)."""
    from trainer_cli import checkpoint, distributed

    saving = pieces.cfg.trainer.checkpoint
    snapshot = checkpoint.snapshot(
        pieces.stateful(), pieces.config_yaml, epoch=pieces.loop.epoch, step=pieces.loop.step
    )
    if best and saving.save_best and distributed.is_main():
        checkpoint.save(snapshot, run_folder.best_checkpoint(run_dir))
    if saving.save_last and distributed.is_main():
        checkpoint.save(snapshot, run_folder.last_checkpoint(run_dir))
    cycle = pieces.scheduler.cycle_ended(pieces.loop.step, pieces.steps_per_epoch)
    if cycle is not None and distributed.is_main():  # snapshot ensembles: `train ensemble=<run> mode.snapshots=true`
        checkpoint.save(snapshot, run_folder.snapshot_checkpoint(run_dir, cycle))
    distributed.barrier()  # the other ranks read best.pt at the end: wait until it is there


def final_evaluation(pieces: Pieces, run_dir: Path) -> dict[str, float]:
    """The end-of-run evaluation: SWA's weights (their BN statistics recomputed first) on
    validation and test; then the best-on-validation checkpoint reloaded, its EMA weights
    and the model on the test set, and test-time augmentation when `eval.tta` asks."""
    import torch

    from trainer_cli import checkpoint
    from trainer_cli.loop import evaluate
    from trainer_cli.tta import evaluate_tta

    data, device, precision, loss_fn = pieces.data, pieces.device, pieces.options.precision, pieces.loss_fn
    results: dict[str, float] = {}

    def record(split: str, values: dict[str, float], weights: str | None = None) -> None:
        results.update({metrics.key(split, q, weights): values[q] for q in metrics.QUANTITIES})

    swa = pieces.swa
    if swa is not None and int(swa.n_averaged) > 0:
        # The averaged weights need their own BN statistics: one pass over the training set.
        torch.optim.swa_utils.update_bn(data.train, swa, device)
        for split, batches in (("val", data.val), ("test", data.test)):
            record(split, evaluate(swa.module, batches, device, precision, loss_fn), "swa")
    best_path = run_folder.best_checkpoint(run_dir)
    if pieces.cfg.trainer.checkpoint.save_best and best_path.is_file():
        best = checkpoint.load(best_path, map_location=device)
        pieces.model.load_state_dict(checkpoint.trained_weights(best))
        if pieces.ema is not None:
            pieces.ema.load_state_dict(best["ema"])
    if pieces.ema is not None:
        record("test", evaluate(pieces.ema.module, data.test, device, precision, loss_fn), "ema")
    record("test", evaluate(pieces.model, data.test, device, precision, loss_fn))
    tta = pieces.tta
    if tta.enabled:
        results["test/acc_tta"] = evaluate_tta(
            pieces.model, data.test, device, precision, tta=tta.tta, reduce=tta.tta_reduce,
            padding=tta.tta_padding, scales=tta.tta_scales,
        )["acc"]  # fmt: skip
    return results


def summarize(
    pieces: Pieces, run_dir: Path, results: dict[str, float], started: float, early_stopped: bool
) -> dict[str, Any]:
    """The run's summary: the best epoch by `optimized_metric`, the final evaluation, the
    counters. It is `metrics.json`, and what `run` returns."""
    state, metric = pieces.loop, str(pieces.cfg.optimized_metric)
    best_row, last_row = state.history[state.best_epoch - 1], state.history[-1]
    summary = {
        "status": "ok",
        "run_dir": str(run_dir),
        metrics.best(metric): state.best,
        "best/val/acc": best_row["val/acc"],
        "best/val/loss": best_row["val/loss"],
        "best_epoch": state.best_epoch,
        "test/acc": results.pop("test/acc"),
        "test/loss": results.pop("test/loss"),
        "final/train/loss": last_row["train/loss"],
        "final/val/acc": last_row["val/acc"],
        "epochs_run": state.epoch,
        "early_stopped": early_stopped,
        "steps": state.step,
        "time_s": round(time.perf_counter() - started, 3),
    }
    return {**summary, **results}
