# ruff: noqa: E501, SIM115
"""Class child: processes the run starts (torchrun ranks, joblib/loky, submitit) and their trust."""

from __future__ import annotations

import os

from a_cwd import baited
from common import fresh, payload, report, train, write


def g01():
    d = fresh("g01")
    mark = d / "MARK"
    baited(d, mark)
    p = train(["trainer.devices=2"], d, timeout=300)
    report("G01", "child", mark.exists(), "torchrun ranks (`train trainer.devices=2`) in a cwd with bait modules", p)


def g02():
    d = fresh("g02")
    mark = d / "MARK"
    baited(d, mark)
    p = train(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1"], d, timeout=300)
    report(
        "G02",
        "child",
        mark.exists(),
        "joblib/loky workers (`-m hydra/launcher=joblib n_jobs=2`) in a cwd with bait modules",
        p,
    )


def g03():
    d = fresh("g03")
    mark = d / "MARK"
    baited(d, mark)
    p = train(["-m", "hydra/launcher=submitit_local", "seed=0"], d, timeout=300)
    report("G03", "child", mark.exists(), "submitit local job in a cwd with bait modules", p)


def g04():
    d = fresh("g04")
    mark = d / "MARK"
    cfg = d / "cfg"
    write(d / "bin" / "dpkg", f"#!/bin/sh\necho pwned > {mark}\n")
    os.chmod(d / "bin" / "dpkg", 0o755)
    write(
        cfg / "experiment" / "x.yaml",
        f"""\
        # @package _global_
        defaults:
          - override /data: fashion_mnist
        data:
          source:
            root: fm
        hydra:
          sweeper:
            params:
              +hydra.job.env_set.PATH: "{d}/bin:/usr/bin:/bin"
        """,
    )
    p = train(["-m", "--config-dir", str(cfg), "experiment=x"], d, timeout=200)
    report(
        "G04",
        "child",
        mark.exists(),
        "experiment's hydra.sweeper.params sets hydra.job.env_set.PATH -> folder's fake dpkg (fashion_mnist calls dpkg)",
        p,
    )


def g05():
    d = fresh("g05")
    mark = d / "MARK"
    cfg = d / "cfg"
    write(d / "evilmod.py", payload(mark))
    write(
        cfg / "experiment" / "x.yaml",
        """\
        # @package _global_
        hydra:
          sweeper:
            params:
              +hydra.job.env_set.TRAINER_CLI_TRUST: evilmod
        model:
          _target_: evilmod.Net
        """,
    )
    p = train(["-m", "--config-dir", str(cfg), "experiment=x"], d)
    report(
        "G05",
        "child",
        mark.exists(),
        "sweeper params set hydra.job.env_set.TRAINER_CLI_TRUST=evilmod (trust widened in the job)",
        p,
    )


def g06():
    d = fresh("g06")
    mark = d / "MARK"
    cfg = d / "cfg"
    write(d / "evilmod.py", payload(mark))
    write(
        cfg / "experiment" / "x.yaml",
        """\
        # @package _global_
        trainer:
          devices: 2
        """,
    )
    p = train(["--config-dir", str(cfg), "experiment=x", "--trust", "nothing_here"], d)
    report("G06", "child", mark.exists(), "experiment sets trainer.devices=2 (ranks from a config file)", p)


def g07():
    d = fresh("g07")
    mark = d / "MARK"
    cfg = d / "cfg"
    write(d / "sitecustomize.py", payload(mark))
    write(
        cfg / "experiment" / "x.yaml",
        f"""\
        # @package _global_
        hydra:
          sweeper:
            params:
              +hydra.job.env_set.PYTHONPATH: "{d}"
              +hydra.job.env_set.pythonstartup: "{d}/sitecustomize.py"
        """,
    )
    p = train(
        ["-m", "--config-dir", str(cfg), "experiment=x", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"],
        d,
        timeout=200,
    )
    report(
        "G07",
        "child",
        mark.exists(),
        "sweeper params set hydra.job.env_set.PYTHONPATH to the folder (sitecustomize.py) for loky workers",
        p,
    )


ATTEMPTS = [g01, g02, g03, g04, g05, g06, g07]
