"""What the user reads: the console where it is not a terminal, train.log, the loggers."""

from __future__ import annotations

import logging
import os
import subprocess
import time

import pytest

from tests.conftest import TRAIN
from trainer_cli import report


def epoch_row(epoch: int) -> dict:
    return {"epoch": epoch, "train/loss": 0.5, "train/acc": 0.8, "val/loss": 0.4, "val/acc": 0.85, "lr": 1e-3}


def test_plain_output_has_a_line_per_epoch_with_eta_and_tables_reach_the_log(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="trainer_cli")
    with report.Reporter(tmp_path, [], epochs=3, steps_per_epoch=4) as reporter:
        reporter.plain, reporter.plain_step_seconds = True, 0.0
        reporter.start_epoch(1, 0)
        reporter.log_step(2, {"train/loss_step": 0.7, "train/acc_step": 0.5, "lr": 1e-3, "samples_per_s": 100.0})
        reporter.end_epoch(4, epoch_row(1), [epoch_row(1)])
        reporter.print(report.Table("a wide table", "with a column"))
    lines = [(r.getMessage(), getattr(r, "console", True)) for r in caplog.records]
    assert lines[0] == ("epoch 1/3 step 2/4  loss 0.7000  acc 0.500  lr 1.00e-03  100 samples/s", True)
    epoch_line, on_console = lines[1]
    assert epoch_line.startswith("epoch 1/3  train loss 0.5000 acc 0.8000  val loss 0.4000 acc 0.8500  lr 1.00e-03")
    assert " elapsed " in epoch_line and " eta " in epoch_line and on_console
    table, on_console = lines[2]
    assert "a wide table" in table and "with a column" in table and not on_console  # printed, and logged to the file


def test_console_handler_keeps_file_only_records_off_the_console():
    handler = report.console_handler()
    record = logging.LogRecord("trainer_cli", logging.INFO, __file__, 1, "table", None, None)
    assert handler.filter(record)
    record.console = False
    assert not handler.filter(record)


def test_quiet_console_keeps_warnings_and_ends_with_the_block():
    """A diagnosis's grid points run quietly: their info lines and tables stay off the
    console (train.log keeps them), their warnings do not."""
    handler = report.console_handler()
    info = logging.LogRecord("trainer_cli", logging.INFO, __file__, 1, "epoch 1/2", None, None)
    warning = logging.LogRecord("trainer_cli", logging.WARNING, __file__, 1, "diverged", None, None)
    with report.quiet_console():
        assert report.console.quiet and not handler.filter(info) and handler.filter(warning)
    assert not report.console.quiet and handler.filter(info)


@pytest.mark.slow
def test_piped_train_shows_each_epoch_as_it_ends(tmp_path):
    """`train | tee`: each epoch's line arrives while the run goes on, uncut, and train.log
    holds the epoch lines and the results table."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "HYDRA_FULL_ERROR")}
    args = [TRAIN, "epochs=3", "trainer.device=cpu", "model.width=2048", f"hydra.run.dir={tmp_path}/run"]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in process.stdout:
        seen.append((line.rstrip("\n"), process.poll(), time.monotonic()))
    process.wait()
    assert process.returncode == 0, "\n".join(line for line, _, _ in seen[-20:])
    epochs = [(line, running) for line, running, _ in seen if "] epoch " in line]
    assert len(epochs) == 3
    assert epochs[0][1] is None  # read while the run was still going: printed as the epoch ended
    assert all(len(line) > 80 for line, _ in epochs) and all(" eta " in line for line, _ in epochs)
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert log_text.count("] - epoch ") == 3 and "test acc (best-on-val checkpoint)" in log_text


def test_terminal_bar_shows_elapsed_time_and_eta(tmp_path, monkeypatch, caplog):
    import io

    from rich.console import Console
    from rich.progress import TimeElapsedColumn, TimeRemainingColumn

    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    monkeypatch.setattr(report, "console", terminal)
    caplog.set_level(logging.INFO, logger="trainer_cli")
    with report.Reporter(tmp_path, [], epochs=2, steps_per_epoch=4) as reporter:
        assert not reporter.plain
        reporter.start_epoch(1, 0)
        columns = {type(c) for c in reporter.progress.columns}
        assert {TimeElapsedColumn, TimeRemainingColumn} <= columns
        reporter.end_epoch(4, epoch_row(1), [epoch_row(1)])
    (record,) = [r for r in caplog.records if r.getMessage().startswith("epoch 1/2")]
    assert record.console is False  # the bar shows the epoch; the line goes to train.log only
