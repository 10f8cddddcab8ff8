"""The trust rules: a config names callables, so what it may build is one closed list.

- What a config may build (`on_list`): exactly `TARGETS` (the `_target_`s the shipped conf/
  uses) and the `KINDS` of torch/torchvision objects the project builds (optimizers, `nn`
  modules and losses, LR schedules, v2 transforms, torchvision's model builders), plus what
  the user trusts on the command line (`train --trust mymod`). A module being trusted does not
  make its functions buildable. Checked at `build.instantiate` and wherever Hydra builds (the
  guard, `cli_guard.py`), after interpolations are resolved, on the object the target really
  is (`torch.os.system` is `posix.system`: refused), in two stages: the module path before any
  import (`check_path`), then the object (`check_object`).
- Own code by name, never by folder: the current folder is off `sys.path`
  (`forget_current_folder`); `--trust mymod` loads `mymod.py` from it by its path
  (`load_user_modules`). Widening trust is the user's act on the command line; children get it
  through the environment ($TRAINER_CLI_TRUST), never from a config or argv.
- Hydra keys from files (`check_file_keys`): a config file outside conf/ sets only
  `FILE_HYDRA_KEYS`; search path sources (`check_searchpath`); environment interpolation reads
  only what the command line names (`guard_env`).
This module imports no torch.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from trainer_cli.errors import UserError

# The user's own widening of trust: `train --trust mypackage` (repeatable) or this variable,
# comma-separated module names. Never read from a config file or a checkpoint.
TRUST_ENV = "TRAINER_CLI_TRUST"


def user_trusted_modules() -> list[str]:
    """The modules the user trusts on top of the defaults (`--trust`, $TRAINER_CLI_TRUST)."""
    return [name.strip() for name in os.environ.get(TRUST_ENV, "").split(",") if name.strip()]


HINT = f"trust your own module with `train --trust <module>` (or {TRUST_ENV}=<module>)"

# Stage 1: module paths that may be imported to look a target up (importing runs a module's code).
IMPORT_ROOTS = ("torch", "torchvision", "trainer_cli", "hydra_plugins", "hydra", "optuna", "logging")

# Stage 2, the closed list of what a config may build. (1) Exactly these objects, by the name
# of the module that defines them: the `_target_`s of the shipped conf/ (and of the Hydra
# plugins' own configs it selects). A new config node type is added here in the same change.
TARGETS = frozenset(
    {
        # conf/mode
        "trainer_cli.train.run",
        "trainer_cli.kfold.run_folds",
        "trainer_cli.ensemble.run_ensemble",
        "trainer_cli.diagnose.run_diagnosis",
        "trainer_cli.inference.run_evaluate",
        "trainer_cli.inference.run_predict",
        "trainer_cli.inference.run_export",
        # conf/data
        "trainer_cli.data.sources.load_digits",
        "trainer_cli.data.sources.load_synthetic",
        "trainer_cli.data.sources.load_mnist",
        "trainer_cli.data.sources.load_fashion_mnist",
        "trainer_cli.data.sources.load_cifar",
        "trainer_cli.data.sources.load_imagefolder",
        # conf/model
        "trainer_cli.models.MLP",
        "trainer_cli.models.CNN",
        "trainer_cli.models.resnet.ResNet",
        "trainer_cli.models.torchvision_models.torchvision_model",
        # conf/finetune
        "trainer_cli.transfer.Finetune",
        "trainer_cli.transfer.ProbeStage",
        "trainer_cli.transfer.LoRA",
        # conf/optimizer, conf/scheduler, conf/regularization
        "trainer_cli.optim.optimizers.AdamNoBias",
        "trainer_cli.optim.schedules.constant",
        "trainer_cli.optim.schedules.cosine",
        "trainer_cli.optim.schedules.step",
        "trainer_cli.optim.schedules.onecycle",
        "trainer_cli.optim.schedules.linear",
        "trainer_cli.optim.schedules.inverse_time",
        "trainer_cli.optim.schedules.inverse_sqrt",
        "trainer_cli.optim.schedules.exponential",
        "trainer_cli.optim.schedules.SGDR",
        "trainer_cli.optim.schedules.Plateau",
        "trainer_cli.optim.penalties.L1",
        "trainer_cli.optim.penalties.L2",
        "trainer_cli.optim.penalties.ElasticNet",
        "trainer_cli.data.mix.Mixup",
        "trainer_cli.data.mix.CutMix",
        "trainer_cli.data.mix.Cutout",
        # conf/augmentation
        "trainer_cli.data.augment.RandomFlip",
        "trainer_cli.data.augment.RandomCrop",
        "trainer_cli.data.augment.RandomResizedCrop",
        "trainer_cli.data.augment.RandomAffine",
        "trainer_cli.data.augment.RandomPerspective",
        "trainer_cli.data.augment.ColorJitter",
        "trainer_cli.data.augment.ElasticTransform",
        "trainer_cli.data.augment.PCALighting",
        "trainer_cli.data.augment.AutoAugment",
        "trainer_cli.data.augment.RandAugment",
        "trainer_cli.data.augment.TrivialAugment",
        "trainer_cli.data.augment.AugMix",
        # conf/loss
        "trainer_cli.losses.MulticlassSVMLoss",
        # conf/callbacks (hooks the loop calls)
        "trainer_cli.callbacks.AugmentationPreview",
        "trainer_cli.callbacks.DiagnoseAtEnd",
        "trainer_cli.callbacks.FirstLayer",
        "trainer_cli.callbacks.LogProbes",
        "trainer_cli.callbacks.StepCheckpoints",
        "trainer_cli.diagnose.signals.Signals",
        # conf/logger
        "trainer_cli.report.TensorBoard",
        "trainer_cli.sinks.CSVLogger",
        "trainer_cli.sinks.MLflow",
        # conf/hydra: callbacks, sweepers, launchers (Hydra's and its plugins' too), logging
        "trainer_cli.sweep.SweepSummary",
        "hydra_plugins.trainer_cli_search.OptunaSweeper",
        "hydra_plugins.trainer_cli_search.CoarseToFineSweeper",
        "hydra_plugins.trainer_cli_search.BasicSweeper",
        "hydra_plugins.trainer_cli_launchers.JoblibLauncher",
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "optuna.samplers._tpe.sampler.TPESampler",
        "optuna.samplers._random.RandomSampler",
        "optuna.samplers._grid.GridSampler",
        "optuna.samplers._nsga2.NSGAIISampler",
        "optuna.samplers.nsgaii._sampler.NSGAIISampler",  # its module in Optuna >= 3
        "optuna.samplers._qmc.QMCSampler",
        "optuna.samplers.QMCSampler",  # conf/hydra/sweeper/sampler/qmc.yaml's name (newer Optuna)
        "optuna.pruners._hyperband.HyperbandPruner",
        "optuna.pruners._median.MedianPruner",
        "optuna.pruners._nop.NopPruner",
        "optuna.pruners._successive_halving.SuccessiveHalvingPruner",
    }
)
# What a logging set-up (`hydra.job_logging`, `hydra.hydra_logging`) may name as a factory
# (`()` or `class`), by section; nothing else builds these (a FileHandler built as a model key
# or a callback would write wherever its config points). Optuna's CMA-ES sampler is not listed:
# it unpickles its state from the study's storage, which a shared sweep folder supplies.
LOGGING_FACTORIES = {
    "formatters": frozenset({"logging.Formatter"}),
    "handlers": frozenset(
        {
            "logging.StreamHandler",
            "logging.FileHandler",  # its filename must lie in the run folder (`check_logging`)
            "logging.NullHandler",
            "trainer_cli.report.console_handler",
        }
    ),
    "filters": frozenset({"logging.Filter"}),
}
# Listed objects that act when called (a procedure, a writer given its run folder): a config
# builds them only as `_partial_: true`; the code calls them with the run's own folder.
PARTIAL_ONLY = frozenset(
    {
        "trainer_cli.train.run",
        "trainer_cli.kfold.run_folds",
        "trainer_cli.ensemble.run_ensemble",
        "trainer_cli.diagnose.run_diagnosis",
        "trainer_cli.inference.run_evaluate",
        "trainer_cli.inference.run_predict",
        "trainer_cli.inference.run_export",
        "trainer_cli.report.TensorBoard",
        "trainer_cli.sinks.CSVLogger",
        "trainer_cli.sinks.MLflow",
    }
)
# (2) The kinds of torch and torchvision objects the project builds: the public classes (in the
# package's `__all__`) of these modules that derive from the base class, and torchvision's
# registered model builders. No file, process, import or pickle function is any of these.
KINDS = (
    ("torch.optim", "torch.optim.optimizer.Optimizer"),
    ("torch.optim.lr_scheduler", "torch.optim.lr_scheduler.LRScheduler"),
    ("torch.nn.modules", "torch.nn.modules.module.Module"),  # layers and losses
    ("torchvision.transforms.v2", "torchvision.transforms.v2._transform.Transform"),
)
# Classes of those kinds that take a callable or run arbitrary code by design.
KIND_EXCLUDED = frozenset(
    {
        "torch.optim.lr_scheduler.LambdaLR",
        "torch.optim.lr_scheduler.MultiplicativeLR",
        "torchvision.transforms.v2._misc.Lambda",
    }
)
# Keys that used to widen trust from a config file; now an error (the old defaults are ignored).
WIDENING_KEYS = {"trusted_targets": ["torch.", "torchvision.", "trainer_cli."], "extra_trusted_targets": []}
# Environment variables a config may not set for its jobs (`hydra.job.env_set`).
PROTECTED_ENV = ("TRAINER_CLI_", "LD_", "PYTHON", "DYLD_")


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '') or ''}.{getattr(obj, '__qualname__', '') or ''}"


@functools.cache
def kind_members(module_name: str, base_name: str) -> tuple[Any, ...]:
    """The objects of one kind: the module's public classes (its `__all__`, else its names
    without a leading underscore) that derive from `base_name`."""
    import importlib

    from hydra.utils import get_class

    module = importlib.import_module(module_name)
    base = get_class(base_name)
    names = getattr(module, "__all__", None) or [name for name in dir(module) if not name.startswith("_")]
    members = [getattr(module, name, None) for name in names]
    return tuple(
        obj
        for obj in members
        if inspect.isclass(obj) and issubclass(obj, base) and _qualified(obj) not in KIND_EXCLUDED
    )


@functools.cache
def torchvision_builders() -> tuple[Any, ...]:
    """torchvision's registered model builders (`torchvision.models.list_models()`)."""
    import torchvision.models

    return tuple(torchvision.models.get_model_builder(name) for name in torchvision.models.list_models())


def allowed_objects() -> dict[str, Any]:
    """Every object on the list, by its defining module and name (imports torch and torchvision)."""
    from hydra.utils import get_object

    found: dict[str, Any] = {}
    for name in sorted(TARGETS):
        try:
            found[name] = get_object(name)
        except Exception:  # an optional plugin that is not installed (submitit, optuna)
            continue
    for module_name, base in KINDS:
        for obj in kind_members(module_name, base):
            found[_qualified(obj)] = obj
    for obj in torchvision_builders():
        found[_qualified(obj)] = obj
    return found


def on_list(obj: Any) -> bool:
    """Whether `obj` itself (not its module) is on the closed list (or the user's `--trust`)."""
    real = _qualified(obj)
    module = getattr(obj, "__module__", None) or ""
    if _under(module, _user()):
        return True
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return False
    if real in TARGETS:
        return True
    for module_name, base in KINDS:
        if _under(module, [module_name]) and any(obj is member for member in kind_members(module_name, base)):
            return True
    if _under(module, ["torchvision.models"]):
        return any(obj is builder for builder in torchvision_builders())
    return False


def _under(name: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def _user() -> list[str]:
    return user_trusted_modules()


def refuse(key: str, what: str) -> UserError:
    return UserError(f"{key}: {what} is not a trusted target; {HINT}")


def check_path(key: str, target: Any) -> str:
    """Stage 1 (no import): the target is a dotted name under a trusted root."""
    if not isinstance(target, str):
        if inspect.isclass(target) or callable(target):  # an object put in by code, not by a config
            target = f"{target.__module__}.{getattr(target, '__qualname__', '')}"
        else:
            raise refuse(key, f"'{str(target)[:80]}'")
    parts = target.split(".")
    if not target or not all(part.isidentifier() for part in parts) or len(parts) < 2:
        raise refuse(key, f"'{target[:80]}'")
    if not _under(target, [*IMPORT_ROOTS, *_user()]):
        raise refuse(key, f"'{target[:80]}'")
    return target


def check_object(key: str, target: str, allowed: frozenset[str] | None = None) -> Any:
    """Stage 2: import and look the target up, then check what it really is: on the closed
    list, or (`allowed`) exactly one of the names given (a logging section's factories)."""
    from hydra.utils import get_object

    check_path(key, target)
    try:
        obj = get_object(target)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{key}: cannot find '{target[:80]}' ({reason[:120]})") from None
    real = _qualified(obj)
    listed = on_list(obj) if allowed is None else (real in allowed or _under(real, _user()))
    if not listed:
        shown = f"'{target[:80]}'" + (f" (that is {real})" if real != target else "")
        raise refuse(key, shown)
    return obj


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (key, `_target_` value) in a plain container."""
    if isinstance(node, dict):
        for name, value in node.items():
            where = f"{path}.{name}" if path else str(name)
            if name == "_target_":
                yield where, value
            else:
                yield from _walk(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def plain(node: Any, key: str) -> Any:
    """The node as plain containers with every interpolation resolved (what would be built)."""
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{getattr(error, 'full_key', '') or key or 'config'}: {message[:200]}") from None


def check_targets(node: Any, key: str = "", *, resolve_objects: bool = True) -> None:
    """Check every `_target_` under `node` (after interpolations are resolved).

    `resolve_objects=False` is stage 1 alone (no import: the fast check before torch loads).
    """
    for where, target, parent in _walk_nodes(plain(node, key), key):
        if not resolve_objects:
            check_path(where, target)
            continue
        obj = check_object(where, target)
        if _torchvision_builder(obj) and any(_given_or_default(obj, parent, name) is not None for name in DOWNLOADS):
            # A bare builder would fetch the weights from the network into $TORCH_HOME.
            raise UserError(
                f"{where}: a torchvision builder is built here without weights; pretrained weights come from "
                "`model=torchvision model.weights=<name>` (or `init_from=`), which read them from the torch cache"
            )
        if _qualified(obj) in PARTIAL_ONLY and parent.get("_partial_") is not True:
            # Built whole, it would act at once, with a folder the config names.
            raise UserError(
                f"{where}: '{str(target)[:80]}' is built only with `_partial_: true` (the run supplies its folder)"
            )
        if _qualified(obj) in PARTIAL_ONLY and parent.get("_args_"):
            raise UserError(
                f"{where.removesuffix('._target_')}._args_: '{str(target)[:80]}' takes no positional arguments from a "
                "config (the run supplies its folder); give its options by name"
            )
        if _qualified(obj) in PARTIAL_ONLY and "run_dir" in parent:
            raise UserError(
                f"{where.removesuffix('._target_')}.run_dir: the run supplies its own folder; not a config key"
            )


# Arguments with which a torchvision model builder downloads weights.
DOWNLOADS = ("weights", "weights_backbone")


def _given_or_default(obj: Any, node: dict, name: str) -> Any:
    """The node's value for a builder's argument, else the builder's own default (detection and
    segmentation builders default `weights_backbone` to ImageNet weights: a download)."""
    if name in node:
        return node[name]
    try:
        parameter = inspect.signature(obj).parameters.get(name)
    except (TypeError, ValueError):
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _torchvision_builder(obj: Any) -> bool:
    return _under(getattr(obj, "__module__", "") or "", ["torchvision.models"]) and any(
        obj is builder for builder in torchvision_builders()
    )


def _walk_nodes(node: Any, path: str) -> Iterator[tuple[str, Any, dict]]:
    """Every (key, `_target_` value, the node holding it) in a plain container."""
    if isinstance(node, dict):
        for name, value in node.items():
            where = f"{path}.{name}" if path else str(name)
            if name == "_target_":
                yield where, value, node
            else:
                yield from _walk_nodes(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk_nodes(value, f"{path}[{i}]")


def check_no_widening(cfg: Any) -> None:
    """A config (file, experiment, checkpoint) may not widen trust."""
    container = plain(cfg, "") if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    if not isinstance(container, dict):
        return
    for name, default in WIDENING_KEYS.items():
        if name in container and container[name] != default:
            raise UserError(f"{name}: a config file or checkpoint cannot widen trust; {HINT} on your own command line")


def strip_widening_keys(cfg: DictConfig) -> None:
    """Drop the old (pre-`--trust`) keys whose values are the old defaults, after `check_no_widening`."""
    from omegaconf import open_dict

    with open_dict(cfg):
        for name in WIDENING_KEYS:
            cfg.pop(name, None)


def check_logging(config: Any, key: str, log_dir: str | None) -> None:
    """A `logging.config.dictConfig` dict: the `()` and `class` factories, `ext://` objects,
    and FileHandler paths (inside the run folder only)."""
    conf = plain(config, key)
    if not isinstance(conf, dict):
        return
    for section in ("formatters", "handlers", "filters"):
        for name, entry in (conf.get(section) or {}).items():
            if not isinstance(entry, dict):
                continue
            where = f"{key}.{section}.{name}"
            for factory in ("()", "class"):
                if factory in entry:
                    obj = check_object(f"{where}.{factory}", entry[factory], LOGGING_FACTORIES[section])
                    if getattr(obj, "__qualname__", "") == "FileHandler" and section == "handlers":
                        _check_log_file(f"{where}.filename", entry.get("filename"), log_dir)
    for where, value in _strings(conf, key):
        if value.startswith("ext://") and value not in ("ext://sys.stdout", "ext://sys.stderr"):
            raise refuse(where, f"'{value[:80]}'")


def _check_log_file(key: str, filename: Any, log_dir: str | None) -> None:
    path = os.path.realpath(str(filename))
    if log_dir is None or os.path.commonpath([path, os.path.realpath(log_dir)]) != os.path.realpath(log_dir):
        raise UserError(f"{key}: a log file must be inside the run folder, got '{str(filename)[:120]}'")


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _strings(value, f"{path}.{name}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


# `pkg://` modules a `hydra.searchpath` entry may name without the user's trust: the project's
# own config package and Hydra's (Hydra imports its plugins at start-up anyway).
SEARCHPATH_ROOTS = ("trainer_cli", "hydra", "hydra_plugins")
COMMAND_LINE_ONLY = "accepted from the command line only"


def _scheme(entry: str) -> str:
    """The source type of a search path entry, as Hydra reads it (`file` without `://`)."""
    return entry[: entry.find("://")] if "://" in entry else "file"


def check_searchpath(key: str, entry: str, from_command_line: bool = True) -> None:
    """A `hydra.searchpath` entry (the primary config's, or an override's).

    `file://` folders and plain folders are read as YAML, which runs nothing (and every
    `_target_` they hold passes the check like any config): allowed. `pkg://<module>` imports
    that module to read configs from it, which runs its code: from the command line only, and
    only the project's own package, Hydra's, or a module the user trusts (`--trust`). Any other
    source (`structured://` imports its module too; `PKG://` is no source) is refused.
    """
    entry = str(entry)
    scheme = _scheme(entry)
    if scheme == "file":
        return
    if scheme != "pkg":
        raise UserError(
            f"{key}: '{entry[:80]}' is not accepted; a search path entry is a file:// folder "
            f"(or pkg://<trusted module>, {COMMAND_LINE_ONLY})"
        )
    if not from_command_line:
        raise UserError(f"{key}: '{entry[:80]}' (a pkg:// source imports a module) is {COMMAND_LINE_ONLY}")
    module = entry[len("pkg://") :].strip("/").replace("/", ".")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise refuse(key, f"'{entry[:80]}'")
    if not _under(module, [*SEARCHPATH_ROOTS, *_user()]):
        raise UserError(
            f"{key}: 'pkg://{module[:80]}' would import '{module.split('.')[0][:40]}' (running its code), which is "
            f"not trusted; {HINT}"
        )


# --- Hydra keys from files ------------------------------------------------------------------
# The `hydra.*` keys a config file from outside the shipped conf/ may set (a `--config-path`
# primary config, a `--config-dir` overlay, an experiment there, a saved `.hydra/`). Everything
# else under `hydra.` (callbacks, job_logging, hydra_logging, env_set, output_subdir, launcher
# and sweeper classes, ...) is accepted from the command line only.
FILE_HYDRA_KEYS = (
    "hydra.sweeper.params",  # and everything under it: the search space
    "hydra.sweeper.n_trials",
    "hydra.sweeper.direction",
    "hydra.launcher.n_jobs",
    "hydra.run.dir",  # relative, inside the current folder (`_check_relative_folder`)
    "hydra.sweep.dir",
    "hydra.sweep.subdir",
    "hydra.searchpath",  # file:// entries only (`check_searchpath`)
)
FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")
# The interpolations a run folder's name written in a file may use (no other key's value: a
# task key could hold any path).
FOLDER_INTERPOLATION = re.compile(r"\$\{(now:[%A-Za-z0-9_:-]*|run_suffix:|hydra[.:]job\.(num|name|id))\}")


def shipped_source(path: str) -> bool:
    """Whether a config source is the project's own `conf/`, Hydra's package or a registered
    (in-process, installed) structured config."""
    from trainer_cli.paths import CONF_DIR

    if path.startswith("file://"):
        return os.path.realpath(path[len("file://") :]) == os.path.realpath(CONF_DIR)
    return path in ("pkg://hydra.conf", "structured://")


def same_as_shipped(config_path: str, source: str) -> bool:
    """Whether a file from another source is byte for byte the shipped conf/ file of that name
    (a copy of conf/, as tests and users make, sets nothing new)."""
    from trainer_cli.paths import CONF_DIR

    if not source.startswith("file://"):
        return False
    for name in (f"{config_path}.yaml", config_path):
        mine, shipped = os.path.join(source[len("file://") :], name), os.path.join(CONF_DIR, name)
        if os.path.isfile(mine) and os.path.isfile(shipped):
            with open(mine, "rb") as a, open(shipped, "rb") as b:
                return a.read() == b.read()
    return False


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf, and of every empty container."""
    if isinstance(node, dict) and node:
        for name, value in node.items():
            yield from _leaves(value, f"{path}.{name}" if path else str(name))
    else:
        yield path, node


# Keys a config file may set only to a place inside the current folder: where the run writes
# or sends what it makes (predictions, downloads, an MLflow store). Anywhere else, a server
# URI included, is the user's choice on the command line (tests/test_trust_list.py checks that
# every listed object's path-like argument is here or known to read only).
FILE_PATH_KEYS = ("mode.output", "data.source.root", "logger.mlflow.tracking_uri")
# The argument names of the listed objects that write at a place (tests/test_trust_list.py):
# a file's key ending in one of them is a place, whatever node holds it (`logger.ml2.tracking_uri`
# of a second MLflow sink is one too).
PLACE_ARGUMENTS = ("output", "root", "tracking_uri")
# Of those, the ones that name a file the run writes whole (predictions): new files only.
NEW_FILE_ARGUMENTS = ("output",)


def _names_a_place(key: str) -> bool:
    return _under(key, FILE_PATH_KEYS) or key.rpartition(".")[2] in PLACE_ARGUMENTS


# Keys that choose which existing run a command writes into: the command line's only.
COMMAND_LINE_KEYS = ("resume", "overwrite")
# Interpolations a path from a file may use: the data folder the user's own environment names.
PATH_INTERPOLATION = re.compile(r"\$\{oc\.env:TRAINER_CLI_DATA(,[^}]*)?\}")
# (key, value, file) a file set that only the command line may: refused unless the command
# line replaced the value (`check_file_values`, on the composed config).
_from_files: dict[str, tuple[Any, str, str]] = {}


def check_file_keys(config: Any, where: str) -> None:
    """A config file from outside the shipped conf/, as loaded (at its package's place): its
    `hydra.*` keys (`FILE_HYDRA_KEYS`), the search space it defines (no `hydra.*`, path or
    run-choosing keys), and, noted for `check_file_values`, the paths and run choices it sets."""
    raw = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else config
    for key, value in _leaves(raw if isinstance(raw, dict) else {}, ""):
        if _under(key, ["hydra"]):
            _check_file_hydra_key(key, value, where)
        elif _under(key, COMMAND_LINE_KEYS) and value not in (None, False, "null", "false"):
            _from_files[key] = (value, where, f"chooses a run to write into; it is {COMMAND_LINE_ONLY}")
        elif _names_a_place(key) and value is not None and not _inside_current_folder(str(value)):
            _from_files[key] = (value, where, f"from a config file must be a path inside the current folder; "
                                              f"other places are {COMMAND_LINE_ONLY}")  # fmt: skip
        elif key.rpartition(".")[2] in NEW_FILE_ARGUMENTS and value is not None and os.path.lexists(str(value)):
            _from_files[key] = (value, where, f"names an existing file; a config file writes only new files, "
                                              f"replacing one is {COMMAND_LINE_ONLY}")  # fmt: skip


def _check_file_hydra_key(key: str, value: Any, where: str) -> None:
    if not _under(key, FILE_HYDRA_KEYS):
        raise UserError(f"{key}: set in the config file {where[:120]}; this Hydra setting is {COMMAND_LINE_ONLY}")
    if _under(key, ["hydra.sweeper.params"]) and key != "hydra.sweeper.params":
        name = key[len("hydra.sweeper.params.") :].lstrip("+~")
        if _under(name, ["hydra", *FILE_PATH_KEYS, *COMMAND_LINE_KEYS]):
            raise UserError(
                f"{key}: a search space from the config file {where[:120]} sweeps '{name[:60]}'; sweeping Hydra's "
                f"settings, paths and run choices is {COMMAND_LINE_ONLY}"
            )
    if _under(key, FOLDER_KEYS):
        _check_relative_folder(key, value)
    if _under(key, ["hydra.searchpath"]):
        for i, entry in enumerate(value if isinstance(value, list) else [value]):
            check_searchpath(f"hydra.searchpath[{i}]", str(entry), from_command_line=False)


def saved_config_changes(saved: Any, where: str) -> dict[str, Any]:
    """What a config read from a checkpoint (resume, evaluate, predict, export, ensembles,
    `init_from`) may not do as it was saved: fetch anything (its data sources and pretrained
    weights are read from where they are, `download: false`), or send or write its records
    outside the current folder (a `tracking_uri` elsewhere is refused). Returns the changes to
    apply, as {dotted key: value}."""
    raw = OmegaConf.to_container(saved, resolve=False) if isinstance(saved, DictConfig) else saved
    changes: dict[str, Any] = {}
    for key, value in _leaves(raw if isinstance(raw, dict) else {}, ""):
        if key.rpartition(".")[2] == "download" and value is not False:
            changes[key] = False
        elif key.rpartition(".")[2] == "tracking_uri" and value is not None and not _inside_current_folder(str(value)):
            logger = key.split(".")[1] if key.startswith("logger.") else key
            if OmegaConf.select(saved, f"logger.{logger}._target_", default=None) is None and key.startswith("logger."):
                continue  # a logger node the saved run did not select
            raise UserError(
                f"{key}: '{str(value)[:80]}' in the config saved in {where[:120]} sends the run's records outside "
                f"the current folder; that is {COMMAND_LINE_ONLY} (run from the folder that holds it, or start anew)"
            )
    return changes


def _raw_value(cfg: Any, key: str) -> Any:
    """A key's value as written (an interpolation unresolved), or None where there is none."""
    if not isinstance(cfg, DictConfig):
        return None
    parent_key, _, leaf = key.rpartition(".")
    try:
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        node = parent._get_node(leaf) if isinstance(parent, DictConfig) else None
    except Exception:  # a parent that is itself an interpolation that does not resolve
        return None
    if node is None:
        return None
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=False)
    return node._value()


def forget_file_values() -> None:
    """Start a new composition: what earlier files set is not this one's."""
    _from_files.clear()


def check_file_values(cfg: Any) -> None:
    """The composed config keeps no path or run choice that only a file set (the command line's
    own value for the key replaces the file's and is accepted)."""
    for key, (value, where, why) in _from_files.items():
        raw = _raw_value(cfg, key)
        if raw is None or raw != value:
            continue
        if key == "logger.mlflow.tracking_uri" and OmegaConf.select(cfg, "logger.mlflow", default=None) is None:
            continue  # the MLflow logger is not selected: the value is never used
        raise UserError(f"{key}: '{str(value)[:80]}' set in the config file {where[:120]} {why}")


def _inside_current_folder(text: str) -> bool:
    """A relative path inside the current folder, with no link on the way out of it."""
    # `${oc.env:TRAINER_CLI_DATA,<default>}` is the user's folder when the variable is set, and
    # the default when not: the default must be inside too.
    bare = PATH_INTERPOLATION.sub(lambda match: (match.group(1) or ",data")[1:], text)
    if "${" in bare or "://" in bare or bare.startswith(("~", "file:")) or os.path.isabs(bare):
        return False
    if ".." in re.split(r"[/\\]", bare):
        return False
    here = os.path.realpath(os.getcwd())
    return os.path.commonpath([os.path.realpath(os.path.join(here, bare)), here]) == here


def _check_relative_folder(key: str, value: Any) -> None:
    text = str(value)
    bare = FOLDER_INTERPOLATION.sub("x", text)
    if "${" in bare or os.path.isabs(bare) or ".." in re.split(r"[/\\]", bare) or bare.startswith("~"):
        raise UserError(
            f"{key}: '{text[:80]}' from a config file must be a folder relative to, and inside, the current "
            f"folder; other folders are {COMMAND_LINE_ONLY}"
        )


# --- Environment interpolation --------------------------------------------------------------
ENV_NAMED = re.compile(r"\$\{\s*oc\.env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")
# The variables the shipped conf/ itself reads (where data sets are kept).
SHIPPED_ENV = ("TRAINER_CLI_DATA",)
TYPED_ENV = "TRAINER_CLI_TYPED_ENV"  # the variable names the user's own command line reads


def remember_typed_env(argv: list[str]) -> None:
    """The variables `${oc.env:NAME}` on this command line names: the only ones a config may read.
    Kept in the environment, so the ranks and workers this process starts know them too."""
    # Only an interpolation the user typed in an override's value (`+tag='${oc.env:USER}'`), not
    # text that happens to be in a folder's name (`resume=runs/r_oc.env:SECRET`).
    overrides = [arg.partition("=")[2] for arg in argv if "=" in arg and not arg.startswith("-")]
    names = {match.group(1) for value in overrides for match in ENV_NAMED.finditer(value)}
    inherited = {n for n in os.environ.get(TYPED_ENV, "").split(",") if n}
    os.environ[TYPED_ENV] = ",".join(sorted(names | inherited))


def guard_env() -> None:
    """Replace OmegaConf's `oc.env` resolver: it reads only a variable the user's command line
    names (`remember_typed_env`); a config file, a saved config or a checkpoint reads none."""
    from omegaconf.resolvers import oc

    if getattr(OmegaConf, "_trainer_cli_env_guard", False):
        return

    def env(name: str, default: Any = "__no_default__", *, _node_: Any = None) -> Any:
        allowed = {n for n in os.environ.get(TYPED_ENV, "").split(",") if n} | set(SHIPPED_ENV)
        if str(name) not in allowed:
            key = _node_._get_full_key(None) if _node_ is not None else "config"
            raise UserError(
                f"{key}: reads the environment variable '{str(name)[:60]}' (${{oc.env:...}}); environment "
                f"interpolation is {COMMAND_LINE_ONLY}"
            )
        return oc.env(name) if default == "__no_default__" else oc.env(name, default)

    OmegaConf.register_new_resolver("oc.env", env, replace=True, use_cache=False)
    OmegaConf._trainer_cli_env_guard = True  # type: ignore[attr-defined]


# --- Own code by name, never by folder ------------------------------------------------------


def forget_current_folder() -> None:
    """Take the current folder off `sys.path` (`python -m` puts it first), and keep it off in the
    processes this one starts (torchrun ranks, loky workers, submitit: `PYTHONSAFEPATH`)."""
    here = os.path.realpath(os.getcwd())
    sys.path[:] = [entry for entry in sys.path if entry and os.path.realpath(entry) != here]
    os.environ["PYTHONSAFEPATH"] = "1"


def without_trust_flags(argv: list[str]) -> list[str]:
    """The command line without `--trust <module>`: a child process gets trust by the environment."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--trust":
            skip = True
        elif not arg.startswith("--trust="):
            out.append(arg)
    return out


def load_user_modules(folder: str | None = None) -> None:
    """Import each module the user trusts: from the current folder by its file path
    (`mymod.py` or `mymod/__init__.py`), nothing else from there; else installed, by name."""
    folder = folder or os.getcwd()
    for name in user_trusted_modules():
        top = name.split(".")[0]
        if not top.isidentifier():
            raise UserError(f"--trust: '{name[:80]}' is not a module name")
        if top in sys.modules:
            continue
        file = os.path.join(folder, f"{top}.py")
        package = os.path.join(folder, top, "__init__.py")
        if (os.path.isfile(file) or os.path.isfile(package)) and _installed(top):
            raise UserError(
                f"--trust {name}: the current folder holds {top}.py or {top}/, and an installed module has the same "
                f"name; trust which? Rename your file, or run train from another folder to trust the installed one"
            )
        if os.path.isfile(file):
            spec = importlib.util.spec_from_file_location(top, file)
        elif os.path.isfile(package):
            spec = importlib.util.spec_from_file_location(
                top, package, submodule_search_locations=[os.path.dirname(package)]
            )
        else:
            continue  # an installed module: imported by name when a target names it
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(top, None)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(
                f"--trust {name}: importing {spec.origin} failed: {type(error).__name__}: {reason[:160]}"
            ) from None


def _installed(top: str) -> bool:
    """Whether a module of that name is importable without the current folder (which is off
    `sys.path`): an installed package or the standard library."""
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def check_hydra_node(hydra_cfg: Any, log_dir: str | None = None) -> None:
    """Everything Hydra itself builds from its own node: callbacks, sweeper, launcher, logging,
    and the environment it sets for jobs."""
    if hydra_cfg is None:
        return
    for part in ("callbacks", "sweeper", "launcher"):
        node = hydra_cfg.get(part) if hasattr(hydra_cfg, "get") else None
        if node is not None:
            check_targets(node, f"hydra.{part}")
    for part in ("job_logging", "hydra_logging"):
        node = hydra_cfg.get(part)
        if node is not None:
            check_logging(node, f"hydra.{part}", log_dir)
    env = OmegaConf.select(hydra_cfg, "job.env_set", default=None) if isinstance(hydra_cfg, DictConfig) else None
    for name in plain(env, "hydra.job.env_set") or {}:
        if str(name).startswith(PROTECTED_ENV):
            raise UserError(f"hydra.job.env_set.{name}: a config may not set this variable for its jobs")
