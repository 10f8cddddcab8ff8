"""trainer_cli's Optuna sweeper (trainer_cli/sweeper.py): search space, storage, resuming, pruning.

Most tests drive the sweeper with a stand-in launcher (no training): each "job" returns a value
computed from its overrides, so the ask-and-tell loop, the resume plan and the pruned state are
checked in milliseconds. The slow tests at the end run real sweeps through `train`.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from tests.conftest import TRAIN, conf_options, run_train
from trainer_cli.config import UserError

SPACE = {"lr": "tag(log, interval(1e-4, 1e-1))", "momentum": "choice(0.0,0.9)"}
JOB = ["epochs=1", "trainer.device=cpu", "trainer.log_every_n_steps=5"]


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class FakeLauncher:
    """Runs "jobs" in-process: value = -|log10(lr) + 2| (best at lr=0.01); records the calls.

    `fail_jobs`: job numbers that fail (NaN, as main() returns); `die_after`: raise after that
    many jobs, as a sweep killed part-way; `prune_jobs`: jobs that end their own trial pruned.
    """

    def __init__(self, sweep_dir: Path, fail_jobs=(), die_after: int | None = None, prune_jobs=()):
        self.sweep_dir, self.fail_jobs, self.die_after, self.prune_jobs = (
            sweep_dir,
            set(fail_jobs),
            die_after,
            set(prune_jobs),
        )
        self.launched: list[tuple[int, list[str]]] = []

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for offset, overrides in enumerate(job_overrides):
            if self.die_after is not None and len(self.launched) >= self.die_after:
                raise KeyboardInterrupt("the sweep's machine is gone")
            job = initial_job_idx + offset
            self.launched.append((job, list(overrides)))
            values = dict(o.lstrip("+").split("=", 1) for o in overrides)
            if job in self.prune_jobs:
                optuna = quiet_optuna()
                name = values["hydra.sweeper.trial_study"]
                study = optuna.load_study(study_name=name, storage=journal(self.sweep_dir))
                study.tell(int(values["hydra.sweeper.trial"]), state=optuna.trial.TrialState.PRUNED)
            ret = JobReturn()
            ret.status = JobStatus.COMPLETED
            ret.return_value = math.nan if job in self.fail_jobs else -abs(math.log10(float(values["lr"])) + 2)
            returns.append(ret)
        return returns


def make_sweeper(sweep_dir: Path, launcher: FakeLauncher, n_trials: int = 5, sampler=None, **kwargs):
    optuna = quiet_optuna()
    from trainer_cli.sweeper import OptunaSweeper

    # A journal file: SQLite's schema set-up would cost each test a second or more.
    sweeper = OptunaSweeper(sampler=sampler or optuna.samplers.RandomSampler(seed=0), n_trials=n_trials,
                            study_name="s", params=dict(SPACE), storage="optuna.journal", **kwargs)  # fmt: skip
    sweeper.config = OmegaConf.create({"optimized_metric": "val/acc", "hydra": {"sweep": {"dir": str(sweep_dir)}}})
    sweeper.launcher = launcher
    return sweeper


def journal(sweep_dir: Path):
    from trainer_cli.sweeper import open_storage

    return open_storage(str(sweep_dir / "optuna.journal"))


def trials(sweep_dir: Path, name: str = "s"):
    optuna = quiet_optuna()
    return optuna.load_study(study_name=name, storage=journal(sweep_dir)).trials


# --- the search space ---------------------------------------------------------------------------


def test_override_strings_become_optuna_4_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from trainer_cli.sweeper import search_space

    space, fixed = search_space(["lr=tag(log, interval(1e-4, 1e-1))", "x=interval(0.0, 1.0)", "n=int(interval(2, 8))",
                                 "k=range(1,5)", "opt=choice(sgd,adam)", "epochs=3"])  # fmt: skip
    assert space["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["x"] == FloatDistribution(0.0, 1.0)
    assert space["n"] == IntDistribution(2, 8)
    assert space["k"] == IntDistribution(1, 4, step=1)
    assert space["opt"] == CategoricalDistribution(["sgd", "adam"])
    assert fixed == {"epochs": "3"}
    # The command line's value of a key replaces the file's: a fixed value ends a searched key.
    assert search_space(["lr=choice(0.1,0.01)", "wd=1,2", "lr=0.1", "wd=3,4"])[1] == {"lr": "0.1"}


def test_storage_is_sqlite_in_the_sweep_folder_a_url_or_a_journal_file(tmp_path):
    optuna = quiet_optuna()
    from trainer_cli.sweeper import open_storage, storage_location

    assert storage_location(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    assert storage_location("postgresql://host/db", tmp_path) == "postgresql://host/db"
    journal = storage_location("optuna.journal", tmp_path)
    assert journal == str(tmp_path.resolve() / "optuna.journal")
    for outside in ("../elsewhere.journal", "/tmp/x.journal", "."):
        with pytest.raises(UserError, match="hydra.sweeper.storage: a journal file is a path inside the sweep folder"):
            storage_location(outside, tmp_path)
    study = optuna.create_study(study_name="j", storage=open_storage(journal))
    study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(0.1, 1.0)}), 0.5)
    # What optuna-dashboard does with the file: Optuna's own API, no trainer_cli code.
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    again = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(journal)))
    assert [t.value for t in again.trials] == [0.5]


# --- the sweep, resumed ------------------------------------------------------------------------


def test_a_sweep_asks_and_tells_each_job_with_its_trial_as_data(tmp_path):
    launcher = FakeLauncher(tmp_path, fail_jobs={2})
    make_sweeper(tmp_path, launcher).sweep(["epochs=3"])
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    for (job, overrides), trial in zip(launcher.launched, done, strict=True):
        assert trial.user_attrs["job"] == job == trial.number
        assert f"lr={trial.params['lr']}" in overrides and "epochs=3" in overrides
        assert f"++hydra.sweeper.trial={trial.number}" in overrides  # the job finds its trial by number
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == max(t.value for t in done if t.value is not None)


def test_a_killed_sweep_resumes_skipping_finished_jobs_and_rerunning_failed_ones(tmp_path):
    launcher = FakeLauncher(tmp_path, fail_jobs={1}, die_after=3)
    with pytest.raises(KeyboardInterrupt):
        make_sweeper(tmp_path, launcher, n_trials=6).sweep([])
    killed = trials(tmp_path)
    assert [t.state.name for t in killed] == ["COMPLETE", "FAIL", "COMPLETE", "RUNNING"]  # job 3 was running

    again = FakeLauncher(tmp_path)
    make_sweeper(tmp_path, again, n_trials=6).sweep([])
    rerun = [job for job, _ in again.launched]
    assert rerun == [1, 3, 4, 5]  # the failed and the killed job in their folders, then the new ones
    by_job = {}
    for trial in trials(tmp_path):
        by_job.setdefault(trial.user_attrs["job"], []).append(trial)
    assert sorted(by_job) == [0, 1, 2, 3, 4, 5]
    assert by_job[1][-1].params == by_job[1][0].params  # run again with the values it had
    assert by_job[3][0].state.name == "FAIL" and by_job[3][-1].state.name == "COMPLETE"
    assert all(ts[-1].state.name == "COMPLETE" for ts in by_job.values())

    done = FakeLauncher(tmp_path)
    make_sweeper(tmp_path, done, n_trials=6).sweep([])
    assert done.launched == []  # nothing left to do


def test_a_resumed_sweep_refuses_a_changed_search_space_or_fixed_override(tmp_path):
    make_sweeper(tmp_path, FakeLauncher(tmp_path), n_trials=1).sweep(["epochs=3"])
    wider = make_sweeper(tmp_path, FakeLauncher(tmp_path), n_trials=1)
    wider.params["lr"] = "tag(log, interval(1e-5, 1e-1))"
    with pytest.raises(
        UserError, match=r"search space changed .*lr: tag\(log, interval\(1e-4, 1e-1\)\) -> tag\(log, interval\(1e-5"
    ):
        wider.sweep(["epochs=3"])
    with pytest.raises(UserError, match=r"fixed overrides changed .*epochs: 3 -> 4"):
        make_sweeper(tmp_path, FakeLauncher(tmp_path), n_trials=1).sweep(["epochs=4"])
    make_sweeper(tmp_path, FakeLauncher(tmp_path), n_trials=2).sweep(["epochs=3"])  # more trials: fine


def test_grid_runs_each_point_once_and_resumes_what_is_left(tmp_path):
    import functools

    optuna = quiet_optuna()
    grid = functools.partial(optuna.samplers.GridSampler)
    SPACE_GRID = {"lr": "0.1,0.01,0.001", "momentum": "0.0,0.9"}

    def sweeper(launcher):
        made = make_sweeper(tmp_path, launcher, n_trials=None, sampler=grid)
        made.params = dict(SPACE_GRID)
        return made

    with pytest.raises(KeyboardInterrupt):
        sweeper(FakeLauncher(tmp_path, die_after=4)).sweep([])
    rest = FakeLauncher(tmp_path)
    sweeper(rest).sweep([])
    points = {(t.params["lr"], t.params["momentum"]) for t in trials(tmp_path) if t.state.name == "COMPLETE"}
    assert len(points) == 6  # every point of the 3 x 2 grid, finished
    assert [job for job, _ in rest.launched] == [4, 5]  # the job asked for when the sweep died, and the last


def test_a_killed_bayes_sweep_resumes_its_study(tmp_path):
    """TPE, killed part-way: the same study grows; finished trials keep their values and feed the
    sampler; the killed job runs again in its folder with its values, new jobs after it."""
    optuna = quiet_optuna()

    def tpe():
        return optuna.samplers.TPESampler(seed=0, n_startup_trials=2)

    with pytest.raises(KeyboardInterrupt):
        make_sweeper(tmp_path, FakeLauncher(tmp_path, die_after=3), n_trials=5, sampler=tpe()).sweep([])
    before = trials(tmp_path)
    assert [t.state.name for t in before] == ["COMPLETE", "COMPLETE", "COMPLETE", "RUNNING"]
    again = FakeLauncher(tmp_path)
    make_sweeper(tmp_path, again, n_trials=5, sampler=tpe()).sweep([])
    assert [job for job, _ in again.launched] == [3, 4]
    after = trials(tmp_path)
    assert [t.params for t in after[:4]] == [t.params for t in before]  # the same study, grown
    assert after[4].params == before[3].params and after[4].user_attrs["job"] == 3  # the killed job, again
    assert sorted(t.user_attrs["job"] for t in after if t.state.name == "COMPLETE") == [0, 1, 2, 3, 4]


def coarse_to_fine(sweep_dir: Path, launcher: FakeLauncher, lr: str = SPACE["lr"]):
    from trainer_cli.search import CoarseToFineSweeper

    quiet_optuna()
    sweeper = CoarseToFineSweeper(params={"lr": lr}, coarse={"n_trials": 3, "epochs": 1},
                                  fine={"n_trials": 2, "epochs": 2, "top_k": 2, "widen": 2.0},
                                  storage="optuna.journal", seed=0)  # fmt: skip
    sweeper.config = OmegaConf.create({"optimized_metric": "val/acc", "hydra": {"sweep": {"dir": str(sweep_dir)}}})
    sweeper.launcher = launcher
    return sweeper


@pytest.mark.parametrize(("die_after", "rerun"), [(2, [2, 3, 4]), (4, [4])])
def test_a_killed_coarse_to_fine_sweep_resumes_in_its_stage(tmp_path, die_after, rerun):
    """Killed in the coarse stage (after 2 jobs) or in the fine one (after 4): run again, the
    killed job runs in its folder, finished ones are kept, the fine ranges stay as first narrowed."""
    with pytest.raises(KeyboardInterrupt):
        coarse_to_fine(tmp_path, FakeLauncher(tmp_path, die_after=die_after)).sweep([])
    stages = (tmp_path / "stages.yaml").read_text() if die_after > 3 else None
    again = FakeLauncher(tmp_path)
    coarse_to_fine(tmp_path, again).sweep([])
    assert [job for job, _ in again.launched] == rerun
    for stage, jobs in (("coarse", [0, 1, 2]), ("fine", [3, 4])):
        done = [t for t in trials(tmp_path, f"coarse_to_fine-{stage}") if t.state.name == "COMPLETE"]
        assert sorted(t.user_attrs["job"] for t in done) == jobs
    assert all(f"epochs={1 if job < 3 else 2}" in overrides for job, overrides in again.launched)  # each its stage's
    recorded = OmegaConf.load(tmp_path / "stages.yaml")
    assert list(recorded.coarse.jobs) == [0, 1, 2] and list(recorded.fine.jobs) == [3, 4]
    if stages is not None:
        assert recorded.fine.params == OmegaConf.create(stages).fine.params  # not narrowed again
    done = FakeLauncher(tmp_path)
    coarse_to_fine(tmp_path, done).sweep([])
    assert done.launched == []  # nothing left to do
    with pytest.raises(UserError, match=r"search space changed .*lr: "):
        coarse_to_fine(tmp_path, FakeLauncher(tmp_path), lr="tag(log, interval(1e-5, 1e-1))").sweep([])


def test_a_plain_sweep_run_again_launches_only_the_jobs_that_did_not_finish(tmp_path):
    """`train -m` (Hydra's basic sweeper, resumable): a job folder holding a finished run of the
    job's own overrides is kept, with its value; the rest run in their own folders."""
    from trainer_cli.sweeper import SkipFinished

    jobs = [[f"lr={lr}", "epochs=1"] for lr in ("0.1", "0.01", "0.001", "0.0001")]
    ok = {"status": "ok", "best/val/acc": 0.9}
    for idx, summary in ((0, ok), (1, {"status": "failed"}), (3, ok)):
        (tmp_path / str(idx) / ".hydra").mkdir(parents=True)
        (tmp_path / str(idx) / "metrics.json").write_text(json.dumps(summary))
        OmegaConf.save(OmegaConf.create(jobs[idx] if idx != 3 else ["lr=0.5", "epochs=1"]),
                       tmp_path / str(idx) / ".hydra" / "overrides.yaml")  # fmt: skip
    # Job 1 failed, job 2 was killed (no folder), job 3's folder holds another job's run.
    inner = FakeLauncher(tmp_path)
    returns = SkipFinished(inner, tmp_path, "val/acc").launch(jobs, initial_job_idx=0)
    assert [job for job, _ in inner.launched] == [1, 2, 3]
    assert [r.return_value for r in returns][0] == 0.9 and len(returns) == 4
    assert returns[2].return_value == -abs(math.log10(0.001) + 2)  # in order, each from its job


def test_a_job_that_pruned_itself_stays_pruned_and_is_not_rerun(tmp_path):
    make_sweeper(tmp_path, FakeLauncher(tmp_path, prune_jobs={1}), n_trials=3).sweep([])
    assert [t.state.name for t in trials(tmp_path)] == ["COMPLETE", "PRUNED", "COMPLETE"]
    again = FakeLauncher(tmp_path)
    make_sweeper(tmp_path, again, n_trials=3).sweep([])
    assert again.launched == []  # pruned is finished, not failed


# --- pruning inside a job ---------------------------------------------------------------------


def test_pruning_hook_reports_each_epoch_and_stops_a_trial_below_the_median(tmp_path):
    optuna = quiet_optuna()
    from trainer_cli.search import TrialPruning
    from trainer_cli.sweeper import open_storage

    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="p", storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))  # fmt: skip
    for _ in range(3):  # three finished trials at 0.8, 0.85, 0.9 per epoch
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(0.75 + 0.05 * epoch, epoch)
        study.tell(trial, 0.9)
    good, bad = study.ask(), study.ask()
    hook = TrialPruning(optuna.load_study(study_name="p", storage=storage, pruner=study.pruner), good.number, "val/acc")
    for epoch in (1, 2, 3):
        hook.on_epoch_end(None, epoch, {"val/acc": 0.95})
    assert not hook.stop_training
    hook = TrialPruning(optuna.load_study(study_name="p", storage=storage, pruner=study.pruner), bad.number, "val/acc")
    hook.on_epoch_end(None, 1, {"val/acc": 0.3})
    assert hook.stop_training and hook.pruned_at == 1
    trial = study.trials[bad.number]
    assert trial.state.name == "PRUNED" and trial.intermediate_values == {1: 0.3}  # through the storage


@pytest.mark.parametrize("name", conf_options("hydra/sweeper/pruner"))
def test_every_pruner_option_builds_an_optuna_pruner(name):
    from hydra.utils import instantiate

    from tests.test_sweep import compose_with_hydra

    optuna = quiet_optuna()
    node = compose_with_hydra("hparams_search=random", f"hydra/sweeper/pruner={name}").hydra.sweeper.pruner
    assert isinstance(instantiate(node), optuna.pruners.BasePruner)


def test_hparams_search_pruner_and_sampler_choose_the_searchs_hydra_groups():
    from tests.test_sweep import compose_with_hydra
    from trainer_cli.cli_argv import rewrite_argv
    from trainer_cli.errors import UserError

    argv = rewrite_argv(["hparams_search=random", "hparams_search.pruner=median", "hparams_search.sampler=qmc"])
    assert argv[1:] == ["hydra/sweeper/pruner=median", "hydra/sweeper/sampler=qmc"]
    sweeper = compose_with_hydra(*argv).hydra.sweeper
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner" and "QMC" in sweeper.sampler._target_
    with pytest.raises(UserError, match=r"^hparams_search.pruner: unknown option 'bogus'; available: hyperband, "):
        rewrite_argv(["hparams_search=random", "hparams_search.pruner=bogus"])
    with pytest.raises(UserError, match=r"^hparams_search.pruner: chooses the pruner of an Optuna search; add "):
        rewrite_argv(["-m", "lr=0.1,0.01", "hparams_search.pruner=median"])


@pytest.mark.parametrize("name", conf_options("hydra/sweeper/sampler"))
def test_every_sampler_option_builds_a_seeded_optuna_sampler(name):
    import functools

    from hydra.utils import instantiate

    from tests.test_sweep import compose_with_hydra

    optuna = quiet_optuna()
    node = compose_with_hydra("hparams_search=random", f"hydra/sweeper/sampler={name}").hydra.sweeper.sampler
    sampler = instantiate(node)
    if isinstance(sampler, functools.partial):  # the grid sampler gets its grid from the sweeper
        sampler = sampler({"lr": [0.1, 0.01]}, seed=0)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


# --- real sweeps (slow) -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["in the sweep's process", "joblib workers"])
def test_a_pruned_sweep_job_stops_early_and_is_recorded_pruned(tmp_path, launcher):
    sweep = tmp_path / "pruned"
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    run_train(["hparams_search=random", "hydra.sweeper.n_trials=4", "hparams_search.pruner=median",
               "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0",
               "lr=choice(0.03,0.00001)", "epochs=3", "trainer.device=cpu", f"hydra.sweep.dir={sweep}",
               *(parallel if launcher == "joblib workers" else [])], tmp_path)  # fmt: skip
    optuna = quiet_optuna()
    study = optuna.load_study(study_name="random", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = {t.number: t.state.name for t in study.trials}
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, states  # lr=1e-5 learns nothing in 3 epochs: below the median after epoch 1
    for trial in pruned:
        summary = json.loads((sweep / str(trial.user_attrs["job"]) / "metrics.json").read_text())
        assert summary["status"] == "pruned" and summary["epochs_run"] < 3
        assert len(trial.intermediate_values) == summary["epochs_run"]


@pytest.mark.slow
def test_two_submitit_workers_share_one_journal_file(tmp_path):
    pytest.importorskip("submitit")
    sweep = tmp_path / "journal"
    run_train(["hparams_search=random", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
               "hydra.sweeper.storage=optuna.journal", "hydra/sweeper/pruner=median",
               "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *JOB,
               f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)  # fmt: skip
    optuna = quiet_optuna()
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    study = optuna.load_study(study_name="random", storage=storage)
    assert len(study.trials) == 4 and {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    pids = {
        json.loads((sweep / str(t.user_attrs["job"]) / "metrics.json").read_text())["run_dir"] for t in study.trials
    }
    assert len(pids) == 4
    assert not (sweep / "optuna.db").exists()  # the journal file was the only storage


@pytest.mark.slow
def test_a_preempted_sweep_job_runs_again_from_its_checkpoint(tmp_path):
    """SIGTERM mid-job: the job stops at a checkpoint, recorded preempted, and the sweep goes on;
    the same command again runs that job in its folder, continuing from the checkpoint."""
    sweep = tmp_path / "preempted"
    command = ["hparams_search=random", "hydra.sweeper.n_trials=2", "epochs=3", "trainer.device=cpu",
               f"hydra.sweep.dir={sweep}"]  # fmt: skip
    process = subprocess.Popen([TRAIN, *command], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (sweep / "0" / "checkpoints" / "last.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)  # the job (in the sweep's own process) stops at its next step
    assert process.wait(timeout=300) == 0
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "preempted"

    run_train(command, tmp_path, timeout=900)
    # A sweep's console is one line per job; the job's own train.log says where it went on from.
    assert "continuing the run stopped" in (sweep / "0" / "train.log").read_text()
    summary = json.loads((sweep / "0" / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["epochs_run"] == 3
    with open(sweep / "0" / "metrics.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3]  # each epoch once: continued


def test_a_sweep_validates_the_fewest_jobs_that_hold_every_override():
    """Hydra composes each validated job in full; in its order, a 4 x 3 grid needs 6 (not 12) to
    try every value once."""
    from trainer_cli.sweeper import covering_jobs

    grid = [[f"lr={lr}", f"seed={seed}"] for lr in (0.1, 0.03, 0.01, 0.003) for seed in (0, 1, 2)]
    chosen = covering_jobs(grid)
    assert len(chosen) == 6 and {o for job in chosen for o in job} == {o for job in grid for o in job}
    assert covering_jobs([["optimizer=sgd"], ["optimizer=adamx"]]) == [["optimizer=sgd"], ["optimizer=adamx"]]


def test_group_choices_are_cached_by_the_overrides_that_shape_the_defaults_list(monkeypatch):
    from hydra import initialize_config_dir

    from trainer_cli import cli_hydra
    from trainer_cli.cli_hydra import _multi_select, scalar_keys
    from trainer_cli.paths import CONF_DIR

    assert {"lr", "seed", "epochs", "batch_size"} <= scalar_keys()
    assert not {"optimizer", "augmentation", "regularization", "data", "experiment"} & scalar_keys()
    monkeypatch.setattr(cli_hydra, "_listed", {})
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        first = _multi_select("config", (), ["lr=0.1"])
        assert _multi_select("config", (), ["lr=0.01"]) is first  # a value override: the same list
        assert len(cli_hydra._listed) == 1
        flipped = _multi_select("config", ("augmentation=[flip]",), ["augmentation=[flip]"])
    assert flipped["augmentation"] == ["flip"] and len(cli_hydra._listed) == 2
