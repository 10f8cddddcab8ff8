"""Hyperparameter search, failed jobs, continued Optuna studies, launchers and the sweep report."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import TRAIN, conf_options, run_train
from trainer_cli.config import CONF_DIR, register_resolvers

# One-epoch jobs on the embedded digits, on the CPU.
JOB = ["epochs=1", "trainer.device=cpu", "trainer.log_every_n_steps=5"]


def compose_with_hydra(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def study_trials(sweep_dir: Path, study_name: str):
    import optuna

    return optuna.load_study(study_name=study_name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials


def job_value(sweep_dir: Path, job: int | str, key: str) -> float:
    """The value of override `key` that a job ran with."""
    overrides = OmegaConf.load(sweep_dir / str(job) / ".hydra" / "overrides.yaml")
    return float(next(o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")))


# --- composing: every search file, the launchers ----------------------------------------------


@pytest.mark.parametrize("option", conf_options("hparams_search"))
def test_every_search_is_a_multirun_with_its_sweeper(option):
    cfg = compose_with_hydra(f"hparams_search={option}")
    assert cfg.hydra.mode.name == "MULTIRUN"
    expected = {
        "grid": "hydra_plugins.trainer_cli_search.OptunaSweeper",
        "random": "hydra_plugins.trainer_cli_search.OptunaSweeper",
        "bayes": "hydra_plugins.trainer_cli_search.OptunaSweeper",
        "coarse_to_fine": "hydra_plugins.trainer_cli_search.CoarseToFineSweeper",
    }[option]
    assert cfg.hydra.sweeper._target_ == expected
    sampler = {"grid": "GridSampler", "random": "RandomSampler", "bayes": "TPESampler"}.get(option)
    if sampler is not None:
        assert cfg.hydra.sweeper.sampler._target_ == f"optuna.samplers.{sampler}"
    # Each search varies at least the learning rate, and turns on the weight decay it searches.
    assert "lr" in cfg.hydra.sweeper.params
    assert "l2" in cfg.regularization


def test_grid_expands_to_one_job_per_lr_and_weight_decay_each_reaching_its_objects(make_cfg):
    from itertools import product

    from trainer_cli import build
    from trainer_cli.config import resolve
    from trainer_cli.sweeper import grid_choices, search_space

    params = compose_with_hydra("hparams_search=grid").hydra.sweeper.params
    space, _ = search_space([f"{k}={v}" for k, v in params.items()])
    grid = {key: grid_choices(dist) for key, dist in space.items()}
    jobs = [dict(zip(grid, values, strict=True)) for values in product(*grid.values())]
    assert len(jobs) == len({tuple(job.values()) for job in jobs}) == 12  # 4 learning rates x 3 weight decays
    for chosen in jobs[::5]:
        cfg = resolve(make_cfg("hparams_search=grid", *(f"{k}={v}" for k, v in chosen.items())))
        (penalty,) = build.regularization(cfg).penalties
        assert penalty.weight_decay == float(chosen["regularization.l2.weight_decay"])
        assert cfg.optimizer.lr == float(chosen["lr"])


@pytest.mark.parametrize("option", ["random", "bayes"])
def test_optuna_searches_propose_seeded_log_uniform_learning_rates(option):
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate

    from trainer_cli.sweeper import distribution

    def proposals(seed: int) -> list[float]:
        sweeper = compose_with_hydra(f"hparams_search={option}", f"seed={seed}").hydra.sweeper
        (override,) = OverridesParser.create().parse_overrides([f"lr={sweeper.params.lr}"])
        lr = distribution(override)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=instantiate(sweeper.sampler))
        return [study.ask({"lr": lr}).params["lr"] for _ in range(8)]

    first, again, other = proposals(7), proposals(7), proposals(8)
    assert first == again and first != other  # seeded by `seed`
    assert all(1e-4 <= lr <= 1e-1 for lr in first)
    # log-uniform over three decades: the proposals spread over more than one decade
    assert max(first) / min(first) > 10


def test_joblib_and_submitit_slurm_launchers_compose():
    joblib = compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    slurm = compose_with_hydra(
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.cpus_per_task=8",
        "hydra.launcher.timeout_min=120",
        "hydra.launcher.array_parallelism=16",
    ).hydra.launcher
    assert slurm._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (slurm.partition, slurm.gpus_per_node, slurm.cpus_per_task, slurm.timeout_min) == ("gpu", 1, 8, 120)


def test_parallel_jobs_each_get_their_own_gpu(monkeypatch):
    import torch

    from trainer_cli.sweep import assign_gpu

    def device_after(job_num: int, device: str = "auto", gpus: int = 4) -> str:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        cfg = OmegaConf.create({"trainer": {"device": device}})
        assign_gpu(cfg, job_num)
        return cfg.trainer.device

    assert [device_after(n) for n in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert device_after(3, device="cpu") == "cpu"  # an explicit device is kept
    assert device_after(3, gpus=1) == "auto"  # one GPU: nothing to spread


def test_narrowed_range_spans_the_top_trials_widened_and_clipped():
    import optuna

    from trainer_cli.search import narrowed

    wide = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
    assert narrowed(wide, [1e-3, 4e-3], widen=2.0) == "tag(log,interval(0.0005,0.008))"
    assert narrowed(wide, [0.8, 0.9], widen=2.0) == "tag(log,interval(0.4,1))"  # clipped to the coarse range
    linear = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert narrowed(linear, [0.4, 0.5], widen=2.0) == "interval(0.3,0.6)"
    choices = optuna.distributions.CategoricalDistribution(["sgd", "adam", "rmsprop"])
    assert narrowed(choices, ["adam", "sgd"], widen=2.0) == "choice(sgd,adam)"


# --- the report, on a hand-made sweep folder ---------------------------------------------------


def make_job(sweep_dir: Path, job: int, overrides: list[str], metrics: dict | None, curve: list[float] = ()) -> None:
    job_dir = sweep_dir / str(job)
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job_dir / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    if curve:
        rows = "".join(f"{epoch},{value}\n" for epoch, value in enumerate(curve, 1))
        (job_dir / "metrics.csv").write_text("epoch,val/acc\n" + rows)


def test_report_sorts_by_metric_and_says_ok_failed_killed(tmp_path):
    from trainer_cli.sweep import report, searched_values

    ok = {"status": "ok", "best/val/acc": 0.5, "test/acc": 0.45, "epochs_run": 2, "time_s": 1.0}
    make_job(tmp_path, 0, ["lr=0.001", "epochs=2"], ok, [0.3, 0.5])
    make_job(tmp_path, 1, ["lr=0.1", "epochs=2"], {"status": "failed", "error": "NonFiniteLoss: loss is nan"})
    make_job(tmp_path, 2, ["lr=0.01", "epochs=2"], {**ok, "best/val/acc": 0.9}, [0.7, 0.9])
    make_job(tmp_path, 3, ["lr=0.0001", "epochs=2"], None)  # no metrics.json: killed
    rows = report(tmp_path, "val/acc")
    assert [(r["job"], r["status"]) for r in rows] == [("2", "ok"), ("0", "ok"), ("1", "failed"), ("3", "killed")]
    written = summary_rows(tmp_path)
    assert [r["job"] for r in written] == ["2", "0", "1", "3"]
    assert written[2]["error"] == "NonFiniteLoss: loss is nan"
    assert float(written[0]["best_val"]) == 0.9
    # Only what varies between jobs is a searched hyperparameter; failed jobs have no point.
    assert searched_values(rows) == {"lr": [(0.01, 0.9), (0.001, 0.5)]}
    from PIL import Image

    with Image.open(tmp_path / "sweep.png") as image:
        assert image.size[0] > 400 and image.size[1] > 600  # curves above, metric-vs-lr below


def test_report_on_demand_for_a_sweep_folder(tmp_path):
    make_job(tmp_path, 0, ["lr=0.1"], {"status": "ok", "best/val/loss": 0.3}, [0.1])
    make_job(tmp_path, 1, ["lr=0.2"], {"status": "ok", "best/val/loss": 0.2}, [0.1])
    result = subprocess.run(
        [str(Path(TRAIN).with_name("python")), "-m", "trainer_cli.sweep", str(tmp_path), "val/loss"],
        capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [r["job"] for r in summary_rows(tmp_path)] == ["1", "0"]  # a loss: lowest first
    assert "best val/loss" in result.stdout


# --- real sweeps through the CLI ---------------------------------------------------------------


@pytest.mark.slow
def test_grid_sweep_runs_every_combination(tmp_path):
    sweep = tmp_path / "grid"
    run_train(["hparams_search=grid", "lr=0.1,0.01", "regularization.l2.weight_decay=0,1e-4", *JOB,
               f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    rows = summary_rows(sweep)
    decay = "regularization.l2.weight_decay"
    ran = {(job_value(sweep, r["job"], "lr"), job_value(sweep, r["job"], decay)) for r in rows}
    assert ran == {(0.1, 0.0), (0.1, 1e-4), (0.01, 0.0), (0.01, 1e-4)}
    assert all(r["status"] == "ok" for r in rows)
    values = [float(r["best_val"]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert (sweep / "sweep.png").is_file()


@pytest.mark.slow
def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(["-m", "lr=-1,0.01", *JOB, f"hydra.sweep.dir={sweep}"], tmp_path)
    rows = {job_value(sweep, r["job"], "lr"): r for r in summary_rows(sweep)}
    assert rows[0.01]["status"] == "ok" and float(rows[0.01]["best_val"]) > 0.5
    assert rows[-1.0]["status"] == "failed" and "lr" in rows[-1.0]["error"]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "failed"
    assert summary_rows(sweep)[0]["status"] == "ok"  # the ok job sorts first
    assert "failed" in result.stdout
    # The failed job is in TensorBoard's HParams tab too, with its hyperparameters.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(sweep / "0" / "tensorboard"))
    events.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["lr"].number_value == -1 and start.hparams["status"].string_value == "failed"


# A model the test trusts on its command line (never a hook a shared config could reach): its
# constructor SIGKILLs its own process, as the OOM killer would, for one width of the sweep.
SELF_KILLING_MODEL = """
import os, signal
from trainer_cli.models import MLP

class Net(MLP):
    def __init__(self, **kwargs):
        if str(kwargs["width"]) == os.environ["KILL_AT_WIDTH"]:
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(**kwargs)
"""


@pytest.mark.slow
def test_a_job_whose_worker_dies_is_recorded_as_killed_and_the_sweep_finishes(tmp_path, monkeypatch):
    (tmp_path / "victim.py").write_text(SELF_KILLING_MODEL)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("KILL_AT_WIDTH", "17")
    sweep = tmp_path / "sweep"
    result = run_train(["-m", "--trust", "victim", "model._target_=victim.Net", "model.width=16,17,18",
                        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *JOB, f"hydra.sweep.dir={sweep}"],
                       tmp_path)  # fmt: skip
    assert {r["model.width"]: r["status"] for r in summary_rows(sweep)} == {"16": "ok", "17": "killed", "18": "ok"}
    assert not (sweep / "1" / "metrics.json").exists()
    assert "Traceback" not in result.stderr and "validated against ConfigStore" not in result.stderr
    assert "its worker died again, alone; recorded as killed" in result.stdout


@pytest.mark.slow
def test_sweep_whose_every_job_failed_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(["-m", "lr=-1,-2", *JOB, f"hydra.sweep.dir={sweep}"], tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: every job of the sweep failed")
    assert [r["status"] for r in summary_rows(sweep)] == ["failed", "failed"]


@pytest.mark.slow
def test_single_run_error_is_still_one_line_and_non_zero(tmp_path):
    result = run_train(["lr=-1", *JOB, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: lr: expected a number > 0, got '-1.0'"]


@pytest.mark.slow
def test_random_search_records_failed_trials_in_its_study(tmp_path):
    sweep = tmp_path / "random"
    run_train(["hparams_search=random", "hydra.sweeper.n_trials=4", "lr=choice(0.01,-1)", *JOB,
               f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    trials = study_trials(sweep, "random")
    assert len(trials) == 4
    states = {(t.params["lr"], t.state.name) for t in trials}
    assert states == {(0.01, "COMPLETE"), (-1, "FAIL")}  # both drawn, each as it should end
    for trial in trials:
        assert trial.params["lr"] == job_value(sweep, trial.number, "lr")  # trial n is job folder n
        if trial.state.name == "COMPLETE":
            metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
            assert trial.value == metrics["best/val/acc"]  # what main() returned
    assert {r["status"] for r in summary_rows(sweep)} == {"ok", "failed"}


@pytest.mark.slow
def test_bayes_search_minimizes_a_loss_metric(tmp_path):
    sweep = tmp_path / "bayes"
    run_train(["hparams_search=bayes", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2",
                        "optimized_metric=val/loss", *JOB, f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    trials = study_trials(sweep, "bayes")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    losses = [json.loads((sweep / str(t.number) / "metrics.json").read_text())["best/val/loss"] for t in trials]
    assert [t.value for t in trials] == losses
    best = OmegaConf.load(sweep / "optimization_results.yaml").best_value
    assert best == min(losses)  # direction "auto" minimized the loss
    lrs = [t.params["lr"] for t in trials]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 3
    png = sweep / "sweep.png"
    assert png.is_file()


def kill_after_first_job(command: list[str], sweep: Path, cwd: Path) -> None:
    """Start `train command` and SIGKILL it (its whole process group) once job 0 has finished."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([TRAIN, *command], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (sweep / "0" / "metrics.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (sweep / "0" / "metrics.json").is_file(), "the first job never finished"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep dies mid-way, as on a lost machine
        process.wait()


@pytest.mark.slow
def test_interrupted_plain_sweep_keeps_finished_jobs_and_runs_the_rest(tmp_path):
    """`train -m` (Hydra's basic sweeper, resumable), killed after its first job and run again in
    its folder: job 0 is kept, the others run in their folders; a changed sweep is refused."""
    sweep = tmp_path / "plain"
    command = ["-m", "lr=0.1,0.01,0.001", *JOB, "logger=[]", f"hydra.sweep.dir={sweep}"]
    kill_after_first_job(command, sweep, tmp_path)
    first_job = (sweep / "0" / "metrics.json").read_text()
    result = run_train(command, tmp_path, timeout=900)
    assert (sweep / "0" / "metrics.json").read_text() == first_job  # finished jobs are not run again
    assert "job 0: finished in an earlier run of this sweep, kept" in result.stdout + result.stderr
    assert {(r["job"], r["lr"], r["status"]) for r in summary_rows(sweep)} == {
        ("0", "0.1", "ok"), ("1", "0.01", "ok"), ("2", "0.001", "ok")}  # fmt: skip
    changed = run_train([o if o != "lr=0.1,0.01,0.001" else "lr=0.1,0.01" for o in command], tmp_path, check=False)
    assert changed.returncode == 2
    (line,) = changed.stderr.strip().splitlines()
    assert "search space changed" in line and "lr: 0.1,0.01,0.001 -> 0.1,0.01" in line


@pytest.mark.slow
@pytest.mark.parametrize("search", ["random", "bayes", "grid"])
def test_interrupted_optuna_sweep_continues_its_study(tmp_path, search):
    """A sweep killed part-way, run again in its folder: finished jobs kept, the killed one run
    again in its own folder, new ones numbered after the last, the study grown to n_trials."""
    sweep = tmp_path / search
    command = [f"hparams_search={search}", "hydra.sweeper.n_trials=3", *JOB, f"hydra.sweep.dir={sweep}"]
    kill_after_first_job(command, sweep, tmp_path)
    before = study_trials(sweep, search)
    first_job = (sweep / "0" / "metrics.json").read_text()
    assert 1 <= len(before) < 3 or before[-1].state.name == "RUNNING"
    done_before = [t for t in before if t.state.name == "COMPLETE"]

    run_train(command, tmp_path, timeout=900)  # the same command, in the same folder
    after = study_trials(sweep, search)
    assert [t.params for t in after[: len(before)]] == [t.params for t in before]  # the same study, grown
    assert "RUNNING" not in {t.state.name for t in after}  # the killed trial is marked failed
    assert (sweep / "0" / "metrics.json").read_text() == first_job  # finished jobs are not run again
    complete = [t for t in after if t.state.name == "COMPLETE"]
    jobs = sorted(int(t.user_attrs["job"]) for t in complete)
    assert jobs == [0, 1, 2]  # three jobs in all, each finished once, in folders 0-2
    assert len(complete) == 3 and done_before == complete[: len(done_before)]
    for trial in complete:
        assert trial.params["lr"] == job_value(sweep, trial.user_attrs["job"], "lr")
    assert {int(r["job"]) for r in summary_rows(sweep) if r["status"] == "ok"} == {0, 1, 2}

    # A changed search space or fixed override is refused in one line, saying what changed.
    changed = run_train([o if o != "epochs=1" else "epochs=2" for o in command], tmp_path, check=False)
    assert changed.returncode == 2
    (line,) = changed.stderr.strip().splitlines()
    assert "fixed overrides changed" in line and "epochs: 1 -> 2" in line


@pytest.mark.slow
def test_coarse_to_fine_narrows_around_the_best_coarse_trials(tmp_path):
    sweep = tmp_path / "c2f"
    run_train(["hparams_search=coarse_to_fine", "hydra.sweeper.coarse.n_trials=3", "hydra.sweeper.coarse.epochs=1",
               "hydra.sweeper.fine.n_trials=2", "hydra.sweeper.fine.epochs=2", "hydra.sweeper.fine.top_k=2",
               "trainer.device=cpu", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=900)  # fmt: skip
    coarse = study_trials(sweep, "coarse_to_fine-coarse")
    fine = study_trials(sweep, "coarse_to_fine-fine")
    assert len(coarse) == 3 and len(fine) == 2
    top = sorted(coarse, key=lambda t: -t.value)[:2]
    low, high = min(t.params["lr"] for t in top) / 2, max(t.params["lr"] for t in top) * 2
    assert all(low <= t.params["lr"] <= high for t in fine)
    rows = summary_rows(sweep)
    stage_epochs = {(r["stage"], r["epochs"]) for r in rows}
    assert stage_epochs == {("coarse", "1"), ("fine", "2")}  # both stages reported, the fine one longer
    assert {int(r["job"]) for r in rows if r["stage"] == "fine"} == {3, 4}
    # The lecture's refinement trains without LR decay: each fine job's LR, epoch after
    # epoch, is the LR it was given; a coarse job keeps the cosine schedule (0 after its one epoch).
    for row in rows:
        with open(sweep / row["job"] / "metrics.csv") as f:
            used = {float(epoch["lr"]) for epoch in csv.DictReader(f)}
        given = job_value(sweep, row["job"], "lr")
        assert used == {given} if row["stage"] == "fine" else used != {given}


def test_nan_returning_job_is_a_failed_trial():
    """main() returns NaN for a failed run: the sweeper reads it as a failure, not a value."""
    from hydra.core.utils import JobReturn, JobStatus

    from trainer_cli.sweeper import job_value

    def job(value, status=JobStatus.COMPLETED):
        ret = JobReturn()
        ret.status, ret.return_value = status, value
        return ret

    assert job_value(job(0.9)) == 0.9
    assert job_value(job(math.nan)) is None
    assert job_value(job(RuntimeError("boom"), JobStatus.FAILED)) is None


def test_report_has_a_column_per_swept_key_and_labels_curves_by_their_overrides(tmp_path):
    from trainer_cli.sweep import job_curves, report

    ok = {"status": "ok", "test/acc": 0.5, "epochs_run": 3, "time_s": 1.0}
    jobs = [("sgd", "0.1", "[flip,crop]"), ("sgd", "0.01", "[none]"), ("adam", "0.001", "[flip,crop]"),
            ("adam", "0.0001", "[none]")]  # fmt: skip
    for job, (optimizer, lr, augmentation) in enumerate(jobs):
        overrides = [f"optimizer={optimizer}", f"lr={lr}", f"augmentation={augmentation}", "epochs=3"]
        curve = [0.3 + 0.1 * job, 0.5 + 0.1 * job, 0.6 + 0.1 * job]
        make_job(tmp_path, job, overrides, {**ok, "best/val/acc": curve[-1]}, curve)
    rows = report(tmp_path, "val/acc")
    written = {r["job"]: r for r in summary_rows(tmp_path)}
    assert list(written["0"])[:4] == ["job", "optimizer", "lr", "augmentation"]  # epochs=3 is shared: no column
    assert (written["2"]["optimizer"], written["2"]["lr"], written["2"]["augmentation"]) == (
        "adam",
        "0.001",
        "[flip,crop]",
    )
    curves = {label: colour for label, _, _, colour in job_curves(tmp_path, rows, "val/acc")}
    assert set(curves) == {f"optimizer={o} lr={lr} augmentation={a}" for o, lr, a in jobs}
    by_optimizer = {o: {curves[f"optimizer={o} lr={lr} augmentation={a}"] for oo, lr, a in jobs if oo == o}
                    for o in ("sgd", "adam")}  # fmt: skip
    assert all(len(colours) == 1 for colours in by_optimizer.values())  # one colour per choice
    assert by_optimizer["sgd"] != by_optimizer["adam"]
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("xs", "scale", "ticks"),
    [
        ([3e-4, 1e-3, 3e-3], "log", ["0.0003", "0.001", "0.003"]),  # a grid: its values are the ticks
        ([0.0, 1e-5, 1e-4], "symlog", ["0", "1e-05", "0.0001"]),  # a weight-decay grid with 0
        ([0.1, 0.2, 0.3], "log", ["0.1", "0.2", "0.3"]),
        ([-1.0, 0.0, 1.0], "linear", ["-1", "0", "1"]),
    ],
)
def test_searched_value_axes_are_log_and_ticked_at_the_grids_values(xs, scale, ticks):
    from matplotlib.figure import Figure

    from trainer_cli.sweep import value_axis

    axis = Figure().add_subplot()
    axis.scatter(xs, [0.5] * len(xs))
    value_axis(axis, xs)
    assert axis.get_xscale() == scale
    assert [t.get_text() for t in axis.get_xticklabels()] == ticks


# --- seed statistics -------------------------------------------------------------------------


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| > t) for Student's t with `df` degrees of freedom, by Simpson's rule on its density."""
    density = lambda x: math.exp(  # noqa: E731
        math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        - (df + 1) / 2 * math.log1p(x * x / df)
    )  # fmt: skip
    steps, h = 20_000, abs(t) / 20_000
    inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    return 1 - 2 * (h / 3) * (density(0) + inner + density(abs(t)))


def test_seed_statistics_equal_the_hand_computed_values():
    from trainer_cli.sweep import describe, welch

    a, b = [0.90, 0.92, 0.94], [0.85, 0.87, 0.86, 0.88]
    stats = describe(a)
    assert stats["mean"] == pytest.approx(0.92) and stats["sd"] == pytest.approx(0.02)
    # 95% interval: t(0.975, df=2) = 4.302653 (a t table), times sd / sqrt(3).
    assert stats["ci95_high"] - 0.92 == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert describe([0.5])["sd"] is None and describe([0.5])["ci95_low"] is None
    # Welch by hand: se^2 = 0.02^2/3 + (0.0005/3)/4 = 1.75e-4; t = 0.055 / sqrt(1.75e-4);
    # df = 1.75e-4^2 / ((0.0004/3)^2/2 + (0.0005/12)^2/3).
    t, df, p = welch(a, b)
    assert t == pytest.approx(0.055 / math.sqrt(1.75e-4), rel=1e-9)
    assert df == pytest.approx(1.75e-4**2 / ((0.0004 / 3) ** 2 / 2 + (0.0005 / 12) ** 2 / 3), rel=1e-9)
    assert p == pytest.approx(student_t_two_sided_p(t, df), abs=1e-6)
    assert 0.01 < p < 0.05
    assert welch([0.9], b) is None and welch([0.5, 0.5], [0.5, 0.5]) is None


def test_jobs_that_differ_only_by_seed_are_one_config_with_mean_sd_and_interval(tmp_path):
    from io import StringIO

    from rich.console import Console

    from trainer_cli.sweep import report

    scores = {("sgd", "0.1"): [0.90, 0.92, 0.94], ("sgd", "0.01"): [0.85, 0.87, 0.86],
              ("adam", "0.1"): [0.50, 0.70, 0.60], ("adam", "0.01"): [0.80, 0.81, None]}  # fmt: skip
    job = 0
    for (optimizer, lr), values in scores.items():
        for seed, value in enumerate(values):
            summary = None if value is None else {"status": "ok", "best/val/acc": value, "time_s": 1.0}
            make_job(tmp_path, job, [f"optimizer={optimizer}", f"lr={lr}", f"seed={seed}", "epochs=2"], summary,
                     [value or 0.1] * 2)  # fmt: skip
            job += 1
    text = StringIO()
    report(tmp_path, "val/acc", Console(file=text, width=200))
    printed = text.getvalue()
    written = summary_rows(tmp_path)
    assert [(r["optimizer"], r["lr"], r["seeds"]) for r in written] == [
        ("sgd", "0.1", "3"), ("sgd", "0.01", "3"), ("adam", "0.01", "2"), ("adam", "0.1", "3")]  # fmt: skip
    assert float(written[0]["mean"]) == pytest.approx(0.92) and float(written[0]["sd"]) == pytest.approx(0.02)
    assert float(written[0]["ci95_low"]) == pytest.approx(0.92 - 4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert written[2]["failed"] == "1" and written[0]["jobs"] == "0 1 2"
    with open(tmp_path / "jobs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12  # every job's own row is kept
    assert "0.9200 ± 0.0200" in printed and "[0.8703, 0.9697]" in printed
    assert "best optimizer=sgd lr=0.1 vs runner-up optimizer=sgd lr=0.01" in printed
    assert "p = 0.0" in printed and "the best beats the runner-up" in printed
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_swept_lists_are_printed_as_text_not_read_as_rich_markup(tmp_path):
    """`augmentation=[flip,crop]` in the tables and lines: rich would read `[flip,crop]` as a
    style tag and print `augmentation=` with an empty cell."""
    from io import StringIO

    from rich.console import Console

    from trainer_cli.sweep import report

    job = 0
    for augmentation, values in (("[flip,crop]", [0.9, 0.92]), ("[none]", [0.8, 0.82])):
        for seed, value in enumerate(values):
            make_job(tmp_path, job, [f"augmentation={augmentation}", f"seed={seed}"],
                     {"status": "ok", "best/val/acc": value, "time_s": 1.0}, [value] * 2)  # fmt: skip
            job += 1
    text = StringIO()
    report(tmp_path, "val/acc", Console(file=text, width=200))
    printed = text.getvalue()
    assert "│ [flip,crop]" in printed and "│ [none]" in printed  # the configs table's cells
    assert "best augmentation=[flip,crop] vs runner-up augmentation=[none]" in printed
    (tmp_path / "2" / "metrics.json").unlink()  # one seed of [none] left: the jobs table instead
    text = StringIO()
    report(tmp_path, "val/acc", Console(file=text, width=200))
    assert "│ [none]" in text.getvalue() and "│ [flip,crop]" in text.getvalue()


def test_one_config_over_seeds_keeps_each_jobs_row_with_the_configs_statistics(tmp_path):
    """`train seeds=3`: summary.csv keeps a row per job (its seed, status, and a stopped job's
    command to continue it), the config's mean ± sd beside, and the console says it."""
    from io import StringIO

    from rich.console import Console

    from trainer_cli.sweep import report

    for seed, value in enumerate([0.90, 0.94]):
        make_job(tmp_path, seed, [f"seed={seed}", "epochs=2"], {"status": "ok", "best/val/acc": value}, [value] * 2)
    stopped = {"status": "preempted", "error": "stopped; continue with: train resume=/x/2"}
    make_job(tmp_path, 2, ["seed=2", "epochs=2"], stopped, [0.5])
    text = StringIO()
    report(tmp_path, "val/acc", Console(file=text, width=200))
    written = {r["job"]: r for r in summary_rows(tmp_path)}
    assert {job: (r["seed"], r["status"]) for job, r in written.items()} == {
        "0": ("0", "ok"), "1": ("1", "ok"), "2": ("2", "preempted")}  # fmt: skip
    assert written["2"]["error"].endswith("train resume=/x/2")
    assert {(r["seeds"], round(float(r["mean"]), 6)) for r in written.values()} == {("2", 0.92)}
    assert "best val/acc over 2 seeds: 0.9200 ± 0.0283 (sd)" in text.getvalue()


def test_seeds_shortcut_expands_a_run_or_a_sweep_into_n_seeds():
    from trainer_cli.config import UserError
    from trainer_cli.sweep import expand_seeds

    assert expand_seeds(["seeds=3", "epochs=2"]) == ["-m", "epochs=2", "seed=0,1,2"]
    assert expand_seeds(["-m", "lr=0.1,0.01", "seeds=2"]) == ["-m", "lr=0.1,0.01", "seed=0,1"]  # multiplies
    assert expand_seeds(["epochs=2"]) == ["epochs=2"]
    for bad in (["seeds=0"], ["seeds=two"], ["seeds=2", "seed=5"]):
        with pytest.raises(UserError, match="seeds"):
            expand_seeds(bad)


def test_tensorboard_names_runs_by_their_swept_overrides_and_lists_swept_hparams_first(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    from trainer_cli.report import TensorBoard
    from trainer_cli.sweep import report

    for job, (optimizer, lr) in enumerate([("sgd", 0.1), ("adam", 0.1), ("sgd", 0.01)]):
        make_job(tmp_path, job, [f"optimizer={optimizer}", f"lr={lr}", "epochs=1"],
                 {"status": "ok", "best/val/acc": 0.5 + job / 10}, [0.5])  # fmt: skip
        sink = TensorBoard(tmp_path / str(job))
        sink.log_hparams({"data": "digits", "optimizer": optimizer, "lr": lr, "epochs": 1}, {"best/val/acc": 0.5})
        sink.close()
    report(tmp_path, "val/acc")
    root = tmp_path / "tensorboard"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "optimizer=adam,lr=0.1", "optimizer=sgd,lr=0.01", "optimizer=sgd,lr=0.1"]  # fmt: skip
    experiments = []
    for folder in [root, *(p for p in root.iterdir() if p.is_dir())]:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        content = accumulator.PluginTagToContent("hparams")
        assert folder == root or metadata.SESSION_START_INFO_TAG in content  # each run's own session
        if metadata.EXPERIMENT_TAG in content:
            experiments.append(metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG]))
    (experiment,) = experiments  # the sweep's alone: TensorBoard takes the first it finds for every run
    assert [(h.name, h.differs) for h in experiment.hparam_infos] == [
        ("optimizer", True), ("lr", True), ("data", False), ("epochs", False)]  # fmt: skip


def test_a_sweeps_jobs_load_the_same_data_node_once_each_with_its_own_tensors():
    import torch

    from trainer_cli.data import cached_source
    from trainer_cli.data.sources import TensorData

    loads = []

    def load():
        loads.append(1)
        return TensorData(torch.zeros(4, 1, 2, 2), torch.arange(4), torch.ones(2, 1, 2, 2), torch.arange(2), ["a", "b"])

    first = cached_source("source: digits\nseed: 0\n", load)
    first.train_x += 5  # a run's own tensors: the next job's are untouched
    second = cached_source("source: digits\nseed: 0\n", load)
    assert len(loads) == 1 and second.train_x.abs().sum() == 0
    cached_source("source: digits\nseed: 1\n", load)  # another node (seed): loaded again
    assert len(loads) == 2


@pytest.mark.slow
def test_a_seeded_sweep_prints_a_line_per_job_and_reports_each_config_over_its_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(["lr=0.1,0.01", "seeds=2", *JOB, f"hydra.sweep.dir={sweep}"], tmp_path)  # seeds=N: a multirun
    assert sorted((r["lr"], r["seeds"]) for r in summary_rows(sweep)) == [("0.01", "2"), ("0.1", "2")]
    jobs = [line for line in result.stdout.splitlines() if line.startswith("job ")]
    assert len(jobs) == 4 and all("best val/acc" in line for line in jobs)
    # One line a job: Hydra's own "#0 : lr=0.1 seed=0" launch lines are not printed beside ours.
    assert not [line for line in result.stdout.splitlines() if " : lr=" in line or "Launching" in line]
    assert "model summary" not in result.stdout and "Results" not in result.stdout  # in each job's train.log
    assert "Results" in (sweep / "0" / "train.log").read_text()
    assert "vs runner-up" in result.stdout and "Welch t" in result.stdout
    assert {p.name for p in (sweep / "tensorboard").iterdir() if p.is_dir()} == {
        f"lr={lr},seed={seed}" for lr in ("0.1", "0.01") for seed in (0, 1)}  # fmt: skip
