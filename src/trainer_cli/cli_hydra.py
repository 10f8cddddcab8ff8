"""Hydra's task function: one job of `train` (a run, or one job of a sweep).

`hydra_main` is what Hydra calls with the composed config: it runs the job in this process,
or as an N-process run for a sweep job with `trainer.devices=N`, and turns the job's errors
into one line (or a recorded failure in a sweep). `execute` checks the config and runs the
procedure that `mode=` names. Nothing below imports this module; nothing below sees argv.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainer_cli import cli_devices, distributed, metrics
from trainer_cli.cli_errors import shorten
from trainer_cli.config import CONF_DIR, UserError, resolve

log = logging.getLogger("trainer_cli")


def execute(
    cfg: DictConfig, run_dir: Path, hparams: dict[str, Any] | None = None, user_keys: set[str] | None = None
) -> dict[str, Any]:
    """Resolve the composed config, once (read-only from here on), check it, then run the
    procedure `mode` names with it. Returns the procedure's summary.

    Args:
        cfg: the composed config, as Hydra gives it.
        run_dir: the job's run folder.
        hparams: the run's hyperparameters for the loggers (`hparams_from_hydra`).
        user_keys: the dotted keys the command line set (`keys_set_by_user`); None for a
            config built in Python (every key counts as asked for).
    """
    resolved = resolve(cfg, user_keys)  # config mistakes are reported before torch is even imported
    from trainer_cli import build, trust
    from trainer_cli.diagnose.lr import automatic_lr

    trust.check_targets(resolved)  # every target on the list before the run writes anything
    resolved = automatic_lr(resolved, run_dir)  # lr=auto: a new config with the LR that trains; else as given
    return build.procedure(resolved)(resolved, run_dir, hparams, user_keys=user_keys)


def group_choices() -> dict[str, str | list[str]]:
    """Every config group's choice for this job, multi-select ones as lists (Hydra's
    `runtime.choices` leaves those out): read from the job's resolved defaults list, so
    an experiment's `override /augmentation: [flip, crop]` counts as the command line's does."""
    hydra_cfg = HydraConfig.get()
    choices: dict[str, str | list[str]] = {
        group: str(choice) for group, choice in hydra_cfg.runtime.choices.items() if choice is not None
    }
    overrides = [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]
    # A sweep's jobs differ in values (lr=, seed=), rarely in groups: the defaults list is
    # computed once per distinct set of the overrides that can change it.
    shaping = tuple(o for o in overrides if o.partition("=")[0].lstrip("+~") not in scalar_keys())
    try:
        selected = _multi_select(str(hydra_cfg.job.config_name), shaping, overrides)
    except Exception:  # no defaults list to read (a saved config): the single choices only
        return choices
    return {**choices, **{group: names for group, names in selected.items() if group not in choices}}


_listed: dict[tuple[str, tuple[str, ...]], dict[str, list[str]]] = {}


def _multi_select(config_name: str, shaping: tuple[str, ...], overrides: list[str]) -> dict[str, list[str]]:
    """Each group's selected options in the job's defaults list (cached by `shaping`)."""
    from hydra.core.global_hydra import GlobalHydra

    key = (config_name, shaping)
    if key not in _listed:
        listed = (
            GlobalHydra.instance()
            .config_loader()
            .compute_defaults_list(config_name=config_name, overrides=overrides, run_mode=RunMode.RUN)
        )
        selected: dict[str, list[str]] = {}
        for default in listed.defaults:
            group, _, name = (default.config_path or "").rpartition("/")
            if group and not group.startswith("hydra"):
                selected.setdefault(group, []).append(name)
        _listed[key] = selected
    return _listed[key]


@functools.cache
def scalar_keys() -> frozenset[str]:
    """The primary config's own top-level values (seed, lr, epochs, ...): not config groups,
    so overriding them cannot change which options the defaults list selects."""
    from trainer_cli.config import known_top_level_keys

    groups = {p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()}
    return frozenset(known_top_level_keys() - groups - {"experiment", "hparams_search", "hydra"})


def hparams_from_hydra(cfg: DictConfig, choices: dict[str, str | list[str]] | None = None) -> dict[str, Any]:
    """The run's hyperparameters for the HParams tab and the loggers: every group choice
    (multi-select ones too, `group_choices()` unless given) and the command line's values."""
    hydra_cfg = HydraConfig.get()
    result: dict[str, Any] = {}
    for group, choice in (group_choices() if choices is None else choices).items():
        if not group.startswith("hydra"):
            # Multi-select groups as typed: augmentation=[flip,crop] and [none] runs differ.
            result[group] = f"[{','.join(choice)}]" if isinstance(choice, list) else choice
    for override in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False):  # the text typed
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key in result or key == "resume":
            continue
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # a broken interpolation: reported by `resolve`, with its key
            continue
        if isinstance(value, (int, float, str, bool)):
            result[key] = value
    return result


def keys_set_by_user(choices: dict[str, str | list[str]] | None = None) -> set[str]:
    """The dotted keys this job's command line sets: `key=value` overrides, and the keys that
    chosen `# @package _global_` options (regularization switches, experiments) set."""
    import yaml

    hydra_cfg = HydraConfig.get()
    typed = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)  # the text, not its interpolations
    keys = {str(o).split("=", 1)[0].lstrip("+~") for o in typed if "=" in str(o)}
    for group, choice in (group_choices() if choices is None else choices).items():
        for name in choice if isinstance(choice, list) else [choice]:
            path = Path(CONF_DIR, str(group), f"{name}.yaml")
            if group.startswith("hydra") or not path.is_file() or "@package _global_" not in path.read_text():
                continue
            stack = [("", yaml.safe_load(path.read_text()) or {})]
            while stack:
                prefix, node = stack.pop()
                for k, v in node.items():
                    if k != "defaults" and isinstance(v, dict):
                        stack.append((f"{prefix}{k}.", v))
                    elif k != "defaults":
                        keys.add(f"{prefix}{k}")
    return keys


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """Hydra's task function: runs one job and returns `optimized_metric` for sweepers."""
    from trainer_cli import trust
    from trainer_cli.cli_guard import install_hydra_guard

    install_hydra_guard()  # a sweep worker (joblib, submitit) runs this without `main()`
    trust.load_user_modules()  # the parent's `--trust` modules, by their file path
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = group_choices()  # Hydra recomputes the defaults list for it: once per job
    hparams = hparams_from_hydra(cfg, choices)
    user_keys = keys_set_by_user(choices)  # data for resolve and the procedure, not a global
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:  # a sweep worker (joblib, submitit) stops on SIGTERM/SIGUSR1 like a single run
        from trainer_cli.faults import install_stop_handlers

        install_stop_handlers()
    summary: dict[str, Any] | None = None
    try:
        if distributed.launched():  # one rank of torchrun / trainer.devices=N / SLURM tasks
            distributed.init(str(cfg.trainer.device))
            run_dir = Path(distributed.broadcast(str(run_dir)))  # rank 0's folder, for every rank
        elif multirun and cli_devices.count(cfg.trainer.get("devices", 1)) > 1:
            summary = run_job_in_processes(cli_devices.count(cfg.trainer.devices), run_dir)  # this job as one torchrun
        elif cli_devices.count(cfg.trainer.get("devices", 1)) > 1:
            raise UserError("trainer.devices: set it on the command line (train trainer.devices=N), or use torchrun")
        if summary is None:
            if multirun and not distributed.launched():  # a rank's GPU is its local rank's
                from trainer_cli.sweep import assign_gpu

                assign_gpu(cfg, HydraConfig.get().job.num)
                from trainer_cli.sweep import one_line_per_job  # the sweep's console: one line a job

                with one_line_per_job(str(cfg.optimized_metric)) as outcome:
                    summary = outcome["summary"] = execute(cfg, run_dir, hparams, user_keys)
            else:
                summary = execute(cfg, run_dir, hparams, user_keys)
    except Exception as error:
        debug = os.environ.get("TRAINER_CLI_DEBUG") == "1"
        from trainer_cli.faults import PREEMPTED_EXIT, Preempted, discard_empty_run_folder

        if multirun and isinstance(error, Preempted):
            return stopped_job(cfg, run_dir, error)
        error = missing_key_error(error)
        if multirun and not debug:
            # One failing job must not end the sweep: its metrics.json records the failure,
            # and NaN tells the sweeper (the Optuna sweeper records a failed trial).
            record_failure(cfg, run_dir, error, hparams)
            return float("nan")

        # Exit here, not in main(): Hydra would first print its own "Error executing job" line.
        class NonFiniteLoss(Exception):  # a stand-in: no torch, no NaN (config errors stay fast)
            pass

        if "trainer_cli.loop" in sys.modules:
            from trainer_cli.loop import NonFiniteLoss  # type: ignore[assignment]

        if isinstance(error, Preempted):
            if distributed.is_main():  # one line for the run, not one per rank
                distributed.report_stop(str(error))
            sys.exit(PREEMPTED_EXIT)
        if not isinstance(error, (UserError, NonFiniteLoss)) or debug:
            raise
        if not cfg.get("resume"):
            discard_empty_run_folder(run_dir)  # a config error leaves no run folder behind
        message = f"error: {shorten(str(error))}"
        if isinstance(error, NonFiniteLoss):
            from trainer_cli.run_folder import last_checkpoint

            last = last_checkpoint(Path(str(cfg.resume or run_dir)))
            message += f"; the last good checkpoint is {last}" if last.is_file() else "; no checkpoint was written yet"
        print(message, file=sys.stderr)
        sys.exit(2 if isinstance(error, UserError) else 1)
    finally:
        distributed.teardown()
    if summary.get("verdict") == "FAIL" and not multirun:  # a diagnosis that failed: scripts see it
        sys.exit(1)
    return metrics.objective(summary, str(cfg.optimized_metric))


def missing_key_error(error: Exception) -> Exception:
    """A key the run needs that the config lacks (`~model`, `~trainer.device`) as a one-line
    error naming it, instead of OmegaConf's traceback from wherever it was first read."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not isinstance(error, (ConfigAttributeError, ConfigKeyError)) or not getattr(error, "full_key", None):
        return error
    key = error.full_key
    return UserError(
        f"{key}: missing from the config, and the run needs it (removed with ~{key}?); the shipped value is in conf/"
    )


def stopped_job(cfg: DictConfig, run_dir: Path, error: Exception) -> float:
    """A sweep job stopped by a signal, its checkpoint written: `metrics.json` says preempted and
    how to continue; the sweep goes on (NaN to the sweeper). Stopped by submitit's preemption
    signal, the job is requeued instead, and continues from its checkpoint."""
    from trainer_cli import faults
    from trainer_cli.report import record_failure as write_failure

    log.warning(str(error))
    if distributed.is_main():
        folder = Path(str(cfg.resume)) if cfg.get("resume") else run_dir
        write_failure(folder, error, {}, [], status="preempted")
    distributed.teardown()
    faults.requeue_with_submitit()  # exits the process when submitit's signal stopped the job
    faults.clear_stop_request()  # this job's stop is done: a worker's next job runs
    return float("nan")


def run_job_in_processes(devices: int, run_dir: Path) -> dict[str, Any]:
    """A sweep job with `trainer.devices=N`: the job's own overrides, in its job folder, run
    as one N-process run through torchrun, as `train trainer.devices=N` runs them; returns
    the summary that run wrote (metrics.json). The jobs of the sweep run one after another
    (basic launcher) or side by side (joblib): each job is one torchrun."""
    import json

    from trainer_cli import faults

    hydra_cfg = HydraConfig.get()
    flags = ["--config-name", str(hydra_cfg.job.config_name)]
    for source in hydra_cfg.runtime.config_sources:  # --config-path / --config-dir as the sweep had them
        if source.schema == "file" and source.provider == "main" and Path(source.path) != Path(CONF_DIR):
            flags += ["--config-path", str(source.path)]
        elif source.schema == "file" and source.provider == "command-line":
            flags += ["--config-dir", str(source.path)]
    # The job's overrides (the sweep's command line and its swept values), as Hydra overrides
    # only: `distributed.launch` refuses anything else; trust goes by the environment, the parent's.
    argv = [*flags, *hydra_cfg.overrides.task, f"hydra.run.dir={run_dir}"]
    log.info(f"job {hydra_cfg.job.num}: {devices} processes (torchrun)")
    record = run_dir / ".hydra"  # the sweep job's own record: the run rewrites it, a config error removes it
    saved = {path.name: path.read_bytes() for path in record.glob("*.yaml")}
    faults.release_run_folder(run_dir)  # the job's claim hands the folder to its ranks (rank 0 locks it)
    with tempfile.TemporaryDirectory(prefix="trainer_cli_ranks_") as logs:  # each rank's output, also on the console
        code = distributed.launch(argv, devices, log_dir=logs)
        error = distributed.rank_error(logs)
    record.mkdir(parents=True, exist_ok=True)
    for name, content in saved.items():
        (record / name).write_bytes(content)
    metrics_file = run_dir / "metrics.json"
    if code == faults.PREEMPTED_EXIT:  # stopped by a signal, rank 0's checkpoint written
        raise faults.Preempted(f"stopped; checkpoint written; continue with: {faults.resume_command(run_dir)}")
    if error is not None:  # the one line a rank printed (a config error, a diverged run)
        raise UserError(error)
    if code != 0 or not metrics_file.is_file():
        raise RuntimeError(f"the {devices}-process run exited with status {code} (its error is printed above)")
    return json.loads(metrics_file.read_text())


def record_failure(cfg: DictConfig, run_dir: Path, error: BaseException, hparams: dict[str, Any]) -> None:
    """A failed sweep job, written by the run's loggers (or the run folder's files alone
    when the loggers' own config is what failed)."""
    from trainer_cli import build
    from trainer_cli.report import record_failure as write_failure

    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    log.error(f"job failed: {type(error).__name__}: {reason}")
    try:
        sinks = build.loggers(cfg, run_dir)
    except Exception:
        sinks = []
    write_failure(run_dir, error, hparams, sinks)


def discard_hydra_run_folder() -> None:
    """The folder Hydra made for a single run that failed before writing anything (not a resume)."""
    from trainer_cli.faults import discard_empty_run_folder

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.get("output_dir")
    if output_dir and hydra_cfg.mode == RunMode.RUN and hydra_cfg.output_subdir is not None:
        discard_empty_run_folder(Path(output_dir))
