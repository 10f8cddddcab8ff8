"""Three of Hydra's costs that a `train` command does not need.

- `train --help` at the cost of one config repository (`share_group_listing`): Hydra's help
  lists every config group's options, and each `get_group_options` call builds a new caching
  repository over the search path, deep-copying every source (137 of them for trainer_cli's
  groups: about two thirds of `train --help`'s time). Within one command the search path does
  not change, so one repository per config loader serves every listing. Installed by `main()`
  for the info flags only (`--help`, `--hydra-help`).
- One composition, not two (`skip_mode_probe`): before a run, Hydra composes the whole config
  once only to read `hydra.mode` (`Hydra.get_mode`), then composes it again for the run. Only a
  few shipped options set `hydra.mode` (the `hparams_search` searches); a command line that
  selects none of them, names no `hydra.mode` and brings no config folder of its own cannot
  get one, so the probe's answer is known: none (`-m` or not decides).
- One composition per set of files, not one per sweep job (`share_compositions`): Hydra composes
  each job from scratch (its defaults list, then every file loaded and merged: about 0.13 s, half
  a small job's training), though jobs that differ only in values (`lr=0.1,0.01 seed=0,1`) read
  the same files. Values are applied after the files are merged (Hydra's own order), so the
  merged files are kept per set of the overrides that choose files, and each job applies its
  values to a copy. Only for the shipped config folders: a search path with any other folder
  composes every job from scratch, as Hydra does.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from trainer_cli.paths import CONF_DIR

# A shipped option that sets `hydra.mode` (an indented `mode: RUN|MULTIRUN` under `hydra:`).
SETS_MODE = re.compile(r"^hydra:\s*$(?:\n(?:[ #].*)?)*?\n\s+mode:\s*(MULTIRUN|RUN)\s*$", re.MULTILINE)
# Flags that bring config files this check cannot see.
OWN_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def share_group_listing() -> None:
    """List config groups through one repository per config loader (idempotent)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    if getattr(ConfigLoaderImpl.get_group_options, "_trainer_cli_shared", False):
        return
    get_group_options = ConfigLoaderImpl.get_group_options

    def shared(
        self: Any,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        if config_name is not None or overrides:
            return get_group_options(self, group_name, results_filter, config_name, overrides)
        repo = self.__dict__.get("_trainer_cli_repo")
        if repo is None:
            _, repo = self._parse_overrides_and_create_caching_repo(None, [])
            self.__dict__["_trainer_cli_repo"] = repo
        return repo.get_group_options(group_name, results_filter)

    shared._trainer_cli_shared = True  # type: ignore[attr-defined]
    shared.__wrapped__ = get_group_options  # type: ignore[attr-defined]
    ConfigLoaderImpl.get_group_options = shared  # type: ignore[method-assign]


def options_setting_mode() -> set[tuple[str, str]]:
    """The shipped (group, option) pairs whose file sets `hydra.mode`."""
    return {
        (path.parent.relative_to(CONF_DIR).as_posix(), path.stem)
        for path in Path(CONF_DIR).rglob("*.yaml")
        if path.parent != Path(CONF_DIR) and SETS_MODE.search(path.read_text())
    }


def mode_is_decided_by_flags(argv: list[str]) -> bool:
    """Whether nothing this command line selects can set `hydra.mode` (so `-m` or not decides)."""
    if any(arg.split("=", 1)[0] in OWN_CONFIG_FLAGS for arg in argv) or any("hydra.mode" in arg for arg in argv):
        return False
    setting = options_setting_mode()
    for arg in argv:
        group, _, value = arg.lstrip("+~").partition("=")
        options = {v.strip() for v in value.strip("[]").split(",")}
        if any((group, option) in setting for option in options):
            return False
    return True


def skip_mode_probe(argv: list[str]) -> bool:
    """Answer Hydra's `get_mode` without composing, when `mode_is_decided_by_flags` (True then)."""
    if not mode_is_decided_by_flags(argv):
        return False
    from hydra._internal.hydra import Hydra

    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    return True


# Defaults lists and merged configs, by what chooses the files (`_files_key`); the last few only.
_defaults_lists: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_merged: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
KEPT = 16


def _sets_a_value(override: Any, repo: Any) -> bool:
    """Hydra's own split (`defaults_list.Overrides`): a dict value, or a key that is no config
    group, is applied to the merged config; anything else chooses files."""
    return isinstance(override.value(), dict) or not repo.group_exists(override.key_or_group)


def _files_key(repo: Any, config_name: str | None, overrides: list[Any], *flags: bool) -> tuple[Any, ...] | None:
    """What decides which files a composition merges: the primary config, the search path and
    the overrides that choose groups. None, not shared: a sweep's own `lr=0.1,0.01` composition,
    and any composition whose search path has a folder besides the shipped ones (`--config-dir`,
    `--config-path`, `hydra.searchpath`): its files may change or appear while the sweep runs
    (a job's own `.hydra/`), and each of its compositions is trust-checked anew."""
    from trainer_cli.trust import shipped_source

    if any(o.is_sweep_override() for o in overrides):
        return None
    if not all(shipped_source(s.full_path()) for s in repo.get_sources()):
        return None
    sources = tuple((s.provider, s.path) for s in repo.get_sources())
    choosing = tuple(o.input_line for o in overrides if not _sets_a_value(o, repo))
    return (config_name, sources, choosing, *flags)


def _keep(cache: OrderedDict, key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > KEPT:
        cache.popitem(last=False)


def share_compositions() -> None:
    """Compose each set of files once per process; each job applies its own values (idempotent)."""
    from hydra._internal import config_loader_impl
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    if getattr(config_loader_impl.create_defaults_list, "_trainer_cli_shared", False):
        return
    create_defaults_list = config_loader_impl.create_defaults_list
    compose = ConfigLoaderImpl._compose_config_from_defaults_list

    def shared_defaults_list(
        repo: Any, config_name: str | None, overrides_list: list[Any], prepend_hydra: bool, skip_missing: bool
    ) -> Any:
        key = _files_key(repo, config_name, overrides_list, prepend_hydra, skip_missing)
        cached = _defaults_lists.get(key) if key is not None else None
        if cached is None:
            listed = create_defaults_list(repo, config_name, overrides_list, prepend_hydra, skip_missing)
            if key is not None:
                _keep(_defaults_lists, key, listed)
            return listed
        values = [o for o in overrides_list if _sets_a_value(o, repo)]
        return dataclasses.replace(cached, config_overrides=values)  # the files' list, this job's values

    def shared_composition(self: Any, defaults: list[Any], repo: Any) -> Any:
        kept = _merged.get(id(defaults))
        if kept is not None and kept[0] is defaults:
            return copy.deepcopy(kept[1])
        cfg = compose(self, defaults=defaults, repo=repo)
        # Only a kept defaults list's merge is kept: one from the shipped folders alone (`_files_key`).
        if any(defaults is d.defaults for d in _defaults_lists.values()):
            _keep(_merged, id(defaults), (defaults, copy.deepcopy(cfg)))
        return cfg

    shared_defaults_list._trainer_cli_shared = True  # type: ignore[attr-defined]
    shared_defaults_list.__wrapped__ = create_defaults_list  # type: ignore[attr-defined]
    shared_composition.__wrapped__ = compose  # type: ignore[attr-defined]
    config_loader_impl.create_defaults_list = shared_defaults_list
    ConfigLoaderImpl._compose_config_from_defaults_list = shared_composition  # type: ignore[method-assign]
