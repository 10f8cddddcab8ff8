# ruff: noqa: E501
"""Class cwd: files in the attacker's folder that `train` imports by name."""

from __future__ import annotations

from common import fresh, payload, report, train, write


def r3_w01():
    """The victim trusts an *installed* package by name (`--trust sklearn`, as for a library of
    models); the attacker's folder holds `sklearn.py`: the folder's file is run instead."""
    d = fresh("w01")
    mark = d / "MARK"
    write(d / "sklearn.py", payload(mark))
    p = train(["--trust", "sklearn"], d)
    report("R3-W01", "cwd", mark.exists(), "`train --trust sklearn` (installed) in a folder holding sklearn.py", p)


def r3_w02():
    """As W01 with a dotted name (`--trust torchvision.models`): the folder's torchvision/ package."""
    d = fresh("w02")
    mark = d / "MARK"
    write(d / "torchvision" / "__init__.py", payload(mark))
    p = train(["--trust", "torchvision.models"], d)
    report(
        "R3-W02",
        "cwd",
        mark.exists(),
        "`train --trust torchvision.models` in a folder holding torchvision/__init__.py",
        p,
    )


def r3_w03():
    """TRAINER_CLI_TRUST set in the victim's shell profile for an installed package (optuna);
    the attacker's folder holds optuna.py."""
    d = fresh("w03")
    mark = d / "MARK"
    write(d / "optuna.py", payload(mark))
    p = train([], d, env={"TRAINER_CLI_TRUST": "optuna"})
    report("R3-W03", "cwd", mark.exists(), "TRAINER_CLI_TRUST=optuna (installed) in a folder holding optuna.py", p)


def r3_w04():
    """`train --trust mymodels` where the attacker's --config-dir (not the cwd) holds mymodels.py."""
    d = fresh("w04")
    mark = d / "MARK"
    write(d / "cfg" / "mymodels.py", payload(mark))
    write(d / "cfg" / "experiment" / "x.yaml", "# @package _global_\nseed: 1\n")
    work = d / "work"
    work.mkdir()
    p = train(["--config-dir", str(d / "cfg"), "experiment=x"], work)
    report(
        "R3-W04",
        "cwd",
        mark.exists(),
        "--config-dir holding mymodels.py (no --trust): imported from the config folder?",
        p,
    )


def r3_w05():
    """A --trust module the victim wrote (mymod.py in their folder) that the attacker's run folder
    shadows when the victim resumes there (`train resume=<run> --trust mymod`, run holds mymod.py)."""
    d = fresh("w05")
    mark = d / "MARK"
    from common import copy_run

    run = copy_run(d / "run")
    write(run / "mymod.py", payload(mark))
    work = d / "work"
    write(work / "mymod.py", "X = 1\n")
    p = train([f"resume={run}", "epochs=2", "--trust", "mymod"], work, cheap=False)
    report(
        "R3-W05",
        "cwd",
        mark.exists(),
        "resume=<run holding mymod.py> --trust mymod (the victim's own mymod.py in cwd)",
        p,
    )


ATTEMPTS = [r3_w01, r3_w02, r3_w03, r3_w04, r3_w05]
