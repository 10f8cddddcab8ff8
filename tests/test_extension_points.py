"""What adding each kind of piece takes, counted in files: the conf/ listing is the registry.

Each test copies conf/ to a temporary folder, adds the new piece's one YAML file (and, where
one is needed, its one class, defined in this module and trusted as a user would trust their
own module: `TRAINER_CLI_TRUST`), and shows the piece has its effect in a run. No other file
of the project changes:
- a new optimizer: 1 YAML file;
- a new augmentation, penalty or logger sink: 1 class + 1 YAML file;
- a new stateful training feature: its object + one entry in `Pieces.stateful()`;
- a new hook (callback): 1 class + 1 YAML file;
- a new mode (procedure): 1 function + 1 YAML file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import trainer_cli.loop
from tests.conftest import FAST
from trainer_cli import build, callbacks, checkpoint, cli_hydra
from trainer_cli.callbacks import Callback
from trainer_cli.config import CONF_DIR, register_resolvers, resolve
from trainer_cli.optim.penalties import Penalty
from trainer_cli.report import Sink
from trainer_cli.train import run


class Invert:
    """A new augmentation: x -> 1 - x on pixels in [0, 1]."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return 1.0 - images


class L4(Penalty):
    """A new penalty: strength * sum(W^4)."""

    name = "l4"

    def __init__(self, strength: float = 1e-3) -> None:
        self.strength = strength

    def __call__(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return self.strength * torch.stack([w.pow(4).sum() for w in weights]).sum()


class MemorySink(Sink):
    """A new logger: keeps what it is told in memory (class attribute, for the test to read)."""

    received: list[tuple[str, object]] = []

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        pass

    def log_epoch(self, step, row, history) -> None:
        MemorySink.received.append(("epoch", row["epoch"]))

    def log_summary(self, summary) -> None:
        MemorySink.received.append(("summary", summary["test/acc"]))


class StepCounter(Callback):
    """A new hook: counts optimizer steps and adds the count to each epoch's row."""

    steps: list[int] = []

    def on_step_end(self, run, step, totals) -> None:
        StepCounter.steps.append(step)

    def on_epoch_end(self, run, epoch, row) -> None:
        row["hook/steps"] = len(StepCounter.steps)


def count_samples(cfg, run_dir, hparams=None, user_keys=None, split: str = "train") -> dict:
    """A new mode: a procedure `(cfg, run_dir, hparams, user_keys, **its keys) -> summary`."""
    from trainer_cli.build import data, device

    return {"status": "ok", "split": split, "samples": getattr(data(cfg, device("cpu")), split).num_samples}


@pytest.fixture
def conf(tmp_path, monkeypatch) -> Path:
    """A copy of conf/ to add files to; this test module is trusted as the user's own code."""
    copy = tmp_path / "conf"
    shutil.copytree(CONF_DIR, copy)
    monkeypatch.setenv("TRAINER_CLI_TRUST", "tests")
    return copy


def add(conf: Path, relative: str, text: str) -> None:
    (conf / relative).write_text(text)


def compose_from(conf: Path, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=[*FAST, *overrides])


def test_a_new_optimizer_is_one_yaml_file(conf):
    add(conf, "optimizer/amsgrad.yaml", "_target_: torch.optim.Adam\n_partial_: true\nlr: 0.001\namsgrad: true\n")
    pieces = build.pieces(resolve(compose_from(conf, "optimizer=amsgrad")))
    assert isinstance(pieces.optimizer, torch.optim.Adam) and pieces.optimizer.defaults["amsgrad"]
    images, labels = next(iter(pieces.data.train))
    pieces.loss_fn(pieces.model(images), labels).backward()
    pieces.optimizer.step()
    state = pieces.optimizer.state[next(pieces.model.parameters())]
    assert "max_exp_avg_sq" in state  # AMSGrad's running maximum: the option had its effect


def test_a_new_augmentation_is_one_class_and_one_yaml_file(conf):
    add(conf, "augmentation/invert.yaml", "invert:\n  _target_: tests.test_extension_points.Invert\n")
    plain = build.pieces(resolve(compose_from(conf)))
    inverted = build.pieces(resolve(compose_from(conf, "augmentation=[invert]")))
    shuffle = inverted.data.shuffle_generator.get_state()
    raw, _ = next(inverted.data.train.raw_batches())
    inverted.data.shuffle_generator.set_state(shuffle)  # the same first batch again, augmented
    augmented, _ = next(iter(inverted.data.train))
    torch.testing.assert_close(augmented, inverted.data.preprocess(1.0 - raw))
    assert plain.data.train.augment is None


def test_a_new_penalty_is_one_class_and_one_yaml_file(conf):
    add(conf, "regularization/l4.yaml", "l4:\n  _target_: tests.test_extension_points.L4\n  strength: 0.01\n")
    pieces = build.pieces(resolve(compose_from(conf, "regularization=[l4]")))
    weights = [p for p in pieces.model.parameters() if p.ndim >= 2]
    expected = 0.01 * sum(float(w.detach().pow(4).sum()) for w in weights)
    logged = []
    parts = trainer_cli.loop.StepParts(
        pieces.model, pieces.optimizer, pieces.scheduler, pieces.loss_fn,
        trainer_cli.loop.StepOptions(log_every_n_steps=1), penalties=pieces.penalties,
    )  # fmt: skip
    pieces.train_epoch(
        parts, [next(iter(pieces.data.train))], step=0, on_log=lambda step, scalars: logged.append(scalars)
    )
    assert logged[0]["train/penalty/l4"] == pytest.approx(expected, rel=1e-5)


def test_a_new_logger_sink_is_one_class_and_one_yaml_file(conf, tmp_path):
    add(conf, "logger/memory.yaml", "memory:\n  _target_: tests.test_extension_points.MemorySink\n  _partial_: true\n")
    MemorySink.received.clear()
    summary = run(compose_from(conf, "logger=[memory]", "epochs=2"), tmp_path / "run")
    assert MemorySink.received == [("epoch", 1), ("epoch", 2), ("summary", summary["test/acc"])]
    assert not (tmp_path / "run" / "tensorboard").exists()  # only the sinks listed


class Counter:
    """A new stateful feature: any object with state_dict / load_state_dict."""

    def __init__(self) -> None:
        self.saves, self.restored = 0, None

    def state_dict(self) -> dict[str, int]:
        self.saves += 1
        return {"saves": self.saves}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.restored = state["saves"]


def test_a_new_stateful_feature_is_one_entry_in_the_state_list(conf, tmp_path, monkeypatch):
    counters: list[Counter] = []
    listed = build.Pieces.stateful

    def with_counter(self):  # the one entry a feature adds
        if not hasattr(self, "counter"):
            self.counter = Counter()
            counters.append(self.counter)
        return {**listed(self), "counter": self.counter}

    monkeypatch.setattr(build.Pieces, "stateful", with_counter)
    original = trainer_cli.loop.train_one_epoch

    def interrupted_in_epoch_2(*args, **kwargs):
        if kwargs["step"] > 0:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_cli.loop, "train_one_epoch", interrupted_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            run(compose_from(conf), tmp_path / "run")
    saved = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["counter"]
    assert saved == {"saves": counters[0].saves}
    run(compose_from(conf, f"resume={tmp_path / 'run'}"), tmp_path / "unused")
    assert counters[1].restored == saved["saves"]  # the resumed run got its state back


def test_a_new_hook_is_one_class_and_one_yaml_file(conf, tmp_path):
    add(conf, "callbacks/step_counter.yaml", "step_counter:\n  _target_: tests.test_extension_points.StepCounter\n")
    StepCounter.steps.clear()
    summary = run(compose_from(conf, "callbacks=[step_counter]"), tmp_path / "run")
    assert StepCounter.steps == list(range(1, summary["steps"] + 1))  # called after every optimizer step
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert "hook/steps" in rows[0].split(",") and rows[-1].split(",")[rows[0].split(",").index("hook/steps")] == str(
        summary["steps"]
    )  # the hook's column reached the run's record


def test_hooks_without_a_step_method_cost_nothing_per_step():
    run_view = callbacks.Run(pieces=None, reporter=None, run_dir=Path("."))
    assert callbacks.Hooks([callbacks.FirstLayer(), callbacks.LogProbes()], run_view).step_end is None
    assert callbacks.Hooks([StepCounter()], run_view).step_end is not None


def test_a_new_mode_is_one_function_and_one_yaml_file(conf, tmp_path):
    add(
        conf,
        "mode/count.yaml",
        "_target_: tests.test_extension_points.count_samples\n_partial_: true\nsplit: test\n",
    )
    test = cli_hydra.execute(compose_from(conf, "mode=count"), tmp_path / "test")
    train = cli_hydra.execute(compose_from(conf, "mode=count", "mode.split=train"), tmp_path / "train")
    assert (test["split"], train["split"]) == ("test", "train")  # the mode's own key reached it
    assert 0 < test["samples"] < train["samples"]  # digits: 360 test, the rest train/val
