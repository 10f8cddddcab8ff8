"""The one place where config nodes become objects.

Every `_target_` is instantiated here, through `instantiate`, so the trust check on targets
guards a single door. `pieces(cfg)` builds everything a training run needs, in a fixed
order (the random number generators are drawn in this order, so one seed is one run), and
`Pieces.stateful()` lists, once, the state that checkpoints save and restore.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
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

from trainer_cli import checks, distributed, loop, transfer, trust
from trainer_cli.checkpoint import RandomState
from trainer_cli.config import NOT_CONSTRUCTOR_KEYS, UserError, full_batch, with_facts
from trainer_cli.data import Augmentation, Data, Preprocess, cached_source, prepare
from trainer_cli.data.mix import BatchRegularization
from trainer_cli.optim.params import merge_equal_groups, parameter_groups, penalized_parameters
from trainer_cli.optim.penalties import L2, Penalties, Penalty
from trainer_cli.optim.schedules import Scheduler
from trainer_cli.transfer import Finetune
from trainer_cli.tta import TestTimeAugmentation, untrained_views

log = logging.getLogger("trainer_cli")


def instantiate(node: DictConfig, *args: Any, key: str = "") -> Any:
    """`hydra.utils.instantiate` with plain Python containers; a constructor's ValueError,
    TypeError or UserError becomes a one-line UserError naming the config key.

    The trust door: every `_target_` in the node, after its interpolations are resolved, is
    checked on the object it really names (`trust.check_object`), and exactly that resolved
    node is what gets built."""
    resolved = OmegaConf.create(trust.plain(node, key)) if isinstance(node, DictConfig) else node
    trust.check_targets(resolved, key)
    try:
        # Hydra's own instantiate (unwrapped from the Hydra guard: this door has checked the node).
        instantiate_ = getattr(hydra.utils.instantiate, "__wrapped__", hydra.utils.instantiate)
        return instantiate_(resolved, *args, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise UserError(_keyed(cause, key, node)) from None
        if isinstance(cause, MemoryError) or "can't allocate memory" in str(cause):
            # A size the machine cannot hold (model.width=2000000000): the config's, not a bug.
            wanted = re.search(r"allocate (\d+) bytes", str(cause))
            size = f" ({int(wanted.group(1)) / 2**30:,.0f} GiB for one tensor)" if wanted else ""
            raise UserError(f"{key}: too large to build in this machine's memory{size}; choose smaller sizes") from None
        if str(error).startswith("Error locating target"):
            # Hydra's message sends users to HYDRA_FULL_ERROR; say what failed and where to look.
            while cause is not None and cause.__cause__ is not None:
                cause = cause.__cause__  # the root: "No module named 'mymodels'", or the module's own error
            reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause else "not found"
            raise UserError(
                f"{key}._target_: cannot import '{node.get('_target_')}' ({reason}); a module of your own must be in "
                "the folder you run train from (or on PYTHONPATH); TRAINER_CLI_DEBUG=1 shows the traceback"
            ) from None
        raise


def _keyed(error: Exception, key: str, node: Any = None) -> str:
    """A constructor's message, as one line that starts with the full config key.

    Constructors name their own argument (`alpha: expected a number > 0`); prefixed with
    the node's key that reads `mix.mixup.alpha: expected a number > 0`. An
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


def data(cfg: DictConfig, device: torch.device, carry_preprocess: bool = True) -> Data:
    """Load the data source and prepare splits, preprocessing and loaders.

    With `init_from` a run (and `carry_preprocess`: not when resuming, whose checkpoint has
    them), that run's preprocessing statistics are used instead of fitting new ones.

    A class count the config leaves open (`data.num_classes: null`, as for image folders)
    is counted from the data (`Data.num_classes`; `class_facts` puts it in the run record).
    """
    node = OmegaConf.to_yaml(cfg.data.source, resolve=True)  # the same node: the same data, loaded once a process
    source = subsets(cfg, cached_source(node, lambda: instantiate(cfg.data.source, key="data.source")))
    counted = len(source.classes)
    expected = len(cfg.data.classes) if cfg.data.get("classes") is not None else cfg.data.num_classes
    if expected is not None and expected != counted:
        raise UserError(f"data.num_classes: the config says {cfg.data.num_classes}, the data has {counted} classes")
    with config_key("data"):
        preprocess = Preprocess(
            str(cfg.data.preprocess),
            components=cfg.data.get("pca_components"),
            whiten=bool(cfg.data.get("pca_whiten", False)),
            epsilon=cfg.data.get("whitening_epsilon", 1e-2),
        )
        if cfg.get("init_from") and carry_preprocess:
            carried = transfer.initial_preprocess(str(cfg.init_from), preprocess.kind)
            if carried is not None:
                preprocess.load_state_dict(carried)
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
            label_noise=cfg.data.get("label_noise", 0.0),  # a run folder saved before the option: none
            shuffle_labels=cfg.data.get("shuffle_labels", False),
        )


def subsets(cfg: DictConfig, source: Any) -> Any:
    """`data.classes`, `data.samples_per_class` and the resize to `data.image_size` of an
    in-memory source; with `data.classes` the class count follows (`class_facts`)."""
    from trainer_cli.data.sources import TensorData
    from trainer_cli.data.subsets import class_subset, few_shot, resized

    classes, shots = cfg.data.get("classes"), cfg.data.get("samples_per_class")
    if not isinstance(source, TensorData):
        if classes is not None or shots is not None:
            raise UserError("data.classes / data.samples_per_class: only for in-memory data sets, not image folders")
        return source
    with config_key("data"):
        if classes is not None:
            source = class_subset(source, list(classes))
        if shots is not None:
            source = few_shot(source, shots, int(cfg.data.split_seed))
        return resized(source, int(cfg.data.image_size))


def class_facts(cfg: DictConfig, num_classes: int) -> dict[str, int]:
    """The class count the data has, for the run record: in the data node, and in the model
    node where it follows the data's (left open, or equal to the data's before `data.classes`
    took a subset)."""
    facts = {"data.num_classes": num_classes}
    if "num_classes" in cfg.model and cfg.model.num_classes in (None, cfg.data.num_classes):
        facts["model.num_classes"] = num_classes
    return facts


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
    """What `'regularization=[...]'` builds, each kind from its own key: weight penalties
    from `regularization` (in the loss, or decoupled beside the step) and the batch transforms
    (cutout, mixup, cutmix) from `mix`, where their options put their nodes (`# @package mix`),
    applied to training batches in the loop. Model switches (dropout, DropConnect, stochastic
    depth) and loss options (label smoothing) are plain keys of those nodes."""

    penalties: list[Penalty]
    batch_transform: BatchRegularization | None


def regularization(cfg: DictConfig) -> Regularization:
    penalties = [instantiate(node, key=f"regularization.{name}") for name, node in _selected(cfg.get("regularization"))]
    transforms = [instantiate(node, key=f"mix.{name}") for name, node in _selected(cfg.get("mix"))]
    return Regularization(penalties, BatchRegularization(transforms) if transforms else None)


def model(cfg: DictConfig) -> nn.Module:
    """The model node's target (its keys fitted to the constructor by `config.resolve`)."""
    return instantiate(cfg.model, key="model")


def optimizer(
    cfg: DictConfig, model: nn.Module, penalties: list[Penalty] | None = None, tuning: Finetune | None = None
) -> torch.optim.Optimizer:
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
        if tuning is not None:  # per-block groups with layer_lr_decay
            groups = tuning.param_groups(model, groups, float(cfg.optimizer.lr))
    try:  # a `_partial_` constructor runs here, after instantiate: its checks surface here
        built = make(groups)
    except (ValueError, TypeError) as error:
        raise UserError(_keyed(error, "optimizer", node)) from None
    built.register_load_state_dict_pre_hook(merge_equal_groups)
    return built


def finetune(cfg: DictConfig) -> Finetune:
    """What of the model trains (`finetune=`; everything when the config has no such node)."""
    if cfg.get("finetune") is None:
        return Finetune()
    return instantiate(cfg.finetune, key="finetune")


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
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.trainer.get("max_steps") is not None:
        total_steps = min(total_steps, int(cfg.trainer.max_steps))  # the schedule ends where the run does
    try:
        factor = make(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
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
        tta = TestTimeAugmentation(**OmegaConf.to_container(cfg.eval))
    untrained = untrained_views(tta.tta, [name for name, _ in _selected(cfg.get("augmentation"))])
    if untrained:
        log.warning(f"eval.tta={tta.tta}: the model was not trained on {' or '.join(untrained)} views "
                    "(no matching augmentation); test/acc_tta may fall below test/acc")  # fmt: skip
    return tta


def procedure(cfg: DictConfig) -> Callable[..., dict[str, Any]]:
    """What the command does (`mode=`): the procedure, called as
    `procedure(cfg, run_dir, hparams, user_keys=...)` with the resolved, read-only config."""
    return instantiate(cfg.mode, key="mode")


def check_loggers(cfg: DictConfig) -> None:
    """Before anything is built or written: each selected sink that needs an optional package
    (its `check_installed`) says so in one line."""
    for name, node in _selected(cfg.get("logger")):
        maker = instantiate(node, key=f"logger.{name}")  # a partial: nothing runs yet
        check = getattr(getattr(maker, "func", maker), "check_installed", None)
        if check is not None:
            check(key=f"logger.{name}")


def loggers(cfg: DictConfig, run_dir: Path, purge_step: int | None = None) -> list[Any]:
    """The sinks `'logger=[...]'` selects, each completed with the run folder (none on ranks
    other than 0: rank 0 alone writes)."""
    if not distributed.is_main():
        return []
    return [
        instantiate(node, key=f"logger.{name}")(run_dir=run_dir, purge_step=purge_step)
        for name, node in _selected(cfg.get("logger"))
    ]


def callbacks(cfg: DictConfig) -> list[Any]:
    """The run's hooks (trainer_cli/callbacks.py): the required ones, then those
    `'callbacks=[...]'` lists, in the listed order (a list adds to the required hooks)."""
    from trainer_cli.callbacks import with_required

    return with_required([instantiate(node, key=f"callbacks.{name}") for name, node in _selected(cfg.get("callbacks"))])


class LimitedBatches:
    """The first `limit` batches of a loader, each epoch (`trainer.limit_train_batches`,
    `trainer.limit_val_batches`, `trainer.limit_test_batches`, `trainer.max_steps`); everything
    else is the loader's."""

    def __init__(self, loader: Any, limit: int) -> None:
        self.loader, self.limit = loader, limit
        self.epoch_limit = limit  # the configured one; `limit` may be lower in a run's last epoch

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.limit)

    def __len__(self) -> int:
        return min(len(self.loader), self.limit)

    def raw_batches(self) -> Iterator[Any]:
        """The same first batches before preprocessing (test-time augmentation reads these)."""
        return itertools.islice(self.loader.raw_batches(), self.limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)


def _batch_limit(cfg: DictConfig, key: str, available: int) -> int | None:
    """`trainer.<key>`: a whole number of batches, a fraction (0, 1] of them, or null (all)."""
    value = cfg.trainer.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == math.inf:
        raise UserError(f"trainer.{key}: expected a whole number of batches >= 1, a fraction in (0, 1], or null")
    if isinstance(value, float):
        if value > 1:
            raise UserError(f"trainer.{key}: expected a fraction in (0, 1] or a whole number of batches, got '{value}'")
        return max(1, int(value * available))
    return int(value)


def limit_batches(cfg: DictConfig, run_data: Data) -> Data:
    """Quick checks on part of the data (like Lightning's `limit_*_batches`): the training
    validation and test loaders cut to their first batches; `trainer.max_steps` also wraps the
    training loader, so the run can stop mid-epoch (`train.steps_left`)."""
    train_limit = _batch_limit(cfg, "limit_train_batches", len(run_data.train))
    val_limit = _batch_limit(cfg, "limit_val_batches", len(run_data.val))
    test_limit = _batch_limit(cfg, "limit_test_batches", len(run_data.test))
    max_steps = cfg.trainer.get("max_steps")
    checks.whole_number("trainer.max_steps", max_steps, optional=True, error=UserError)
    if train_limit is not None or max_steps is not None:
        run_data.train = LimitedBatches(run_data.train, train_limit or len(run_data.train))
    if val_limit is not None:
        run_data.val = LimitedBatches(run_data.val, val_limit)
    if test_limit is not None:
        run_data.test = LimitedBatches(run_data.test, test_limit)
    return run_data


@dataclass
class Pieces:
    """Everything a training run is made of, built by `pieces(cfg)`."""

    # The run record: the resolved config with what the build found (the data's class count,
    # the file `init_from` read), read-only; what resolved_config.yaml and checkpoints save.
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
    finetune: Finetune
    # What the training step calls: the model, or its DistributedDataParallel wrapper with
    # several processes (the same parameters; everything else uses `model`).
    train_model: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.train_model is None:
            self.train_model = self.model

    @functools.cached_property
    def config_yaml(self) -> str:
        """The run's config as every checkpoint saves it: fixed once built, so written once
        (4 ms a checkpoint otherwise)."""
        return OmegaConf.to_yaml(self.cfg)

    @functools.cached_property
    def step_parts(self) -> loop.StepParts:
        """What the training step uses: `train_epoch(pieces.step_parts, batches, step=...)`."""
        return loop.StepParts(
            self.train_model, self.optimizer, self.scheduler, self.loss_fn, self.options,
            self.penalties, self.batch_transform, self.ema,
        )  # fmt: skip

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
            "position": self.data.train.position,  # after rng: where the epoch stands, for mid-epoch resume
            "loop": self.loop,
        }


def pieces(cfg: DictConfig, init_weights: bool = True) -> Pieces:
    """Build a run from its resolved config: data, model, objective, optimizer, schedule,
    averaging and the step options, in this order (the model's initialization draws from
    the global random generator after the data is split). `init_weights`: load `init_from`
    (a resumed run's checkpoint has the weights). `cfg` is not written: what the build
    finds goes into `Pieces.cfg`, the run record."""
    where = distributed.device(device(str(cfg.trainer.device)))
    run_data = limit_batches(cfg, data(cfg, where, carry_preprocess=init_weights))
    cfg = with_facts(cfg, class_facts(cfg, run_data.num_classes))  # the model is built for the data's classes
    tuning = finetune(cfg)
    run_model, init_source = transfer.adapt(cfg, model(cfg), tuning, init_weights)
    if init_source is not None:  # the run record names the exact file the weights came from
        cfg = with_facts(cfg, {"init_from": init_source})
    run_model = distributed.sync_batchnorm(run_model, bool(cfg.trainer.get("sync_batchnorm", False)), where).to(where)
    fast_path(cfg, run_model)
    chosen = regularization(cfg)
    run_optimizer = optimizer(cfg, run_model, chosen.penalties, tuning)
    tuning.start_epoch(run_model, 1)  # what trains first (the optimizer has all that ever trains)
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
        finetune=tuning,
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
    noisy = []
    if float(cfg.model.get("dropout", 0.0) or 0.0) > 0:
        noisy.append("dropout (model.dropout=0)")
    if run_data.train.augment is not None:
        names = [name for name, _ in _selected(cfg.get("augmentation"))]
        noisy.append(f"augmentation {', '.join(names)} (augmentation=[none])")
    if chosen.batch_transform is not None:
        names = [name for name, _ in _selected(cfg.get("mix"))]
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
