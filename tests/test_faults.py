"""Runs survive preemption and kills: stop requests, mid-epoch checkpoints, the lock, leftovers."""

from __future__ import annotations

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
from trainer_cli import cli, faults, train
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
    assert f"step {step};" in message and f"train resume={run_dir.resolve()}" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == step
    cli.execute(make_cfg(f"resume={run_dir}"), run_dir)
    _same(reference, run_dir)


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
    cli.execute(make_cfg(f"resume={run_dir}"), run_dir)
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    _same(reference, run_dir)


def test_a_finished_run_is_left_alone_and_can_be_extended(reference, make_cfg):
    files = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file() and p.name != ".lock"}
    summary = cli.execute(make_cfg(f"resume={reference}"), reference)
    assert summary["epochs_run"] == 2
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing rewritten
    extended = cli.execute(make_cfg(f"resume={reference}", "+resume_with.epochs=3"), reference)
    assert extended["epochs_run"] == 3 and extended["steps"] == 63


def test_a_run_cannot_be_shortened(reference, make_cfg):
    with pytest.raises(UserError, match=r"^epochs: a resumed run can be extended"):
        cli.execute(make_cfg(f"resume={reference}", "+resume_with.epochs=1"), reference)


def test_a_second_writer_is_refused_and_a_killed_one_does_not_block(make_cfg, reference):
    code = (
        "import time; from pathlib import Path; from trainer_cli import faults; "
        f"faults.lock_run_folder(Path({str(reference)!r})); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=r"^resume: .* is in use by a running train \(pid \d+\)"):
        cli.execute(make_cfg(f"resume={reference}"), reference)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    faults.lock_run_folder(reference).close()  # the kernel dropped the dead process's lock


@pytest.mark.parametrize(
    "args",
    [["lr=0.1"], ["model=cnn"], ["+foo=1"], ["hydra.job_logging.root.level=DEBUG"]],
)
def test_other_overrides_with_resume_are_refused(args, tmp_path):
    with pytest.raises(UserError) as error:
        cli.rewrite_argv([f"resume={tmp_path}", *args])
    assert "only epochs=..., trainer.device=..., trainer.devices=... are accepted" in str(error.value)
    assert str(error.value).startswith(args[0].split("=")[0].lstrip("+"))


def test_accepted_overrides_with_resume(tmp_path):
    out = cli.rewrite_argv([f"resume={tmp_path}", "epochs=5", "trainer.device=cpu"])
    assert "+resume_with.epochs=5" in out and "+resume_with.trainer.device=cpu" in out


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
    assert line.startswith(f"stopped by {name} at epoch") and line.endswith(f"train resume={run_dir.resolve()}")
    result = run_train([f"resume={run_dir}"], tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 30, result.stdout[-500:]


@pytest.mark.slow
def test_a_config_error_through_train_leaves_no_folder(tmp_path):
    result = run_train(["model.width=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: model.width")
    assert not (tmp_path / "run").exists()
