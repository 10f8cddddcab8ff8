"""run(): determinism, resume to the same numbers, TensorBoard curves, NaN stop, early stop."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainer_cli.loop
from trainer_cli import checkpoint
from trainer_cli.config import UserError
from trainer_cli.loop import NonFiniteLoss
from trainer_cli.train import run

EPOCH_TAGS = ["train/loss", "train/acc", "val/loss", "val/acc"]
STEP_TAGS = ["train/loss_step", "train/acc_step", "lr", "grad_norm", "samples_per_s"]


def history(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock column."""
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]


def test_same_seed_same_numbers_bit_for_bit(make_cfg, tmp_path):
    overrides = ["epochs=3", "regularization=[dropout]", "augmentation=[flip,crop]"]
    run(make_cfg(*overrides), tmp_path / "a")
    run(make_cfg(*overrides), tmp_path / "b")
    assert history(tmp_path / "a") == history(tmp_path / "b")
    weights_a, weights_b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # ...and a different seed gives different numbers (the check can fail).
    run(make_cfg(*overrides, "seed=1"), tmp_path / "c")
    assert history(tmp_path / "a") != history(tmp_path / "c")


class Killed(BaseException):
    """Stands in for SIGKILL in-process: not an Exception, so nothing in run() handles it."""


def test_resume_ends_with_the_same_weights_metrics_and_curves(make_cfg, tmp_path, monkeypatch):
    # dropout and augmentation draw from the global RNG, the shuffle from its own generator:
    # an exact resume must restore all of them.
    overrides = ["epochs=4", "regularization=[dropout]", "augmentation=[flip,crop]", "scheduler=cosine"]
    summary_full = run(make_cfg(*overrides), tmp_path / "full")

    original = trainer_cli.loop.train_one_epoch
    calls = {"epochs": 0}

    def killed_in_epoch_3(*args, **kwargs):
        calls["epochs"] += 1
        if calls["epochs"] == 3:
            on_log, seen = kwargs["on_log"], {"logs": 0}

            def log_then_die(step, values):
                on_log(step, values)  # these steps are past the checkpoint: they must be purged
                seen["logs"] += 1
                if seen["logs"] == 2:
                    raise Killed

            kwargs["on_log"] = log_then_die
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_cli.loop, "train_one_epoch", killed_in_epoch_3)
    with pytest.raises(Killed):
        run(make_cfg(*overrides), tmp_path / "killed")
    monkeypatch.setattr(trainer_cli.loop, "train_one_epoch", original)
    assert checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 2
    assert not (tmp_path / "killed" / "metrics.json").exists()

    summary_resumed = run(make_cfg(f"resume={tmp_path / 'killed'}"), Path("unused"))
    assert history(tmp_path / "full") == history(tmp_path / "killed")
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    for key in ("best/val/acc", "test/acc", "test/loss", "final/train/loss", "steps", "epochs_run"):
        assert summary_full[key] == summary_resumed[key]

    curves_full, curves_resumed = scalars(tmp_path / "full"), scalars(tmp_path / "killed")
    for tag in EPOCH_TAGS + ["lr", "train/loss_step"]:
        steps = [step for step, _ in curves_resumed[tag]]
        assert steps == sorted(set(steps)), f"{tag}: duplicated or out-of-order steps {steps}"
        assert steps == [step for step, _ in curves_full[tag]], f"{tag}: missing steps"
    for tag in EPOCH_TAGS + ["lr"]:
        assert [v for _, v in curves_resumed[tag]] == pytest.approx([v for _, v in curves_full[tag]], abs=1e-7)


def test_tensorboard_has_every_curve_and_the_hparams(make_cfg, tmp_path):
    run(make_cfg("epochs=2", "trainer.log_every_n_steps=5"), tmp_path / "run")
    curves = scalars(tmp_path / "run")
    for tag in EPOCH_TAGS + STEP_TAGS + ["test/acc"]:
        assert tag in curves, tag
    steps_per_epoch = int(history(tmp_path / "run")[0]["step"])
    assert [s for s, _ in curves["train/loss"]] == [steps_per_epoch, 2 * steps_per_epoch]
    assert [s for s, _ in curves["lr"]] == list(range(5, 2 * steps_per_epoch + 1, 5))
    assert [s for s, _ in curves["val/acc"]][0] == 0  # the initial, untrained evaluation
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert events.PluginTagToContent("hparams"), "no HParams summary in the run's event file"


def test_initial_loss_is_close_to_ln_c(make_cfg, tmp_path):
    run(make_cfg("epochs=1"), tmp_path / "run")
    first_val_loss = scalars(tmp_path / "run")["val/loss"][0]
    assert first_val_loss[0] == 0
    assert abs(first_val_loss[1] - math.log(10)) < 0.15


def test_test_set_uses_the_best_checkpoint(make_cfg, tmp_path):
    summary = run(make_cfg("epochs=3"), tmp_path / "run")
    best = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    rows = history(tmp_path / "run")
    assert float(rows[summary["best_epoch"] - 1]["val/acc"]) == max(float(r["val/acc"]) for r in rows)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/acc"] == summary["test/acc"]


def test_nan_loss_stops_before_the_step_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path, monkeypatch):
    from trainer_cli import build

    original = build.loss

    def loss_that_turns_nan(cfg):
        base, calls = original(cfg), {"n": 0}

        def loss(logits, labels):
            calls["n"] += 1
            value = base(logits, labels)
            return value * float("nan") if calls["n"] > 30 else value  # digits: 19 steps per epoch

        return loss

    monkeypatch.setattr(build, "loss", loss_that_turns_nan)
    with pytest.raises(NonFiniteLoss, match="learning rate is too high"):
        run(make_cfg("epochs=3"), tmp_path / "run")
    last = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_early_stopping_stops_when_the_monitor_stalls(make_cfg, tmp_path):
    summary = run(
        make_cfg("epochs=6", "optimizer=sgd", "lr=1e-9", "trainer.early_stopping.patience=2"), tmp_path / "run"
    )
    assert summary["early_stopped"] and summary["epochs_run"] == 3


def test_bf16_autocast_runs_the_forward_in_bfloat16(make_cfg, tmp_path, monkeypatch):
    dtypes = set()
    original = torch.nn.Linear.forward

    def spy(self, x):
        out = original(self, x)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    run(make_cfg("epochs=1", "trainer.precision=bf16"), tmp_path / "run")
    assert torch.bfloat16 in dtypes


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_checkpoint_given_to_resume_is_one_line(damage, make_cfg, tmp_path):
    run(make_cfg("epochs=1"), tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint" * 100)
    with pytest.raises(UserError) as error:
        run(make_cfg(f"resume={tmp_path / 'run'}"), tmp_path / "unused")
    assert "resume: checkpoint" in str(error.value) and "corrupted or truncated" in str(error.value)
    assert "\n" not in str(error.value)
