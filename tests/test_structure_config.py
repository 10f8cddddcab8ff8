"""The config flows one way: resolved once, where the command line becomes a config, and
read-only after that (OmegaConf's flag: a write raises). What the build finds goes into the
built pieces and the run record, never back into the config; a procedure that needs another
config derives one."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ReadonlyConfigError

from trainer_cli import build, cli_hydra, config

# A tiny job: one epoch of four batches, no TensorBoard.
TINY = ["epochs=1", "trainer.limit_train_batches=4", "logger=[]", "callbacks=[checkpoints]"]


@pytest.fixture
def built_configs(monkeypatch) -> list[DictConfig]:
    """Every config `build.pieces` is given (a run, a fold, a diagnosis step), recorded."""
    seen: list[DictConfig] = []
    original = build.pieces

    def recording(cfg: DictConfig, *args, **kwargs):
        seen.append(cfg)
        return original(cfg, *args, **kwargs)

    monkeypatch.setattr(build, "pieces", recording)
    return seen


@pytest.fixture
def resolve_calls(monkeypatch) -> list[DictConfig]:
    """Every call of `config.resolve`, wherever it is looked up from."""
    calls: list[DictConfig] = []
    original = config.resolve

    def counting(cfg: DictConfig, *args, **kwargs) -> DictConfig:
        calls.append(cfg)
        return original(cfg, *args, **kwargs)

    monkeypatch.setattr(config, "resolve", counting)
    monkeypatch.setattr(cli_hydra, "resolve", counting)
    return calls


def execute(cfg: DictConfig, run_dir: Path, user_keys: set[str] | None = None) -> dict:
    """One job as `train` runs it; the composed config is unchanged afterwards."""
    before = copy.deepcopy(cfg)
    summary = cli_hydra.execute(cfg, run_dir, user_keys=user_keys)
    assert cfg == before  # the command line's config is an input
    return summary


def test_the_resolved_config_is_read_only(make_cfg):
    resolved = config.resolve(make_cfg())
    with pytest.raises(ReadonlyConfigError):
        resolved.data.num_classes = 3
    with pytest.raises(ReadonlyConfigError):
        resolved.optimizer.lr = 0.1
    assert config.resolved(resolved) is resolved  # resolved once: a procedure takes it as it is


def test_lr_has_one_source_of_truth_after_resolve(make_cfg):
    resolved = config.resolve(make_cfg("lr=0.003"))
    assert resolved.optimizer.lr == 0.003 and resolved.lr is None  # the shortcut is spent
    assert config.resolve(make_cfg()).optimizer.lr == 1e-3 and config.resolve(make_cfg()).lr is None


def test_a_run_is_resolved_once_and_builds_on_the_read_only_config(
    make_cfg, image_folder, tmp_path, built_configs, resolve_calls
):
    """An image folder leaves the class count open: the build counts it; the record has it,
    the config the run was given does not."""
    cfg = make_cfg(*TINY, "data=imagefolder", f"data.path={image_folder}", "data.image_size=8", "data.num_workers=0")
    summary = execute(cfg, tmp_path / "run")
    assert summary["status"] == "ok" and summary["epochs_run"] == 1
    assert len(resolve_calls) == 1  # once, where the command line became a config
    assert [OmegaConf.is_readonly(c) for c in built_configs] == [True]
    assert built_configs[0].data.num_classes is None  # the input, unwritten
    record = OmegaConf.load(tmp_path / "run" / "resolved_config.yaml")
    assert record.data.num_classes == 3 and record.model.num_classes == 3  # what the build found
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert OmegaConf.create(saved["config"]).data.num_classes == 3  # and in every checkpoint


def test_init_from_records_its_file_in_the_pieces_not_the_config(make_cfg, tmp_path, built_configs):
    execute(make_cfg(*TINY), tmp_path / "source")
    cfg = config.resolve(make_cfg(*TINY, f"init_from={tmp_path / 'source'}"))
    pieces = build.pieces(cfg)
    best = str((tmp_path / "source" / "checkpoints" / "best.pt").resolve())
    assert pieces.cfg.init_from == best and cfg.init_from == str(tmp_path / "source")
    execute(make_cfg(*TINY, f"init_from={tmp_path / 'source'}"), tmp_path / "tuned")
    assert OmegaConf.load(tmp_path / "tuned" / "resolved_config.yaml").init_from == best


@pytest.mark.slow
def test_every_procedure_runs_on_the_read_only_config(make_cfg, tmp_path, built_configs, resolve_calls):
    """train, init_from, evaluate, predict, ensemble, k-fold and diagnosis, each as `train`
    runs it: any write into the config would raise; each build is of a read-only config."""
    execute(make_cfg(*TINY), tmp_path / "a")
    execute(make_cfg(*TINY, "seed=1", f"init_from={tmp_path / 'a'}"), tmp_path / "b")
    evaluated = execute(make_cfg("mode=evaluate", f"checkpoint={tmp_path / 'b'}", "logger=[]"), tmp_path / "eval")
    assert evaluated["test/num_samples"] == 360
    images = torch.rand(3, 1, 8, 8)
    torch.save(images, tmp_path / "images.pt")
    predicted = execute(
        make_cfg("mode=predict", f"checkpoint={tmp_path / 'a'}", f"mode.input={tmp_path / 'images.pt'}"),
        tmp_path / "predict",
    )
    assert predicted["status"] == "ok"
    ensembled = execute(make_cfg(f"ensemble=[{tmp_path / 'a'},{tmp_path / 'b'}]", "mode=ensemble"), tmp_path / "ens")
    assert len(ensembled["members"]) == 2
    assert len(resolve_calls) == 5  # one resolve per command
    folds = execute(make_cfg(*TINY, "mode=kfold", "data.kfold=2"), tmp_path / "kfold")
    assert len(folds["test/acc_folds"]) == 2
    diagnosis = make_cfg(
        *TINY, "mode=diagnose", "mode.steps=[initial_loss,overfit,lr_range]", "mode.overfit_epochs=3",
        "mode.overfit_batches=1", "mode.range_steps=5",
    )  # fmt: skip
    execute(diagnosis, tmp_path / "diagnose")
    assert built_configs and all(OmegaConf.is_readonly(c) for c in built_configs)


def test_evaluation_uses_the_runs_loss(make_cfg, tmp_path):
    """A loss=hinge run: val/loss and test/loss are the hinge loss (train/loss's quantity), and
    mode=evaluate reproduces the run's test/loss; the initial-loss check reads the
    cross-entropy (its ln C rule is the softmax's)."""
    import json
    import math

    from trainer_cli import checkpoint, loop
    from trainer_cli.losses import MulticlassSVMLoss
    from trainer_cli.train import check_initial_loss

    summary = execute(make_cfg(*TINY, "loss=hinge"), tmp_path / "run")
    pieces = build.pieces(config.resolve(make_cfg(*TINY, "loss=hinge")))
    pieces.model.load_state_dict(checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")["model"])
    tested = loop.evaluate(pieces.model, pieces.data.test, pieces.device, loss_fn=MulticlassSVMLoss())
    assert summary["test/loss"] == pytest.approx(tested["loss"], rel=1e-6)
    assert abs(tested["loss"] - tested["cross_entropy"]) > 0.05  # two quantities: the curve is the hinge's
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert history["best/val/loss"] > 1.5 * math.log(10)  # hinge-sized: far above a trained cross-entropy
    evaluated = execute(make_cfg("mode=evaluate", f"checkpoint={tmp_path / 'run'}", "logger=[]"), tmp_path / "eval")
    assert evaluated["test/loss"] == summary["test/loss"]

    class Reporter:  # what check_initial_loss prints and logs
        printed: list[str] = []
        logged: dict[str, float] = {}

        def print(self, text: str) -> None:
            self.printed.append(text)

        def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
            self.logged.update(scalars)

    fresh = build.pieces(config.resolve(make_cfg(*TINY, "loss=hinge")))
    initial = check_initial_loss(fresh, Reporter())
    assert initial["cross_entropy"] == pytest.approx(math.log(10), abs=0.25) and "PASS" in Reporter.printed[0]
    assert Reporter.logged["val/loss"] == initial["loss"] > 3  # the curve's step 0: the hinge loss, ~ (C-1) * margin


@pytest.mark.parametrize("listed", ["[first_layer]", "[none]"])
def test_a_users_hook_list_adds_to_the_required_hooks(make_cfg, tmp_path, listed):
    """`callbacks=[mine]` keeps the stop vote: a stop requested mid-epoch saves last.pt at
    that step (without the required hook the run would go on to the epoch's end, step 4)."""
    from trainer_cli import callbacks, checkpoint, faults
    from trainer_cli.train import run

    cfg = config.resolve(make_cfg(*TINY, f"callbacks={listed}"))
    assert sum(isinstance(hook, callbacks.StepCheckpoints) for hook in build.callbacks(cfg)) == 1
    both = config.resolve(make_cfg(*TINY, "callbacks=[checkpoints,first_layer]"))
    assert [type(hook) for hook in build.callbacks(both)] == [callbacks.StepCheckpoints, callbacks.FirstLayer]
    faults.request_stop("SIGTERM")
    try:
        with pytest.raises(faults.Preempted):
            run(cfg, tmp_path)
    finally:
        faults.clear_stop_request()
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["step"] == 1


def test_a_modes_inputs_are_its_arguments_and_the_top_level_keys_their_shortcuts(make_cfg):
    """Issue 22: the inputs of evaluate/predict/export (`checkpoint`) and of an ensemble (`runs`)
    sit in the mode's node and reach the procedure as arguments; `checkpoint=` and `ensemble=`
    at the top level are shortcuts, as `lr` is for `optimizer.lr`."""
    import inspect

    from trainer_cli import ensemble, inference

    for mode in ("evaluate", "predict", "export"):
        assert config.resolve(make_cfg(f"mode={mode}", "checkpoint=runs/a")).mode.checkpoint == "runs/a"
        assert config.resolve(make_cfg(f"mode={mode}", "mode.checkpoint=runs/b")).mode.checkpoint == "runs/b"
        assert "checkpoint" in inspect.signature(getattr(inference, f"run_{mode}")).parameters
    assert config.resolve(make_cfg("mode=ensemble", "ensemble=sweep")).mode.runs == "sweep"
    assert "runs" in inspect.signature(ensemble.run_ensemble).parameters
