"""The one place where config nodes become objects.

Every `_target_` is instantiated here, through `instantiate`, so the trust check on
targets (config.check_targets) guards a single door.
"""

from __future__ import annotations

from typing import Any

import hydra.utils
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer_cli.config import UserError
from trainer_cli.data import Augmentation, Data, Preprocess, prepare
from trainer_cli.data.mix import BatchRegularization
from trainer_cli.optim.params import parameter_groups


def instantiate(node: DictConfig, *args: Any, key: str = "") -> Any:
    """`hydra.utils.instantiate` with plain Python containers; a constructor's ValueError
    or UserError becomes a one-line UserError naming the config key."""
    try:
        return hydra.utils.instantiate(node, *args, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            message = str(cause).splitlines()[0]
            raise UserError(message if ":" in message.split(" ")[0] else f"{key}: {message}") from None
        raise


def device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device: '{name}' asked for, but CUDA is not available; use auto or cpu")
    return torch.device(name)


def data(cfg: DictConfig, device: torch.device) -> Data:
    """Load the data source and prepare splits, preprocessing and loaders.

    A class count the config leaves open (`data.num_classes: null`, as for image folders)
    is filled in from the data, in the data and model nodes, so the saved config is exact.
    """
    source = instantiate(cfg.data.source, key="data.source")
    counted = len(source.classes)
    if cfg.data.num_classes is None:
        cfg.data.num_classes = counted
        if cfg.model.get("num_classes", 0) is None:
            cfg.model.num_classes = counted
    elif cfg.data.num_classes != counted:
        raise UserError(f"data.num_classes: the config says {cfg.data.num_classes}, the data has {counted} classes")
    preprocess = Preprocess(
        str(cfg.data.preprocess),
        components=cfg.data.get("pca_components"),
        whiten=bool(cfg.data.get("pca_whiten", False)),
        epsilon=float(cfg.data.get("whitening_epsilon", 1e-2)),
    )
    return prepare(
        source,
        val_fraction=cfg.data.val_fraction,
        split_seed=cfg.data.split_seed,
        preprocess=preprocess,
        batch_size=cfg.batch_size,
        device=device,
        seed=cfg.seed,
        num_workers=cfg.data.get("num_workers", 0),
        augment=augmentation(cfg),
    )


def _selected(group: DictConfig | None) -> list[tuple[str, DictConfig]]:
    """The nodes of a multi-select group that name a `_target_`, in the order listed."""
    if group is None:
        return []
    return [(str(name), node) for name, node in group.items() if isinstance(node, DictConfig) and "_target_" in node]


def augmentation(cfg: DictConfig) -> Augmentation | None:
    """The training-batch augmentation `'augmentation=[...]'` selects, or None when off."""
    steps = [instantiate(node, key=f"augmentation.{name}") for name, node in _selected(cfg.get("augmentation"))]
    return Augmentation(steps) if steps else None


def batch_regularization(cfg: DictConfig) -> BatchRegularization | None:
    """Cutout, mixup and cutmix from `'regularization=[...]'` (the nodes with a `_target_`),
    applied to training batches in the loop; None when none is selected."""
    steps = [instantiate(node, key=f"regularization.{name}") for name, node in _selected(cfg.get("regularization"))]
    return BatchRegularization(steps) if steps else None


def model(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.model, key="model")


def weight_decay(cfg: DictConfig) -> float:
    """L2 from `regularization=l2` when selected, else the optimizer's own weight_decay."""
    l2 = OmegaConf.select(cfg, "regularization.l2.weight_decay")
    return float(l2) if l2 is not None else float(cfg.optimizer.get("weight_decay", 0.0))


def optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The `_partial_` optimizer completed with the model's parameter groups."""
    make = instantiate(cfg.optimizer, key="optimizer")
    return make(parameter_groups(model, weight_decay(cfg)))


def scheduler(
    cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The `_partial_` schedule completed with the run's length, stepped every iteration."""
    make = instantiate(cfg.scheduler, key="scheduler")
    factor = make(total_steps=cfg.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step))


def loss(cfg: DictConfig) -> nn.Module:
    smoothing = OmegaConf.select(cfg, "regularization.label_smoothing.epsilon", default=0.0)
    return nn.CrossEntropyLoss(label_smoothing=float(smoothing))
