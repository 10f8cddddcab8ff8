"""Start-up shortcuts (cli_startup.py): one repository for `--help`, no mode probe."""

from __future__ import annotations

from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra

from trainer_cli.cli_startup import mode_is_decided_by_flags, options_setting_mode, share_group_listing
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


def test_the_mode_probe_is_skipped_only_where_nothing_can_set_hydra_mode():
    assert {
        ("hparams_search", name) for name in ("grid", "random", "bayes", "coarse_to_fine")
    } <= options_setting_mode()
    assert ("optimizer", "adam") not in options_setting_mode()
    assert mode_is_decided_by_flags(["epochs=1", "optimizer=adam", "-m", "lr=0.1,0.01"])
    for argv in (
        ["hparams_search=random"],
        ["+hparams_search=bayes"],
        ["hydra.mode=MULTIRUN"],
        ["--config-dir", "mine"],
        ["--config-path=run/.hydra", "--config-name", "config"],
    ):
        assert not mode_is_decided_by_flags(argv), argv


def test_hydras_own_probe_agrees_on_every_shipped_option():
    """Composing each shipped option as Hydra's probe does: `hydra.mode` is set exactly where
    `options_setting_mode` says."""
    from hydra import compose
    from hydra.types import RunMode

    setting = options_setting_mode()
    groups = [p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in ("hydra", "callbacks")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for group in groups:
            for path in sorted(Path(CONF_DIR, group).glob("*.yaml")):
                multi = group in ("augmentation", "regularization", "logger")
                override = f"{group}=[{path.stem}]" if multi else f"{group}={path.stem}"
                try:
                    mode = compose("config", overrides=[override], return_hydra_config=True).hydra.mode
                except Exception:  # an option that needs another key (imagefolder's path): no mode either way
                    continue
                assert (mode in (RunMode.RUN, RunMode.MULTIRUN)) == ((group, path.stem) in setting), override
