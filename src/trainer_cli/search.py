"""Hyperparameter search beyond one Optuna study: coarse-to-fine search, and pruning inside a job.

- `CoarseToFineSweeper` (hparams_search=coarse_to_fine): the lecture's steps 4-5 as one sweep
  of two Optuna studies, on `sweeper.OptunaSweeper`'s ask-and-tell loop, resumable like it.
- `TrialPruning`: the epoch-end hook a sweep job runs when its sweeper has a pruner: it reports
  the epoch's `optimized_metric` to the job's trial through the study's storage, and stops the
  run when the pruner says so (the trial is then PRUNED, the run's `metrics.json` says `pruned`).
  The job finds its trial in its own Hydra config (`hydra.sweeper.trial`, `trial_study`: data
  the sweeper put in its overrides), so it works in joblib workers and SLURM jobs alike.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from trainer_cli.callbacks import Callback
from trainer_cli.sweeper import OptunaSweeper, check_record, reseed, resume_plan, search_space, tell

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


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
    is_log = bool(getattr(dist, "log", False))
    if is_log:
        low, high = low / widen, high * widen
    else:
        span = (high - low) or abs(high) or 1.0
        low, high = low - (widen - 1) * span, high + (widen - 1) * span
    low, high = max(low, dist.low), min(high, dist.high)
    if isinstance(dist, optuna.distributions.IntDistribution):
        interval = f"int(interval({int(math.floor(low))},{int(math.ceil(high))}))"
    else:
        interval = f"interval({low:.6g},{high:.6g})"
    return f"tag(log,{interval})" if is_log else interval


class CoarseToFineSweeper(OptunaSweeper):
    """The lecture's coarse-to-fine search as one sweep, in two Optuna studies.

    Stage 1 ("<study>-coarse") samples the wide ranges in `params` at random for
    `coarse.n_trials` jobs of `coarse.epochs` epochs. Stage 2 ("<study>-fine") samples, for
    `fine.n_trials` jobs of `fine.epochs` epochs, the ranges spanned by the `fine.top_k` best
    coarse trials, widened by `fine.widen` (a factor, on log ranges), at a constant LR (the
    lecture's step 5: no decay; `fine.scheduler` names the scheduler option, null keeps the
    run's). Resumed, a stage whose ranges are in `stages.yaml` keeps them.
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
        pruner: Any = None,
        trial: int | None = None,
        trial_study: str | None = None,
    ) -> None:
        import optuna

        super().__init__(
            sampler=optuna.samplers.RandomSampler(seed=seed), direction=direction, storage=storage,
            study_name=study_name or "coarse_to_fine", n_trials=int(coarse["n_trials"]), n_jobs=n_jobs,
            params=params, pruner=pruner,
        )  # fmt: skip
        self.coarse, self.fine, self.seed = dict(coarse), dict(fine), seed

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        name = self.study_name
        coarse_params = {**self.params, "epochs": self.coarse["epochs"]}
        overrides = [*(f"{k}={v}" for k, v in coarse_params.items()), *arguments]
        check_record(self.sweep_dir, overrides)
        space, fixed = search_space(overrides)
        fine_sampler = optuna.samplers.RandomSampler(seed=None if self.seed is None else self.seed + 1)
        coarse, fine = self.study(f"{name}-coarse", self.sampler), self.study(f"{name}-fine", fine_sampler)
        coarse_plan = resume_plan([coarse], self.sweep_dir, self.metric())
        fine_plan = resume_plan([fine], self.sweep_dir, self.metric())
        # Every job is numbered after every job of both stages, so nothing is overwritten.
        coarse_plan.next_job = max(coarse_plan.next_job, fine_plan.next_job)
        if coarse_plan.finished_jobs or coarse_plan.retry or fine_plan.finished_jobs or fine_plan.retry:
            reseed(self.sampler)
            reseed(fine_sampler)

        log.info(f"coarse stage: {self.coarse['n_trials']} trials of {self.coarse['epochs']} epochs")
        # Each stage's jobs and ranges are recorded before its jobs run: a sweep killed in a
        # stage resumes it with the same ranges, and the report knows every job's stage.
        self._record_stage("coarse", coarse_plan.jobs(int(self.coarse["n_trials"])), dict(self.params))
        self.run_trials(coarse, space, fixed, coarse_plan, int(self.coarse["n_trials"]))

        done = coarse.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not done:
            self.finish(coarse)  # says every trial failed
        fine_params = self._recorded_fine_params() or self._narrowed_params(coarse, done)
        log.info(f"fine stage: {self.fine['n_trials']} trials of {self.fine['epochs']} epochs over {fine_params}")
        stage_fixed = {"epochs": self.fine["epochs"]}
        if self.fine.get("scheduler", "constant") is not None:
            stage_fixed["scheduler"] = self.fine.get("scheduler", "constant")
        fine_space, fine_fixed = search_space(
            [*(f"{k}={v}" for k, v in {**fine_params, **stage_fixed}.items()), *arguments]
        )
        fine_plan.next_job = max(fine_plan.next_job, coarse_plan.next_job)
        self._record_stage("fine", fine_plan.jobs(int(self.fine["n_trials"])), fine_params)
        self.run_trials(fine, fine_space, fine_fixed, fine_plan, int(self.fine["n_trials"]))
        self.finish(coarse, fine)

    def _narrowed_params(self, coarse: optuna.Study, done: list[optuna.trial.FrozenTrial]) -> dict[str, str]:
        """The fine stage's ranges: those spanned by the top_k coarse trials, widened."""
        import optuna

        minimize = coarse.direction == optuna.study.StudyDirection.MINIMIZE
        top = sorted(done, key=lambda t: t.value if minimize else -t.value)[: int(self.fine["top_k"])]
        fine_params = dict(self.params)
        for key in top[0].distributions:
            values = [t.params[key] for t in top]
            fine_params[key] = narrowed(top[0].distributions[key], values, float(self.fine.get("widen", 2.0)))
        return fine_params

    def _recorded_fine_params(self) -> dict[str, str] | None:
        """A resumed sweep's fine ranges, as its first run narrowed them (stages.yaml)."""
        path = self.sweep_dir / "stages.yaml"
        if not path.is_file():
            return None
        fine = OmegaConf.load(path).get("fine")
        return dict(fine.params) if fine is not None else None

    def _record_stage(self, stage: str, jobs: list[int], params: dict[str, str]) -> None:
        """`stages.yaml` in the sweep folder: which jobs belong to which stage, and its ranges.

        The sweep report reads it to show each job's stage.
        """
        path = self.sweep_dir / "stages.yaml"
        stages = OmegaConf.load(path) if path.is_file() else OmegaConf.create({})
        previous = list(stages.get(stage, {}).get("jobs", []))
        stages[stage] = {"jobs": sorted({*previous, *jobs}), "params": params}
        OmegaConf.save(stages, path)


# --- pruning inside a sweep job ---------------------------------------------------------------------


class TrialPruning(Callback):
    """Epoch-end hook: report the epoch's `optimized_metric` to the
    job's trial; when the study's pruner says so, mark the trial pruned and ask the loop to stop.

    `stop_training` is what the loop reads; `pruned_at` the epoch the run stopped after.
    """

    def __init__(self, study: optuna.Study, trial_number: int, metric: str) -> None:
        import optuna

        # Optuna's own way from a trial's number to its id (Study.tell does the same).
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
        self.study, self.number, self.metric = study, trial_number, metric
        self.trial = optuna.trial.Trial(study, trial_id)
        self.stop_training = False
        self.pruned_at: int | None = None

    def on_epoch_end(self, run: Any, epoch: int, row: dict[str, Any]) -> None:
        import optuna

        value = row.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            tell(self.study, self.number, state=optuna.trial.TrialState.PRUNED)
            self.stop_training, self.pruned_at = True, epoch
            log.info(f"trial {self.number} pruned after epoch {epoch} ({self.metric} {float(value):.4g})")


def trial_pruning(metric: str) -> TrialPruning | None:
    """The pruning hook of this sweep job, when its sweeper has a pruner; None otherwise.

    Reads the job's own Hydra config: the sweep's storage and pruner, and the trial the
    sweeper gave this job (`hydra.sweeper.trial`, `hydra.sweeper.trial_study`).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    number, pruner = sweeper.get("trial"), sweeper.get("pruner")
    if number is None or pruner is None or str(pruner.get("_target_", "")).endswith("NopPruner"):
        return None
    import optuna

    from trainer_cli.build import instantiate
    from trainer_cli.sweeper import open_storage, storage_location

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    location = storage_location(sweeper.get("storage"), str(hydra_cfg.sweep.dir))
    study = optuna.load_study(
        study_name=str(sweeper.trial_study), storage=open_storage(location),
        pruner=instantiate(pruner, key="hydra.sweeper.pruner"),
    )  # fmt: skip
    return TrialPruning(study, int(number), metric)
