"""A config or checkpoint from anyone is safe to run: a battery of code-execution attempts.

Each attempt would create a marker file if the config were built unchecked; each must be
refused with a one-line error naming the key, and the marker must not exist afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from tests.conftest import run_train
from trainer_cli import cli_errors, cli_hydra, trust
from trainer_cli.cli_guard import install_hydra_guard
from trainer_cli.config import UserError
from trainer_cli.trust import TRUST_ENV


class _Touch:
    """A pickle that runs `touch <marker>` when loaded unsafely."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def _guard_installed():
    """`train`'s main() installs the Hydra guard; these tests run in a worker where another
    file's test may have run first (xdist), so each installs it the same way (idempotent)."""
    install_hydra_guard()


def payload(target: str, marker: Path, tmp: Path) -> dict:
    """A node that creates `marker` when `target` is instantiated unchecked."""
    cmd = f"touch {marker}"
    if target in ("builtins.open", "io.open"):
        return {"_target_": target, "file": str(marker), "mode": "w"}
    if target in ("subprocess.call", "subprocess.Popen", "subprocess.run"):
        return {"_target_": target, "_args_": [["touch", str(marker)]]}
    if target == "shutil.copy":
        return {"_target_": target, "src": __file__, "dst": str(marker)}
    if target in ("torch.load", "torch.serialization.load"):
        evil = tmp / "evil.pkl"
        evil.write_bytes(pickle.dumps(_Touch(str(marker))))
        return {"_target_": target, "f": str(evil), "weights_only": False}
    if target == "numpy.load":
        evil = tmp / "evil.npy"
        evil.write_bytes(pickle.dumps(_Touch(str(marker))))
        return {"_target_": target, "file": str(evil), "allow_pickle": True}
    if target == "trainer_cli.checkpoint.save":
        return {"_target_": target, "state": {}, "path": str(marker)}
    return {"_target_": target, "_args_": [cmd]}  # os.system and its aliases


# Targets, each nested under data.source (Hydra builds nested nodes before the outer one).
TARGETS = [
    "os.system",
    "posix.system",
    "torch.os.system",  # alias through a trusted prefix
    "trainer_cli.config.os.system",  # alias through the project's own package
    "trainer_cli.build.torch.os.system",
    "subprocess.call",
    "subprocess.Popen",
    "builtins.open",
    "io.open",
    "shutil.copy",
    "torch.load",  # deserialisation under the torch prefix
    "torch.serialization.load",
    "numpy.load",
    "trainer_cli.checkpoint.save",  # the project's own file writer
]


def _one_line_naming(error: UserError, key: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(key), message


def _build(cfg) -> None:
    """What `train` does with a composed config (resolve, then build through the door)."""
    from trainer_cli import build
    from trainer_cli.config import resolve

    build.pieces(resolve(cfg))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "the attempt ran code"


@pytest.mark.parametrize("target", TARGETS)
def test_targets_and_aliases_are_refused(target, make_cfg, marker, tmp_path):
    cfg = make_cfg()
    OmegaConf.update(cfg, "data.source.evil", payload(target, marker, tmp_path), force_add=True)
    with pytest.raises(UserError) as error:
        _build(cfg)
    _one_line_naming(error.value, "data.source.evil._target_")


# Where a node may hide: every group's node (plain and `_partial_`), nested lists, `_args_`.
PLACES = [
    ("model.evil", "model.evil._target_"),
    ("optimizer.evil", "optimizer.evil._target_"),  # a `_partial_` node
    ("scheduler.evil", "scheduler.evil._target_"),  # a `_partial_` node
    ("loss.evil", "loss.evil._target_"),
    ("regularization.evil", "regularization.evil._target_"),
    ("augmentation.evil", "augmentation.evil._target_"),
    ("logger.tensorboard.evil", "logger.tensorboard.evil._target_"),
    ("model.evil_list", "model.evil_list[0]._target_"),  # inside a list
    ("data.source._args_", "data.source._args_[0]._target_"),  # positional arguments
    ("model.deep", "model.deep.a.b._target_"),  # nested nodes
]


@pytest.mark.parametrize(("place", "key"), PLACES)
def test_every_place_is_checked(place, key, make_cfg, marker, tmp_path):
    node = payload("os.system", marker, tmp_path)
    value = [node] if place.endswith(("_list", "_args_")) else {"a": {"b": node}} if place.endswith("deep") else node
    cfg = make_cfg()
    OmegaConf.update(cfg, place, value, force_add=True)
    with pytest.raises(UserError) as error:
        _build(cfg)
    _one_line_naming(error.value, key)


def test_the_node_itself_as_target_with_partial(make_cfg, marker):
    cfg = make_cfg("optimizer._target_=os.system", f"+optimizer._args_=['touch {marker}']")
    with pytest.raises(UserError) as error:
        _build(cfg)
    _one_line_naming(error.value, "optimizer._target_")


def _experiment(tmp_path: Path, text: str, make_cfg):
    """An experiment file (`# @package _global_`) merged as Hydra would."""
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    base = make_cfg()
    OmegaConf.set_struct(base, False)  # an experiment file may add keys, as with Hydra's composition
    return OmegaConf.merge(base, OmegaConf.load(path))


# Interpolations and resolvers: the check runs after they are resolved.
INTERPOLATIONS = [
    ("model:\n  evil: '${oc.create:{_target_: os.system, _args_: [\"touch MARKER\"]}}'\n", "model.evil._target_"),
    ("model:\n  evil: '${oc.decode:\"{_target_: os.system, _args_: [touch MARKER]}\"}'\n", "model.evil._target_"),
    ("tgt: os.system\nmodel:\n  evil: {_target_: '${tgt}', _args_: [touch MARKER]}\n", "model.evil._target_"),
    (
        "model:\n  tgt: torch.os.system\n  evil: {_target_: '${model.tgt}', _args_: [touch MARKER]}\n",
        "model.evil._target_",
    ),
    ("stash: {_target_: os.system, _args_: [touch MARKER]}\nmodel:\n  evil: ${stash}\n", "model.evil._target_"),
    ("model:\n  evil: '${eval:os.system, touch MARKER}'\n", "model.evil"),  # an unknown resolver
]


@pytest.mark.parametrize(("text", "key"), INTERPOLATIONS)
def test_interpolations_and_resolvers_do_not_bypass(text, key, make_cfg, marker, tmp_path):
    cfg = _experiment(tmp_path, "# @package _global_\n" + text.replace("MARKER", str(marker)), make_cfg)
    with pytest.raises(UserError) as error:
        _build(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(key) or message.startswith("stash._target_"), message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("extra_trusted_targets: ['']\n", "extra_trusted_targets"),
        ("trusted_targets: [builtins.]\n", "trusted_targets"),
    ],
)
def test_a_config_file_cannot_widen_trust(text, key, make_cfg, tmp_path, marker):
    text += f"model:\n  evil: {{_target_: builtins.open, file: {marker}, mode: w}}\n"
    cfg = _experiment(tmp_path, "# @package _global_\n" + text, make_cfg)
    with pytest.raises(UserError) as error:
        _build(cfg)
    _one_line_naming(error.value, key)
    assert "--trust" in str(error.value)


def test_the_users_own_trust_widens(make_cfg, monkeypatch):
    cfg = make_cfg("+model.extra={_target_: collections.OrderedDict}")
    with pytest.raises(UserError):
        _build(cfg)
    monkeypatch.setenv(TRUST_ENV, "collections")
    with pytest.raises(UserError) as error:  # now built: MLP refuses the unknown argument
        _build(cfg)
    assert "not a trusted target" not in str(error.value)


# hydra.searchpath: a pkg:// entry imports its package (running its __init__), from the primary
# config (a shared or saved config run with --config-path) or an override (a sweeper's too).
SEARCHPATHS = [
    ("primary", "pkg://evilpkg", "hydra.searchpath[0]"),
    ("primary", "pkg://evilpkg.conf", "hydra.searchpath[0]"),
    ("primary", "pkg://evilpkg/conf", "hydra.searchpath[0]"),
    ("primary", "pkg://trainer_cli.conf', 'pkg://evilpkg", "hydra.searchpath[0]"),  # pkg:// from a file: none
    ("override", "pkg://evilpkg", "hydra.searchpath[0]"),
    ("experiment", "pkg://evilpkg", "hydra.searchpath"),  # only the primary config may set it (Hydra)
]


@pytest.mark.parametrize(("where", "entry", "key"), SEARCHPATHS)
def test_a_searchpath_cannot_import_an_untrusted_package(where, entry, key, marker, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    package = tmp_path / "packages" / "evilpkg"
    (package / "conf").mkdir(parents=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (package / "conf" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    searchpath = f"hydra:\n  searchpath: ['{entry}']\n"
    primary = searchpath if where == "primary" else "defaults:\n  - _self_\n  - experiment: null\n"
    (conf / "config.yaml").write_text(primary + "epochs: 1\n")
    (conf / "experiment" / "evil.yaml").write_text(f"# @package _global_\n{searchpath}")
    overrides = {"override": [f"hydra.searchpath=[{entry}]"], "experiment": ["experiment=evil"]}.get(where, [])
    install_hydra_guard()  # as `train`'s main() installs it
    with (
        initialize_config_dir(config_dir=str(conf), version_base="1.3"),
        pytest.raises((UserError, ConfigCompositionException)) as error,
    ):
        compose(config_name="config", overrides=overrides, return_hydra_config=True)
    line = f"error: {cli_errors.hydra_error_line(error.value)}"
    assert "\n" not in line and key in line, line
    if isinstance(error.value, UserError):
        _one_line_naming(error.value, key)
        # From a file, a pkg:// source is refused outright; on the command line, it names --trust.
        assert ("--trust" if where == "override" else "command line only") in str(error.value)


def test_a_searchpath_to_the_projects_own_or_a_trusted_package_or_a_folder(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    package = tmp_path / "packages" / "mypkg"
    (package / "conf" / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")
    (package / "conf" / "model" / "tiny.yaml").write_text("width: 3\n")
    folder = tmp_path / "more" / "model"
    folder.mkdir(parents=True)
    (folder / "small.yaml").write_text("width: 5\n")
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(
        f"defaults:\n  - _self_\n  - model: null\nhydra:\n  searchpath: ['file://{tmp_path / 'more'}']\n"
    )
    on_command_line = f"hydra.searchpath=[pkg://mypkg.conf,file://{tmp_path / 'more'}]"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        # A file:// folder from the primary config; a pkg:// source from the command line only, trusted.
        assert compose(config_name="config", overrides=["model=small"]).model.width == 5
        with pytest.raises(UserError, match="pkg://mypkg.conf"):
            compose(config_name="config", overrides=["model=tiny", on_command_line])
        monkeypatch.setenv(TRUST_ENV, "mypkg")  # the user's own act
        assert compose(config_name="config", overrides=["model=tiny", on_command_line]).model.width == 3
        assert compose(config_name="config", overrides=["model=small", on_command_line]).model.width == 5


def _checkpoint(folder: Path, cfg, name: str = "last.pt", **extra) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    state = {"config": OmegaConf.to_yaml(cfg), "epoch": 1, "step": 1, "model": {}, **extra}
    torch.save(state, folder / "checkpoints" / name)


@pytest.mark.parametrize("target", ["builtins.open", "torch.os.system"])
def test_a_checkpoints_config_is_checked_on_resume(target, make_cfg, marker, tmp_path):
    evil = make_cfg()
    OmegaConf.update(evil, "model.evil", payload(target, marker, tmp_path), force_add=True)
    _checkpoint(tmp_path / "run", evil)
    with pytest.raises(UserError) as error:
        cli_hydra.execute(make_cfg(f"resume={tmp_path / 'run'}"), tmp_path / "run")
    _one_line_naming(error.value, "model.evil._target_")


def test_a_checkpoint_cannot_widen_trust(make_cfg, marker, tmp_path):
    evil = make_cfg()
    OmegaConf.update(evil, "extra_trusted_targets", [""], force_add=True)
    _checkpoint(tmp_path / "run", evil)
    with pytest.raises(UserError) as error:
        cli_hydra.execute(make_cfg(f"resume={tmp_path / 'run'}"), tmp_path / "run")
    _one_line_naming(error.value, "extra_trusted_targets")


def test_an_ensemble_members_config_is_checked(make_cfg, marker, tmp_path):
    evil = make_cfg()
    OmegaConf.update(evil, "data.source.evil", payload("posix.system", marker, tmp_path), force_add=True)
    _checkpoint(tmp_path / "member", evil, name="best.pt")
    (tmp_path / "member" / "metrics.json").write_text(json.dumps({"status": "ok"}))
    with pytest.raises(UserError) as error:
        cli_hydra.execute(make_cfg(f"ensemble={tmp_path / 'member'}", "mode=ensemble"), tmp_path / "ens")
    _one_line_naming(error.value, "data.source.evil._target_")


def test_kfold_folds_are_checked(make_cfg, marker, tmp_path):
    cfg = make_cfg("mode=kfold", "data.kfold=2")
    OmegaConf.update(cfg, "data.source.evil", payload("torch.os.system", marker, tmp_path), force_add=True)
    with pytest.raises(UserError) as error:
        cli_hydra.execute(cfg, tmp_path / "kfold")
    _one_line_naming(error.value, "data.source.evil._target_")


def test_a_saved_config_is_checked(make_cfg, marker, tmp_path):
    evil = make_cfg()
    OmegaConf.update(evil, "model.evil", payload("subprocess.call", marker, tmp_path), force_add=True)
    OmegaConf.save(evil, tmp_path / "config.yaml")
    with pytest.raises(UserError) as error:
        cli_hydra.execute(OmegaConf.load(tmp_path / "config.yaml"), tmp_path / "rerun")
    _one_line_naming(error.value, "model.evil._target_")


# The hydra node: what Hydra itself instantiates (callbacks, logging handlers, plugins).
def test_hydra_callbacks_are_checked(marker, tmp_path):
    from hydra._internal.callbacks import Callbacks

    cfg = OmegaConf.create({"hydra": {"callbacks": {"evil": payload("os.system", marker, tmp_path)}}})
    with pytest.raises(UserError) as error:
        Callbacks(cfg)
    _one_line_naming(error.value, "hydra.callbacks.evil._target_")


@pytest.mark.parametrize(
    ("handler", "key"),
    [
        ({"()": "builtins.open", "file": "MARKER", "mode": "w"}, "hydra.job_logging.handlers.evil.()"),
        ({"class": "os.system", "command": "touch MARKER"}, "hydra.job_logging.handlers.evil.class"),
        ({"class": "logging.FileHandler", "filename": "MARKER"}, "hydra.job_logging.handlers.evil.filename"),
        (
            {"class": "logging.StreamHandler", "stream": "ext://trainer_cli.config.os.system"},
            "hydra.job_logging.handlers.evil.stream",
        ),
    ],
)
def test_logging_handlers_are_checked(handler, key, marker):
    import hydra.core.utils

    handler = {k: str(v).replace("MARKER", str(marker)) for k, v in handler.items()}
    cfg = OmegaConf.create({"job_logging": {"version": 1, "handlers": {"evil": handler}}})
    with pytest.raises(UserError) as error:
        hydra.core.utils.configure_log(cfg.job_logging)
    _one_line_naming(error.value, key)


def test_hydra_env_set_cannot_widen_trust():
    with pytest.raises(UserError) as error:
        trust.check_hydra_node(OmegaConf.create({"job": {"env_set": {TRUST_ENV: "builtins"}}}))
    _one_line_naming(error.value, f"hydra.job.env_set.{TRUST_ENV}")


def test_the_projects_own_conf_is_trusted(make_cfg):
    """Every target the project's conf/ names passes the object check (no false refusal)."""
    from hydra import compose, initialize_config_dir

    from trainer_cli.config import CONF_DIR

    targets = set()
    for path in Path(CONF_DIR).rglob("*.yaml"):
        text = path.read_text()
        targets |= {line.split(":", 1)[1].strip() for line in text.splitlines() if "_target_:" in line}
        targets |= {line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("class:")}
    targets = {t for t in targets if t and "$" not in t and not t.startswith("#")}
    logging_factories = set().union(*trust.LOGGING_FACTORIES.values())
    for target in sorted(targets):
        try:
            trust.check_object("t", target, frozenset(logging_factories) if target in logging_factories else None)
        except UserError as error:  # a sampler this Optuna lacks: listed by name (test_trust_list)
            assert "cannot find" in str(error) and target in trust.TARGETS, error
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        node = compose(config_name="config", return_hydra_config=True).hydra
    trust.check_targets(node.callbacks, "hydra.callbacks")


def test_a_file_that_is_not_a_trainer_checkpoint(make_cfg, tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"a": torch.zeros(2)}, tmp_path / "run" / "checkpoints" / "last.pt")
    with pytest.raises(UserError) as error:
        cli_hydra.execute(make_cfg(f"resume={tmp_path / 'run'}"), tmp_path / "run")
    assert "not a trainer_cli checkpoint" in str(error.value) and "\n" not in str(error.value)


# Through `train` itself: the hydra node is instantiated by Hydra before our task runs.
HYDRA_CLI = [
    ["+hydra.callbacks.evil={_target_: os.system, _args_: ['touch MARKER']}"],
    ["+hydra.job_logging.handlers.evil={class: os.system, command: 'touch MARKER'}"],
    ["hydra.job_logging.handlers.file.filename=MARKER"],
    ["+hydra.job.env_set.TRAINER_CLI_TRUST=builtins", "+model.evil={_target_: builtins.open, file: MARKER, mode: w}"],
]


@pytest.mark.slow
@pytest.mark.parametrize("args", HYDRA_CLI)
def test_hydra_node_through_train(args, tmp_path, marker):
    args = [a.replace("MARKER", str(marker)) for a in args]
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    result = run_train(["epochs=1", "trainer.device=cpu", run_dir, *args], tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("error: hydra.", "error: model.")), result.stderr[-2000:]


@pytest.mark.slow
def test_a_saved_hydra_config_with_a_callback(tmp_path, marker, make_cfg):
    """`train --config-path <run>/.hydra` with a callback added to the saved config."""
    saved = tmp_path / "saved"
    saved.mkdir()
    cfg = OmegaConf.to_container(make_cfg())
    cfg["hydra"] = {"callbacks": {"evil": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}}
    (saved / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = run_train(["--config-path", str(saved), "--config-name", "config"], tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: hydra.callbacks.evil.")  # the first refused key


def test_the_guard_is_installed_with_the_cli():
    """The guard `train`'s main() installs routes Hydra's instantiate (and the plugin loader's) through the check."""
    import hydra.core.plugins
    import hydra.utils

    assert getattr(hydra.utils.instantiate, "_trainer_cli_guard", False)
    assert hydra.core.plugins.instantiate is hydra.utils.instantiate
