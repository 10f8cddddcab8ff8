"""Every option of every config group composes and builds; shortcuts and checks behave."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import build_run, conf_options
from trainer_cli import build
from trainer_cli.config import UserError, resolve
from trainer_cli.data.sources import debian_fashion_mnist_folder

# Data sets that need files this machine may not have: composed, built only when present.
NEEDS_FILES = {"mnist", "cifar10", "cifar100"}
# Options that act only on some models: built with one that has what they need.
NEEDS_MODEL = {"stochastic_depth": "model=resnet"}


def _build_all(cfg):
    device = torch.device("cpu")
    data = build.data(cfg, device)
    model = build.model(cfg)
    optimizer = build.optimizer(cfg, model)
    scheduler = build.scheduler(cfg, optimizer, len(data.train))
    images, labels = next(iter(data.train))
    logits = model(images)
    assert logits.shape == (images.shape[0], cfg.data.num_classes)

    def closure():  # L-BFGS re-evaluates the loss; the other optimizers call it once
        optimizer.zero_grad()
        loss = build.loss(cfg)(model(images), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    scheduler.step()
    return data, model


@pytest.mark.parametrize("option", conf_options("data"))
def test_every_data_option(option, make_cfg, image_folder):
    overrides = [f"data={option}"]
    if option == "imagefolder":
        overrides.append(f"data.path={image_folder}")
    cfg = resolve(make_cfg(*overrides))
    if option in NEEDS_FILES:
        assert cfg.data.source._target_.startswith("trainer_cli.data.sources.")
        return
    if option == "fashion_mnist" and debian_fashion_mnist_folder() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data, _ = _build_all(cfg)
    assert data.num_classes == cfg.data.num_classes or cfg.data.num_classes is None


@pytest.mark.parametrize("group", ["model", "optimizer", "scheduler", "regularization", "augmentation", "trainer"])
def test_every_option_of_group(group, make_cfg):
    for option in conf_options(group):
        override = f"{group}=[{option}]" if group in ("regularization", "augmentation") else f"{group}={option}"
        cfg = resolve(make_cfg(override, "data=digits", *([NEEDS_MODEL[option]] if option in NEEDS_MODEL else [])))
        _build_all(cfg)


def test_lr_shortcut_and_optimizer_default(make_cfg):
    assert resolve(make_cfg("optimizer=sgd")).optimizer.lr == 0.1  # sgd.yaml's own default
    assert resolve(make_cfg("optimizer=sgd")).lr == 0.1  # the effective value is recorded
    cfg = resolve(make_cfg("optimizer=adam", "lr=0.003"))
    assert cfg.optimizer.lr == 0.003 and cfg.lr == 0.003


def test_model_takes_shapes_from_data(make_cfg):
    cfg = resolve(make_cfg("data=synthetic", "data.in_channels=3", "data.image_size=12", "data.num_classes=4"))
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes) == (3, 12, 4)


def test_l2_decays_matrices_not_biases(make_cfg):
    cfg = resolve(make_cfg("regularization=[l2]"))
    optimizer = build.optimizer(cfg, build.model(cfg))
    # decoupled (the default): applied beside the step by penalties.decay_weights_
    decays = sorted(group["decoupled_l2"] for group in optimizer.param_groups)
    assert decays == [0.0, 5e-4]
    assert all(p.ndim == 1 for p in optimizer.param_groups[1]["params"])


@pytest.mark.parametrize(("overrides", "p"), [(["regularization=[dropout]"], 0.5), (["model.dropout=0.3"], 0.3)])
def test_dropout_is_a_key_of_the_model_that_regularization_sets(overrides, p, make_cfg):
    model = build.model(resolve(make_cfg(*overrides)))
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == p for m in dropouts)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lr=-1"], "lr: expected a number > 0"),
        (["lr=abc"], "lr: expected a number"),
        (["epochs=0"], "epochs: expected a whole number >= 1"),
        (["batch_size=0"], "batch_size: expected a whole number >= 1"),
        (["regularization=[dropout]", "model.dropout=1.0"], "model.dropout"),
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


def test_extra_trusted_targets_extend_the_list(make_cfg):
    cfg = make_cfg("model._target_=collections.OrderedDict", "extra_trusted_targets=[collections.]")
    assert resolve(cfg).model._target_ == "collections.OrderedDict"


def test_resolved_config_has_no_interpolations(make_cfg):
    cfg = resolve(make_cfg())
    text = OmegaConf.to_yaml(cfg)
    assert "${" not in text and "hydra" not in cfg


@pytest.mark.parametrize("option", conf_options("experiment"))
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
    _build_all(resolve(make_cfg(*overrides)))


def test_label_smoothing_softens_the_target(make_cfg):
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    target = torch.tensor([0])
    plain = build.loss(resolve(make_cfg()))(logits, target)
    smoothed = build.loss(resolve(make_cfg("regularization=[label_smoothing]")))(logits, target)
    # epsilon 0.1 over 3 classes: the target is (1 - 0.1 + 0.1/3, 0.1/3, 0.1/3)
    expected = -(torch.tensor([1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3]) * logits.log_softmax(1)).sum()
    assert torch.allclose(smoothed, expected) and smoothed > plain
