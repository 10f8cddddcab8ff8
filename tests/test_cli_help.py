"""`train --help` lists every group's options through one config repository (cli_help.py)."""

from __future__ import annotations

from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra

from trainer_cli.cli_help import share_group_listing
from trainer_cli.paths import CONF_DIR


def test_the_shared_listing_equals_hydras_own_and_the_conf_folder(monkeypatch):
    groups = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "hydra")
    own = getattr(ConfigLoaderImpl.get_group_options, "__wrapped__", ConfigLoaderImpl.get_group_options)
    monkeypatch.setattr(ConfigLoaderImpl, "get_group_options", own)  # Hydra's own, restored after the test
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        before = {group: sorted(loader.get_group_options(group)) for group in groups}
        share_group_listing()
        assert ConfigLoaderImpl.get_group_options is not own
        after = {group: sorted(loader.get_group_options(group)) for group in groups}
        assert "_trainer_cli_repo" in loader.__dict__  # one repository, kept for the next listing
    assert after == before
    for group in groups:
        assert after[group] == sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml")), group
