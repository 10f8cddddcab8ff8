"""The closed list of what a config may build (`trust.TARGETS` and `trust.KINDS`).

Every shipped `_target_` is on it; nothing on it opens files, starts processes, imports,
unpickles or changes trust: read from each entry's own bytecode names, and seen when each
shipped config node is built with those functions made to fail loudly.
"""

from __future__ import annotations

import builtins
import dis
import importlib
import inspect
import os
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.utils import get_object

from trainer_cli import build, trust
from trainer_cli.config import CONF_DIR, UserError

# Names whose use in an entry's own code means it opens files, starts processes, imports,
# unpickles or changes trust (bytecode `co_names`, so `os.system` shows as `system`).
FORBIDDEN = {
    "open": "opens a file",
    "Popen": "starts a process",
    "system": "starts a process",
    "popen": "starts a process",
    "execv": "starts a process",
    "execve": "starts a process",
    "spawnv": "starts a process",
    "launch": "starts processes",
    "import_module": "imports",
    "__import__": "imports",
    "exec": "runs code",
    "eval": "runs code",
    "pickle": "unpickles",
    "loads": "deserialises",
    "load": "deserialises (torch.load, pickle.load)",
    "TRUST_ENV": "changes trust",
    "load_user_modules": "changes trust",
    "putenv": "changes the environment",
}
# Entries whose job is to read data or write in the run folder (through a writer or a reader,
# not by a path a config can point anywhere else): they may open files, nothing else.
OPENS_BY_DESIGN = {
    "logging.FileHandler": "a log file, its path checked to lie in the run folder (trust.check_logging)",
    "trainer_cli.data.sources.load_digits": "reads scikit-learn's packaged digits file",
    "trainer_cli.sinks.CSVLogger": "writes metrics.csv in the run folder it is given",
    "trainer_cli.inference.run_evaluate": "writes its report in the run folder",
}
# Hydra's sweepers and launchers start the sweep's jobs (`launch`): each job's overrides come
# from the parent's command line and search space, its trust from the parent's environment.
LAUNCHES_BY_DESIGN = {
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.trainer_cli_launchers.JoblibLauncher",
    "hydra_plugins.trainer_cli_search.OptunaSweeper",
    "hydra_plugins.trainer_cli_search.CoarseToFineSweeper",
    "hydra_plugins.trainer_cli_search.BasicSweeper",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
}
# None: Optuna's CMA-ES sampler, which unpickles its state from the study's storage (a shared
# sweep folder's), is off the list.
UNPICKLES_BY_DESIGN: set[str] = set()
# Optuna >= 4's TPE sampler reads its own trial attributes back with json.loads (JSON, not pickle).
JSON_LOADS_BY_DESIGN = {"optuna.samplers._tpe.sampler.TPESampler"}
# Builtins counted only when loaded as a global (`model.eval()` is a method, not `eval`).
BUILTINS = {"open", "eval", "exec", "__import__", "compile"}


def shipped_targets() -> set[str]:
    """Every `_target_`, `()` and `class` value in the shipped conf/."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("_target_", "()", "class") and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in Path(CONF_DIR).rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()) or {})
    return found


LOGGING = set().union(*trust.LOGGING_FACTORIES.values())


def _on_list(name: str) -> bool:
    if name in LOGGING:  # a logging set-up's factory (`()`/`class`): listed for that place only
        return True
    try:
        return trust.on_list(get_object(name))
    except ImportError:  # not in the installed version (an optional plugin, a newer Optuna)
        return name in trust.TARGETS


def test_every_shipped_target_is_on_the_list():
    missing = [name for name in sorted(shipped_targets()) if not _on_list(name)]
    assert not missing, f"conf/ builds what trust.py does not list: {missing}"


def test_nothing_else_of_trainer_cli_is_on_the_list():
    from trainer_cli import checkpoint, distributed, faults, report

    for obj in (distributed.launch, checkpoint.load_run, faults.requeue_with_submitit, report.Reporter, trust.refuse):
        assert not trust.on_list(obj), obj
    with pytest.raises(UserError, match=r"^mode\._target_: 'trainer_cli.distributed.launch' is not a trusted"):
        trust.check_object("mode._target_", "trainer_cli.distributed.launch")


def _codes(obj: Any) -> list[types.CodeType]:
    """The code objects of an entry: a function's, or the methods its class itself defines."""
    functions = []
    if inspect.isclass(obj):
        for value in vars(obj).values():
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            if isinstance(value, property):
                functions += [f for f in (value.fget, value.fset) if f is not None]
            elif inspect.isfunction(value):
                functions.append(value)
    elif inspect.isfunction(obj):
        functions.append(obj)
    stack = [getattr(f, "__code__", None) for f in functions]
    codes = []
    while stack:
        code = stack.pop()
        if code is None:
            continue
        codes.append(code)
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return codes


def test_no_entry_opens_runs_imports_or_unpickles():
    entries = trust.allowed_objects()
    assert not LOGGING & set(entries), "logging factories are for a logging set-up only"
    assert len(entries) > 300  # torch's optimizers, modules, schedules, v2 transforms, models, and conf/'s
    problems = []
    entries.update({name: get_object(name) for name in LOGGING})
    for name, obj in entries.items():
        allowed = ({"open"} if name in OPENS_BY_DESIGN else set()) | (
            {"launch"} if name in LAUNCHES_BY_DESIGN else set()
        )
        allowed |= {"pickle", "loads"} if name in UNPICKLES_BY_DESIGN else set()
        allowed |= {"loads"} if name in JSON_LOADS_BY_DESIGN else set()
        for code in _codes(obj):
            globals_ = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
            names = {n for n in code.co_names if n not in BUILTINS or n in globals_}
            for used in names & (set(FORBIDDEN) - allowed):
                problems.append(f"{name} ({code.co_name}): uses {used}: {FORBIDDEN[used]}")
    assert not problems, "\n".join(problems)


class Refused(AssertionError):
    """What a patched dangerous function raises while a config node is built."""


@pytest.fixture
def dangerous_functions_fail(monkeypatch):
    """open (for writing), processes, new imports, unpickling and torch.load fail loudly."""
    real_open, real_import = builtins.open, importlib.import_module

    def no(what: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise Refused(f"{what}: {args[:2]}")

        return refuse

    def read_only_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+"):
            raise Refused(f"open for writing: {file}")
        return real_open(file, mode, *args, **kwargs)

    def known_import(name: str, package: str | None = None) -> Any:
        if name not in sys.modules:
            raise Refused(f"import {name}")
        return real_import(name, package)

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(importlib, "import_module", known_import)
    for module, name in ((subprocess, "Popen"), (os, "system"), (os, "execv"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, no(f"{module.__name__}.{name}"))
    monkeypatch.setattr(torch, "load", no("torch.load"))


# The groups whose nodes a run builds, with options that need no download.
GROUPS = (
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "augmentation",
    "regularization",
    "finetune",
    "mode",
    "logger",
    "callbacks",
)


def _options() -> list[tuple[str, str]]:
    return [(group, path.stem) for group in GROUPS for path in sorted(Path(CONF_DIR, group).glob("*.yaml"))]


@pytest.mark.slow
@pytest.mark.parametrize(("group", "option"), _options())
def test_building_a_shipped_node_opens_runs_imports_nothing(group, option, make_cfg, request):
    multi = group in ("augmentation", "regularization", "logger", "callbacks")
    cfg = make_cfg(f"{group}=[{option}]" if multi else f"{group}={option}", "data=synthetic")
    node = cfg.get(group)
    if node is None:  # a `# @package _global_` switch: it sets other groups' keys, builds nothing
        return
    nodes = (
        [(f"{group}.{k}", v) for k, v in node.items() if hasattr(v, "get") and "_target_" in v]
        if multi
        else [(group, node)]
    )
    for key, value in nodes:
        target = trust.check_object(key, str(value._target_))  # imports its module, before the patches
        importlib.import_module(target.__module__)
    request.getfixturevalue("dangerous_functions_fail")
    for key, value in nodes:
        if key == "model" or group == "finetune" or "_partial_" in value or group in ("augmentation", "regularization"):
            build.instantiate(value, key=key)


def test_a_procedure_or_a_writer_is_built_only_partial():
    """Built whole, `run_export` or `CSVLogger` would act at once in a folder the config names."""
    for target in ("trainer_cli.inference.run_export", "trainer_cli.sinks.CSVLogger"):
        node = {"model": {"_target_": target, "run_dir": "/home/someone"}}
        with pytest.raises(UserError, match=rf"^model\._target_: '{target}' is built only with `_partial_: true`"):
            trust.check_targets(node)
        trust.check_targets({"mode": {"_target_": target, "_partial_": True}})


@pytest.mark.parametrize(
    ("folder", "accepted"),
    [
        ("outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}", True),
        ("runs/${hydra.job.num}", True),
        ("/tmp/elsewhere", False),
        ("outputs/../../x", False),
        ("${now:..}/x", False),
        ("~/x", False),
        ("${data.root}", False),
        ("${hydra.job.override_dirname}", False),
    ],
)
def test_a_run_folder_from_a_file_stays_inside(folder, accepted):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"run": {"dir": folder}}})
    if accepted:
        trust.check_file_keys(config, "x.yaml")
    else:
        with pytest.raises(UserError, match=r"^hydra\.run\.dir: .* command line only"):
            trust.check_file_keys(config, "x.yaml")


@pytest.mark.parametrize(
    "node",
    [
        {"model": {"width": {"_target_": "logging.FileHandler", "filename": "/tmp/x", "mode": "w"}}},
        {"callbacks": {"evil": {"_target_": "logging.FileHandler", "filename": "/tmp/x"}}},
        {"logger": {"x": {"_target_": "logging.StreamHandler"}}},
        {"hydra": {"sweeper": {"sampler": {"_target_": "optuna.samplers.CmaEsSampler"}}}},
    ],
)
def test_logging_factories_and_cma_es_are_not_buildable_as_config_nodes(node):
    with pytest.raises(UserError, match=r"is not a trusted target"):
        trust.check_targets(node)


def test_a_logging_section_takes_only_its_own_kind_of_factory(tmp_path):
    fine = {"handlers": {"file": {"class": "logging.FileHandler", "filename": str(tmp_path / "a.log")}}}
    trust.check_logging(fine, "hydra.job_logging", str(tmp_path))
    trick = {"formatters": {"plain": {"class": "logging.FileHandler", "format": "/tmp/x"}}}
    with pytest.raises(UserError, match=r"^hydra\.job_logging\.formatters\.plain\.class: 'logging.FileHandler'"):
        trust.check_logging(trick, "hydra.job_logging", str(tmp_path))


def test_a_bare_torchvision_builder_downloads_nothing():
    node = {"model": {"width": {"_target_": "torchvision.models.resnet.resnet18", "weights": "IMAGENET1K_V1"}}}
    with pytest.raises(UserError, match=r"^model\.width\._target_: a torchvision builder .*`model=torchvision"):
        trust.check_targets(node)
    trust.check_targets({"model": {"_target_": "torchvision.models.resnet.resnet18", "weights": None}})


def test_a_writer_takes_its_folder_from_the_run_not_the_config():
    node = {"logger": {"csv": {"_target_": "trainer_cli.sinks.CSVLogger", "_partial_": True, "run_dir": "/home/x"}}}
    with pytest.raises(UserError, match=r"^logger\.csv\.run_dir: the run supplies its own folder"):
        trust.check_targets(node)
    node = {"logger": {"csv": {"_target_": "trainer_cli.sinks.CSVLogger", "_partial_": True, "_args_": ["/home/x"]}}}
    with pytest.raises(UserError, match=r"^logger\.csv\._args_: 'trainer_cli.sinks.CSVLogger' takes no positional"):
        trust.check_targets(node)


# Every listed object's argument that names a place, and what the config may do with it: a key
# in trust.FILE_PATH_KEYS (a file may point it only inside the current folder), or read-only,
# or the run's own folder (supplied by the code: `run_dir` refused as a config key).
PLACE = re.compile(r"(root|output|path|dir|file|filename|uri|folder|location|cache)s?$")
PLACES = {
    ("trainer_cli.data.sources.load_cifar", "root"): "data.source.root",
    ("trainer_cli.data.sources.load_mnist", "root"): "data.source.root",
    ("trainer_cli.data.sources.load_fashion_mnist", "root"): "data.source.root",
    ("trainer_cli.data.sources.load_imagefolder", "path"): "reads",
    ("trainer_cli.inference.run_predict", "output"): "mode.output",
    ("trainer_cli.sinks.MLflow", "tracking_uri"): "logger.mlflow.tracking_uri",
    ("trainer_cli.models.resnet.ResNet", "drop_path"): "not a place",
}


def test_every_listed_place_argument_is_confined_or_read_only():
    unknown = []
    for name in sorted(trust.TARGETS):
        try:
            parameters = inspect.signature(get_object(name)).parameters
        except (ImportError, TypeError, ValueError):
            continue
        for argument in parameters:
            if not PLACE.search(argument) or argument == "run_dir" and name in trust.PARTIAL_ONLY:
                continue
            decided = PLACES.get((name, argument))
            if decided is None:
                unknown.append(f"{name}({argument}=...)")
            elif decided not in ("reads", "not a place"):
                assert decided in trust.FILE_PATH_KEYS, decided
    assert not unknown, f"decide where these may point from a file (trust.FILE_PATH_KEYS): {unknown}"


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("+hydra.job.env_set.PATH", True),
        ("hydra.sweep.dir", True),
        ("++hydra.job_logging.formatters.plain", True),
        ("mode.output", True),
        ("resume", True),
        ("lr", False),
        ("+model.width", False),
    ],
)
def test_a_search_space_from_a_file_sweeps_no_hydra_path_or_run_key(name, refused):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"sweeper": {"params": {name: "a,b"}}}})
    if refused:
        with pytest.raises(UserError, match=r"^hydra\.sweeper\.params\..* command line only"):
            trust.check_file_keys(config, "x.yaml")
    else:
        trust.check_file_keys(config, "x.yaml")


def test_a_file_path_stands_only_where_the_command_line_replaced_it(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    trust.forget_file_values()
    trust.check_file_keys(OmegaConf.create({"data": {"source": {"root": "/victim/mnist"}}}), "data/mnist.yaml")
    trust.check_file_keys(OmegaConf.create({"mode": {"output": "preds/p.csv"}}), "mode/predict.yaml")  # inside
    with pytest.raises(UserError, match=r"^data\.source\.root: '/victim/mnist' set in the config file data/mnist"):
        trust.check_file_values(OmegaConf.create({"data": {"source": {"root": "/victim/mnist"}}}))
    trust.check_file_values(
        OmegaConf.create({"data": {"source": {"root": "/mine"}}, "mode": {"output": "preds/p.csv"}})
    )
    (tmp_path / "link").symlink_to("/tmp")
    trust.forget_file_values()
    trust.check_file_keys(OmegaConf.create({"mode": {"output": "link/p.csv"}}), "x.yaml")
    with pytest.raises(UserError, match=r"^mode\.output: 'link/p.csv'"):
        trust.check_file_values(OmegaConf.create({"mode": {"output": "link/p.csv"}}))
    trust.forget_file_values()


# --- The round-3 attack's classes (scripts/attacks3/) -----------------------------------------


def test_trusting_a_name_both_installed_and_in_the_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "this.py").write_text("raise SystemExit('the folder file ran')\n")
    monkeypatch.setenv(trust.TRUST_ENV, "this")  # the standard library's (never imported by the project)
    with pytest.raises(UserError, match=r"^--trust this: the current folder holds this.py or this/, and an installed"):
        trust.load_user_modules(str(tmp_path))


def test_a_typed_env_var_is_an_interpolation_in_an_overrides_value(monkeypatch):
    monkeypatch.delenv(trust.TYPED_ENV, raising=False)
    trust.remember_typed_env(["resume=runs/r_oc.env:SECRET", "--config-dir", "cfg_oc.env:OTHER"])
    assert os.environ[trust.TYPED_ENV] == ""
    trust.remember_typed_env(["+tag=${oc.env:USER}"])
    assert os.environ[trust.TYPED_ENV] == "USER"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mode.output", "${oc.env:TRAINER_CLI_DATA,/victim}/preds.csv"),
        ("logger.ml2.tracking_uri", "/victim/mlruns"),
        ("data.source.root", "${oc.env:TRAINER_CLI_DATA,../outside}/mnist"),
        ("mode.output", "results.csv"),  # exists in the current folder: a file would be replaced
    ],
)
def test_places_from_a_file_by_argument_name_defaults_and_existing_files(key, value, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.csv").write_text("the user's\n")
    node: dict = {}
    OmegaConf.update(cfg := OmegaConf.create(node), key, value, force_add=True)
    trust.forget_file_values()
    trust.check_file_keys(cfg, "experiment/x.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(key)}: "):
        trust.check_file_values(cfg)
    trust.forget_file_values()


def test_a_builder_whose_default_weights_download_is_refused():
    node = {"model": {"_target_": "torchvision.models.segmentation.fcn_resnet50", "num_classes": 10}}
    with pytest.raises(UserError, match=r"^model\._target_: a torchvision builder"):
        trust.check_targets(node)
    trust.check_targets({"model": {**node["model"], "weights_backbone": None}})


def test_a_checkpoints_config_fetches_nothing_and_sends_nothing_out(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    saved = OmegaConf.create(
        {"data": {"source": {"root": "/elsewhere/mnist", "download": True}}, "model": {"download": True}}
    )
    assert trust.saved_config_changes(saved, "run") == {"data.source.download": False, "model.download": False}
    saved.logger = {"mlflow": {"_target_": "trainer_cli.sinks.MLflow", "tracking_uri": "http://attacker:5000"}}
    with pytest.raises(UserError, match=r"^logger\.mlflow\.tracking_uri: 'http://attacker:5000' in the config saved"):
        trust.saved_config_changes(saved, "run")
    saved.logger.mlflow.tracking_uri = "mlruns"
    trust.saved_config_changes(saved, "run")  # inside the current folder: fine
