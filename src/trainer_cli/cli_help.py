"""`train --help` at the cost of one config repository.

Hydra's help lists every config group's options; each `get_group_options` call builds a new
caching repository over the search path, deep-copying every source (137 of them for trainer_cli's
groups: about two thirds of `train --help`'s time). Within one command the search path does not
change, so one repository per config loader serves every listing. Installed by `main()` for the
info flags only (`--help`, `--hydra-help`).
"""

from __future__ import annotations

from typing import Any


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
