# ruff: noqa: E501, SIM115
"""Class secret: an environment variable (ATTACK_SECRET) copied into the run's outputs."""

from __future__ import annotations

import torch
from b_targets import exp
from common import contains_secret, copy_run, fresh, report, train, write


def f01():
    d = fresh("f01")
    args = exp(d, "data:\n  note: ${oc.env:ATTACK_SECRET}\n")
    p = train(args, d)
    report("F01", "secret", bool(contains_secret(d)), "experiment holds ${oc.env:ATTACK_SECRET}", p)


def f02():
    d = fresh("f02")
    args = exp(
        d,
        "data:\n  note: \"${oc.decode:'${oc.env:ATTACK_SECRET,x}'}\"\n  n2: \"${oc.create:'{a: ${oc.env:ATTACK_SECRET}}'}\"\n",
    )
    p = train(args, d)
    report("F02", "secret", bool(contains_secret(d)), "oc.env wrapped in oc.decode / oc.create", p)


def f03():
    d = fresh("f03")
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      +data.note: ${oc.env:ATTACK_SECRET}
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "F03",
        "secret",
        bool(contains_secret(d)),
        "sweeper params value ${oc.env:ATTACK_SECRET} (becomes a job override)",
        p,
    )


def f04():
    d = fresh("f04")
    run = copy_run(d / "run")
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        state["config"] = state["config"].replace("data:\n", "data:\n  note: ${oc.env:ATTACK_SECRET}\n", 1)
        torch.save(state, path)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "F04",
        "secret",
        bool(contains_secret(d)),
        "resume= run whose checkpoint config reads ${oc.env:ATTACK_SECRET}",
        p,
    )


def f05():
    d = fresh("f05")
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      +hydra.job.env_set.TRAINER_CLI_TYPED_ENV: ATTACK_SECRET
      +data.note: ${oc.env:ATTACK_SECRET}
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "F05",
        "secret",
        bool(contains_secret(d)),
        "sweeper params set env_set.TRAINER_CLI_TYPED_ENV to unlock oc.env",
        p,
    )


def f06():
    d = fresh("f06")
    args = exp(d, "data:\n  note: ${oc.env:ATTACK_SECRET}\n")
    p = train([*args, "+x=${oc.env:HOME}"], d)  # the victim's own line names another variable
    report("F06", "secret", bool(contains_secret(d)), "victim's line reads oc.env:HOME; file reads ATTACK_SECRET", p)


def f07():
    d = fresh("f07")
    write(
        d / "prim" / "evil.yaml",
        """\
        defaults:
          - config
          - _self_
        hydra:
          job:
            env_copy: [ATTACK_SECRET]
        data:
          note: ${hydra:job.env_copy}
        """,
    )
    p = train(["--config-dir", str(d / "prim"), "--config-name", "evil"], d)
    report("F07", "secret", bool(contains_secret(d)), "primary config sets hydra.job.env_copy / reads ${hydra:...}", p)


ATTEMPTS = [f01, f02, f03, f04, f05, f06, f07]
