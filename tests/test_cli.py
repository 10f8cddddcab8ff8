"""The `train` command as users type it, through a subprocess, outputs in a temporary folder."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TRAIN, run_train, wait_for_epoch
from trainer_cli import checkpoint


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_train_with_no_arguments(tmp_path):
    result = run_train([f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    run_dir = tmp_path / "run"
    for name in (
        ".hydra/config.yaml", ".hydra/overrides.yaml", "resolved_config.yaml", "train.log",
        "checkpoints/best.pt", "checkpoints/last.pt", "metrics.json", "metrics.csv",
    ):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["best/val/acc"] > 0.9 and summary["test/acc"] > 0.9  # digits is easy
    assert "val acc at best epoch" in result.stdout and "test acc (best-on-val checkpoint)" in result.stdout
    assert "initial val loss" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_default_run_folder_is_under_outputs_and_unique_per_run(tmp_path):
    # Two runs started in the same second must not share a folder.
    args = [TRAIN, "epochs=1"]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    runs = sorted(p.parent for p in tmp_path.glob("outputs/*/*/metrics.json"))
    assert len(runs) == 2 and runs[0] != runs[1]


@pytest.mark.slow
def test_readme_first_command_records_the_effective_values(tmp_path):
    run_train(["optimizer=adam", "lr=1e-3", "epochs=1", f"hydra.run.dir={tmp_path}/a"], cwd=tmp_path)
    resolved = yaml.safe_load((tmp_path / "a" / "resolved_config.yaml").read_text())
    assert resolved["optimizer"]["_target_"] == "torch.optim.Adam" and resolved["optimizer"]["lr"] == 1e-3
    assert resolved["lr"] is None and len(metrics_rows(tmp_path / "a")) == 1  # the shortcut, spent into optimizer.lr


@pytest.mark.slow
def test_multirun_grid_with_summary(tmp_path):
    result = run_train(
        ["-m", "optimizer=sgd,adam", "lr=1e-2,1e-3", "epochs=1", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path
    )
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name != "tensorboard")
    assert jobs == ["0", "1", "2", "3"]  # tensorboard/: the jobs' curves named by their overrides
    with open(tmp_path / "sweep" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    values = [float(r["best_val"]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert {r["overrides"] for r in rows} == {
        f"optimizer={o} lr={lr} epochs=1" for o in ("sgd", "adam") for lr in ("0.01", "0.001")
    }
    assert "Sweep" in result.stdout and "best val/acc" in result.stdout


@pytest.mark.slow
def test_rerun_from_saved_config_is_bit_for_bit(tmp_path):
    run_train(["epochs=3", "regularization=[dropout]", f"hydra.run.dir={tmp_path}/first"], cwd=tmp_path)
    run_train(
        ["--config-path", "first/.hydra", "--config-name", "config", f"hydra.run.dir={tmp_path}/again"], cwd=tmp_path
    )
    assert metrics_rows(tmp_path / "first") == metrics_rows(tmp_path / "again")
    assert len(metrics_rows(tmp_path / "again")) == 3


@pytest.mark.slow
def test_rerun_from_saved_config_prints_the_console_of_a_fresh_run(tmp_path):
    """Issue 23: Hydra's own job_logging once doubled every line of a re-run (its
    `[..][trainer_cli][INFO] -` lines beside ours, the initial-loss line three times)."""
    fresh = run_train(["epochs=1", f"hydra.run.dir={tmp_path}/first"], cwd=tmp_path).stdout
    again = run_train(
        ["--config-path", "first/.hydra", "--config-name", "config", f"hydra.run.dir={tmp_path}/again"], cwd=tmp_path
    ).stdout

    def shape(text: str) -> list[str]:  # the lines without their times and run folders
        text = text.replace("first", "RUN").replace("again", "RUN")  # the folder's name, wrapped or not
        return [re.sub(r"[\d.]+ s\b|\[[\d :-]+\] ", "", line).rstrip() for line in text.splitlines()]

    assert "[trainer_cli][INFO]" not in again
    assert shape(again) == shape(fresh)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    # A data set large enough that each epoch takes a noticeable time, so the kill lands mid-run.
    args = ["data=synthetic", "data.source.num_train=10000", "model.width=256", "epochs=6", "seed=3"]
    run_train([*args, f"hydra.run.dir={tmp_path}/full"], cwd=tmp_path)

    victim = subprocess.Popen(
        [TRAIN, *args, f"hydra.run.dir={tmp_path}/killed"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    last = wait_for_epoch(victim, tmp_path / "killed", 2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists()

    run_train([f"resume={tmp_path}/killed"], cwd=tmp_path)
    assert metrics_rows(tmp_path / "full") == metrics_rows(tmp_path / "killed")
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(last)["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    summary_full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    summary_resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert summary_full["test/acc"] == summary_resumed["test/acc"]
    assert summary_full["best/val/acc"] == summary_resumed["best/val/acc"]


def test_help_lists_groups_without_importing_torch():
    code = (
        "import sys\n"
        "from trainer_cli.cli import main as cli\n"
        "sys.argv = ['train', '--help']\n"
        "try:\n    cli()\nexcept SystemExit:\n    pass\n"
        "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "NO-TORCH" in result.stdout
    for line in ("data: cifar10, cifar100, digits", "optimizer:", "scheduler:", "regularization:", "augmentation:"):
        assert line in result.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["optimizer=adamx"], "optimizer: unknown option 'adamx'; available: adagrad, adam"),
        (["'regularization=[l2,dropuot]'"], "regularization: unknown option 'dropuot'"),
        (["trainer.epoch=3"], "trainer.epoch: unknown key (misspelt?); accepted keys at 'trainer': device"),
        (["lr=-0.1"], "lr: expected a number > 0"),
        (["regularization=[dropout]", "model.dropout=1.5"], "model.dropout: expected"),
        (["data=imagefolder"], "data.path: a value is required"),
        (["model._target_=os.system"], "not a trusted target"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line(args, expected, tmp_path):
    args = [a.strip("'") for a in args]
    result = run_train([*args, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_nan_loss_is_one_line_naming_the_causes(tmp_path):
    result = run_train(["optimizer=sgd", "lr=1e30", "epochs=2", f"hydra.run.dir={tmp_path}/run"], tmp_path, False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "learning rate is too high" in lines[0] and "bad initialization" in lines[0]
