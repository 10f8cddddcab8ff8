"""The one place where config nodes become objects.

Every `_target_` is instantiated here, through `instantiate`, so the trust check on targets
guards a single door. `pieces(cfg)` builds everything a training run needs, in a fixed
order (the random number generators are drawn in this order, so one seed is one run), and
`Pieces.stateful()` lists, once, the state that checkpoints save and restore.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainer_cli import checks, distributed, loop
from trainer_cli.checkpoint import RandomState
from trainer_cli.config import NOT_CONSTRUCTOR_KEYS, UserError, full_batch
from trainer_cli.data import Augmentation, Data, Preprocess, prepare
from trainer_cli.data.mix import BatchRegularization
from trainer_cli.optim.params import parameter_groups, penalized_parameters
from trainer_cli.optim.penalties import L2, Penalties, Penalty
from trainer_cli.optim.schedules import Scheduler
from trainer_cli.tta import TestTimeAugmentation


def instantiate(node: DictConfig, *args: Any, key: str = "") -> Any:
    """`hydra.utils.instantiate` with plain Python containers; a constructor's ValueError,
    TypeError or UserError becomes a one-line UserError naming the config key."""
    try:
        return hydra.utils.instantiate(node, *args, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise UserError(_keyed(cause, key, node)) from None
        raise


def _keyed(error: Exception, key: str, node: Any = None) -> str:
    """A constructor's message, as one line that starts with the full config key.

    Constructors name their own argument (`alpha: expected a number > 0`); prefixed with
    the node's key that reads `regularization.mixup.alpha: expected a number > 0`. An
    unexpected keyword names the key the constructor does not take.
    """
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", message)
    if unexpected and isinstance(node, DictConfig):
        target = str(node.get("_target_", ""))
        accepted = _accepted_arguments(node)
        hint = f"; accepted: {', '.join(accepted)}" if accepted else ""
        return f"{key}.{unexpected.group(1)}: not an argument of {target}{hint}"
    if not key or message.startswith((f"{key}.", f"{key}:")):
        return message
    first, _, rest = message.partition(":")
    names_an_argument = node is None or (isinstance(node, DictConfig) and first.split(".")[0] in node)
    if rest and " " not in first and names_an_argument:
        return f"{key}.{message}"
    return f"{key}: {message}"


def _accepted_arguments(node: DictConfig) -> list[str]:
    """The keyword arguments the node's target accepts (for the unexpected-key message)."""
    try:
        target = hydra.utils.get_object(str(node._target_))
        parameters = inspect.signature(target).parameters.values()
    except Exception:
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


@contextlib.contextmanager
def config_key(key: str) -> Iterator[None]:
    """Turn a ValueError raised while building `key` from plain values into a one-line
    UserError naming it (for objects built without `instantiate`)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise UserError(_keyed(error, key)) from None


def device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", name)):
        raise UserError(f"trainer.device: '{name}' is not accepted; choose auto, cpu, cuda or cuda:N")
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
    with config_key("data"):
        preprocess = Preprocess(
            str(cfg.data.preprocess),
            components=cfg.data.get("pca_components"),
            whiten=bool(cfg.data.get("pca_whiten", False)),
            epsilon=cfg.data.get("whitening_epsilon", 1e-2),
        )
        fold = (cfg.data.kfold, cfg.data.fold) if cfg.data.get("kfold") and cfg.data.get("fold") is not None else None
        return prepare(
            source,
            val_fraction=cfg.data.val_fraction,
            split_seed=cfg.data.split_seed,
            preprocess=preprocess,
            batch_size=cfg.batch_size,
            device=device,
            seed=cfg.seed,
            num_workers=cfg.data.get("num_workers", 0),
            fold=fold,
            augment=augmentation(cfg),
            shard=(distributed.rank(), distributed.world_size()),
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


@dataclass
class Regularization:
    """What `'regularization=[...]'` builds, sorted by what each object is: weight penalties
    (in the loss, or decoupled beside the step) and batch transforms (cutout, mixup, cutmix)
    applied to training batches in the loop. Model switches (dropout, DropConnect,
    stochastic depth) and loss options (label smoothing) are plain keys of those nodes."""

    penalties: list[Penalty]
    batch_transform: BatchRegularization | None


def regularization(cfg: DictConfig) -> Regularization:
    built = [instantiate(node, key=f"regularization.{name}") for name, node in _selected(cfg.get("regularization"))]
    transforms = [obj for obj in built if not isinstance(obj, Penalty)]
    return Regularization(
        penalties=[obj for obj in built if isinstance(obj, Penalty)],
        batch_transform=BatchRegularization(transforms) if transforms else None,
    )


def model(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.model, key="model")


def optimizer(cfg: DictConfig, model: nn.Module, penalties: list[Penalty] | None = None) -> torch.optim.Optimizer:
    """The `_partial_` optimizer completed with the model's parameter groups.

    The optimizer's own `weight_decay` goes to the weight matrices only; a decoupled L2
    penalty puts its lambda in the groups for `penalties.decay_weights_`. A full-batch
    optimizer (L-BFGS) takes a single group of every trainable parameter. `penalties`:
    the run's (built from `regularization` when not given).
    """
    if penalties is None:
        penalties = regularization(cfg).penalties
    node = OmegaConf.masked_copy(cfg.optimizer, [k for k in cfg.optimizer if k not in NOT_CONSTRUCTOR_KEYS])
    make = instantiate(node, key="optimizer")
    own_decay = float(cfg.optimizer.get("weight_decay", 0.0) or 0.0)
    if own_decay and any(isinstance(p, L2) for p in penalties):
        raise UserError(
            "optimizer.weight_decay: regularization=l2 is selected too; set one of them "
            "(regularization.l2.weight_decay with decoupled=true|false is the documented way)"
        )
    if full_batch(cfg):
        groups: list = [p for p in model.parameters() if p.requires_grad]
    else:
        decoupled = sum(p.decoupled_weight_decay for p in penalties)
        decay_1d = any(p.decay_1d for p in penalties)
        groups = parameter_groups(model, own_decay, decoupled, decay_1d)
    try:  # a `_partial_` constructor runs here, after instantiate: its checks surface here
        return make(groups)
    except (ValueError, TypeError) as error:
        raise UserError(_keyed(error, "optimizer", node)) from None


def penalties(cfg: DictConfig, model: nn.Module, selected: list[Penalty] | None = None) -> Penalties | None:
    """The loss penalties among `selected` (default: the config's) over the weights they
    act on, or None."""
    if selected is None:
        selected = regularization(cfg).penalties
    weights = penalized_parameters(model, any(p.decay_1d for p in selected))
    terms = Penalties(selected, weights)
    return terms if terms else None


def scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Scheduler:
    """The `_partial_` schedule completed with the run's length, stepped every optimizer step.

    `steps_per_epoch` counts optimizer steps (after gradient accumulation).
    """
    make = instantiate(cfg.scheduler, key="scheduler")
    try:
        factor = make(total_steps=cfg.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    except (ValueError, TypeError) as error:
        raise UserError(_keyed(error, "scheduler", cfg.scheduler)) from None
    return Scheduler(optimizer, factor)


def loss(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.loss, key="loss")


def ema(cfg: DictConfig, model: nn.Module) -> AveragedModel | None:
    """Polyak/EMA weights when `trainer.ema_decay` is set: ema <- d*ema + (1-d)*w after each
    optimizer step, starting from the initial weights; buffers (BN statistics) are averaged too."""
    decay = cfg.trainer.get("ema_decay")
    if decay is None:
        return None
    with config_key("trainer"):
        checks.open_interval("ema_decay", decay, 0.0, 1.0)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
    averaged.update_parameters(model)  # the first update copies: ema_0 = w_0
    return averaged


def swa(cfg: DictConfig, model: nn.Module) -> AveragedModel | None:
    """Stochastic weight averaging (equal weights, one sample per epoch from
    `trainer.swa_start_epoch`) when set; its BN statistics are recomputed at the end."""
    if cfg.trainer.get("swa_start_epoch") is None:
        return None
    return AveragedModel(model)


def step_options(cfg: DictConfig, device: torch.device) -> loop.StepOptions:
    trainer = cfg.trainer
    precision = str(trainer.precision)
    with config_key("trainer"):
        return loop.StepOptions(
            device=device,
            precision=precision,
            grad_clip_norm=trainer.get("grad_clip_norm"),
            grad_clip_value=trainer.get("grad_clip_value"),
            accumulate_grad_batches=trainer.get("accumulate_grad_batches", 1),
            log_every_n_steps=trainer.log_every_n_steps,
            scaler=torch.amp.GradScaler("cuda") if precision == "16" and device.type == "cuda" else None,
            nan_check=str(trainer.get("nan_check", "auto")),
            channels_last=bool(trainer.get("channels_last", False)),
        )


def early_stopping(cfg: DictConfig) -> loop.EarlyStopping:
    with config_key("trainer.early_stopping"):
        return loop.EarlyStopping(**OmegaConf.to_container(cfg.trainer.early_stopping))


def test_time_augmentation(cfg: DictConfig) -> TestTimeAugmentation:
    with config_key("eval"):
        return TestTimeAugmentation(**OmegaConf.to_container(cfg.eval))


def procedure(cfg: DictConfig) -> Callable[..., dict[str, Any]]:
    """What the command does (`mode=`): the procedure, called as `procedure(cfg, run_dir)`."""
    return instantiate(cfg.mode, key="mode")


def loggers(cfg: DictConfig, run_dir: Path, purge_step: int | None = None) -> list[Any]:
    """The sinks `'logger=[...]'` selects, each completed with the run folder (none on ranks
    other than 0: rank 0 alone writes)."""
    if not distributed.is_main():
        return []
    return [
        instantiate(node, key=f"logger.{name}")(run_dir=run_dir, purge_step=purge_step)
        for name, node in _selected(cfg.get("logger"))
    ]


@dataclass
class Pieces:
    """Everything a training run is made of, built by `pieces(cfg)`."""

    cfg: DictConfig
    device: torch.device
    data: Data
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    penalties: Penalties | None
    batch_transform: BatchRegularization | None
    ema: AveragedModel | None
    swa: AveragedModel | None
    options: loop.StepOptions
    early_stopping: loop.EarlyStopping
    tta: TestTimeAugmentation
    loop: loop.LoopState
    train_epoch: Callable[..., tuple[dict[str, float], int]]
    steps_per_epoch: int
    # What the training step calls: the model, or its DistributedDataParallel wrapper with
    # several processes (the same parameters; everything else uses `model`).
    train_model: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.train_model is None:
            self.train_model = self.model

    def stateful(self) -> dict[str, Any]:
        """The run's state, listed once: what a checkpoint saves and a resume restores.

        Each entry has `state_dict()` and `load_state_dict()`; None entries (features that
        are off) are skipped. A new stateful feature is one entry here.
        """
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.options.scaler,
            "preprocess": self.data.preprocess,
            "ema": self.ema,
            "swa": self.swa,
            "rng": RandomState(self.data.shuffle_generator),
            "loop": self.loop,
        }


def pieces(cfg: DictConfig) -> Pieces:
    """Build a run from its resolved config: data, model, objective, optimizer, schedule,
    averaging and the step options, in this order (the model's initialization draws from
    the global random generator after the data is split)."""
    where = distributed.device(device(str(cfg.trainer.device)))
    run_data = data(cfg, where)
    run_model = distributed.sync_batchnorm(model(cfg), bool(cfg.trainer.get("sync_batchnorm", False)), where).to(where)
    fast_path(cfg, run_model)
    chosen = regularization(cfg)
    run_optimizer = optimizer(cfg, run_model, chosen.penalties)
    options = step_options(cfg, where)
    # Optimizer steps per epoch: one for a full-batch optimizer; else one per `accumulate` batches.
    steps_per_epoch = 1 if full_batch(cfg) else math.ceil(len(run_data.train) / options.accumulate_grad_batches)
    if full_batch(cfg):
        _refuse_noise_with_full_batch(cfg, run_data, chosen)
        if distributed.world_size() > 1:  # each rank's line search would take its own decisions
            raise UserError(f"trainer.devices: {cfg.optimizer._target_} runs full-batch in one process only")
    return Pieces(
        cfg=cfg,
        device=where,
        data=run_data,
        model=run_model,
        loss_fn=loss(cfg),
        optimizer=run_optimizer,
        scheduler=scheduler(cfg, run_optimizer, steps_per_epoch),
        penalties=penalties(cfg, run_model, chosen.penalties),
        batch_transform=chosen.batch_transform,
        ema=ema(cfg, run_model),
        swa=swa(cfg, run_model),
        options=options,
        early_stopping=early_stopping(cfg),
        tta=test_time_augmentation(cfg),
        loop=loop.LoopState(),
        # The step is chosen once, from the optimizer's capability: a closure over the whole
        # training set (L-BFGS) or one step per (accumulated) batch.
        train_epoch=loop.train_full_batch if full_batch(cfg) else loop.train_one_epoch,
        steps_per_epoch=steps_per_epoch,
        train_model=distributed.wrap(run_model, where),
    )


def fast_path(cfg: DictConfig, run_model: nn.Module) -> None:
    """`trainer.channels_last`: conv weights in channels-last memory format (the loop feeds
    channels-last batches), faster convolutions on tensor-core GPUs; `trainer.compile`:
    `torch.compile` of the model in place (its state_dict keys are unchanged, so checkpoints
    load either way), compiled at the first forward."""
    if cfg.trainer.get("channels_last"):
        run_model.to(memory_format=torch.channels_last)
    if cfg.trainer.get("compile"):
        run_model.compile()


def _refuse_noise_with_full_batch(cfg: DictConfig, run_data: Data, chosen: Regularization) -> None:
    """L-BFGS's line search and curvature pairs assume one deterministic objective."""
    penalty_names = {p.name for p in chosen.penalties}
    noisy = []
    if float(cfg.model.get("dropout", 0.0) or 0.0) > 0:
        noisy.append("dropout (model.dropout=0)")
    if run_data.train.augment is not None:
        names = [name for name, _ in _selected(cfg.get("augmentation"))]
        noisy.append(f"augmentation {', '.join(names)} (augmentation=[none])")
    if chosen.batch_transform is not None:
        names = [name for name, node in _selected(cfg.get("regularization")) if name not in penalty_names]
        noisy.append(f"regularization {', '.join(names)}")
    for penalty in chosen.penalties:
        if penalty.decoupled:
            raise UserError(
                f"regularization.{penalty.name}.decoupled: a full-batch optimizer takes weight decay only as a "
                "loss penalty; set it to false"
            )
    if noisy:
        raise UserError(
            f"optimizer: {cfg.optimizer._target_} runs full-batch on a deterministic loss; turn off "
            f"{' and '.join(noisy)}, or pick another optimizer"
        )
