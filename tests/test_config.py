"""Every option of every config group composes and builds; shortcuts and checks behave."""

from __future__ import annotations

import math
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from tests.conftest import build_run, conf_options
from tests.test_option_effects import EFFECTS, NOT_HERE
from trainer_cli import build
from trainer_cli.config import CONF_DIR, UserError, resolve
from trainer_cli.data.sources import debian_fashion_mnist_folder

# Data sets that need files this machine may not have: composed, built only when present.
NEEDS_FILES = {"mnist", "cifar10", "cifar100"}
# Options that act only on some models: built with one that has what they need.
NEEDS_MODEL = {"stochastic_depth": "model=resnet"}
# Groups with their own tests: data (below), experiment (below), mode (test_kfold.py,
# test_ensemble.py, ...), hparams_search (test_sweep.py) and Hydra's own.
OWN_TESTS = {"data", "experiment", "mode", "hparams_search", "hydra"}


def _multi_select_groups() -> set[str]:
    """Groups the defaults list selects as a list (`'augmentation=[flip,crop]'`)."""
    defaults = OmegaConf.load(Path(CONF_DIR) / "config.yaml").defaults
    return {
        k for entry in defaults if isinstance(entry, DictConfig) for k, v in entry.items() if isinstance(v, ListConfig)
    }


def _every_option() -> list[tuple[str, str]]:
    """(group, option) for every file of every group under conf/: a new YAML file is a new case."""
    groups = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in OWN_TESTS)
    return [(group, option) for group in groups for option in conf_options(group)]


def take_a_step(pieces) -> tuple[dict[str, float], float]:
    """One optimizer step of the run's own step function on its first training batch;
    returns the step's metrics and how far the weights moved."""
    batch = next(iter(pieces.data.train))
    before = torch.cat([p.detach().flatten().clone() for p in pieces.model.parameters()])
    metrics, step = pieces.train_epoch(pieces.step_parts, [batch], step=0)
    after = torch.cat([p.detach().flatten() for p in pieces.model.parameters()])
    assert step == 1 and math.isfinite(metrics["loss"])
    return metrics, float((after - before).norm())


@pytest.mark.parametrize("option", conf_options("data"))
def test_every_data_option(option, make_cfg, image_folder):
    overrides = [f"data={option}"]
    if option == "imagefolder":
        overrides.append(f"data.path={image_folder}")
    composed = make_cfg(*overrides)
    if option in NEEDS_FILES:
        assert callable(hydra.utils.get_object(composed.data.source._target_))
        return
    if option == "fashion_mnist" and debian_fashion_mnist_folder() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    pieces = build_run(composed)
    expected = 3 if option == "imagefolder" else composed.data.num_classes  # the fixture's folders
    assert pieces.data.num_classes == expected == pieces.cfg.model.num_classes
    images, labels = next(iter(pieces.data.train))
    assert images.shape[1:] == (composed.data.in_channels, composed.data.image_size, composed.data.image_size)
    assert int(labels.max()) < expected
    _, moved = take_a_step(pieces)
    assert moved > 0
    EFFECTS["data"][option](pieces.cfg)  # the option's own effect (tests/test_option_effects.py)


@pytest.mark.parametrize(("group", "option"), _every_option(), ids=[f"{g}={o}" for g, o in _every_option()])
def test_every_option_of_every_group_builds_trains_a_step_and_has_its_effect(
    group, option, make_cfg, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # loggers that default to the current folder (mlflow's ./mlruns) write there
    override = f"{group}=[{option}]" if group in _multi_select_groups() else f"{group}={option}"
    extra = [NEEDS_MODEL[option]] if option in NEEDS_MODEL else []
    cfg = make_cfg(override, "data=digits", *extra)
    pieces = build_run(cfg)
    _, moved = take_a_step(pieces)
    assert moved > 0, f"{override}: the step did not change the weights"
    # What the option does, by its formula (tests/test_option_effects.py): moved weights alone
    # would pass with the option silently ignored. (diagnose: procedures, tests/test_diagnose.py)
    if group not in NOT_HERE:
        EFFECTS[group][option](pieces.cfg)


def test_lr_shortcut_and_optimizer_default(make_cfg):
    assert resolve(make_cfg("optimizer=sgd")).optimizer.lr == 0.1  # sgd.yaml's own default
    assert resolve(make_cfg("optimizer=sgd")).lr is None  # one value: optimizer.lr
    cfg = resolve(make_cfg("optimizer=adam", "lr=0.003"))
    assert cfg.optimizer.lr == 0.003 and cfg.lr is None  # the shortcut is spent into optimizer.lr


def test_lr_and_optimizer_lr_set_to_different_values_are_refused(make_cfg):
    both = {"lr", "optimizer.lr"}  # as `train lr=0.1 optimizer.lr=0.2` sets them
    with pytest.raises(UserError, match=r"^lr: '0.1' and optimizer.lr: '0.2' both set; set one"):
        resolve(make_cfg("lr=0.1", "optimizer.lr=0.2"), both)
    assert resolve(make_cfg("lr=0.1", "optimizer.lr=0.1"), both).optimizer.lr == 0.1  # the same value: fine
    assert resolve(make_cfg("lr=0.1"), {"lr"}).optimizer.lr == 0.1  # only the shortcut: it sets optimizer.lr


def test_model_takes_shapes_from_data(make_cfg):
    cfg = resolve(make_cfg("data=synthetic", "data.in_channels=3", "data.image_size=12", "data.num_classes=4"))
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes) == (3, 12, 4)


def test_l2_decays_matrices_not_biases(make_cfg):
    cfg = resolve(make_cfg("regularization=[l2]", "regularization.l2.decoupled=true"))
    optimizer = build.optimizer(cfg, build.model(cfg))
    # decoupled: applied beside the step by penalties.decay_weights_
    decays = sorted(group["decoupled_l2"] for group in optimizer.param_groups)
    assert decays == [0.0, 5e-4]
    assert all(p.ndim == 1 for p in optimizer.param_groups[1]["params"])


@pytest.mark.parametrize(("overrides", "p"), [(["regularization=[dropout]"], 0.5), (["model.dropout=0.3"], 0.3)])
def test_dropout_is_a_key_of_the_model_that_regularization_sets(overrides, p, make_cfg):
    model = build.model(resolve(make_cfg(*overrides)))
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == p for m in dropouts)


def test_each_kind_of_regularization_has_its_own_key(make_cfg):
    """One list on the command line; penalties under `regularization`, batch transforms under
    `mix`, switches in the model's and the loss's own keys: built by where they are."""
    typed = "regularization=[l2,mixup,cutout,dropout,label_smoothing]"
    cfg = resolve(make_cfg(typed, "mix.mixup.alpha=0.4"))
    assert set(cfg.regularization) == {"l2"} and set(cfg.mix) == {"mixup", "cutout"}
    assert cfg.model.dropout == 0.5 and cfg.loss.label_smoothing == 0.1
    chosen = build.regularization(cfg)
    assert [p.name for p in chosen.penalties] == ["l2"]
    assert [type(step).__name__ for step in chosen.batch_transform.steps] == ["Mixup", "Cutout"]
    assert chosen.batch_transform.steps[0].alpha == 0.4


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lr=-1"], "lr: expected a number > 0"),
        (["lr=abc"], "lr: expected a number"),
        (["epochs=0"], "epochs: expected a whole number >= 1"),
        (["batch_size=0"], "batch_size: expected a whole number >= 1"),
        (["regularization=[dropout]", "model.dropout=1.0"], "model.dropout"),
        (["regularization=[mixup]", "mix.mixup.alpha=-1"], "mix.mixup.alpha: expected a number > 0, got '-1'"),
        (["data=imagefolder"], "data.path: a value is required"),
        (["data=imagefolder", "data.path=/no/such/folder"], "data.path: '/no/such/folder' is not a folder"),
        (["model._target_=os.system"], "model._target_: 'os.system' is not a trusted target"),
        (["trainer.precision=8"], "trainer.precision"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, message, make_cfg):
    with pytest.raises(UserError) as error:
        build_run(make_cfg(*overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_resolved_config_has_no_interpolations(make_cfg):
    cfg = resolve(make_cfg())
    text = OmegaConf.to_yaml(cfg)
    assert "${" not in text and "hydra" not in cfg


@pytest.mark.parametrize("option", conf_options("experiment"))
@pytest.mark.slow
def test_every_experiment_builds(option, make_cfg, image_folder):
    """Each recipe composes and builds on its own data set; data that needs a download is
    replaced by synthetic tensors of the same shape."""
    cfg = make_cfg(f"experiment={option}")
    overrides = [f"experiment={option}"]
    if cfg.data.name in NEEDS_FILES:
        overrides += ["data=synthetic", f"data.in_channels={cfg.data.in_channels}",
                      f"data.image_size={cfg.data.image_size}", f"data.num_classes={cfg.data.num_classes}",
                      "data.source.num_train=64", "data.source.num_test=16"]  # fmt: skip
    if cfg.data.name == "imagefolder":
        overrides.append(f"data.path={image_folder}")
    if cfg.data.name == "fashion_mnist" and debian_fashion_mnist_folder() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    _, moved = take_a_step(build_run(make_cfg(*overrides)))
    assert moved > 0


def test_label_smoothing_softens_the_target(make_cfg):
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    target = torch.tensor([0])
    plain = build.loss(resolve(make_cfg()))(logits, target)
    smoothed = build.loss(resolve(make_cfg("regularization=[label_smoothing]")))(logits, target)
    # epsilon 0.1 over 3 classes: the target is (1 - 0.1 + 0.1/3, 0.1/3, 0.1/3)
    expected = -(torch.tensor([1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3]) * logits.log_softmax(1)).sum()
    assert torch.allclose(smoothed, expected) and smoothed > plain


def test_an_empty_image_folder_is_a_one_line_error(make_cfg, tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(UserError) as error:
        build_run(make_cfg("data=imagefolder", f"data.path={tmp_path}/empty"))
    assert "data.path" in str(error.value) and "\n" not in str(error.value)
