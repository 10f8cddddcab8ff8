"""A newcomer's first hour (issue 23): the commands a user types first, from an empty folder of
the installed wheel, and what the console promises about them."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.test_install import build_wheel


def test_tensorboard_has_no_epoch_counter_card(tmp_path):
    """The epoch counter was TensorBoard's first card, a straight line; the epoch curves stay."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer_cli.report import Reporter, TensorBoard

    row = {"epoch": 1, "train/loss": 0.5, "train/acc": 0.8, "val/loss": 0.4, "val/acc": 0.85, "lr": 1e-3}
    with Reporter(tmp_path, [TensorBoard(tmp_path)], epochs=1, steps_per_epoch=10) as reporter:
        reporter.end_epoch(10, row, [row])
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert "epoch" not in tags and {"train/loss", "val/acc"} <= tags


def test_max_steps_announces_the_steps_that_run(make_cfg, tmp_path, caplog):
    """`trainer.max_steps=5` on 21-step epochs: one epoch planned (its line says 1/1, the ETA is
    for it), not `epochs` of them."""
    import logging

    from trainer_cli.train import run

    with caplog.at_level(logging.INFO, logger="trainer_cli"):
        summary = run(make_cfg("epochs=20", "trainer.max_steps=5", "logger=[]"), tmp_path)
    text = caplog.text
    assert summary["steps"] == 5 and summary["epochs_run"] == 1
    assert "5 steps (trainer.max_steps: 1 epoch of 21 steps, the last cut short)" in text
    assert "epoch 1/1 " in text and "20 epochs" not in text


# The walk ------------------------------------------------------------------------------------
TIME = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(,\d+)?\]")
PATH = re.compile(r"(?<![\w.:/])(/[\w.+-]+(?:/[\w.+-]+)+|outputs/[\w./+-]+)")
RULE = re.compile(r"^[\s┏┓┗┛┡┩└┘┃│╇╈┳┻━─|+=-]*$")  # table borders and separators


def repeated_lines(text: str) -> list[str]:
    """Lines printed more than once, their timestamps aside. Table borders repeat by design, and
    so do the lines Hydra's sweep prints once per job, each run's block is checked on its own."""
    seen: set[str] = set()
    repeated = []
    for line in text.splitlines():
        line = TIME.sub("", line).strip()
        if not line or RULE.match(line):
            continue
        if line in seen:
            repeated.append(line)
        seen.add(line)
    return repeated


def missing_paths(text: str, cwd: Path) -> list[str]:
    """Paths the console names (run folders, files) that do not exist."""
    missing = []
    for found in PATH.findall(text):
        path = found.rstrip(".,;:)")
        if path.startswith(("/usr", "/proc")) or "<" in path:
            continue
        if not (cwd / path).exists():
            missing.append(path)
    return missing


def table_value(text: str, name: str) -> str:
    """The value of row `name` in a printed rich table."""
    match = re.search(rf"│ {re.escape(name)}\s+│\s+([^│]+?)\s+│", text)
    assert match, f"no row '{name}' in:\n{text[-2000:]}"
    return match.group(1)


def results_match(text: str, run_dir: Path) -> None:
    """The printed results table says what the run's metrics.json holds."""
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert table_value(text, "best epoch") == str(summary["best_epoch"])
    assert table_value(text, "val acc at best epoch") == f"{summary['best/val/acc']:.4f}"
    assert table_value(text, "val loss at best epoch") == f"{summary['best/val/loss']:.4f}"
    assert table_value(text, "test acc (best-on-val checkpoint)") == f"{summary['test/acc']:.4f}"
    assert table_value(text, "test loss") == f"{summary['test/loss']:.4f}"
    assert table_value(text, "epochs run").split()[0] == str(summary["epochs_run"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The wheel installed in a fresh venv that sees this environment's packages (as in
    tests/test_install.py and .ci/run), and the environment to run its `train` in."""
    root = tmp_path_factory.mktemp("newcomer")
    dist, venv = root / "dist", root / "venv"
    dist.mkdir()
    wheel = build_wheel(dist)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Every site-packages folder this environment reads (a venv may stack on a shared one), as
    # plain path lines: their packages importable, their .pth files (an editable trainer_cli) not run.
    shared = [p for p in sys.path if p.endswith("site-packages")] or [sysconfig.get_paths()["purelib"]]
    Path(site, "shared-packages.pth").write_text("".join(f"{p}\n" for p in shared))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR", "TRAINER_CLI_DEBUG")}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1")
    return venv, env


@pytest.mark.slow
def test_a_newcomers_first_commands(installed, tmp_path):
    """From an empty folder: --help, the default run (shortened), a sweep, evaluate, predict,
    export, each logger, a recipe shrunk and a saved config re-run. Each: exit 0, no traceback,
    no line printed twice, every printed path exists, the printed results equal metrics.json."""
    venv, env = installed
    work = tmp_path / "empty"
    work.mkdir()

    def train(*args: str) -> str:
        result = subprocess.run(
            [venv / "bin" / "train", *args], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"train {' '.join(args)}:\n{output[-3000:]}"
        assert "Traceback" not in output and "Warning:" not in output, f"train {' '.join(args)}:\n{output[-3000:]}"
        assert not repeated_lines(result.stdout), (args, repeated_lines(result.stdout))
        assert not missing_paths(output, work), (args, missing_paths(output, work))
        return result.stdout

    assert "Config groups" in train("--help")

    out = train("epochs=2", "hydra.run.dir=outputs/first")  # the default run, 2 of its 20 epochs
    results_match(out, work / "outputs/first")
    assert (work / "outputs/first/curves.png").is_file()

    out = train("-m", "optimizer=sgd,adam", "epochs=1", "hydra.sweep.dir=outputs/sweep")
    for job in ("0", "1"):
        summary = json.loads((work / "outputs/sweep" / job / "metrics.json").read_text())
        assert f"best val/acc {summary['best/val/acc']:.4f}" in out

    out = train("mode=evaluate", "checkpoint=outputs/first", "hydra.run.dir=outputs/evaluate")
    summary = json.loads((work / "outputs/evaluate/metrics.json").read_text())
    assert table_value(out, "all").startswith(f"{summary['test/acc']:.4f}")

    subprocess.run(
        [venv / "bin" / "python", "-c", "import torch; torch.save(torch.rand(3, 1, 8, 8), 'inputs.pt')"],
        cwd=work, env=env, check=True,
    )  # fmt: skip
    train("mode=predict", "checkpoint=outputs/first", "mode.input=inputs.pt", "hydra.run.dir=outputs/predict")
    assert len((work / "outputs/predict/predictions.csv").read_text().splitlines()) == 1 + 3

    formats = "[torch_export,onnx]" if importlib.util.find_spec("onnx") else "[torch_export]"
    out = train("mode=export", "checkpoint=outputs/first", f"mode.formats={formats}", "hydra.run.dir=outputs/export")
    exported = json.loads((work / "outputs/export/metrics.json").read_text())["exported"]
    assert all(f"{name}: {path}" in out for name, path in exported.items())

    loggers = "[tensorboard,csv,mlflow]" if importlib.util.find_spec("mlflow") else "[tensorboard,csv]"
    out = train("epochs=1", f"logger={loggers}", "hydra.run.dir=outputs/loggers")
    results_match(out, work / "outputs/loggers")
    assert (work / "outputs/loggers/csv/scalars.csv").is_file()

    out = train("experiment=digits_cnn", "epochs=1", "hydra.run.dir=outputs/recipe")
    results_match(out, work / "outputs/recipe")

    out = train("--config-path", "outputs/first/.hydra", "--config-name", "config", "hydra.run.dir=outputs/again")
    results_match(out, work / "outputs/again")
    assert "[trainer_cli][INFO]" not in out
