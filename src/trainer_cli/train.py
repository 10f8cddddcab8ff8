"""The `train` entrypoint: a thin Hydra `main(cfg)` and `run(cfg, run_dir) -> metrics`.

Torch is imported inside `run`, not at module level, so `train --help` and config errors
answer without loading it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainer_cli.config import UserError, full_batch, register_resolvers, resolve

log = logging.getLogger("trainer_cli")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _monitor_is_min(metric: str) -> bool:
    return metric.endswith("loss")


def run(cfg: DictConfig, run_dir: Path, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, validate every epoch, test the best-on-validation checkpoint once.

    Returns the run's summary metrics (never the model). With `cfg.resume` set to a run
    folder, continues that run from its last checkpoint, in that folder.
    """
    started = time.perf_counter()
    if not cfg.get("resume"):
        cfg = resolve(cfg)  # config mistakes are reported before torch is even imported

    import random

    import numpy as np
    import torch

    from trainer_cli import build, checkpoint
    from trainer_cli.data import preview_images
    from trainer_cli.data.augment import save_preview
    from trainer_cli.loop import evaluate, train_full_batch, train_one_epoch
    from trainer_cli.models.stats import activation_stats, activation_values
    from trainer_cli.models.summary import summary_text
    from trainer_cli.report import Reporter, print_activation_table, print_results, write_metrics
    from trainer_cli.tta import evaluate_tta

    resumed = None
    if cfg.get("resume"):
        run_dir = Path(str(cfg.resume))
        resumed = checkpoint.load(run_dir / "checkpoints" / "last.pt")
        cfg = OmegaConf.create(resumed["config"])
        log.info(f"resuming {run_dir} from epoch {resumed['epoch']} (step {resumed['step']})")
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    device = build.device(str(cfg.trainer.device))
    data = build.data(cfg, device)
    if resumed is None:
        OmegaConf.save(cfg, run_dir / "resolved_config.yaml")  # effective values, after shortcuts
    model = build.model(cfg).to(device)
    # What was built, layer by layer, before anything trains (also kept in the run folder).
    model_summary = summary_text(model, (int(cfg.data.in_channels), int(cfg.data.image_size), int(cfg.data.image_size)))
    (run_dir / "model_summary.txt").write_text(model_summary + "\n")
    log.info(f"model summary\n{model_summary}")
    optimizer = build.optimizer(cfg, model)
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    # Optimizer steps per epoch: one for full-batch L-BFGS; else one per `accumulate` batches.
    steps_per_epoch = 1 if full_batch(cfg) else math.ceil(len(data.train) / accumulate)
    scheduler = build.scheduler(cfg, optimizer, steps_per_epoch)
    penalties = build.penalties(cfg, model)
    ema = build.ema(cfg, model)
    swa = build.swa(cfg, model)
    plateau = getattr(scheduler.lr_lambdas[0], "observe", None)
    loss_fn = build.loss(cfg)
    mix = build.batch_regularization(cfg)  # cutout, mixup, cutmix; augmentation is in data.train
    precision = str(cfg.trainer.precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "16" and device.type == "cuda" else None

    metric = str(cfg.optimized_metric)
    stop_cfg = cfg.trainer.early_stopping
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "best": None,
        "best_epoch": 0,
        "stop_best": None,
        "bad_epochs": 0,
        "history": [],
    }
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if scaler is not None and "scaler" in resumed:
            scaler.load_state_dict(resumed["scaler"])
        data.preprocess.load_state_dict(resumed["preprocess"])
        if ema is not None:
            ema.load_state_dict(resumed["ema"])
        if swa is not None:
            swa.load_state_dict(resumed["swa"])
        state.update(resumed["loop"])
        checkpoint.set_rng_state(resumed["rng"], data.shuffle_generator)

    num_parameters = sum(p.numel() for p in model.parameters())
    log.info(
        f"run folder: {run_dir}\n"
        f"data: {cfg.data.name} ({data.train.num_samples} train / {data.val.num_samples} val / "
        f"{data.test.num_samples} test, {data.num_classes} classes) on {device}\n"
        f"model: {cfg.model._target_.rsplit('.', 1)[-1]} with {num_parameters:,} parameters; "
        f"optimizer {cfg.optimizer._target_.rsplit('.', 1)[-1]} lr {cfg.lr:g}; {cfg.epochs} epochs of "
        f"{steps_per_epoch} steps"
    )

    def snapshot() -> dict[str, Any]:
        snap = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "preprocess": data.preprocess.state_dict(),
            "epoch": state["epoch"],
            "step": state["step"],
            "loop": dict(state),
            "rng": checkpoint.rng_state(data.shuffle_generator),
            "config": OmegaConf.to_yaml(cfg),
        }
        if scaler is not None:
            snap["scaler"] = scaler.state_dict()
        if ema is not None:
            snap["ema"] = ema.state_dict()
        if swa is not None:
            snap["swa"] = swa.state_dict()
        return snap

    early_stopped = False
    purge_step = state["step"] + 1 if resumed is not None else None
    with Reporter(run_dir, cfg.epochs, steps_per_epoch, purge_step=purge_step) as reporter:
        if cfg.augmentation.get("preview") and data.train.augment is not None:
            grid = save_preview(preview_images(data.train), data.train.augment, run_dir / "augmentation_preview.png")
            reporter.writer.add_image("augmentation/preview", grid, state["step"])
            log.info(f"augmentation preview: {run_dir / 'augmentation_preview.png'} (and TensorBoard's Images tab)")
        # Activation statistics on a fixed probe batch (the first validation batch), at the
        # start and then every `log_activations_every_n_steps` steps.
        probe = next(iter(data.val))[0] if cfg.trainer.get("log_activations") else None
        activations_due = [state["step"] + int(cfg.trainer.get("log_activations_every_n_steps", 100))]
        if probe is not None:
            values = activation_values(model, probe)
            print_activation_table(activation_stats(values))
            reporter.log_activations(state["step"], values)

        def log_step(step: int, scalars: dict[str, float]) -> None:
            reporter.log_step(step, scalars)
            if probe is not None and step >= activations_due[0]:
                reporter.log_activations(step, activation_values(model, probe))
                activations_due[0] = step + int(cfg.trainer.log_activations_every_n_steps)

        if resumed is None:
            # The lecture's first sanity check: with C classes and small random weights the
            # initial loss should be close to ln C.
            initial = evaluate(model, data.val, device, precision)
            log.info(f"initial val loss {initial['loss']:.4f} (ln C = {math.log(data.num_classes):.4f})")
            reporter.log_scalars(0, {"val/loss": initial["loss"], "val/acc": initial["acc"]})
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            reporter.start_epoch(epoch, state["step"])
            if full_batch(cfg):
                train_metrics, state["step"] = train_full_batch(
                    model, data.train, optimizer, scheduler, loss_fn, step=state["step"], device=device,
                    precision=precision, penalties=penalties, ema=ema, on_log=log_step,
                )  # fmt: skip
            else:
                train_metrics, state["step"] = train_one_epoch(
                    model, data.train, optimizer, scheduler, loss_fn,
                    step=state["step"], device=device, precision=precision, scaler=scaler, mix=mix,
                    grad_clip_norm=cfg.trainer.grad_clip_norm, log_every_n_steps=cfg.trainer.log_every_n_steps,
                    on_log=log_step,
                    grad_clip_value=cfg.trainer.get("grad_clip_value"), accumulate_grad_batches=accumulate,
                    penalties=penalties, ema=ema,
                )  # fmt: skip
            val_metrics = evaluate(model, data.val, device, precision)
            row = {
                "epoch": epoch,
                "step": state["step"],
                "train/loss": train_metrics["loss"],
                "train/acc": train_metrics["acc"],
                "val/loss": val_metrics["loss"],
                "val/acc": val_metrics["acc"],
                "lr": scheduler.get_last_lr()[0],
                "time_s": round(time.perf_counter() - started, 3),
            }
            if ema is not None:
                ema_metrics = evaluate(ema.module, data.val, device, precision)
                row["val/ema_loss"], row["val/ema_acc"] = ema_metrics["loss"], ema_metrics["acc"]
            if swa is not None and epoch >= cfg.trainer.swa_start_epoch:
                swa.update_parameters(model)
            if plateau is not None:
                plateau(row[scheduler.lr_lambdas[0].monitor])
            state["epoch"] = epoch
            state["history"].append(row)
            reporter.end_epoch(state["step"], row)
            write_metrics(run_dir, state["history"])

            value = row[metric]
            improved = state["best"] is None or (
                value < state["best"] if _monitor_is_min(metric) else value > state["best"]
            )
            if improved:
                state["best"], state["best_epoch"] = value, epoch
            monitored = row[str(stop_cfg.monitor)]
            sign = -1.0 if stop_cfg.mode == "min" else 1.0
            if state["stop_best"] is None or sign * (monitored - state["stop_best"]) > stop_cfg.min_delta:
                state["stop_best"], state["bad_epochs"] = monitored, 0
            else:
                state["bad_epochs"] += 1
            early_stopped = stop_cfg.patience is not None and state["bad_epochs"] >= stop_cfg.patience

            # Curves first, then checkpoints: a resumed run never lacks a step before its
            # checkpoint.
            reporter.flush()
            snap = snapshot()
            if improved and cfg.trainer.checkpoint.save_best:
                checkpoint.save(snap, run_dir / "checkpoints" / "best.pt")
            if cfg.trainer.checkpoint.save_last:
                checkpoint.save(snap, run_dir / "checkpoints" / "last.pt")
            if early_stopped:
                log.info(f"early stopping: {stop_cfg.monitor} did not improve for {stop_cfg.patience} epochs")
                break

        averaged: dict[str, float] = {}
        if swa is not None and int(swa.n_averaged) > 0:
            # The averaged weights need their own BN statistics: one pass over the training set.
            torch.optim.swa_utils.update_bn(data.train, swa, device)
            for split, batches in (("val", data.val), ("test", data.test)):
                swa_metrics = evaluate(swa.module, batches, device, precision)
                averaged[f"{split}/swa_acc"], averaged[f"{split}/swa_loss"] = swa_metrics["acc"], swa_metrics["loss"]
        best_path = run_dir / "checkpoints" / "best.pt"
        if cfg.trainer.checkpoint.save_best and best_path.is_file():
            best = checkpoint.load(best_path, map_location=device)
            model.load_state_dict(best["model"])
            if ema is not None:
                ema.load_state_dict(best["ema"])
        if ema is not None:
            ema_metrics = evaluate(ema.module, data.test, device, precision)
            averaged["test/ema_acc"], averaged["test/ema_loss"] = ema_metrics["acc"], ema_metrics["loss"]
        test_metrics = evaluate(model, data.test, device, precision)
        best_row = state["history"][state["best_epoch"] - 1]
        summary = {
            "status": "ok",
            "run_dir": str(run_dir),
            f"best/{metric}": state["best"],
            "best/val/acc": best_row["val/acc"],
            "best/val/loss": best_row["val/loss"],
            "best_epoch": state["best_epoch"],
            "test/acc": test_metrics["acc"],
            "test/loss": test_metrics["loss"],
            "final/train/loss": state["history"][-1]["train/loss"],
            "final/val/acc": state["history"][-1]["val/acc"],
            "epochs_run": state["epoch"],
            "early_stopped": early_stopped,
            "steps": state["step"],
            "time_s": round(time.perf_counter() - started, 3),
        }
        summary.update(averaged)
        if OmegaConf.select(cfg, "eval.tta", default="none") != "none":
            summary["test/acc_tta"] = evaluate_tta(
                model, data.test, device, precision, tta=cfg.eval.tta, reduce=cfg.eval.tta_reduce,
                padding=cfg.eval.tta_padding, scales=list(cfg.eval.tta_scales),
            )["acc"]  # fmt: skip
        reporter.log_scalars(state["step"], {**{k: v for k, v in summary.items() if k.startswith("test/")}, **averaged})
        run_hparams = {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed}
        run_hparams.update(hparams or {})
        reporter.log_hparams(
            run_hparams,
            {k: summary[k] for k in ("best/val/acc", "best/val/loss", "test/acc", "test/loss")},
        )
    write_metrics(run_dir, state["history"], summary)
    print_results(summary)
    return summary


def _hparams_from_hydra(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters for TensorBoard: group choices and command-line values."""
    hydra_cfg = HydraConfig.get()
    result: dict[str, Any] = {}
    for group, choice in hydra_cfg.runtime.choices.items():
        if not group.startswith("hydra") and choice is not None:
            result[group] = str(choice)
    for override in hydra_cfg.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in result or key == "resume":
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float, str, bool)):
            result[key] = value
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra's entry: runs one job and returns `optimized_metric` for sweepers."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    hparams = _hparams_from_hydra(cfg)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if cfg.get("ensemble"):
            from trainer_cli.ensemble import run_ensemble

            return float(run_ensemble(cfg, run_dir)["test/acc"])
        if multirun:
            from trainer_cli.sweep import assign_gpu

            assign_gpu(cfg, HydraConfig.get().job.num)
        if cfg.data.get("kfold") is not None:
            from trainer_cli.kfold import run_folds

            summary = run_folds(cfg, run_dir, hparams)
        else:
            summary = run(cfg, run_dir, hparams)
    except Exception as error:
        debug = os.environ.get("TRAINER_CLI_DEBUG") == "1"
        if multirun and not debug:
            # One failing job must not end the sweep: its metrics.json records the failure,
            # and NaN tells the sweeper (the Optuna sweeper records a failed trial).
            from trainer_cli.sweep import record_failure

            return record_failure(run_dir, error, hparams)
        # Exit here, not in cli(): Hydra would first print its own "Error executing job" line.
        from trainer_cli.loop import NonFiniteLoss  # imported late: it imports torch

        if not isinstance(error, (UserError, NonFiniteLoss)) or debug:
            raise
        message = f"error: {error}"
        if isinstance(error, NonFiniteLoss):
            last = Path(str(cfg.resume or run_dir)) / "checkpoints" / "last.pt"
            message += f"; the last good checkpoint is {last}" if last.is_file() else "; no checkpoint was written yet"
        print(message, file=sys.stderr)
        sys.exit(2 if isinstance(error, UserError) else 1)
    metric = str(summary.get("optimized_metric", cfg.optimized_metric))
    return float(summary[f"best/{metric}"])


def _rewrite_argv(argv: list[str]) -> list[str]:
    """Make the documented command lines work from any folder.

    - `--config-path` relative to the current folder (Hydra reads it relative to this file);
    - `resume=<run folder>` continues in that folder, without rewriting its `.hydra/`.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config-path", "-cp") and i + 1 < len(argv):
            out += [arg, os.path.abspath(argv[i + 1])]
            i += 2
            continue
        if arg.startswith("--config-path="):
            out.append("--config-path=" + os.path.abspath(arg.split("=", 1)[1]))
            i += 1
            continue
        out.append(arg)
        i += 1
    resume = [a.split("=", 1)[1] for a in out if a.startswith("resume=")]
    if resume and resume[0] not in ("", "null"):
        run_dir = os.path.abspath(resume[0])
        if not os.path.isdir(run_dir):
            raise UserError(f"resume: '{resume[0]}' is not a run folder")
        out += [f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
    if any(a in ("--config-path", "-cp") or a.startswith("--config-path=") for a in out):
        # A saved run config has no hydra section: keep run folders unique all the same.
        if not any(a.startswith("hydra.run.dir=") for a in out):
            out.append("hydra.run.dir=outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}")
        out += [
            "hydra.sweep.dir=outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}",
            "hydra.job.name=train",
        ]
    return out


def _accepted_keys(key: str) -> str:
    """The keys the default config has beside `key`, to suggest the right spelling."""
    from hydra import compose, initialize_config_dir

    parent = key.rpartition(".")[0]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            node = compose(config_name="config")
        node = OmegaConf.select(node, parent) if parent else node
        keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    except Exception:
        keys = []
    where = f"'{parent}'" if parent else "the top level"
    return f"accepted keys at {where}: {', '.join(keys)}" if keys else "see `train --cfg job` for the keys"


def _hydra_error_line(error: Exception) -> str:
    """Hydra's multi-line composition errors, as one line that names the key or file."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException):
        missing = error.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        options = error.options or sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml"))
        if options:
            return f"{group}: unknown option '{option}'; available: {', '.join(sorted(options))}"
        return f"config file '{missing}' not found"
    if isinstance(error, OverrideParseException):
        return f"cannot parse override: {str(error).splitlines()[0]}"
    if isinstance(error, ConfigCompositionException):
        first = str(error).splitlines()[0]
        if "Could not override" in first or "Could not append" in first:
            key = first.split("'")[1] if "'" in first else ""
            return f"{key}: unknown key (misspelt?); {_accepted_keys(key)}"
        if "Could not load" in first and error.__cause__ is not None:
            return _hydra_error_line(error.__cause__) if isinstance(error.__cause__, Exception) else first
        return first
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def cli() -> None:
    """The `train` console command: Hydra's main with one-line errors and no tracebacks."""
    register_resolvers()
    # Hydra re-raises instead of printing its own multi-line report; we print one line.
    # TRAINER_CLI_DEBUG=1 shows the whole traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    debug = os.environ.get("TRAINER_CLI_DEBUG") == "1"
    try:
        sys.argv = [sys.argv[0], *_rewrite_argv(sys.argv[1:])]
        main()
    except UserError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; continue with `train resume=<run folder>`", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if debug:
            raise
        from hydra.errors import HydraException

        if isinstance(error, HydraException):
            print(f"error: {_hydra_error_line(error)}", file=sys.stderr)
            sys.exit(2)
        if isinstance(error, OSError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    cli()
