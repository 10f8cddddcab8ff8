"""Runs survive preemption and kills: stop requests, mid-epoch checkpoints, the lock, leftovers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import run_train
from trainer_cli import cli_argv, cli_hydra, faults, train
from trainer_cli.config import UserError

# Digits, a small MLP, 2 epochs of 21 steps; no TensorBoard (faster).
RUN = ("epochs=2", "logger=[]", "model.width=32")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return {**state["model"], **{f"opt/{k}": v for k, v in _flat(state["optimizer"]["state"]).items()}}


def _flat(state: dict) -> dict[str, torch.Tensor]:
    return {f"{i}/{name}": value for i, entry in state.items() for name, value in entry.items()}


def _same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("best/val/acc", "best/val/loss", "test/acc", "test/loss", "final/train/loss", "steps"):
        assert ma[key] == mb[key], key


@pytest.fixture
def reference(make_cfg, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    train.run(make_cfg(*RUN), run_dir)
    return run_dir


def _stop_at(monkeypatch, at_call: int, action=None) -> None:
    """Make the n-th check for a stop request see one (as SIGTERM would), or run `action`."""
    calls = [0]

    def requested():
        calls[0] += 1
        if calls[0] >= at_call:
            if action is not None:
                action()
            return "SIGTERM"
        return None

    monkeypatch.setattr(faults, "stop_requested", requested)


# The stop is checked after every step and after each epoch's checkpoint (call 22): mid-epoch 1,
# the epoch's last step before validation, after the epoch's checkpoint, mid-epoch 2.
@pytest.mark.parametrize(
    ("call", "step"),
    [(5, 5), pytest.param(21, 21, marks=pytest.mark.slow), pytest.param(22, 21, marks=pytest.mark.slow), (31, 30)],
)
def test_a_stop_request_resumes_bit_for_bit(call, step, reference, make_cfg, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    _stop_at(monkeypatch, call)
    with pytest.raises(faults.Preempted) as stopped:
        train.run(make_cfg(*RUN), run_dir)
    message = str(stopped.value)
    assert f"at step {step} (" in message and f"train resume={run_dir.resolve()}" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == step
    cli_hydra.execute(make_cfg(f"resume={run_dir}"), run_dir)
    _same(reference, run_dir)


@pytest.mark.slow
def test_a_run_started_again_in_its_stopped_folder_continues_only_its_own_checkpoint(
    reference, make_cfg, tmp_path, monkeypatch
):
    """What a requeued sweep job does: the same config in the same folder continues the marked
    checkpoint bit for bit; another config there, or an unmarked checkpoint, starts anew."""
    run_dir, other = tmp_path / "run", tmp_path / "other"
    for folder in (run_dir, other):
        _stop_at(monkeypatch, 5)
        with pytest.raises(faults.Preempted):
            train.run(make_cfg(*RUN), folder)
        monkeypatch.undo()
    assert json.loads((run_dir / faults.PREEMPTED_MARK).read_text()) == {"step": 5, "signal": "SIGTERM"}
    train.run(make_cfg(*RUN), run_dir)  # no resume=: the folder's own stopped run continues
    _same(reference, run_dir)
    assert not (run_dir / faults.PREEMPTED_MARK).exists()  # finished: nothing left to continue
    # Another config in a stopped folder (someone else's run folder, or a changed command): anew.
    train.run(make_cfg(*RUN, "seed=1"), other)
    train.run(make_cfg(*RUN, "seed=1"), tmp_path / "seed_1")
    _same(tmp_path / "seed_1", other)
    # A marked step that is not the checkpoint's (the run went on after its stop): anew.
    (run_dir / faults.PREEMPTED_MARK).write_text(json.dumps({"step": 5, "signal": "SIGTERM"}))
    assert train.own_stopped_checkpoint(make_cfg(*RUN), run_dir) is None


def test_every_n_steps_survives_a_kill(reference, make_cfg, tmp_path, monkeypatch):
    """A kill (nothing more is written) after step 11; the step-8 checkpoint resumes exactly."""
    run_dir = tmp_path / "run"

    def kill():
        raise SystemExit("killed")

    _stop_at(monkeypatch, 11, kill)
    with pytest.raises(SystemExit):
        train.run(make_cfg(*RUN, "trainer.checkpoint.every_n_steps=4"), run_dir)
    monkeypatch.undo()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 8
    (run_dir / "checkpoints" / ".last.pt.x1.tmp").write_bytes(b"half")  # a kill during a write
    cli_hydra.execute(make_cfg(f"resume={run_dir}"), run_dir)
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    _same(reference, run_dir)


def test_a_finished_run_is_left_alone_and_can_be_extended(reference, make_cfg):
    files = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file() and p.name != ".lock"}
    summary = cli_hydra.execute(make_cfg(f"resume={reference}"), reference)
    assert summary["epochs_run"] == 2
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing rewritten
    extended = cli_hydra.execute(make_cfg(f"resume={reference}", "+resume_with.epochs=3"), reference)
    assert extended["epochs_run"] == 3 and extended["steps"] == 63


def test_a_run_cannot_be_shortened(reference, make_cfg):
    with pytest.raises(UserError, match=r"^epochs: a resumed run can be extended"):
        cli_hydra.execute(make_cfg(f"resume={reference}", "+resume_with.epochs=1"), reference)


def test_a_second_writer_is_refused_and_a_killed_one_does_not_block(make_cfg, reference):
    code = (
        "import time; from pathlib import Path; from trainer_cli import faults; "
        f"faults.lock_run_folder(Path({str(reference)!r})); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=r"^resume: .* is in use by a running train \(pid \d+\)"):
        cli_hydra.execute(make_cfg(f"resume={reference}"), reference)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    faults.lock_run_folder(reference).close()  # the kernel dropped the dead process's lock


@pytest.mark.parametrize(
    "args",
    [["lr=0.1"], ["model=cnn"], ["+foo=1"], ["hydra.job_logging.root.level=DEBUG"]],
)
def test_other_overrides_with_resume_are_refused(args, tmp_path):
    with pytest.raises(UserError) as error:
        cli_argv.rewrite_argv([f"resume={tmp_path}", *args])
    assert "only epochs=..., trainer.device=..., trainer.devices=... are accepted" in str(error.value)
    assert str(error.value).startswith(args[0].split("=")[0].lstrip("+"))


def test_accepted_overrides_with_resume(tmp_path):
    out = cli_argv.rewrite_argv([f"resume={tmp_path}", "epochs=5", "trainer.device=cpu"])
    assert "+resume_with.epochs=5" in out and "+resume_with.trainer.device=cpu" in out


def test_a_saved_config_rerun_keeps_the_folders_and_name_the_command_line_gives(tmp_path):
    """`--config-path` adds unique run and sweep folders (a saved config has no hydra section),
    but not in place of the user's own: round 4 found `hydra.sweep.dir=mine` silently replaced."""
    typed = ["-m", "--config-path", str(tmp_path), "--config-name", "config", "hydra.sweep.dir=mine"]
    out = cli_argv.rewrite_argv([*typed, "hydra.job.name=again", "seed=0,1"])
    assert [a for a in out if a.startswith("hydra.sweep.dir=")] == ["hydra.sweep.dir=mine"]
    assert [a for a in out if a.startswith("hydra.job.name=")] == ["hydra.job.name=again"]
    assert any(a.startswith("hydra.run.dir=outputs/") for a in out)  # the one not typed: still unique
    plain = cli_argv.rewrite_argv(["--config-path", str(tmp_path), "--config-name", "config"])
    assert "hydra.job.name=train" in plain and any(a.startswith("hydra.sweep.dir=outputs/multirun/") for a in plain)


def test_a_config_error_leaves_no_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "train.log").write_text("")
    faults.discard_empty_run_folder(run_dir)
    assert not run_dir.exists()
    (tmp_path / "kept" / "checkpoints").mkdir(parents=True)
    faults.discard_empty_run_folder(tmp_path / "kept")
    assert (tmp_path / "kept").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_a_signal_through_train(name, tmp_path):
    """The real command: the signal mid-run, exit 75, the resume line, then resume to the end."""
    run_dir = tmp_path / "run"
    # Enough epochs that the signal, sent once the first checkpoint exists, lands mid-run.
    args = ["epochs=30", "trainer.device=cpu", "logger=[]", f"hydra.run.dir={run_dir}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([str(Path(sys.executable).with_name("train")), *args], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == faults.PREEMPTED_EXIT, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"stopped by {name} at step") and line.endswith(f"train resume={run_dir.resolve()}")
    result = run_train([f"resume={run_dir}"], tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 30, result.stdout[-500:]
    # The stop line and the resume line name the same place (issue 23: they once differed by an epoch).
    where = line.split(" at ", 1)[1].split(";")[0]
    assert f"resuming {run_dir} at {where}" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_config_error_through_train_leaves_no_folder(tmp_path):
    result = run_train(["model.width=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: model.width")
    assert not (tmp_path / "run").exists()


# Sweeps: a worker stopped by SIGTERM; submitit's preemption signal requeues -----------------------


def _wait_for_checkpoint(process: subprocess.Popen, run_dir: Path, timeout: float = 240) -> int:
    """Wait until the job in `run_dir` has written a checkpoint; returns its process id (the
    run folder's lock says which process writes it)."""
    deadline = time.time() + timeout
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        assert process.poll() is None, "the sweep ended before its job could be stopped"
        time.sleep(0.2)
    return int((run_dir / ".lock").read_text().split()[1])


def _train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    return subprocess.Popen([str(Path(sys.executable).with_name("train")), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_a_sweep_worker_stopped_by_sigterm_is_recorded_preempted_and_resumable(tmp_path):
    sweep = tmp_path / "sweep"
    job = ["epochs=30", "trainer.device=cpu", "logger=[]"]
    process = _train(["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *job,
                      f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    worker = _wait_for_checkpoint(process, sweep / "0")
    assert worker != process.pid  # a joblib worker, not the sweep's own process
    os.kill(worker, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    with open(sweep / "summary.csv", newline="") as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert rows["1"]["status"] == "ok" and rows["0"]["status"] == "preempted"
    assert rows["0"]["error"].endswith(f"continue with: train resume={(sweep / '0').resolve()}")
    assert json.loads((sweep / "0" / faults.PREEMPTED_MARK).read_text())["signal"] == "SIGTERM"
    run_train([f"resume={sweep / '0'}"], tmp_path)
    summary = json.loads((sweep / "0" / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["epochs_run"] == 30


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_that_continues_bit_for_bit(tmp_path):
    """submitit's local executor, as on SLURM: its preemption signal (SIGUSR2) to the job; the
    run checkpoints, submitit requeues the job, which continues in its folder from that
    checkpoint, and ends as an uninterrupted run does."""
    sweep = tmp_path / "sweep"
    job = ["epochs=12", "trainer.device=cpu", "logger=[]", "model.width=32"]
    process = _train(["-m", "hydra/launcher=submitit_local", *job, f"hydra.sweep.dir={sweep}"], tmp_path)
    os.kill(_wait_for_checkpoint(process, sweep / "0"), signal.SIGUSR2)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert "stopped by SIGUSR2" in logs and "Requeued job" in logs
    # A sweep's console (submitit's log) is one line per job; the job's own train.log says where it went on from.
    assert f"continuing the run stopped by SIGUSR2 in {sweep / '0'}" in (sweep / "0" / "train.log").read_text()
    assert "job 0: epochs=12 trainer.device=cpu logger=[] model.width=32: preempted" in logs
    run_train([*job, f"hydra.run.dir={tmp_path / 'uninterrupted'}"], tmp_path)
    _same(tmp_path / "uninterrupted", sweep / "0")
