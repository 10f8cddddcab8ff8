"""A run killed after epoch 1 and resumed ends bit for bit like an uninterrupted one, with
every piece of optimization state this package adds: EMA and SWA weights, the plateau
schedule's memory, L-BFGS's curvature history, accumulation and penalties."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import trainer_cli.loop
from trainer_cli import checkpoint
from trainer_cli.train import run

SMALL = ["data=digits", "model.width=32", "model.depth=1", "epochs=2", "trainer.device=cpu"]
STATEFUL = [
    "trainer.ema_decay=0.9",
    "trainer.swa_start_epoch=1",
    "trainer.accumulate_grad_batches=2",
    "scheduler=plateau",  # no improvement is large enough: it cuts the rate after epoch 2
    "scheduler.threshold=10",
    "scheduler.patience=0",
    "regularization=[l1]",
]
LBFGS = ["optimizer=lbfgs", "optimizer.max_iter=5", "trainer.ema_decay=0.5"]


def assert_equal_bit_for_bit(a, b, where: str = "optimizer") -> None:
    """Nested state (dicts, lists, tensors, numbers) equal exactly: tensors by torch.equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal_bit_for_bit(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_bit_for_bit(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


def _interrupt_after_first_epoch(monkeypatch, name: str) -> None:
    original = getattr(trainer_cli.loop, name)

    def wrapped(*args, **kwargs):
        if kwargs["step"] > 0:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_cli.loop, name, wrapped)


@pytest.mark.parametrize(
    ("overrides", "loop_function"),
    [
        pytest.param(STATEFUL, "train_one_epoch", id="ema-swa-plateau-accumulation-l1"),
        pytest.param(LBFGS, "train_full_batch", id="lbfgs", marks=pytest.mark.slow),
    ],
)
def test_resume_restores_optimization_state_bit_for_bit(
    overrides, loop_function, make_cfg, tmp_path: Path, monkeypatch
):
    whole = run(make_cfg(*SMALL, *overrides), tmp_path / "whole")

    with monkeypatch.context() as patch:
        _interrupt_after_first_epoch(patch, loop_function)
        with pytest.raises(KeyboardInterrupt):
            run(make_cfg(*SMALL, *overrides), tmp_path / "killed")
    after_epoch_1 = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert after_epoch_1["epoch"] == 1
    resumed = run(make_cfg(f"resume={tmp_path / 'killed'}"), tmp_path / "unused")

    a = checkpoint.load(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")
    keys = ["model", "ema"] + (["swa"] if "swa" in a else [])
    for key in keys:
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    assert a["scheduler"] == b["scheduler"]
    assert_equal_bit_for_bit(a["optimizer"], b["optimizer"])
    history = [{k: v for k, v in row.items() if k != "time_s"} for row in a["loop"]["history"]]
    assert history == [{k: v for k, v in row.items() if k != "time_s"} for row in b["loop"]["history"]]
    for key in ("test/acc", "test/ema_acc", "val/swa_acc", "test/swa_acc"):
        assert whole.get(key) == resumed.get(key), key
    if loop_function == "train_one_epoch":
        # The cut after epoch 2 needs epoch 1's best value, which only the checkpoint holds.
        assert b["scheduler"]["lr_lambdas"][0]["scale"] == pytest.approx(0.1)
        assert int(b["swa"]["n_averaged"]) == 2
        # SWA from epoch 1 over 2 epochs: the plain mean of the weights at the two epoch ends
        for name, value in b["model"].items():
            mean = (after_epoch_1["model"][name] + value) / 2
            torch.testing.assert_close(b["swa"][f"module.{name}"], mean)
