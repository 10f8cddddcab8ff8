# ruff: noqa: E501
"""Class secret and child: an environment variable (ATTACK_SECRET) copied into outputs, and
what the processes a run starts trust (torchrun ranks of a sweep job, joblib workers)."""

from __future__ import annotations

import os
import shutil

from common import contains_secret, exp, finished_run, fresh, report, train, write

SWEEP_CHEAP = ["epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu", "logger=[]"]


def r3_s01():
    """The allowed data-folder interpolation with a nested env read in its default:
    ${oc.env:TRAINER_CLI_DATA,${oc.env:ATTACK_SECRET}} as mode.output's folder."""
    d = fresh("s01")
    args = exp(
        d,
        """\
logger:
  mlflow:
    _target_: trainer_cli.sinks.MLflow
    _partial_: true
    tracking_uri: ${oc.env:TRAINER_CLI_DATA,${oc.env:ATTACK_SECRET}}/mlruns
""",
    )
    p = train(args, d)
    report(
        "R3-S01",
        "secret",
        bool(contains_secret(d)),
        "tracking_uri=${oc.env:TRAINER_CLI_DATA,${oc.env:ATTACK_SECRET}} (nested in the allowed pattern)",
        p,
    )


def r3_s02():
    """OmegaConf's legacy `${env:...}` resolver name."""
    d = fresh("s02")
    args = exp(d, "data:\n  name: ${env:ATTACK_SECRET}\n")
    p = train(args, d)
    report(
        "R3-S02",
        "secret",
        bool(contains_secret(d)),
        "experiment data.name=${env:ATTACK_SECRET} (legacy resolver name)",
        p,
    )


def r3_s03():
    """`train compare` (no Hydra guard) on a run whose metrics.csv is a link to /proc/self/environ."""
    d = fresh("s03")
    run = d / "run"
    shutil.copytree(finished_run(), run, symlinks=True)
    (run / "metrics.csv").unlink()
    os.symlink("/proc/self/environ", run / "metrics.csv")
    p = train(["compare", str(run), str(finished_run()), "--out", str(d)], d, cheap=False)
    leaked = bool(contains_secret(d / "compare.png" if (d / "compare.png").exists() else d)) or "S3CR3T" in (
        p.stdout + p.stderr
    )
    report(
        "R3-S03",
        "secret",
        leaked,
        "train compare <run with metrics.csv -> /proc/self/environ> (output or compare.png)",
        p,
    )


def r3_s04():
    """`train compare` on a run whose resolved_config.yaml is a link to /proc/self/environ."""
    d = fresh("s04")
    run = d / "run"
    shutil.copytree(finished_run(), run, symlinks=True)
    (run / "resolved_config.yaml").unlink()
    os.symlink("/proc/self/environ", run / "resolved_config.yaml")
    p = train(["compare", str(run), str(finished_run()), "--out", str(d)], d, cheap=False)
    leaked = "S3CR3T" in (p.stdout + p.stderr)
    report(
        "R3-S04", "secret", leaked, "train compare <run with resolved_config.yaml -> /proc/self/environ> (printed)", p
    )


def r3_s05():
    """mode=predict with mode.input a link to /proc/self/environ named .npy (the environment as data)."""
    d = fresh("s05")
    os.symlink("/proc/self/environ", d / "inputs.npy")
    p = train(["mode=predict", f"checkpoint={finished_run()}", "mode.input=inputs.npy"], d)
    report(
        "R3-S05",
        "secret",
        bool(contains_secret(d)) or "S3CR3T" in (p.stdout + p.stderr),
        "mode.input=<link to /proc/self/environ>.npy",
        p,
    )


def r3_c01():
    """A sweep (`train -m`) whose experiment sets trainer.devices=2 (allowed in a sweep) and sweeps
    data.name over ${oc.env:ATTACK_SECRET}: each job runs as torchrun, whose ranks get the swept
    values on their command line, so they count as the user's own typed env reads."""
    d = fresh("c01")
    args = exp(
        d,
        """\
trainer:
  devices: 2
hydra:
  sweeper:
    params:
      data.name: \\\\\\\\\\\\\\${oc.env:ATTACK_SECRET}
""",
    )
    p = train(["-m", *args, *SWEEP_CHEAP, "hydra.sweep.dir=sw"], d, cheap=False, timeout=300)
    report(
        "R3-C01",
        "child",
        bool(contains_secret(d)),
        "-m, experiment: trainer.devices=2 + params data.name=<7 backslashes>${oc.env:ATTACK_SECRET}: ranks trust swept values",
        p,
    )


def r3_c02():
    """As C01 without trainer.devices (jobs in this process): the swept env read is refused?"""
    d = fresh("c02")
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      data.name: \\\\\\\\\\\\\\${oc.env:ATTACK_SECRET}
""",
    )
    p = train(["-m", *args, *SWEEP_CHEAP, "hydra.sweep.dir=sw"], d, cheap=False)
    report(
        "R3-C02",
        "child",
        bool(contains_secret(d)),
        "-m, experiment params data.name=<7 backslashes>${oc.env:ATTACK_SECRET} (basic launcher, in process)",
        p,
    )


def r3_c03():
    """As C02 with the joblib launcher chosen by the victim (loky workers)."""
    d = fresh("c03")
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      data.name: \\\\\\\\\\\\\\${oc.env:ATTACK_SECRET},x
""",
    )
    p = train(
        ["-m", *args, *SWEEP_CHEAP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sw"],
        d,
        cheap=False,
        timeout=300,
    )
    report(
        "R3-C03",
        "child",
        bool(contains_secret(d)),
        "-m hydra/launcher=joblib, experiment params with <7 backslashes>${oc.env:ATTACK_SECRET}",
        p,
    )


def _env_named_run(d, folder_name):
    """A shared run folder whose *name* holds `oc.env:ATTACK_SECRET` and whose checkpoints'
    config reads ${oc.env:ATTACK_SECRET} (data.name)."""
    import torch
    import yaml

    run = d / folder_name
    shutil.copytree(finished_run(), run, symlinks=True)
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        if path.is_file():
            state = torch.load(path, weights_only=True)
            cfg = yaml.safe_load(state["config"])
            cfg["data"]["name"] = "${oc.env:ATTACK_SECRET}"
            state["config"] = yaml.safe_dump(cfg)
            torch.save(state, path)
    return run


def r3_s06():
    """`train resume=<shared run>` where the run folder's name is `r_oc.env:ATTACK_SECRET`: the
    command line then 'names' the variable, so the checkpoint's ${oc.env:ATTACK_SECRET} resolves."""
    d = fresh("s06")
    run = _env_named_run(d, "r_oc.env:ATTACK_SECRET")
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "R3-S06",
        "secret",
        bool(contains_secret(d)),
        "resume=<run folder named r_oc.env:ATTACK_SECRET> whose checkpoint reads it",
        p,
    )


def r3_s07():
    """As S06 with mode=evaluate checkpoint='<run named ..oc.env:ATTACK_SECRET>'."""
    d = fresh("s07")
    run = _env_named_run(d, "r_oc.env:ATTACK_SECRET")
    p = train(["mode=evaluate", f"checkpoint='{run}'"], d)
    report(
        "R3-S07",
        "secret",
        bool(contains_secret(d)),
        "mode=evaluate checkpoint=<run named r_oc.env:ATTACK_SECRET> reading it",
        p,
    )


def r3_s08():
    """The attacker's config folder is *named* `cfg_oc.env:ATTACK_SECRET`; its experiment reads
    ${oc.env:ATTACK_SECRET}: the victim's `--config-dir <that folder>` names the variable."""
    d = fresh("s08")
    folder = d / "cfg_oc.env:ATTACK_SECRET"
    write(folder / "experiment" / "x.yaml", "# @package _global_\ndata:\n  name: ${oc.env:ATTACK_SECRET}\n")
    p = train(["--config-dir", str(folder), "experiment=x"], d)
    report(
        "R3-S08",
        "secret",
        bool(contains_secret(d)),
        "--config-dir <folder named cfg_oc.env:ATTACK_SECRET>, experiment reads it",
        p,
    )


ATTEMPTS = [r3_s01, r3_s02, r3_s03, r3_s04, r3_s05, r3_s06, r3_s07, r3_s08, r3_c02, r3_c01, r3_c03]
