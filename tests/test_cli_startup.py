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


# Each kind of override a sweep job may carry: values, a group choice, a multi-select group,
# a dict value, an added and a deleted key, a Hydra value; and a bad key, refused each time.
JOBS = [
    ["lr=0.1", "seed=0"],
    ["lr=0.01", "seed=1"],
    ["model=cnn", "lr=0.1"],
    ["model=cnn", "lr=0.01", "model.convs_per_stage=1"],
    ["augmentation=[flip,crop]", "seed=2"],
    ["optimizer=sgd", "+optimizer={momentum: 0.8}"],
    ["+trainer.note=x", "~eval.tta_scales", "lr=0.3"],
    ["hydra.job.name=other", "lr=0.2"],
    ["lr=0.1", "seed=0"],
]


def _compose_all(loader, jobs):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    return [
        OmegaConf.to_container(loader.load_configuration("config", overrides=list(job), run_mode=RunMode.RUN))
        for job in jobs
    ]


def _hydras_own(monkeypatch):
    """Hydra's own two functions, counted, with the shared ones' caches emptied (restored after)."""
    from collections import Counter, OrderedDict

    from hydra._internal import config_loader_impl

    from trainer_cli import cli_startup

    calls = Counter()
    own_list = getattr(config_loader_impl.create_defaults_list, "__wrapped__", config_loader_impl.create_defaults_list)
    compose = ConfigLoaderImpl._compose_config_from_defaults_list
    own_compose = getattr(compose, "__wrapped__", compose)

    def counted_list(*args, **kwargs):
        calls["defaults list"] += 1
        return own_list(*args, **kwargs)

    def counted_compose(*args, **kwargs):
        calls["merge"] += 1
        return own_compose(*args, **kwargs)

    monkeypatch.setattr(config_loader_impl, "create_defaults_list", counted_list)
    monkeypatch.setattr(ConfigLoaderImpl, "_compose_config_from_defaults_list", counted_compose)
    monkeypatch.setattr(cli_startup, "_defaults_lists", OrderedDict())
    monkeypatch.setattr(cli_startup, "_merged", OrderedDict())
    return calls


def test_shared_compositions_equal_hydras_own_and_merge_each_set_of_files_once(monkeypatch):
    from trainer_cli.cli_startup import share_compositions

    calls = _hydras_own(monkeypatch)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        own = _compose_all(loader, JOBS)
        assert calls["merge"] == len(JOBS)
        share_compositions()
        calls.clear()
        shared = _compose_all(loader, JOBS + JOBS)
    assert shared == own + own
    # Four sets of files among the nine jobs (no group choice; model=cnn; augmentation; optimizer=sgd;
    # a dict, +, ~ or hydra.* override is a value): each merged once, the other 14 jobs are copies.
    assert calls["merge"] == 4, calls
    assert calls["defaults list"] == 4, calls


def test_a_shared_composition_refuses_a_bad_key_as_hydra_does(monkeypatch):
    import pytest
    from hydra.errors import ConfigCompositionException

    from trainer_cli.cli_startup import share_compositions

    _hydras_own(monkeypatch)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        share_compositions()
        _compose_all(loader, [["lr=0.1"]])
        with pytest.raises(ConfigCompositionException, match="nokey"):
            _compose_all(loader, [["lr=0.2", "nokey=1"]])  # the files' merge is reused, the value refused
        with pytest.raises(ConfigCompositionException, match="nosuch"):
            _compose_all(loader, [["model=nosuch"]])


def test_a_config_file_from_outside_conf_is_composed_and_checked_every_time(monkeypatch, tmp_path):
    from trainer_cli.cli_guard import install_hydra_guard
    from trainer_cli.cli_startup import share_compositions

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: trainer_cli.models.MLP\nwidth: 16\n")
    calls = _hydras_own(monkeypatch)
    install_hydra_guard()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        share_compositions()
        searchpath = f"hydra.searchpath=[file://{tmp_path}]"
        jobs = [[searchpath, "model=mine", "lr=0.1"], [searchpath, "model=mine", "lr=0.2"]]
        first, second = _compose_all(loader, jobs)
    assert first["model"]["width"] == 16 and second["lr"] == 0.2
    # Not reused, neither the merge nor the defaults list: its trust checks run again.
    assert calls["merge"] == 2 and calls["defaults list"] == 2


def test_a_file_that_appears_during_a_sweep_is_composed_into_the_later_jobs(monkeypatch, tmp_path):
    """Round 4's R4-V15: an `optional` default that a job writes (its own `.hydra/`) must reach
    the next job, as in Hydra's own composition; a kept defaults list would leave it out."""
    from trainer_cli.cli_startup import share_compositions

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "late.yaml").write_text(
        "# @package _global_\ndefaults:\n  - optional /later@late0: extra\n"
    )
    _hydras_own(monkeypatch)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        share_compositions()
        job = [f"hydra.searchpath=[file://{tmp_path}]", "experiment=late"]
        (first,) = _compose_all(loader, [[*job, "seed=0"]])
        (tmp_path / "later").mkdir()
        (tmp_path / "later" / "extra.yaml").write_text("appeared: true\n")
        (second,) = _compose_all(loader, [[*job, "seed=1"]])
    assert "late0" not in first and second["late0"] == {"appeared": True}
