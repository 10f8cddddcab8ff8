"""Hyperparameter search: Hydra's Optuna sweeper, made resumable, and coarse-to-fine search.

`conf/hparams_search/*.yaml` pick these sweepers. What they add to the plugin's own:
- the study lives in a database: `sqlite:///<sweep folder>/optuna.db` unless `storage` names
  any SQLAlchemy URL, and a re-run with the same storage and study name continues the study
  (job folders are numbered after the trials already there, so nothing is overwritten);
- `direction: auto` reads the direction from `optimized_metric` (losses are minimized);
- a job that failed (`main()` returns NaN for it) is told to Optuna as a failed trial, and
  the sweep goes on.

Hydra instantiates sweepers only from the `hydra_plugins` namespace, so the config names them
through `hydra_plugins.trainer_cli_search`. Hydra imports that package at every start: optuna
is imported only when a search runs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginOptunaSweeper
from omegaconf import DictConfig, OmegaConf

from trainer_cli import metrics
from trainer_cli.config import UserError

if TYPE_CHECKING:
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A sweep job whose run failed: its metrics.json says why."""


class _FailedJobsAsFailures:
    """Launcher wrapper: a job that returned NaN reads as a failed job.

    `main()` catches a failing run inside a multirun (so the other jobs go on and the
    report shows it) and returns NaN; the Optuna plugin would pass NaN to `study.tell`,
    which optuna rejects, so the job is turned into the failed job it was.
    """

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        returns = list(self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx))
        for ret in returns:
            value = ret._return_value
            if ret.status == JobStatus.COMPLETED and isinstance(value, float) and math.isnan(value):
                ret.status = JobStatus.FAILED
                hydra_cfg = ret.hydra_cfg if isinstance(ret.hydra_cfg, DictConfig) else OmegaConf.create()
                job_dir = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir", default=ret.working_dir)
                ret._return_value = TrialFailed(f"job in {job_dir} failed; its metrics.json says why")
        return returns


def default_storage(sweep_dir: str) -> str:
    """SQLite in the sweep folder: the study survives the process that ran it."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


def direction_of(metric: str) -> str:
    return "minimize" if metrics.minimized(metric) else "maximize"


def continue_study(storage: str, study_name: str) -> int:
    """Mark the trials an interrupted sweep left running as failed; return the trial count.

    The count numbers the new jobs after the old ones, in the same sweep folder.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet: a new sweep
        return 0
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if trials:
        log.info(f"continuing study '{study_name}' in {storage} after {len(trials)} trials")
    return len(trials)


def _prepare(impl: OptunaSweeperImpl, config: DictConfig) -> None:
    """Storage, study name and direction defaults; failed jobs as failed trials; job numbers."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's schema set-up chatter
    if impl.storage is None:
        impl.storage = default_storage(str(config.hydra.sweep.dir))
    if impl.study_name is None:
        impl.study_name = "trainer_cli"
    if impl.direction == "auto":
        impl.direction = direction_of(str(config.get("optimized_metric", "val/acc")))
    impl.launcher = _FailedJobsAsFailures(impl.launcher)
    impl.job_idx = continue_study(impl.storage, impl.study_name)
    if impl.job_idx and hasattr(impl.sampler, "reseed_rng"):
        # The same seed would propose the same points again as the first run did.
        impl.sampler.reseed_rng()


class OptunaSweeper(PluginOptunaSweeper):
    """Hydra's Optuna sweeper with a resumable study in the sweep folder (see the module doc)."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        _prepare(impl, impl.config)
        _sweep(impl, arguments)


def _sweep(impl: OptunaSweeperImpl, arguments: list[str]) -> None:
    """The plugin's sweep, with optuna's search-space clash as a one-line error."""
    try:
        impl.sweep(arguments)
    except ValueError as error:
        if "No trials are completed" in str(error) or "Record does not exist" in str(error):
            _every_trial_failed(impl)
        if "different distribution" not in str(error):
            raise
        raise UserError(
            f"hydra.sweeper.params: the search space differs from the one study '{impl.study_name}' in "
            f"{impl.storage} was started with; continue it with the same ranges, or start a new sweep "
            "(another hydra.sweep.dir or hydra.sweeper.study_name)"
        ) from None


def _every_trial_failed(impl: OptunaSweeperImpl) -> None:
    """Hydra skips the end-of-sweep callbacks when the sweeper raises: report, then say so."""
    from trainer_cli.sweep import report

    sweep_dir = Path(str(impl.config.hydra.sweep.dir))
    report(sweep_dir, str(impl.config.get("optimized_metric", "val/acc")))
    raise UserError(f"{impl.study_name}: every trial failed; summary.csv in {sweep_dir} says why")


def narrowed(distribution: optuna.distributions.BaseDistribution, values: list[Any], widen: float) -> str:
    """A sweep override for the range spanned by the top trials' `values`, widened.

    Log ranges widen by the factor `widen` on each side (geometrically), linear ones by
    the same fraction of their span; the result stays inside the coarse range.
    """
    import optuna

    dist = distribution
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        kept = [c for c in dist.choices if c in values]
        return f"choice({','.join(str(c) for c in kept)})"
    low, high = min(values), max(values)
    is_log = isinstance(dist, optuna.distributions.LogUniformDistribution) or getattr(dist, "log", False)
    if is_log:
        low, high = low / widen, high * widen
    else:
        span = (high - low) or abs(high) or 1.0
        low, high = low - (widen - 1) * span, high + (widen - 1) * span
    low, high = max(low, dist.low), min(high, dist.high)
    integer_kinds = (optuna.distributions.IntUniformDistribution, optuna.distributions.IntLogUniformDistribution)
    is_int = isinstance(dist, integer_kinds)
    if is_int:
        interval = f"int(interval({int(math.floor(low))},{int(math.ceil(high))}))"
    else:
        interval = f"interval({low:.6g},{high:.6g})"
    return f"tag(log,{interval})" if is_log else interval


class CoarseToFineSweeper(PluginOptunaSweeper):
    """The lecture's coarse-to-fine search as one sweep, in two Optuna studies.

    Stage 1 ("<study>-coarse") samples the wide ranges in `params` at random for
    `coarse.n_trials` jobs of `coarse.epochs` epochs. Stage 2 ("<study>-fine") samples, for
    `fine.n_trials` jobs of `fine.epochs` epochs, the ranges spanned by the `fine.top_k` best
    coarse trials, widened by `fine.widen` (a factor, on log ranges), at a constant LR (the
    lecture's step 5: no decay; `fine.scheduler` names the scheduler option, null keeps the
    run's).
    """

    def __init__(
        self,
        params: dict[str, str],
        coarse: dict[str, Any],
        fine: dict[str, Any],
        storage: str | None = None,
        study_name: str | None = "coarse_to_fine",
        direction: str = "auto",
        seed: int | None = None,
        n_jobs: int = 1,
    ) -> None:
        import optuna

        sampler = optuna.samplers.RandomSampler(seed=seed)
        super().__init__(
            sampler=sampler, direction=direction, storage=storage, study_name=study_name,
            n_trials=int(coarse["n_trials"]), n_jobs=n_jobs, max_failure_rate=1.0,
            search_space=None, custom_search_space=None, params=None,
        )  # fmt: skip
        self.params = dict(params)
        self.coarse = dict(coarse)
        self.fine = dict(fine)
        self.seed = seed

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        impl = self.sweeper
        name = impl.study_name or "coarse_to_fine"
        stage = {"coarse": self.coarse, "fine": self.fine}

        # Every job of this run is numbered after every trial of both stages already in
        # the storage, so a continued sweep never overwrites an earlier job folder.
        impl.study_name = f"{name}-fine"
        _prepare(impl, impl.config)
        launcher, fine_before = impl.launcher, impl.job_idx
        impl.study_name = f"{name}-coarse"
        coarse_before = continue_study(impl.storage, impl.study_name)
        impl.job_idx = coarse_before + fine_before
        if impl.job_idx:
            impl.sampler.reseed_rng()  # a continued sweep: do not repeat the first run's points
        impl.params = OmegaConf.create({**self.params, "epochs": stage["coarse"]["epochs"]})
        log.info(f"coarse stage: {self.coarse['n_trials']} trials of {self.coarse['epochs']} epochs")
        first_coarse = impl.job_idx
        _sweep(impl, arguments)
        self._record_stage("coarse", range(first_coarse, impl.job_idx), dict(self.params))

        coarse_study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
        done = [t for t in coarse_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            _every_trial_failed(impl)
        minimize = coarse_study.direction == optuna.study.StudyDirection.MINIMIZE
        top = sorted(done, key=lambda t: t.value if minimize else -t.value)[: int(self.fine["top_k"])]
        fine_params = dict(self.params)
        for key in top[0].distributions:
            values = [t.params[key] for t in top]
            fine_params[key] = narrowed(top[0].distributions[key], values, float(self.fine.get("widen", 2.0)))
        log.info(f"fine stage: {self.fine['n_trials']} trials of {self.fine['epochs']} epochs over {fine_params}")

        impl.study_name = f"{name}-fine"
        fixed = {"epochs": stage["fine"]["epochs"]}
        if self.fine.get("scheduler", "constant") is not None:
            fixed["scheduler"] = self.fine.get("scheduler", "constant")
        impl.params = OmegaConf.create({**fine_params, **fixed})
        impl.n_trials = int(self.fine["n_trials"])
        impl.sampler = optuna.samplers.RandomSampler(seed=None if self.seed is None else self.seed + 1)
        if coarse_before + fine_before:
            impl.sampler.reseed_rng()
        impl.launcher = launcher
        first_fine = impl.job_idx
        _sweep(impl, arguments)
        self._record_stage("fine", range(first_fine, impl.job_idx), fine_params)

    def _record_stage(self, stage: str, jobs: range, params: dict[str, str]) -> None:
        """`stages.yaml` in the sweep folder: which jobs belong to which stage, and its ranges.

        The sweep report reads it to show each job's stage.
        """
        path = Path(str(self.sweeper.config.hydra.sweep.dir)) / "stages.yaml"
        stages = OmegaConf.load(path) if path.is_file() else OmegaConf.create({})
        previous = list(stages.get(stage, {}).get("jobs", []))
        stages[stage] = {"jobs": previous + list(jobs), "params": params}
        OmegaConf.save(stages, path)
