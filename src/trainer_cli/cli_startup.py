"""Two of Hydra's start-up costs that a `train` command does not need.

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
"""

from __future__ import annotations

import re
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


def skip_mode_probe(argv: list[str]) -> None:
    """Answer Hydra's `get_mode` without composing, when `mode_is_decided_by_flags`."""
    if not mode_is_decided_by_flags(argv):
        return
    from hydra._internal.hydra import Hydra

    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
