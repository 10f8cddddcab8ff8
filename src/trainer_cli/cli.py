"""The `train` command: argv, Hydra's `main`, and every error as one line.

The layer above the procedures. `main()` (the console script) makes the documented command
lines work from any folder, lets Hydra compose the config, then `execute` checks it and runs
the procedure that `mode=` names (train, kfold, ensemble, ...). Nothing below imports this
module; nothing below sees argv.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainer_cli import distributed, metrics, run_folder, trust
from trainer_cli.config import (
    CONF_DIR,
    UserError,
    register_resolvers,
    resolve,
    set_explicit_keys,
)
from trainer_cli.trust import TRUST_ENV, user_trusted_modules

log = logging.getLogger("trainer_cli")

# Command-line shortcuts for the procedure switch: a value for the key chooses the mode.
MODE_SHORTCUTS = {"data.kfold": "kfold", "ensemble": "ensemble"}
# Hydra's flags that print and run nothing: answered in this process, whatever trainer.devices says.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve"}


def execute(cfg: DictConfig, run_dir: Path, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check the composed config (before torch loads), then run the procedure `mode` names.

    Returns the procedure's summary.
    """
    resolved = resolve(cfg)  # config mistakes are reported before torch is even imported
    from trainer_cli import build

    if resolved.get("lr") == "auto":  # before the run: its resolved_config.yaml holds the LR that trains
        from trainer_cli.diagnose.lr import automatic_lr

        if distributed.world_size() > 1:
            raise UserError(
                "lr: auto runs the LR range test in one process; run `train diagnose=lr_range`, then set lr"
            )
        cfg = automatic_lr(resolved, run_dir)
    return build.procedure(cfg)(cfg, run_dir, hparams)


def group_choices() -> dict[str, str | list[str]]:
    """Every config group's choice for this job, multi-select ones as lists (Hydra's
    `runtime.choices` leaves those out): read from the job's resolved defaults list, so
    an experiment's `override /augmentation: [flip, crop]` counts as the command line's does."""
    from hydra.core.global_hydra import GlobalHydra

    hydra_cfg = HydraConfig.get()
    choices: dict[str, str | list[str]] = {
        group: str(choice) for group, choice in hydra_cfg.runtime.choices.items() if choice is not None
    }
    try:
        listed = (
            GlobalHydra.instance()
            .config_loader()
            .compute_defaults_list(
                config_name=hydra_cfg.job.config_name, overrides=list(hydra_cfg.overrides.task), run_mode=RunMode.RUN
            )
        )
    except Exception:  # no defaults list to read (a saved config): the single choices only
        return choices
    selected: dict[str, list[str]] = {}
    for default in listed.defaults:
        group, _, name = (default.config_path or "").rpartition("/")
        if group and not group.startswith("hydra") and group not in choices:
            selected.setdefault(group, []).append(name)
    return {**choices, **selected}


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
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = group_choices()  # Hydra recomputes the defaults list for it: once per job
    hparams = hparams_from_hydra(cfg, choices)
    set_explicit_keys(keys_set_by_user(choices))
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:  # a sweep worker (joblib, submitit) stops on SIGTERM/SIGUSR1 like a single run
        from trainer_cli.faults import install_stop_handlers

        install_stop_handlers()
    summary: dict[str, Any] | None = None
    try:
        if distributed.launched():  # one rank of torchrun / trainer.devices=N / SLURM tasks
            distributed.init(str(cfg.trainer.device))
            run_dir = Path(distributed.broadcast(str(run_dir)))  # rank 0's folder, for every rank
        elif multirun and distributed.requested_devices([f"trainer.devices={cfg.trainer.get('devices', 1)}"]) > 1:
            summary = run_job_in_processes(int(cfg.trainer.devices), run_dir)  # this job as one torchrun
        elif int(cfg.trainer.get("devices", 1)) > 1:
            raise UserError("trainer.devices: set it on the command line (train trainer.devices=N), or use torchrun")
        if summary is None:
            if multirun and not distributed.launched():  # a rank's GPU is its local rank's
                from trainer_cli.sweep import assign_gpu

                assign_gpu(cfg, HydraConfig.get().job.num)
                from trainer_cli.sweep import one_line_per_job  # the sweep's console: one line a job

                with one_line_per_job(str(cfg.optimized_metric)) as outcome:
                    summary = outcome["summary"] = execute(cfg, run_dir, hparams)
            else:
                summary = execute(cfg, run_dir, hparams)
    except Exception as error:
        debug = os.environ.get("TRAINER_CLI_DEBUG") == "1"
        from trainer_cli.faults import PREEMPTED_EXIT, Preempted, discard_empty_run_folder

        if multirun and isinstance(error, Preempted):
            return stopped_job(cfg, run_dir, error)
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
            last = run_folder.last_checkpoint(Path(str(cfg.resume or run_dir)))
            message += f"; the last good checkpoint is {last}" if last.is_file() else "; no checkpoint was written yet"
        print(message, file=sys.stderr)
        sys.exit(2 if isinstance(error, UserError) else 1)
    finally:
        distributed.teardown()
    if summary.get("verdict") == "FAIL" and not multirun:  # a diagnosis that failed: scripts see it
        sys.exit(1)
    return metrics.objective(summary, str(cfg.optimized_metric))


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
    argv = ["--config-name", str(hydra_cfg.job.config_name)]
    for source in hydra_cfg.runtime.config_sources:  # --config-path / --config-dir as the sweep had them
        if source.schema == "file" and source.provider == "main" and Path(source.path) != Path(CONF_DIR):
            argv += ["--config-path", str(source.path)]
        elif source.schema == "file" and source.provider == "command-line":
            argv += ["--config-dir", str(source.path)]
    argv += [*hydra_cfg.overrides.task, f"hydra.run.dir={run_dir}"]
    log.info(f"job {hydra_cfg.job.num}: {devices} processes (torchrun)")
    record = run_dir / ".hydra"  # the sweep job's own record: the run rewrites it, a config error removes it
    saved = {path.name: path.read_bytes() for path in record.glob("*.yaml")}
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


def rewrite_argv(argv: list[str]) -> list[str]:
    """Make the documented command lines work from any folder.

    - `--config-path` relative to the current folder (Hydra reads it relative to this file);
    - `resume=<run folder>` continues in that folder, without rewriting its `.hydra/`;
    - `data.kfold=k` and `ensemble=<folders>` choose their procedure (`mode=`) unless the
      command line names one;
    - `--trust <module>` (repeatable) trusts the user's own module for `_target_`s: the
      user's act on the command line, passed on in $TRAINER_CLI_TRUST (sweep jobs inherit it).
    """
    out: list[str] = []
    trusted: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--trust" and i + 1 < len(argv):
            trusted.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--trust="):
            trusted.append(arg.split("=", 1)[1])
            i += 1
            continue
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
    if trusted:
        os.environ[TRUST_ENV] = ",".join([*user_trusted_modules(), *trusted])
    if not any(a.split("=", 1)[0].lstrip("+~") == "mode" for a in out):
        for key, mode in MODE_SHORTCUTS.items():
            values = [a.split("=", 1)[1] for a in out if a.split("=", 1)[0] == key]
            if values and values[0] not in ("", "null"):
                out.append(f"mode={mode}")
                break
    resume = [a.split("=", 1)[1] for a in out if a.startswith("resume=")]
    if resume and resume[0] not in ("", "null"):
        run_dir = os.path.abspath(resume[0])
        if not os.path.isdir(run_dir):
            raise UserError(f"resume: '{resume[0]}' is not a run folder")
        out = [*resume_overrides(out), f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
    if any(a in ("--config-path", "-cp") or a.startswith("--config-path=") for a in out):
        # A saved run config has no hydra section: keep run folders unique all the same.
        if not any(a.startswith("hydra.run.dir=") for a in out):
            out.append("hydra.run.dir=outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}")
        out += [
            "hydra.sweep.dir=outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}",
            "hydra.job.name=train",
        ]
        out += saved_run_console(out)
    return out


def saved_run_console(argv: list[str]) -> list[str]:
    """A run folder's `.hydra/config.yaml` has no defaults list, so Hydra would fall back to its
    own `hydra/job_logging` (a second console handler in its `[..][name][LEVEL] -` format, which
    shows the lines meant for train.log only) and its own `--help`: a re-run printed every line
    twice. These overrides restore the project's shipped choices, as a fresh run has them (the
    same fixed names, never read from the saved hydra.yaml: logging comes from the command line
    or the project, not from a file), unless the command line names its own."""
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    if "hydra.searchpath" in given:  # the user's own search path: their choices, untouched
        return []
    extra = [f"hydra/{group}={name}" for group, name in (("job_logging", "rich"), ("help", "trainer"))]
    extra = [a for a in extra if a.split("=", 1)[0] not in given]
    return [*extra, f"hydra.searchpath=[file://{CONF_DIR}]"] if extra else []  # where they are found


# What a resumed run may change: its length (a larger N extends it) and the device it runs on.
RESUME_OVERRIDES = ("epochs", "trainer.device")


def resume_overrides(args: list[str]) -> list[str]:
    """With `resume=`, the run's own saved config is what runs: the few accepted overrides go
    to `resume_with.<key>`, any other is refused (it would be silently ignored)."""
    out: list[str] = []
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        takes_value = out and out[-1] in ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
        if arg.startswith("-") or key in ("resume", "trainer.devices") or takes_value:
            out.append(arg)  # trainer.devices: how many processes resume it, not part of the run's config
        elif key in RESUME_OVERRIDES and "=" in arg:
            out.append(f"+resume_with.{key}={arg.split('=', 1)[1]}")
        else:
            accepted = ", ".join(f"{k}=..." for k in (*RESUME_OVERRIDES, "trainer.devices"))
            raise UserError(
                f"{key[:80]}: cannot be changed when resuming (the run's saved config is what runs); "
                f"with resume= only {accepted} are accepted (a larger epochs extends the run)"
            )
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


def shorten(message: str, limit: int = 200) -> str:
    """One line, with any value longer than `limit` characters cut (a 1 MB override is not echoed)."""
    line = message.splitlines()[0] if message else message

    def cut(match: re.Match[str]) -> str:
        text = match.group(0)
        return f"{text[: limit // 2]}...({len(text):,} characters)"

    return re.sub(rf"[^\s',;]{{{limit + 1},}}", cut, line)


def hydra_error_line(error: Exception) -> str:
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
        line = str(error).splitlines()[0]
        if not line.isascii():
            key = line.rpartition(": ")[2].split("=", 1)[0]
            return f"{key}: cannot parse a value with non-ASCII characters unquoted; quote it: '{key}=\"...\"'"
        return f"cannot parse override: {line}"
    if isinstance(error, ConfigCompositionException):
        first = str(error).splitlines()[0]
        if "Could not override" in first or "Could not append" in first:
            key = first.split("'")[1] if "'" in first else ""
            return f"{key}: unknown key (misspelt?); {_accepted_keys(key)}"
        if "Could not load" in first and error.__cause__ is not None:
            return hydra_error_line(error.__cause__) if isinstance(error.__cause__, Exception) else first
        return first
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _discard_hydra_run_folder() -> None:
    """The folder Hydra made for a single run that failed before writing anything (not a resume)."""
    from trainer_cli.faults import discard_empty_run_folder

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.get("output_dir")
    if output_dir and hydra_cfg.mode == RunMode.RUN and hydra_cfg.output_subdir is not None:
        discard_empty_run_folder(Path(output_dir))


def install_hydra_guard() -> None:
    """Route Hydra's own instantiation of callbacks, sweepers and launchers, its logging set-up
    and the `pkg://` entries of `hydra.searchpath` through the trust check (trust.py;
    idempotent). Installed when this module is imported, so sweep workers (which import the
    task function's module) are guarded too."""
    import hydra.core.plugins
    import hydra.core.utils
    import hydra.utils
    from hydra._internal import hydra as internal_hydra

    if getattr(hydra.utils.instantiate, "_trainer_cli_guard", False):
        return
    from hydra._internal.config_repository import ConfigRepository

    instantiate = hydra.utils.instantiate
    configure_log = hydra.core.utils.configure_log
    initialize_sources = ConfigRepository.initialize_sources

    def guarded_instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
        # Hydra passes the plugin class itself as `_target_` (from its own registry).
        if "_target_" in kwargs:
            trust.check_object("hydra", trust.check_path("hydra", kwargs["_target_"]))
        key = config._get_full_key(None) if isinstance(config, DictConfig) else ""
        key = key if key.startswith("hydra") else f"hydra.{key}".rstrip(".")
        trust.check_targets(config, key)
        return instantiate(config, *args, **kwargs)

    def guarded_configure_log(log_config: Any, verbose_config: Any = False) -> None:
        from hydra.core.hydra_config import HydraConfig

        log_dir = None
        if HydraConfig.initialized():
            log_dir = HydraConfig.get().runtime.get("output_dir")
            trust.check_hydra_node(OmegaConf.create({"job": {"env_set": HydraConfig.get().job.get("env_set")}}))
        name = log_config._key() if isinstance(log_config, DictConfig) else "job_logging"
        from trainer_cli.faults import claim_hydra_run_folder

        claim_hydra_run_folder()  # the lock and the folder check come before Hydra's first write there
        try:
            trust.check_logging(log_config, f"hydra.{name}", log_dir)
            configure_log(log_config, verbose_config)
        except Exception as error:
            if log_dir is not None:  # the folder Hydra just made for this job, still empty
                from trainer_cli.faults import discard_empty_run_folder

                discard_empty_run_folder(Path(log_dir))
            if isinstance(error, UserError) or not isinstance(
                error, (ValueError, TypeError, AttributeError, ImportError)
            ):
                raise
            # logging.config's messages name the handler; the cause says what is wrong with it
            cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
            raise UserError(f"hydra.{name}: {str(error).splitlines()[0]}{cause}"[:400]) from None

    def guarded_initialize_sources(self: Any, config_search_path: Any) -> None:
        # `hydra.searchpath` (from the primary config or an override): a pkg:// entry imports its module.
        added = [e for e in config_search_path.get_path() if str(e.provider).startswith("hydra.searchpath")]
        for i, entry in enumerate(added):
            trust.check_searchpath(f"hydra.searchpath[{i}]", entry.path)
        initialize_sources(self, config_search_path)

    guarded_instantiate._trainer_cli_guard = True  # type: ignore[attr-defined]
    hydra.utils.instantiate = guarded_instantiate
    hydra.core.plugins.instantiate = guarded_instantiate
    hydra.core.utils.configure_log = guarded_configure_log
    internal_hydra.configure_log = guarded_configure_log
    ConfigRepository.initialize_sources = guarded_initialize_sources  # type: ignore[method-assign]


# conf/hydra/launcher/joblib.yaml replaces Hydra's config of that name on purpose (trainer_cli's
# joblib launcher, trainer_cli/launchers.py); Hydra checks it against its own and warns, in
# every sweep worker too (which import this module first).
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema")

# Hydra's own callbacks, sweeper, launcher and logging handlers pass the trust check too; at
# import, so that sweep workers (which import this module to run `hydra_main`) are guarded.
install_hydra_guard()


def main() -> None:
    """The `train` console command: Hydra's main with one-line errors and no tracebacks."""
    register_resolvers()
    from trainer_cli.faults import install_stop_handlers

    install_stop_handlers()  # SIGTERM/SIGUSR1: finish the step, checkpoint, exit 75
    # Hydra re-raises instead of printing its own multi-line report; we print one line.
    # TRAINER_CLI_DEBUG=1 shows the whole traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    debug = os.environ.get("TRAINER_CLI_DEBUG") == "1"
    # Your own modules in the current folder are importable, as under `python -m`; appended,
    # so a file there never shadows an installed package (torch, trainer_cli).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        if sys.argv[1:2] == ["compare"]:  # `train compare A B ...`: reads folders, composes no config
            from trainer_cli.compare import main as compare

            sys.exit(compare(sys.argv[2:]))
        from trainer_cli.sweep import expand_seeds  # seeds=N: the run or sweep over N seeds

        argv = distributed.worker_overrides(rewrite_argv(expand_seeds(sys.argv[1:])))
        # A sweep (-m) with trainer.devices=N starts one N-process run per job (run_job_in_processes).
        sweep = any(a in ("-m", "--multirun") for a in argv)
        devices = 1 if sweep else distributed.requested_devices(argv)
        if devices > 1 and not distributed.launched() and not any(a in INFO_FLAGS for a in argv):
            # `train trainer.devices=N`: the same command in N processes, started by torchrun.
            sys.exit(distributed.launch(sys.argv[1:], devices))
        sys.argv = [sys.argv[0], *argv]
        hydra_main()
    except UserError as error:
        if debug:
            raise
        _discard_hydra_run_folder()  # e.g. a refused logging config, found after Hydra made the folder
        print(f"error: {shorten(str(error))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; continue with `train resume=<run folder>`", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if debug:
            raise
        import yaml
        from hydra.errors import HydraException

        if isinstance(error, yaml.YAMLError):  # a config file that is not valid YAML
            mark = getattr(error, "problem_mark", None)
            where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            print(f"error: {where}: YAML syntax error ({problem}); fix the file", file=sys.stderr)
            sys.exit(2)
        if isinstance(error, HydraException):
            print(f"error: {shorten(hydra_error_line(error))}", file=sys.stderr)
            sys.exit(2)
        if isinstance(error, OSError):
            print(f"error: {shorten(str(error))}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
