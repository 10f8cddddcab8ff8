"""Hydra's joblib launcher, made to survive a sweep job whose worker process dies.

joblib runs sweep jobs in loky worker processes. When one of them dies (SIGKILL, the OOM
killer, a segfault), loky marks its whole executor broken, kills the other workers (their
jobs die too) and `Parallel` raises `TerminatedWorkerError`: Hydra's launcher lets that end the
sweep, with no summary. `JoblibLauncher.launch` catches it instead:

- the jobs that had not started yet run again in a fresh executor, in parallel as before;
- the jobs that were running (the one whose worker died, and those loky killed with it: they
  cannot be told apart) are retried one at a time, each alone in a fresh worker, in a job
  folder cleared of the dead attempt's files; one whose worker dies again, alone, is recorded
  as killed: its folder has no `metrics.json` (the sweep report's `killed`), the sweeper gets
  NaN (Optuna records a failed trial), and the rest of the sweep goes on.

A job that dies for lack of memory only beside other jobs therefore finishes on its retry.
`hydra/launcher=joblib` selects this class: `conf/hydra/launcher/joblib.yaml` replaces Hydra's
own `joblib` launcher config (the same keys and defaults) and names it through
`hydra_plugins/trainer_cli_launchers` (Hydra finds launchers only in that namespace).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher import joblib_launcher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def job_config(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig) -> DictConfig:
    """The config of sweep job `idx`, as Hydra's joblib launcher composes it."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    return sweep_config


def job_dir(sweep_config: DictConfig) -> Path:
    """The job's folder (what `run_job` makes of `hydra.sweep.dir` and `hydra.sweep.subdir`)."""
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


def execute_job(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    started: str,
    retry: bool,
) -> tuple[int, JobReturn]:
    """Run one job in a worker (Hydra's `execute_job`), first marking it started; a retry
    first clears the job folder of the dead attempt's files (none holds a summary)."""
    Path(started, str(idx)).touch()
    # The worker composes the job's config itself, and Hydra warns there that our joblib.yaml
    # and sweeper/basic.yaml replace its own configs of those names (on purpose); `train`'s main() silences that warning
    # in the sweep's process only, and a worker does not run main().
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/(launcher/joblib|sweeper/basic)' is validated against ConfigStore schema"
    )
    # This worker composes and logs the job itself: the parent's trust rules first (the guard
    # is installed by `train`'s main(), which a worker does not run), and no folder on sys.path.
    from trainer_cli import trust
    from trainer_cli.cli_guard import install_hydra_guard
    from trainer_cli.cli_startup import share_compositions

    trust.forget_current_folder()
    install_hydra_guard()
    share_compositions()  # this worker's later jobs merge the same files once
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = job_config(idx, overrides, hydra_context, config)
    HydraConfig.instance().set_config(sweep_config)
    folder = job_dir(sweep_config)
    if retry and folder.is_dir() and not (folder / "metrics.json").exists():
        shutil.rmtree(folder)  # a fresh start: no TensorBoard steps or checkpoints from the killed attempt
    ret = run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    return idx, ret


class JoblibLauncher(joblib_launcher.JoblibLauncher):
    """Hydra's joblib launcher; a job whose worker dies is retried alone once, then recorded
    as killed, and the other jobs run to the end."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg  # joblib: only when launching
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = dict(self.joblib)
        joblib_cfg["backend"] = "loky"  # as Hydra's: its threading backend is incompatible with Hydra
        process_joblib_cfg(joblib_cfg)
        log.info(
            f"Joblib.Parallel({','.join(f'{k}={v}' for k, v in joblib_cfg.items())}) is launching "
            f"{len(job_overrides)} jobs"
        )
        log.info(f"Launching jobs, sweep output dir : {sweep_dir}")
        jobs = {initial_job_idx + i: list(overrides) for i, overrides in enumerate(job_overrides)}
        for idx, overrides in jobs.items():
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        singleton_state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        from trainer_cli.sweep import import_report_modules_meanwhile

        import_report_modules_meanwhile()  # this process waits on the workers: the report's imports now

        with tempfile.TemporaryDirectory(prefix="trainer_cli_sweep_") as started:

            def run(batch: list[int], alone: bool = False) -> list[int]:
                """Run `batch` (`alone`: its one job in a worker of its own); returns the jobs a
                dead worker took down, started or not."""
                try:
                    if alone:  # not Parallel(n_jobs=1): that runs the job in this process
                        from joblib.externals.loky import get_reusable_executor

                        future = get_reusable_executor(max_workers=1).submit(execute_job, *arguments(batch[0], True))
                        results.update([future.result()])
                    else:
                        calls = (delayed(execute_job)(*arguments(idx, False)) for idx in batch)
                        for idx, ret in Parallel(**joblib_cfg, return_as="generator_unordered")(calls):
                            results[idx] = ret
                except TerminatedWorkerError as error:
                    codes = str(error).partition("exit codes of the workers are ")[2].splitlines()[:1]
                    log.warning(f"a worker process died ({''.join(codes) or 'killed'})")
                    return [idx for idx in batch if idx not in results]
                return []

            def arguments(idx: int, retry: bool) -> tuple[Any, ...]:
                return (idx, jobs[idx], self.hydra_context, self.config, self.task_function, singleton_state,
                        started, retry)  # fmt: skip

            waiting, alone = list(jobs), []
            while waiting or alone:
                if waiting:
                    lost = run(waiting)
                    # Started jobs were running when the worker died: one of them killed it.
                    running = [idx for idx in lost if Path(started, str(idx)).exists()]
                    waiting = [idx for idx in lost if idx not in running]
                    if lost:
                        log.warning(f"jobs {running} were running: each is retried alone; jobs {waiting} go on")
                    alone += running
                else:
                    idx = alone.pop(0)
                    if run([idx], alone=True):
                        results[idx] = self.killed(idx, jobs[idx])
        return [results[idx] for idx in sorted(jobs)]

    def killed(self, idx: int, overrides: list[str]) -> JobReturn:
        """The record of a job whose worker died twice: NaN for the sweeper; its folder keeps no
        `metrics.json`, which the sweep report reads as killed."""
        assert self.hydra_context is not None and self.config is not None
        sweep_config = job_config(idx, overrides, self.hydra_context, self.config)
        folder = job_dir(sweep_config)
        log.error(f"job #{idx} ({' '.join(filter_overrides(overrides))}): its worker died again, alone; "
                  f"recorded as killed ({folder})")  # fmt: skip
        task_cfg = OmegaConf.masked_copy(sweep_config, [str(k) for k in sweep_config if k != "hydra"])
        return JobReturn(
            overrides=overrides,
            cfg=task_cfg,
            hydra_cfg=OmegaConf.create({"hydra": sweep_config.hydra}),
            working_dir=str(folder),
            task_name=str(sweep_config.hydra.job.name),
            status=JobStatus.COMPLETED,
            _return_value=math.nan,
        )
