"""trainer.max_steps / limit_train_batches / limit_val_batches: quick checks on part of a run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import build_run
from trainer_cli.config import UserError


def test_max_steps_stops_mid_epoch_and_the_schedule_ends_there(make_cfg, tmp_path):
    from trainer_cli.train import run

    # digits: 1293 training images, batch 64 -> 21 steps per epoch; 25 steps end inside epoch 2.
    summary = run(make_cfg("epochs=5", "trainer.max_steps=25", "logger=[none]"), tmp_path)
    assert summary["steps"] == 25 and summary["epochs_run"] == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 25
    pieces = build_run(make_cfg("epochs=5", "trainer.max_steps=25"))
    factor = pieces.scheduler.lr_lambdas[0]  # cosine over 25 steps, not 5 x 21
    assert factor(25) == pytest.approx(0.0, abs=1e-9) and factor(12) > 0.4


def test_limit_batches_cut_training_and_validation(make_cfg, tmp_path):
    from trainer_cli.train import run

    limits = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=0.5", "trainer.limit_test_batches=2"]
    pieces = build_run(make_cfg(*limits))
    assert pieces.steps_per_epoch == 3 and len(list(pieces.data.train)) == 3
    assert len(list(pieces.data.val)) == 1  # 144 validation images, batch 64: 3 batches, half of them
    assert len(list(pieces.data.test)) == 2  # of the test set's 6
    summary = run(make_cfg("trainer.limit_train_batches=3", "logger=[none]"), tmp_path)
    assert summary["steps"] == 6 and summary["epochs_run"] == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.limit_train_batches=1.5", r"^trainer\.limit_train_batches: expected a fraction in \(0, 1\]"),
        ("trainer.limit_val_batches=0", r"^trainer\.limit_val_batches: expected a whole number of batches >= 1"),
        ("trainer.max_steps=0", r"^trainer\.max_steps: expected a whole number >= 1 or null, got '0'"),
    ],
)
def test_bad_limits_are_one_line_errors(make_cfg, override, message):
    with pytest.raises(UserError, match=message):
        build_run(make_cfg(override))
