"""The trust check: a config names callables, so every object built from one passes here.

One rule, applied at every door where config becomes objects (`build.instantiate`, and the
places Hydra itself instantiates: `hydra.callbacks`, the sweeper and launcher, the
`hydra.job_logging`/`hydra_logging` handlers), on the config AFTER its interpolations are
resolved (so `${oc.create:...}` builds nothing unchecked), in two stages:

1. before anything is imported, the `_target_`'s module path must lie under a trusted root
   (importing a module runs its code, so `evil._target_` is refused without importing `evil`);
2. then the object the path resolves to is checked by its real defining module and name
   (`torch.os.system` and `trainer_cli.config.os.system` resolve to `posix.system`: refused).

Trusted by default: the public classes and functions of the modules the project's own `conf/`
uses (torch optimizers, `torch.nn` modules, torchvision models and transforms, trainer_cli's
public API, the project's sweepers and Hydra's core plugins, the logging handlers of
`conf/hydra/job_logging`); never a file, process, import or deserialisation function. Widening
is the user's own act: `train --trust <module>` or `TRAINER_CLI_TRUST=mod1,mod2`, never a
config file or a checkpoint. A `pkg://` entry of `hydra.searchpath` imports its module, so it
names a trusted one too (`check_searchpath`). This module imports no torch.
"""

from __future__ import annotations

import inspect
import os
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

# Stage 1: module paths that may be imported to look a target up.
IMPORT_ROOTS = (
    "torch",
    "torchvision",
    "trainer_cli",
    "hydra_plugins",  # Hydra imports every installed plugin at start-up anyway
    "hydra",
    "optuna",
    "logging",
    "rich",
)

# Stage 2: where a trusted object may be defined (its `__module__`), and what is carved out.
TRUSTED_MODULES = (
    "torch.optim",
    "torch.nn.modules",
    "torchvision.models",
    "torchvision.transforms",
    "trainer_cli",
    "hydra_plugins.trainer_cli_search",
    "hydra_plugins.trainer_cli_launchers",
    "hydra_plugins.hydra_optuna_sweeper",
    "hydra_plugins.hydra_joblib_launcher",
    "hydra_plugins.hydra_submitit_launcher",
    "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.basic_launcher",
    "optuna.samplers",
    "optuna.pruners",
    "rich.logging",
)
# Modules under a trusted one whose functions touch files, load weights, or run the CLI.
UNTRUSTED_MODULES = (
    "torchvision.models._api",  # get_model/get_weight: downloads
    "torchvision.models._utils",
    "trainer_cli.checkpoint",
    "trainer_cli.cli",
    "trainer_cli.config",
    "trainer_cli.trust",
    "trainer_cli.build",
    "trainer_cli.__main__",
)
# Single objects of otherwise untrusted modules that the project's conf/ uses (logging).
TRUSTED_OBJECTS = (
    "logging.StreamHandler",
    "logging.FileHandler",  # its filename must lie in the run folder (see `check_logging`)
    "logging.NullHandler",
    "logging.Formatter",
)
# Keys that used to widen trust from a config file; now an error (the old defaults are ignored).
WIDENING_KEYS = {"trusted_targets": ["torch.", "torchvision.", "trainer_cli."], "extra_trusted_targets": []}
# Environment variables a config may not set for its jobs (`hydra.job.env_set`).
PROTECTED_ENV = ("TRAINER_CLI_", "LD_", "PYTHON", "DYLD_")


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


def check_object(key: str, target: str) -> Any:
    """Stage 2: import and look the target up, then check what it really is."""
    from hydra.utils import get_object

    check_path(key, target)
    try:
        obj = get_object(target)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{key}: cannot find '{target[:80]}' ({reason[:120]})") from None
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or ""
    real = f"{module}.{qualname}"
    if _under(module, _user()) or _under(real, _user()):
        return obj
    kind_ok = inspect.isclass(obj) or inspect.isfunction(obj)
    public = qualname.isidentifier() and not qualname.startswith("_") and kind_ok
    trusted = real in TRUSTED_OBJECTS or (
        _under(module, TRUSTED_MODULES) and not _under(module, UNTRUSTED_MODULES) and public
    )
    if not trusted:
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
    for where, target in _walk(plain(node, key), key):
        if resolve_objects:
            check_object(where, target)
        else:
            check_path(where, target)


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
                    obj = check_object(f"{where}.{factory}", entry[factory])
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


def check_searchpath(key: str, entry: str) -> None:
    """A `hydra.searchpath` entry (the primary config's, or an override's, a sweeper's too).

    `pkg://<module>` imports that module to read configs from it, which runs its code: only
    the project's own package, Hydra's, or a module the user trusts (`--trust`). `file://`
    and plain folders are read as YAML, which runs nothing, and every `_target_` of what they
    hold passes the check like any config: allowed.
    """
    if not str(entry).startswith("pkg://"):
        return
    module = str(entry)[len("pkg://") :].strip("/").replace("/", ".")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise refuse(key, f"'{str(entry)[:80]}'")
    if not _under(module, [*SEARCHPATH_ROOTS, *_user()]):
        raise UserError(
            f"{key}: 'pkg://{module[:80]}' would import '{module.split('.')[0][:40]}' (running its code), which is "
            f"not trusted; {HINT}"
        )


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
