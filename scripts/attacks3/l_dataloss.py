# ruff: noqa: E501
"""Class dataloss: a file-given folder or output that lands on the victim's existing files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from common import exp, finished_run, fresh, npy_input, report, train, write

SWEEP_CHEAP = ["epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu", "logger=[]"]


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links not followed) and its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def lost(before: dict[str, str], folder: Path) -> list[str]:
    after = digest(folder)
    return [name for name, h in before.items() if after.get(name) != h]


def r3_l01():
    """The victim works in their own project folder (results.csv there) with an attacker's
    --config-dir experiment whose mode.output is `results.csv` (inside the current folder)."""
    d = fresh("l01")
    work = d / "project"
    keep = write(work / "results.csv", "the victim's results\n")
    inputs = npy_input(d)
    args = exp(
        d,
        f"""\
defaults:
  - override /mode: predict
checkpoint: {finished_run()}
mode:
  input: {inputs}
  output: results.csv
""",
    )
    p = train(args, work)
    report(
        "R3-L01",
        "dataloss",
        keep.read_text() != "the victim's results\n",
        "experiment mode.output=results.csv (inside cwd): replaces the victim's file",
        p,
    )


def r3_l02():
    """The same, aimed at a file inside the victim's earlier run (outputs/<run>/metrics.csv)."""
    d = fresh("l02")
    work = d / "project"
    run = work / "outputs" / "old"
    shutil.copytree(finished_run(), run, symlinks=True)
    before = digest(run)
    inputs = npy_input(d)
    args = exp(
        d,
        f"""\
defaults:
  - override /mode: predict
checkpoint: {finished_run()}
mode:
  input: {inputs}
  output: outputs/old/metrics.csv
""",
    )
    p = train(args, work)
    changed = lost(before, run)
    report(
        "R3-L02",
        "dataloss",
        bool(changed),
        f"experiment mode.output=outputs/<victim run>/metrics.csv: changed {changed[:3]}",
        p,
    )


def r3_l03():
    """An experiment's (relative) hydra.sweep.dir names the victim's earlier sweep folder."""
    d = fresh("l03")
    work = d / "project"
    sweep = work / "multirun" / "old"
    shutil.copytree(finished_run(), sweep / "0", symlinks=True)
    shutil.copytree(finished_run(), sweep / "1", symlinks=True)
    write(sweep / "multirun.yaml", "hydra: {}\n# the victim's sweep\n")
    write(sweep / "summary.csv", "job,val/acc\n0,0.5\n1,0.6\n")
    before = digest(sweep)
    args = exp(d, "hydra:\n  sweep:\n    dir: multirun/old\n")
    p = train(["-m", *args, "seed=3,4", *SWEEP_CHEAP], work, cheap=False)
    changed = lost(before, sweep)
    report(
        "R3-L03",
        "dataloss",
        bool(changed),
        f"experiment hydra.sweep.dir=<victim's sweep folder>: changed {changed[:3]}",
        p,
    )


def r3_l04():
    """An experiment's hydra.run.dir is the `checkpoints` folder of the victim's run."""
    d = fresh("l04")
    work = d / "project"
    run = work / "outputs" / "old"
    shutil.copytree(finished_run(), run, symlinks=True)
    before = digest(run)
    args = exp(d, "hydra:\n  run:\n    dir: outputs/old/checkpoints\n")
    p = train(args, work)
    changed = lost(before, run)
    report(
        "R3-L04",
        "dataloss",
        bool(changed),
        f"experiment hydra.run.dir=<victim run>/checkpoints: changed {changed[:3]}",
        p,
    )


def r3_l05():
    """An experiment's hydra.run.dir is a new sub-folder of the victim's run (outputs/old/x):
    the victim's run folder gains a run; then is anything of it replaced?"""
    d = fresh("l05")
    work = d / "project"
    run = work / "outputs" / "old"
    shutil.copytree(finished_run(), run, symlinks=True)
    before = digest(run)
    args = exp(d, "hydra:\n  run:\n    dir: outputs/old/.hydra/x\n")
    p = train(args, work)
    changed = lost(before, run)
    report(
        "R3-L05", "dataloss", bool(changed), f"experiment hydra.run.dir=<victim run>/.hydra/x: changed {changed[:3]}", p
    )


def r3_l06():
    """An experiment's sweep subdir is a fixed name: every job in one folder (the second replaces?)."""
    d = fresh("l06")
    work = d / "project"
    work.mkdir()
    args = exp(d, "hydra:\n  sweep:\n    dir: sw\n    subdir: same\n")
    p = train(["-m", *args, "seed=3,4", *SWEEP_CHEAP], work, cheap=False)
    job = work / "sw" / "same"
    seeds = (job / "resolved_config.yaml").read_text() if (job / "resolved_config.yaml").exists() else ""
    report(
        "R3-L06", "dataloss", "seed: 4" in seeds, "experiment hydra.sweep.subdir=same: job 1 replaces job 0's run?", p
    )


def r3_l07():
    """An experiment's sweep subdir `.`: the jobs run in the sweep folder itself (the victim's?)."""
    d = fresh("l07")
    work = d / "project"
    sweep = work / "multirun" / "old"
    shutil.copytree(finished_run(), sweep / "0", symlinks=True)
    write(sweep / "multirun.yaml", "hydra: {}\n# the victim's sweep\n")
    before = digest(sweep)
    args = exp(d, "hydra:\n  sweep:\n    dir: multirun/old/0\n    subdir: .\n")
    p = train(["-m", *args, "seed=3", *SWEEP_CHEAP], work, cheap=False)
    changed = lost(before, sweep)
    report(
        "R3-L07",
        "dataloss",
        bool(changed),
        f"experiment hydra.sweep.dir=<victim run>, subdir='.': changed {changed[:3]}",
        p,
    )


def r3_l08():
    """The victim's run was stopped (preempted.json beside its last.pt); an experiment's relative
    hydra.run.dir names it: a folder with the mark is accepted as this command's own stopped run."""
    import json

    import torch

    d = fresh("l08")
    work = d / "project"
    run = work / "outputs" / "stopped"
    shutil.copytree(finished_run(), run, symlinks=True)
    step = int(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"])
    (run / "preempted.json").write_text(json.dumps({"step": step, "signal": "SIGTERM"}) + "\n")
    before = digest(run)
    args = exp(d, "hydra:\n  run:\n    dir: outputs/stopped\nseed: 7\n")
    p = train(args, work)
    changed = lost(before, run)
    report(
        "R3-L08",
        "dataloss",
        bool(changed),
        f"experiment hydra.run.dir=<victim's stopped run> (preempted.json): changed {changed[:3]}",
        p,
    )


def _hardlinked_run(d, name):
    """A shared run folder (to resume) whose `name` is a *hard* link to a file of the victim's."""
    import os

    run = d / "shared"
    shutil.copytree(finished_run(), run, symlinks=True)
    victim = write(d / "victim" / "notes.txt", "the victim's notes\n")
    target = run / name
    target.unlink(missing_ok=True)
    os.link(victim, target)
    return run, victim


def r3_l09():
    """resume= a shared run whose `train.log` is a hard link to the victim's file (no symlink to refuse)."""
    d = fresh("l09")
    run, victim = _hardlinked_run(d, "train.log")
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "R3-L09",
        "dataloss",
        victim.read_text() != "the victim's notes\n",
        "resume=<run whose train.log is a hard link to a victim file>",
        p,
    )


def r3_l10():
    """resume= a shared run whose `.lock` is a hard link to the victim's file (the lock is truncated)."""
    d = fresh("l10")
    run, victim = _hardlinked_run(d, ".lock")
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "R3-L10",
        "dataloss",
        victim.read_text() != "the victim's notes\n",
        "resume=<run whose .lock is a hard link to a victim file> (truncated?)",
        p,
    )


ATTEMPTS = [r3_l01, r3_l02, r3_l03, r3_l04, r3_l05, r3_l06, r3_l07, r3_l08, r3_l09, r3_l10]
