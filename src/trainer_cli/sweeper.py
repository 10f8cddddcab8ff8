"""trainer_cli's Hydra sweeper on Optuna's ask-and-tell API (Optuna >= 4, SQLAlchemy 2).

`conf/hparams_search/{random,bayes}.yaml` select `OptunaSweeper` (through the one-line
`hydra_plugins.trainer_cli_search` package: Hydra builds sweepers only from that namespace).
What it does, beyond asking Optuna for points and telling it the results:
- the study lives in storage that outlives the process: `sqlite:///<sweep folder>/optuna.db`
  unless `storage` names a database URL (anything with `://`) or a journal file (any other
  string: a path, relative to the sweep folder; for clusters with a shared file system and no
  database server);
- `direction: auto` reads the direction from `optimized_metric` (losses are minimized);
- every trial records its job folder (`user_attrs["job"]`); a job that failed (`main()`
  returned NaN) is a failed trial, a job the pruner stopped a pruned one (the job tells its
  trial itself, through the storage: `search.TrialPruning`);
- running the same sweep again in its folder resumes it (`resume_plan`): finished jobs are
  kept, failed, killed and preempted ones run again in their own folders (a preempted run
  continues its checkpoint), new jobs are numbered after the last, and a changed search space
  or fixed override is refused in one line (`search.yaml` in the sweep folder records them).
Each job gets its trial as data: `++hydra.sweeper.trial=<number>` and
`++hydra.sweeper.trial_study=<study>` overrides, read by `search.TrialPruning` in the job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from trainer_cli import metrics, run_folder
from trainer_cli.config import UserError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

RECORD = run_folder.SEARCH_RECORD  # the sweep's search space and fixed overrides, for a resumed sweep to compare


# --- storage and direction ----------------------------------------------------------------------


def storage_location(storage: str | None, sweep_dir: str | Path) -> str:
    """The storage a sweep and its jobs open: a database URL, or a journal file's absolute path."""
    if storage is None:
        return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"
    if "://" in storage:
        return storage
    folder = Path(sweep_dir).resolve()
    journal = (folder / storage).resolve()  # a journal file, inside the sweep folder: a sweep writes only there
    if not journal.is_relative_to(folder) or journal == folder:
        raise UserError(
            f"hydra.sweeper.storage: a journal file is a path inside the sweep folder (optuna.journal), "
            f"got '{storage}'; or give a database URL (sqlite:///..., postgresql://...)"
        )
    return str(journal)


def open_storage(location: str) -> Any:
    """Optuna storage for `storage_location`'s answer: RDB for URLs, a journal file otherwise."""
    import optuna

    logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's schema set-up chatter
    if "://" in location:
        return optuna.storages.RDBStorage(location)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(location).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(location))


def direction_of(metric: str) -> str:
    return "minimize" if metrics.minimized(metric) else "maximize"


# --- the search space from override strings -----------------------------------------------------


def distribution(override: Override) -> Any:
    """An Optuna distribution for a sweep override (`interval`, `tag(log, ...)`, `choice`,
    `range`), or the plain value of a fixed one."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        # Hydra's range excludes its stop (as Python's): the last point is the one before it.
        count = math.ceil((value.stop - value.start) / value.step)
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.start + (count - 1) * value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.start + (count - 1) * value.step), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise UserError(f"hydra.sweeper.params: '{override.input_line}' is not a range Optuna can search")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(distributions, fixed values) of `key=value` overrides: the sweep's params, then the
    command line's (a later one replaces an earlier one of the same key)."""
    from optuna.distributions import BaseDistribution

    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        value = distribution(override)
        space.pop(override.get_key_element(), None)  # a later override of a key replaces an earlier one
        fixed.pop(override.get_key_element(), None)
        if isinstance(value, BaseDistribution):
            space[override.get_key_element()] = value
        else:
            fixed[override.get_key_element()] = value
    return space, fixed


def grid_choices(dist: Any) -> list[Any]:
    """The points a grid sampler visits for a discrete distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None:
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(count)]
    raise UserError(f"hydra/sweeper/sampler=grid: {dist} is continuous; give choice(...) or range(...)")


# --- resuming a sweep in its folder -------------------------------------------------------------


def check_record(sweep_dir: Path, arguments: Sequence[str]) -> None:
    """Write the sweep's search space and fixed overrides (`key=value` strings, later ones
    winning), or refuse, in one line, a resumed sweep whose differ."""
    now: dict[str, dict[str, str]] = {"params": {}, "fixed": {}}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key, text = override.get_key_element(), override.input_line.split("=", 1)[1].strip()
        for part in now.values():
            part.pop(key, None)
        now["params" if override.is_sweep_override() else "fixed"][key] = text
    path = sweep_dir / RECORD
    if not path.is_file():
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(now), path)
        return
    before = OmegaConf.to_container(OmegaConf.load(path))
    for part, what in (("params", "search space"), ("fixed", "fixed overrides")):
        old, new = before.get(part, {}), now[part]
        changed = [f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in sorted({*old, *new})
                   if old.get(k) != new.get(k)]  # fmt: skip
        if changed:
            raise UserError(
                f"{sweep_dir}: the {what} changed since this sweep started ({'; '.join(changed)}); "
                "run it as it was to resume it, or give another hydra.sweep.dir"
            )


@dataclass
class ResumePlan:
    """What a sweep run does in a folder that may hold an earlier run of it."""

    retry: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (job number, its params)
    finished_jobs: int = 0  # jobs whose latest trial is complete or pruned
    next_job: int = 0  # the number of the first new job

    def new_jobs(self, n_trials: int) -> int:
        """How many new jobs bring the sweep to `n_trials` jobs."""
        return max(0, n_trials - self.finished_jobs - len(self.retry))

    def jobs(self, n_trials: int) -> list[int]:
        """The job folders a run of this plan writes: the retries, then the new ones."""
        return [*(job for job, _ in self.retry), *range(self.next_job, self.next_job + self.new_jobs(n_trials))]


def finished_run_value(job_dir: Path, metric: str) -> float | None:
    """What `main()` returned for the run in `job_dir` when it finished (its `metrics.json`,
    written before `main()` returns, says ok); None otherwise."""
    import json

    try:
        summary = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):  # none, or killed while writing it
        return None
    if summary.get("status") != "ok":
        return None
    value = metrics.objective(summary, metric)
    return None if math.isnan(value) else value


def finished_value(job_dir: Path, trial_number: int, metric: str) -> float | None:
    """`finished_run_value` for a job that finished its run but whose sweep was killed before it
    told the study; None when the folder holds no finished run of this trial."""
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return None
    given = OmegaConf.to_container(OmegaConf.load(hydra_file).hydra.overrides.hydra, resolve=False)
    if f"++hydra.sweeper.trial={trial_number}" not in given:
        return None  # an earlier trial's run in this folder, not this one's
    return finished_run_value(job_dir, metric)


def finished_job_value(job_dir: Path, overrides: Sequence[str], metric: str) -> float | None:
    """`finished_run_value` for a job of a plain sweep, when `job_dir` holds a finished run of
    exactly these overrides; None otherwise (it runs, again, in that folder)."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    if OmegaConf.to_container(OmegaConf.load(overrides_file), resolve=False) != list(overrides):
        return None
    return finished_run_value(job_dir, metric)


def resume_plan(studies: Sequence[optuna.Study], sweep_dir: Path | None = None, metric: str = "val/acc") -> ResumePlan:
    """Each job folder's latest trial decides: complete or pruned is done, failed or left running
    (the sweep was killed) runs again in that folder. A left-running trial whose run finished
    (its `metrics.json` in `sweep_dir` says ok) is told its value; any other is marked failed."""
    import optuna

    latest: dict[int, optuna.trial.FrozenTrial] = {}  # a job's latest trial: the last one asked for it
    plan = ResumePlan()
    for study in studies:
        for trial in study.get_trials(deepcopy=False):
            job = int(trial.user_attrs.get("job", trial.number))
            if trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
                value = None if sweep_dir is None else finished_value(sweep_dir / str(job), trial.number, metric)
                if value is None:
                    tell(study, trial.number, state=optuna.trial.TrialState.FAIL)
                else:
                    tell(study, trial.number, values=value)
                trial = study.get_trials(deepcopy=False)[trial.number]
            latest[job] = trial
            plan.next_job = max(plan.next_job, job + 1)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for job, trial in sorted(latest.items()):
        if trial.state in done:
            plan.finished_jobs += 1
        else:
            plan.retry.append((job, dict(trial.params)))
    return plan


# --- the sweeper ----------------------------------------------------------------------------------


class OptunaSweeper(Sweeper):
    """A Hydra sweeper that asks Optuna for each trial's values and tells it each job's result.

    Args:
        sampler: an Optuna sampler (built by Hydra from `hydra/sweeper/sampler`); the grid
            sampler comes partial and gets its grid from `params`.
        pruner: an Optuna pruner (`hydra/sweeper/pruner`), or None: jobs run all their epochs.
        direction: minimize, maximize, or auto (from `optimized_metric`).
        storage: None (SQLite in the sweep folder), a database URL, or a journal file path.
        n_trials: the sweep's jobs in all (a resumed sweep runs the ones missing).
        n_jobs: trials launched at once (with hydra/launcher=joblib or submitit).
        max_failure_rate: above this share of failed jobs in a batch, the sweep stops.
        params: the search space as Hydra override strings (`tag(log, interval(1e-4, 1e-1))`).
    """

    def __init__(
        self,
        sampler: Any,
        direction: str = "auto",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int | None = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 1.0,
        params: dict[str, str] | None = None,
        pruner: Any = None,
        trial: int | None = None,  # set for a job (its overrides), never read by the sweeper
        trial_study: str | None = None,
    ) -> None:
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise UserError(f"hydra.sweeper.max_failure_rate: expected a number in [0, 1], got {max_failure_rate!r}")
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.storage, self.study_name = storage, study_name or "trainer_cli"
        self.n_trials = None if n_trials is None else int(n_trials)  # None: a grid's every point
        self.n_jobs, self.max_failure_rate = max(1, int(n_jobs)), float(max_failure_rate)
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    @property
    def sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir))

    def metric(self) -> str:
        assert self.config is not None
        return str(self.config.get("optimized_metric", "val/acc"))

    def study(self, name: str, sampler: Any) -> optuna.Study:
        """The study `name` in the sweep's storage, created or loaded."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = direction_of(self.metric()) if self.direction == "auto" else self.direction
        storage = open_storage(storage_location(self.storage, self.sweep_dir))
        log.info(f"study '{name}': sampler {type(sampler).__name__}, pruner {type(self.pruner).__name__}, "
                 f"storage {storage_location(self.storage, self.sweep_dir)}")  # fmt: skip
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=self.pruner,
                                   direction=direction, load_if_exists=True)  # fmt: skip

    def sweep(self, arguments: list[str]) -> None:
        overrides = [*(f"{k}={v}" for k, v in self.params.items()), *arguments]
        check_record(self.sweep_dir, overrides)
        space, fixed = search_space(overrides)
        sampler = self.grid_sampler(space) if self.is_grid() else self.sampler
        if self.n_trials is None:
            raise UserError("hydra.sweeper.n_trials: expected a number of trials (null is for the grid sampler)")
        study = self.study(self.study_name, sampler)
        plan = resume_plan([study], self.sweep_dir, self.metric())
        if plan.finished_jobs or plan.retry:
            log.info(
                f"resuming study '{study.study_name}': {plan.finished_jobs} jobs done, {len(plan.retry)} to run again"
            )
            reseed(sampler)  # the same seed would propose the first run's points again
        self.run_trials(study, space, fixed, plan, self.n_trials)
        self.finish(study)

    def is_grid(self) -> bool:
        import functools

        import optuna

        return isinstance(self.sampler, functools.partial) and self.sampler.func is optuna.samplers.GridSampler

    def grid_sampler(self, space: dict[str, Any]) -> Any:
        grid = {name: grid_choices(dist) for name, dist in space.items()}
        points = math.prod(len(v) for v in grid.values())
        self.n_trials = points if self.n_trials is None else min(self.n_trials, points)
        return self.sampler(grid, seed=0)  # a fixed order: a resumed grid visits what is left

    def run_trials(
        self, study: optuna.Study, space: dict[str, Any], fixed: dict[str, str], plan: ResumePlan, n_trials: int
    ) -> ResumePlan:
        """Run the plan's retries, then new trials until the sweep has `n_trials` jobs; returns
        the plan with `next_job` past the last job run."""
        new = plan.new_jobs(n_trials)
        todo: list[tuple[int, dict[str, Any] | None]] = [*plan.retry, *((plan.next_job + i, None) for i in range(new))]
        plan.next_job += new
        log.info(f"study '{study.study_name}': {len(plan.retry)} jobs to run again, {new} new")
        while todo:
            # A batch is n_jobs jobs at most, with consecutive folders (the launcher numbers them so).
            batch = [todo.pop(0)]
            while todo and len(batch) < self.n_jobs and todo[0][0] == batch[-1][0] + 1:
                batch.append(todo.pop(0))
            trials = []
            for job, params in batch:
                if params is not None:  # a job run again: the same values, in its own folder
                    study.enqueue_trial(params, user_attrs={"job": job})
                trials.append(self.ask(study, space, job))
            overrides = [self.job_overrides(study, trial, fixed) for trial in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=batch[0][0])
            self.tell(study, trials, returns)
        return plan

    def ask(self, study: optuna.Study, space: dict[str, Any], job: int) -> optuna.trial.Trial:
        trial = study.ask(space)
        trial.set_user_attr("job", job)  # its folder: a job run again is a new trial in the same folder
        return trial

    def job_overrides(self, study: optuna.Study, trial: optuna.trial.Trial, fixed: dict[str, str]) -> list[str]:
        """The job's command line: its values, the fixed overrides, and its trial (as data)."""
        values = [f"{k}={v}" for k, v in trial.params.items()]
        values += [f"{k}={v}" for k, v in fixed.items() if k not in trial.params]
        return [*values, f"++hydra.sweeper.trial={trial.number}", f"++hydra.sweeper.trial_study={study.study_name}"]

    def tell(self, study: optuna.Study, trials: list[optuna.trial.Trial], returns: Sequence[JobReturn]) -> None:
        """Each job's value to its trial: NaN or an error is a failed trial; a trial the job
        already ended (pruned) stays as it is."""
        import optuna

        failures = 0
        for trial, ret in zip(trials, returns, strict=True):
            value = job_value(ret)
            if value is None:
                failures += 1
                tell(study, trial, state=optuna.trial.TrialState.FAIL)
            else:
                tell(study, trial, values=value)
        if returns and failures / len(returns) > self.max_failure_rate:
            raise UserError(
                f"hydra.sweeper.max_failure_rate: {failures} of {len(returns)} jobs failed "
                f"(more than {self.max_failure_rate:g}); their metrics.json say why"
            )

    def finish(self, *studies: optuna.Study) -> None:
        """`optimization_results.yaml` (as Hydra's Optuna plugin wrote it); every trial failed: say so."""
        import optuna

        done = [t for s in studies for t in s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if not done:
            from trainer_cli.sweep import report

            report(self.sweep_dir, self.metric())  # Hydra skips the end-of-sweep callbacks when we raise
            raise UserError(f"{studies[-1].study_name}: every trial failed; summary.csv in {self.sweep_dir} says why")
        best = (
            max(done, key=lambda t: t.value)
            if studies[-1].direction.name == "MAXIMIZE"
            else min(done, key=lambda t: t.value)
        )
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info(f"best value {best.value:.6g} with {best.params}")


def job_value(ret: JobReturn) -> float | None:
    """A job's result as a number, or None when it failed (an error, or NaN from `main()`)."""
    if ret.status != JobStatus.COMPLETED:
        return None
    try:
        value = float(ret.return_value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def tell(study: optuna.Study, trial: Any, **result: Any) -> None:
    """`study.tell` for a trial that may have ended already (a job that pruned itself)."""
    try:
        study.tell(trial, skip_if_finished=True, **result)
    except RuntimeError as error:  # the grid sampler calls study.stop() after its last point
        if "Study.stop" not in str(error):
            raise


def reseed(sampler: Any) -> None:
    if hasattr(sampler, "reseed_rng"):
        sampler.reseed_rng()


# --- Hydra's basic sweeper, resumable --------------------------------------------------------------


class SkipFinished:
    """A launcher in front of the sweep's own: a job whose folder holds a finished run of its
    overrides is not launched again (its recorded value is returned); the others are launched in
    runs of consecutive job numbers, so each keeps its folder."""

    def __init__(self, launcher: Any, sweep_dir: Path, metric: str) -> None:
        self.launcher, self.sweep_dir, self.metric = launcher, sweep_dir, metric

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        returns: dict[int, JobReturn] = {}
        todo: list[int] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            folder = self.sweep_dir / str(idx)
            value = finished_job_value(folder, overrides, self.metric)
            if value is None:
                todo.append(idx)
                continue
            log.info(f"job {idx}: finished in an earlier run of this sweep, kept ({folder})")
            returns[idx] = JobReturn(overrides=list(overrides), working_dir=str(folder), status=JobStatus.COMPLETED,
                                     _return_value=value)  # fmt: skip
        while todo:
            run = [todo.pop(0)]
            while todo and todo[0] == run[-1] + 1:
                run.append(todo.pop(0))
            batch = [job_overrides[idx - initial_job_idx] for idx in run]
            returns.update(zip(run, self.launcher.launch(batch, initial_job_idx=run[0]), strict=True))
        return [returns[idx] for idx in sorted(returns)]


def covering_jobs(batch: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """The fewest jobs, taken in order, whose overrides include every override of the batch."""
    chosen, seen = [], set()
    for overrides in batch:
        if not set(overrides) <= seen:
            chosen.append(overrides)
            seen |= set(overrides)
    return chosen


class ResumableBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper (`train -m lr=0.1,0.01 seed=0,1`, every combination) that resumes:
    run again in its folder, jobs that finished are kept, failed, killed and preempted ones run
    again in their folders (a preempted one continues its checkpoint), and a changed search
    space or fixed override is refused in one line (`search.yaml`), as `OptunaSweeper` does.
    The job numbers are the combinations' positions, so the same command numbers them alike."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        metric = str(config.get("optimized_metric", "val/acc"))
        self.launcher = SkipFinished(self.launcher, Path(str(config.hydra.sweep.dir)), metric)  # type: ignore[assignment]

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        check_record(Path(str(self.config.hydra.sweep.dir)), [*self._parse_config(), *arguments])
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra composes every job of the batch before the first runs, to catch a bad override
        early: one full composition per job, the same work the launcher repeats (a sixth of a
        small job's time). Composing the fewest jobs that between them hold every override
        value once catches the same mistakes (an override composes or fails on its own):
        6 of a 4 x 3 grid."""
        super().validate_batch_is_legal(covering_jobs(batch))
