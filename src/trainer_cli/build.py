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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainer_cli.config import LR_SCALING_KEYS, UserError, full_batch
from trainer_cli.data import Augmentation, Data, Preprocess, prepare
from trainer_cli.data.mix import BatchRegularization
from trainer_cli.optim.params import parameter_groups, penalized_parameters
from trainer_cli.optim.penalties import Penalties


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
        fold=(cfg.data.kfold, cfg.data.fold) if cfg.data.get("kfold") and cfg.data.get("fold") is not None else None,
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


def optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The `_partial_` optimizer completed with the model's parameter groups.

    The optimizer's own `weight_decay` goes to the weight matrices only; `regularization=l2`
    with `decoupled=true` puts its lambda in the groups for `penalties.decay_weights_`.
    L-BFGS takes a single group of every trainable parameter.
    """
    node = OmegaConf.masked_copy(cfg.optimizer, [k for k in cfg.optimizer if k not in LR_SCALING_KEYS])
    make = instantiate(node, key="optimizer")
    if full_batch(cfg):
        groups: list = [p for p in model.parameters() if p.requires_grad]
    else:
        l2 = OmegaConf.select(cfg, "regularization.l2")
        decoupled = float(l2.weight_decay) if l2 is not None and l2.get("decoupled", True) else 0.0
        decay_1d = bool(l2.get("decay_1d", False)) if l2 is not None else False
        groups = parameter_groups(model, float(cfg.optimizer.get("weight_decay", 0.0)), decoupled, decay_1d)
    try:  # a `_partial_` constructor runs here, after instantiate: its checks surface here
        return make(groups)
    except ValueError as error:
        message = str(error).splitlines()[0]
        raise UserError(message if message.startswith("optimizer.") else f"optimizer: {message}") from None


def penalties(cfg: DictConfig, model: nn.Module) -> Penalties | None:
    """The loss penalties `regularization` selects (L1, elastic net, coupled L2), or None."""
    reg = cfg.get("regularization") or {}
    l2 = float(reg.l2.weight_decay) if "l2" in reg and not reg.l2.get("decoupled", True) else 0.0
    l1 = float(reg.l1.strength) if "l1" in reg else 0.0
    elastic_net = (float(reg.elastic_net.strength), float(reg.elastic_net.l2_ratio)) if "elastic_net" in reg else None
    if not (l2 or l1 or elastic_net):
        return None
    decay_1d = bool(reg.l2.get("decay_1d", False)) if "l2" in reg else False
    return Penalties(penalized_parameters(model, decay_1d), l2=l2, l1=l1, elastic_net=elastic_net)


def scheduler(
    cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The `_partial_` schedule completed with the run's length, stepped every optimizer step.

    `steps_per_epoch` counts optimizer steps (after gradient accumulation). The factor is
    passed to LambdaLR as is: a callable object (Plateau) has its state saved in
    `state_dict()`; plain functions have none.
    """
    make = instantiate(cfg.scheduler, key="scheduler")
    try:
        factor = make(total_steps=cfg.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    except ValueError as error:
        message = str(error).splitlines()[0]
        raise UserError(message if message.startswith("scheduler.") else f"scheduler: {message}") from None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ema(cfg: DictConfig, model: nn.Module) -> AveragedModel | None:
    """Polyak/EMA weights when `trainer.ema_decay` is set: ema <- d*ema + (1-d)*w after each
    optimizer step, starting from the initial weights; buffers (BN statistics) are averaged too."""
    decay = cfg.trainer.get("ema_decay")
    if decay is None:
        return None
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
    averaged.update_parameters(model)  # the first update copies: ema_0 = w_0
    return averaged


def swa(cfg: DictConfig, model: nn.Module) -> AveragedModel | None:
    """Stochastic weight averaging (equal weights, one sample per epoch from
    `trainer.swa_start_epoch`) when set; its BN statistics are recomputed at the end."""
    if cfg.trainer.get("swa_start_epoch") is None:
        return None
    return AveragedModel(model)


def loss(cfg: DictConfig) -> nn.Module:
    smoothing = OmegaConf.select(cfg, "regularization.label_smoothing.epsilon", default=0.0)
    return nn.CrossEntropyLoss(label_smoothing=float(smoothing))
