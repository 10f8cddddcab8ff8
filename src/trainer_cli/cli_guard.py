"""The Hydra guard: the places where Hydra itself turns config into actions pass the trust rules.

Installed by `main()` (and by a sweep worker before it composes its job, `launchers.py`), not
when a module is imported:

- Hydra's own `instantiate` (callbacks, sweeper, launcher) and its logging set-up (handler
  factories `()`/`class`, log files inside the run folder) go through `trust.py`'s list;
- every config file Hydra loads from outside the shipped `conf/` and Hydra's own package (a
  `--config-path` primary config, a `--config-dir` overlay, a saved `.hydra/`) may set only
  `trust.FILE_HYDRA_KEYS` under `hydra.`, sweeps no Hydra, path or run-choosing key, and its
  paths (`trust.FILE_PATH_KEYS`) and run choices stand only where the command line replaced
  them (`trust.check_file_keys`, then `check_file_values` on each composed config);
- `hydra.searchpath`: only `file://` folders from a file; `pkg://` of a trusted module too on
  the command line; any other source (`structured://`, `PKG://`) is refused;
- `${oc.env:NAME}` reads only a variable the command line itself names (`trust.guard_env`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer_cli import trust
from trainer_cli.errors import UserError

# Hydra's own functions, kept when the guard replaces them (each guard calls its original).
_original: dict[str, Any] = {}


def install_hydra_guard() -> None:
    """Route Hydra's instantiation, logging set-up, config loading and search path through the
    trust rules (idempotent)."""
    import warnings

    import hydra.core.plugins
    import hydra.core.utils
    import hydra.utils
    from hydra._internal import hydra as internal_hydra
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_repository import ConfigRepository

    trust.guard_env()
    if getattr(hydra.utils.instantiate, "_trainer_cli_guard", False):
        return
    # A `--config-dir` file named like one of Hydra's own (hydra/launcher/basic.yaml) draws a
    # deprecation warning of Hydra's schema matching, twice; what matters is the check's line.
    warnings.filterwarnings("ignore", message=r"\s*'.*' is validated against ConfigStore schema")
    _original.update(
        instantiate=hydra.utils.instantiate,
        configure_log=hydra.core.utils.configure_log,
        initialize_sources=ConfigRepository.initialize_sources,
        load_single_config=ConfigLoaderImpl._load_single_config,
        load_configuration=ConfigLoaderImpl.load_configuration,
    )
    guarded_instantiate.__wrapped__ = _original["instantiate"]  # type: ignore[attr-defined]  # build's door checks itself
    hydra.utils.instantiate = guarded_instantiate
    hydra.core.plugins.instantiate = guarded_instantiate
    hydra.core.utils.configure_log = guarded_configure_log
    internal_hydra.configure_log = guarded_configure_log
    ConfigRepository.initialize_sources = guarded_initialize_sources  # type: ignore[method-assign]
    ConfigLoaderImpl._load_single_config = guarded_load_single_config  # type: ignore[method-assign]
    ConfigLoaderImpl.load_configuration = guarded_load_configuration  # type: ignore[method-assign]


def guarded_instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """Hydra's `instantiate` (callbacks, sweeper, launcher) after the trust check of every target."""
    # Hydra passes the plugin class itself as `_target_` (from its own registry).
    if "_target_" in kwargs:
        trust.check_object("hydra", trust.check_path("hydra", kwargs["_target_"]))
    key = config._get_full_key(None) if isinstance(config, DictConfig) else ""
    key = key if key.startswith("hydra") else f"hydra.{key}".rstrip(".")
    trust.check_targets(config, key)
    try:
        return _original["instantiate"](config, *args, **kwargs)
    except Exception as error:  # e.g. `+hydra.sweeper.x=1`: an argument the class does not take
        from hydra.errors import InstantiationException

        if not isinstance(error, InstantiationException):
            raise
        cause = error.__cause__ if error.__cause__ is not None else error
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise UserError(f"{key}: {reason[:200]}") from None


guarded_instantiate._trainer_cli_guard = True  # type: ignore[attr-defined]


def guarded_configure_log(log_config: Any, verbose_config: Any = False) -> None:
    """Hydra's logging set-up: the run folder claimed first, then the factories and log files checked."""
    from hydra.core.hydra_config import HydraConfig

    from trainer_cli.faults import claim_hydra_run_folder, discard_empty_run_folder

    log_dir = None
    if HydraConfig.initialized():
        log_dir = HydraConfig.get().runtime.get("output_dir")
        trust.check_hydra_node(OmegaConf.create({"job": {"env_set": HydraConfig.get().job.get("env_set")}}))
    name = log_config._key() if isinstance(log_config, DictConfig) else "job_logging"
    claim_hydra_run_folder()  # the lock and the folder check come before Hydra's first write there
    try:
        trust.check_logging(log_config, f"hydra.{name}", log_dir)
        _original["configure_log"](log_config, verbose_config)
    except Exception as error:
        if log_dir is not None:  # the folder Hydra just made for this job, still empty
            discard_empty_run_folder(Path(log_dir))
        if isinstance(error, UserError) or not isinstance(error, (ValueError, TypeError, AttributeError, ImportError)):
            raise
        # logging.config's messages name the handler; the cause says what is wrong with it
        cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
        raise UserError(f"hydra.{name}: {str(error).splitlines()[0]}{cause}"[:400]) from None


def guarded_initialize_sources(self: Any, config_search_path: Any) -> None:
    """`hydra.searchpath` (from the primary config or an override): which sources may be read."""
    added = [e for e in config_search_path.get_path() if str(e.provider).startswith("hydra.searchpath")]
    for i, entry in enumerate(added):
        from_command_line = str(entry.provider).endswith("command-line")
        trust.check_searchpath(f"hydra.searchpath[{i}]", str(entry.path), from_command_line=from_command_line)
    _original["initialize_sources"](self, config_search_path)


def guarded_load_single_config(self: Any, default: Any, repo: Any) -> Any:
    """Every config file composed into the run: one from outside the shipped conf/ is checked."""
    result = _original["load_single_config"](self, default, repo)
    shipped = trust.shipped_source(str(result.path)) or trust.same_as_shipped(default.config_path, str(result.path))
    if not shipped:
        trust.check_file_keys(result.config, f"{default.config_path} ({result.path})")
    return result


def guarded_load_configuration(self: Any, *args: Any, **kwargs: Any) -> DictConfig:
    """One composition (the run's, or a sweep job's): the paths and run choices its files set
    stand only where the command line replaced them."""
    trust.forget_file_values()
    cfg = _original["load_configuration"](self, *args, **kwargs)
    trust.check_file_values(cfg)
    return cfg
