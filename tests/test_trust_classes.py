"""Attacks on the trust door by class (issue 19), written before the rules, in two halves.

`DESIGN` cases were the ones the rules were tuned on; `HELD_OUT` cases were run once, at the
end, against the finished rules (the report gives blocked X/Y for each half). Every case runs
the real `train` command in a folder of its own; blocked means: the marker file a payload
would create does not exist, and (for a refusal) the command printed one `error:` line naming
the key, with exit status 2. Slow (a `train` process per case): marked `slow`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trainer_cli import distributed, trust
from trainer_cli.errors import UserError

pytestmark = pytest.mark.slow

TRAIN = str(Path(sys.executable).with_name("train"))
PAYLOAD = "open({marker!r}, 'w').close()\n"


@dataclass
class Case:
    """One attempt: files written into a fresh current folder, then `train <argv>` there."""

    name: str
    argv: list[str]
    files: dict[str, str] = field(default_factory=dict)
    key: str | None = None  # the key the one-line error names; None: the command may succeed
    env: dict[str, str] = field(default_factory=dict)
    module: bool = False  # run as `python -m trainer_cli` instead of `train`


def _experiment(body: str) -> dict[str, str]:
    return {"overlay/experiment/x.yaml": "# @package _global_\n" + body}


OVERLAY = ["--config-dir", "overlay", "experiment=x"]
FAST = ["data=synthetic", "epochs=1", "--cfg", "job"]  # composes and prints; runs nothing
RUN = ["data=synthetic", "epochs=1", "trainer.device=cpu"]  # a real run (config errors come before torch)

DESIGN = [
    # 1. the current folder is not on sys.path
    Case("cwd tensorflow.py", ["epochs=1", "data=synthetic", "trainer.device=cpu"], {"tensorflow.py": PAYLOAD}),
    Case("cwd hydra_plugins --help", ["--help"], {"hydra_plugins/evil/__init__.py": PAYLOAD}),
    Case("python -m with cwd yaml.py", ["--help"], {"yaml.py": PAYLOAD}, module=True),
    Case(
        "--trust imports only that module",
        ["--trust", "mymod", *FAST],
        {"mymod.py": "import othermod\n", "othermod.py": PAYLOAD},
        key="othermod",
    ),
    # 2. trust by object: nothing else of trainer_cli, however public
    Case(
        "mode is distributed.launch", ["mode._target_=trainer_cli.distributed.launch", "+mode.processes=1"], key="mode"
    ),
    Case(
        "nested under logger.tensorboard",
        ["+logger.tensorboard.evil._target_=trainer_cli.distributed.launch", "epochs=1", "data=synthetic"],
        key="logger.tensorboard.evil._target_",
    ),
    Case("hydra callback launch", ["+hydra.callbacks.x._target_=trainer_cli.distributed.launch", *RUN], key="hydra"),
    Case("torch.load as model", ["model._target_=torch.load", "+model.f=x.pt", "epochs=1"], key="model._target_"),
    # 4. hydra keys from files
    Case(
        "experiment env_set PATH",
        OVERLAY + FAST,
        _experiment("hydra:\n  job:\n    env_set:\n      PATH: .\n"),
        key="hydra.job.env_set.PATH",
    ),
    Case(
        "experiment job_logging file handler",
        OVERLAY + FAST,
        _experiment(
            "hydra:\n  job_logging:\n    handlers:\n      f:\n"
            "        class: logging.FileHandler\n        filename: ~/.bashrc\n"
        ),
        key="hydra.job_logging",
    ),
    Case(
        "primary config output_subdir absolute",
        ["--config-path", "mine", "--config-name", "config", "--cfg", "job"],
        {"mine/config.yaml": "epochs: 1\nhydra:\n  output_subdir: /tmp/trainer_cli_evil_subdir\n"},
        key="hydra.output_subdir",
    ),
    Case(
        "experiment run.dir absolute",
        OVERLAY + FAST,
        _experiment("hydra:\n  run:\n    dir: /tmp/elsewhere\n"),
        key="hydra.run.dir",
    ),
    Case(
        "structured:// search path",
        ["hydra.searchpath=[structured://evilmod]", *FAST],
        {"evilmod.py": PAYLOAD},
        key="hydra.searchpath",
    ),
    # 5. environment interpolation from a file
    Case(
        "experiment reads a secret",
        OVERLAY + RUN,
        _experiment("secret_tag: ${oc.env:SECRET}\n"),
        key="secret_tag",
        env={"SECRET": "s3cr3t"},
    ),
]

HELD_OUT = [
    Case(
        "cwd dill.py and pynvml.py",
        ["epochs=1", "data=synthetic", "trainer.device=cpu"],
        {"dill.py": PAYLOAD, "pynvml.py": PAYLOAD},
    ),
    Case("python -m with cwd omegaconf/", ["--help"], {"omegaconf/__init__.py": PAYLOAD}, module=True),
    Case(
        "os.system through a torch alias",
        ["model._target_=torch.os.system", "+model.command=true", *FAST[:2]],
        key="model._target_",
    ),
    Case(
        "trainer_cli.faults function",
        ["loss._target_=trainer_cli.faults.requeue_with_submitit", "epochs=1", "data=synthetic"],
        key="loss._target_",
    ),
    Case(
        "hub load as optimizer",
        ["optimizer._target_=torch.hub.load", "epochs=1", "data=synthetic"],
        key="optimizer._target_",
    ),
    Case(
        "a method of a listed class",
        ["model._target_=torch.nn.modules.module.Module.register_forward_hook", "epochs=1", "data=synthetic"],
        key="model._target_",
    ),
    Case(
        "oc.create builds a target",
        [
            "+evil='${oc.create:{_target_:trainer_cli.distributed.launch,argv:[x],processes:1}}'",
            "mode._target_=${evil._target_}",
            "epochs=1",
            "data=synthetic",
        ],
        key="mode",
    ),
    Case(
        "experiment callback of a listed class",
        OVERLAY + FAST,
        _experiment("hydra:\n  callbacks:\n    s:\n      _target_: trainer_cli.sweep.SweepSummary\n"),
        key="hydra.callbacks",
    ),
    Case(
        "experiment run.dir escapes",
        OVERLAY + FAST,
        _experiment("hydra:\n  run:\n    dir: outputs/../../escape\n"),
        key="hydra.run.dir",
    ),
    Case(
        "PKG:// upper case",
        ["hydra.searchpath=[PKG://evilmod]", *FAST],
        {"evilmod.py": PAYLOAD},
        key="hydra.searchpath",
    ),
    Case(
        "overlay job_logging option",
        ["--config-dir", "overlay", "hydra/job_logging=evil", *FAST],
        {"overlay/hydra/job_logging/evil.yaml": "version: 1\nroot:\n  level: INFO\n"},
        key="hydra.job_logging",
    ),
    Case(
        "sweep.dir from a task key",
        OVERLAY + FAST,
        _experiment("hydra:\n  sweep:\n    dir: ${data.root}\n"),
        key="hydra.sweep.dir",
    ),
    Case(
        "oc.decode of a secret",
        OVERLAY + RUN,
        _experiment("tag: ${oc.decode:'${oc.env:SECRET}'}\n"),
        key="tag",
        env={"SECRET": "s3cr3t"},
    ),
    Case(
        "experiment hydra.job.chdir",
        OVERLAY + FAST,
        _experiment("hydra:\n  job:\n    chdir: true\n"),
        key="hydra.job.chdir",
    ),
]


def attempt(case: Case, folder: Path) -> tuple[bool, str]:
    """Run one case in `folder`: (blocked, why not)."""
    marker = folder / "MARKER"
    for name, text in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(marker=str(marker)) if "{marker" in text else text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_CLI_", "PYTHONSAFEPATH"))}
    env.update(case.env)
    command = [sys.executable, "-m", "trainer_cli"] if case.module else [TRAIN]
    run_dir = folder / "run"
    flags, overrides, argv_in = [], [], list(case.argv)
    while argv_in:  # Hydra's flags first, then the overrides in one piece (argparse needs them together)
        arg = argv_in.pop(0)
        if arg in ("--config-dir", "--config-path", "--config-name", "--cfg", "--trust"):
            flags += [arg, argv_in.pop(0)]
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            overrides.append(arg)
    argv = flags if "--help" in flags else [*flags, *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run([*command, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    if marker.exists():
        return False, "the payload ran"
    if case.key is None:
        return True, ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    if result.returncode != 2 or len(errors) != 1 or case.key not in errors[0] or "Traceback" in result.stderr:
        return False, f"status {result.returncode}: {result.stderr[-400:]}"
    if run_dir.exists() and any(run_dir.rglob("*")):
        return False, f"left behind: {sorted(p.name for p in run_dir.rglob('*'))}"
    return True, ""


@pytest.mark.parametrize("case", DESIGN, ids=[c.name for c in DESIGN])
def test_design_half_is_blocked(case, tmp_path):
    blocked, why = attempt(case, tmp_path)
    assert blocked, why


@pytest.mark.parametrize("case", HELD_OUT, ids=[c.name for c in HELD_OUT])
def test_held_out_half_is_blocked(case, tmp_path):
    blocked, why = attempt(case, tmp_path)
    assert blocked, why


def test_a_child_takes_no_trust_from_its_argv():
    """`distributed.launch` starts ranks with Hydra overrides only; trust goes by the environment."""
    for argv in (["--trust", "evil"], ["--trust=evil"], ["epochs=1", "-c", "job"], ["--hydra-help"]):
        with pytest.raises(UserError, match="^trainer.devices: cannot start processes with"):
            distributed.check_child_argv(argv)
    distributed.check_child_argv(["--config-dir", "/x", "--config-path=/y", "epochs=1", "+a=--trust"])
    assert trust.without_trust_flags(["--trust", "m", "a=1", "--trust=n"]) == ["a=1"]
