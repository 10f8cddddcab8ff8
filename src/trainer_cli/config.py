"""Config checks and shortcuts: everything that happens to the composed config before a run.

This module imports no torch, so `train --help` and config errors stay fast.
"""

from __future__ import annotations

import math
import os
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict


class UserError(Exception):
    """A mistake in the user's input: reported as one line, without a traceback."""


# Keys of an optimizer node read here (the linear scaling rule), not constructor arguments.
LR_SCALING_KEYS = ("scale_lr_with_batch", "base_batch_size")


def full_batch(cfg: DictConfig) -> bool:
    """L-BFGS runs full-batch: one step per epoch on the loss over the whole training set."""
    return str(cfg.optimizer.get("_target_", "")) == "torch.optim.LBFGS"


def register_resolvers() -> None:
    """Register the `${run_suffix:}` resolver used in run folder names."""
    if not OmegaConf.has_resolver("run_suffix"):
        # Cached so the run folder's name is computed once per process; the pid and a
        # random part keep two runs started in the same second in different folders.
        OmegaConf.register_new_resolver("run_suffix", lambda: f"{os.getpid()}{os.urandom(2).hex()}", use_cache=True)


def check_targets(cfg: Any, trusted: list[str], path: str = "") -> None:
    """Refuse any `_target_` outside the trusted prefixes, before anything is imported."""
    if isinstance(cfg, DictConfig):
        for key in cfg:
            node_path = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                target = cfg._get_node(key)._value()  # the raw string, unresolved
                if not isinstance(target, str) or not any(target.startswith(p) for p in trusted):
                    raise UserError(
                        f"{node_path}: '{target}' is not a trusted target; accepted prefixes: "
                        f"{', '.join(trusted)} (extend with extra_trusted_targets=[...])"
                    )
            else:
                check_targets(cfg._get_node(key), trusted, node_path)
    elif isinstance(cfg, ListConfig):
        for i, _item in enumerate(cfg):
            check_targets(cfg._get_node(i), trusted, f"{path}[{i}]")


def _number(cfg: DictConfig, key: str) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}: expected a number, got '{value}'")
    if not math.isfinite(value):
        raise UserError(f"{key}: expected a finite number, got '{value}'")
    return float(value)


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}: expected a whole number >= 1, got '{value}'")
    return value


def _fraction(cfg: DictConfig, key: str, low: float, high: float, high_open: bool = True) -> None:
    value = _number(cfg, key)
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise UserError(f"{key}: expected a value in [{low}, {high}{bracket}, got '{value}'")


def _choice(cfg: DictConfig, key: str, accepted: list[str]) -> None:
    value = OmegaConf.select(cfg, key)
    if str(value) not in accepted:
        raise UserError(f"{key}: '{value}' is not accepted; choose one of {', '.join(accepted)}")


def _check_optimization(cfg: DictConfig) -> None:
    """Penalties, clipping, accumulation, averaging and L-BFGS's full-batch requirements."""
    reg = cfg.get("regularization") or {}
    for key in ("l1.strength", "elastic_net.strength", "elastic_net.l2_ratio"):
        if key.split(".")[0] in reg and _number(cfg, f"regularization.{key}") < 0:
            raise UserError(f"regularization.{key}: expected a number >= 0")
    if "l2" in reg and float(cfg.optimizer.get("weight_decay", 0.0) or 0.0) != 0.0:
        raise UserError(
            "optimizer.weight_decay: regularization=l2 is selected too; set one of them "
            "(regularization.l2.weight_decay with decoupled=true|false is the documented way)"
        )
    trainer = cfg.trainer
    for key in ("grad_clip_value",):
        if trainer.get(key) is not None and _number(cfg, f"trainer.{key}") <= 0:
            raise UserError(f"trainer.{key}: expected a number > 0 or null")
    if trainer.get("accumulate_grad_batches") is not None:
        _positive_int(cfg, "trainer.accumulate_grad_batches")
    if trainer.get("ema_decay") is not None and not 0.0 < _number(cfg, "trainer.ema_decay") < 1.0:
        raise UserError(f"trainer.ema_decay: expected a value in (0, 1) or null, got '{trainer.ema_decay}'")
    if trainer.get("swa_start_epoch") is not None:
        start = _positive_int(cfg, "trainer.swa_start_epoch")
        if start > cfg.epochs:
            raise UserError(f"trainer.swa_start_epoch: expected a value in [1, epochs={cfg.epochs}], got {start}")
    if str(cfg.scheduler.get("_target_", "")).endswith(".Plateau"):
        monitors = ["val/loss", "val/acc", "train/loss", "train/acc", "val/ema_loss", "val/ema_acc"]
        _choice(cfg, "scheduler.monitor", monitors)
        _choice(cfg, "scheduler.mode", ["min", "max"])
    if not full_batch(cfg):
        return
    # L-BFGS's line search and curvature pairs assume one deterministic objective.
    noisy = []
    if "dropout" in reg or float(cfg.model.get("dropout", 0.0) or 0.0) > 0:
        noisy.append("dropout (model.dropout=0)")
    # Each selected augmentation is a node; plain keys (`preview`) are switches, not transforms.
    augmentations = [str(k) for k, v in (cfg.get("augmentation") or {}).items() if isinstance(v, DictConfig)]
    if augmentations:
        noisy.append(f"augmentation {', '.join(augmentations)} (augmentation=[none])")
    mixing = [name for name in ("mixup", "cutmix", "cutout") if name in reg]
    if mixing:
        noisy.append(f"regularization {', '.join(mixing)}")
    if noisy:
        raise UserError(
            f"optimizer=lbfgs: runs full-batch on a deterministic loss; turn off {' and '.join(noisy)}, "
            "or pick another optimizer"
        )
    if "l2" in reg and reg.l2.get("decoupled", True):
        raise UserError("regularization.l2.decoupled: L-BFGS takes L2 only as a loss penalty; set it to false")


def _check_data_augmentation(resolved: DictConfig) -> None:
    """Preprocessing, augmentation, batch regularization and test-time augmentation values."""
    if resolved.data.get("pca_components") is not None:
        _positive_int(resolved, "data.pca_components")
    if "whitening_epsilon" in resolved.data and _number(resolved, "data.whitening_epsilon") < 0:
        raise UserError("data.whitening_epsilon: expected a number >= 0")
    augmentation = resolved.get("augmentation") or {}
    regularization = resolved.get("regularization") or {}
    for key in ("flip.p", "perspective.p"):
        if OmegaConf.select(augmentation, key) is not None:
            _fraction(resolved, f"augmentation.{key}", 0.0, 1.0, high_open=False)
    if "crop" in augmentation:
        padding = augmentation.crop.padding
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise UserError(f"augmentation.crop.padding: expected a whole number >= 0, got '{padding}'")
    if "color_jitter" in augmentation:
        for key in ("brightness", "contrast", "saturation"):
            _fraction(resolved, f"augmentation.color_jitter.{key}", 0.0, 1.0, high_open=False)
        _fraction(resolved, "augmentation.color_jitter.hue", 0.0, 0.5, high_open=False)
    for group, name in (("augmentation", "autoaugment"), ("augmentation", "randaugment"),
                        ("augmentation", "trivialaugment"), ("augmentation", "augmix")):  # fmt: skip
        if name in augmentation:
            _positive_int(resolved, f"{group}.{name}.group_size")
    for name in ("mixup", "cutmix"):
        if name in regularization and _number(resolved, f"regularization.{name}.alpha") <= 0:
            raise UserError(f"regularization.{name}.alpha: expected a number > 0, got '{regularization[name].alpha}'")
    if "cutout" in regularization:
        _positive_int(resolved, "regularization.cutout.holes")
        _positive_int(resolved, "regularization.cutout.size")
    if "eval" in resolved:
        _choice(resolved, "eval.tta", ["none", "flip", "crops"])
        _choice(resolved, "eval.tta_reduce", ["mean", "vote"])
        padding = resolved.eval.tta_padding
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise UserError(f"eval.tta_padding: expected a whole number >= 0, got '{padding}'")
        scales = resolved.eval.tta_scales
        if (
            not isinstance(scales, ListConfig)
            or not scales
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 1 for x in scales)
        ):
            raise UserError(f"eval.tta_scales: expected a non-empty list of numbers >= 1, got '{scales}'")


def resolve(cfg: DictConfig) -> DictConfig:
    """Apply the top-level shortcuts, validate, and return the effective config.

    The result has every interpolation resolved, so it is exactly what ran: it is written
    to the run folder and into every checkpoint.
    """
    trusted = list(cfg.get("trusted_targets", [])) + list(cfg.get("extra_trusted_targets", []))
    check_targets(cfg, trusted)
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except Exception as error:  # a missing value (???) or a broken interpolation
        message = str(error).splitlines()[0]
        key = getattr(error, "full_key", "") or ""
        if "Missing mandatory value" in message:
            raise UserError(f"{key}: a value is required (set it with {key}=...)") from None
        raise UserError(f"{key or 'config'}: {message}") from None

    if resolved.get("lr") is not None:
        _number(resolved, "lr")
        resolved.optimizer.lr = resolved.lr
    if "lr" in resolved.optimizer:
        lr = _number(resolved, "optimizer.lr")
        if lr <= 0:
            raise UserError(f"lr: expected a number > 0, got '{lr}'")
        resolved.lr = lr  # the effective value, whichever way it was set
    if resolved.optimizer.get("scale_lr_with_batch"):
        # Linear scaling rule (Goyal et al. 2017): k times the batch, k times the rate.
        base = _positive_int(resolved, "optimizer.base_batch_size")
        resolved.optimizer.lr = resolved.optimizer.lr * _positive_int(resolved, "batch_size") / base
        resolved.lr = resolved.optimizer.lr
    _positive_int(resolved, "epochs")
    _positive_int(resolved, "batch_size")
    _number(resolved, "seed")
    if not 0.0 < _number(resolved, "data.val_fraction") < 1.0:
        raise UserError(f"data.val_fraction: expected a value in (0, 1), got '{resolved.data.val_fraction}'")
    if "dropout" in resolved.get("regularization", {}):
        _fraction(resolved, "regularization.dropout.p", 0.0, 1.0)
    if "dropout" in resolved.model:
        _fraction(resolved, "model.dropout", 0.0, 1.0)
    if "label_smoothing" in resolved.get("regularization", {}):
        _fraction(resolved, "regularization.label_smoothing.epsilon", 0.0, 1.0)
    if "l2" in resolved.get("regularization", {}) and _number(resolved, "regularization.l2.weight_decay") < 0:
        raise UserError("regularization.l2.weight_decay: expected a number >= 0")
    _check_optimization(resolved)
    _choice(resolved, "data.preprocess", ["none", "mean_image", "channel_mean", "channel_mean_std", "pca", "zca"])
    _check_data_augmentation(resolved)
    _choice(resolved, "trainer.precision", ["32", "bf16", "16"])
    _choice(resolved, "trainer.early_stopping.mode", ["max", "min"])
    _positive_int(resolved, "trainer.log_every_n_steps")
    if resolved.trainer.get("log_activations"):
        _positive_int(resolved, "trainer.log_activations_every_n_steps")
    if "stochastic_depth" in resolved.get("regularization", {}) and "drop_path" not in resolved.model:
        raise UserError("regularization.stochastic_depth: needs a model with residual blocks; use model=resnet")
    if "dropconnect" in resolved.get("regularization", {}):
        _fraction(resolved, "regularization.dropconnect.p", 0.0, 1.0)
    if resolved.trainer.grad_clip_norm is not None and _number(resolved, "trainer.grad_clip_norm") <= 0:
        raise UserError("trainer.grad_clip_norm: expected a number > 0 or null")
    patience = resolved.trainer.early_stopping.patience
    if patience is not None:
        _positive_int(resolved, "trainer.early_stopping.patience")
    device = str(resolved.trainer.device)
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise UserError(f"trainer.device: '{device}' is not accepted; choose auto, cpu, cuda or cuda:N")
    if resolved.data.name == "imagefolder" and not os.path.isdir(str(resolved.data.path)):
        raise UserError(
            f"data.path: '{resolved.data.path}' is not a folder; give a folder of class "
            "sub-folders, e.g. data.path=/data/pets"
        )
    with open_dict(resolved):
        resolved.pop("hydra", None)
    return resolved
