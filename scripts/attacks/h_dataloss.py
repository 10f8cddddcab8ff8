"""Class dataloss: existing folders, clean-up, overwrites, sweep folders."""

from __future__ import annotations

import os

from b_targets import exp
from common import copy_run, fresh, report, train, write


def h01():
    d = fresh("h01")
    run = copy_run(d / "prior")
    before = (run / "checkpoints" / "best.pt").read_bytes()
    args = exp(d, "hydra:\n  run:\n    dir: prior\n")
    p = train([*args, "seed=5"], d)
    after = (run / "checkpoints" / "best.pt").read_bytes()
    report(
        "H01", "dataloss", before != after, "experiment's hydra.run.dir names a finished run: new run replaces it?", p
    )


def h02():
    d = fresh("h02")
    folder = d / "logs"
    write(folder / "train.log", "user's own log of a year of work\n")
    write(folder / ".hydra" / "notes.yaml", "user: notes\n")
    args = exp(d, "hydra:\n  run:\n    dir: logs\nbatch_size: 0\n")
    p = train(args, d)
    report(
        "H02",
        "dataloss",
        not (folder / "train.log").exists() or not (folder / ".hydra" / "notes.yaml").exists(),
        "run.dir=<user's folder holding only train.log + .hydra/> with a config error: clean-up deletes it?",
        p,
    )


def h03():
    d = fresh("h03")
    folder = d / "results"
    write(folder / "metrics.csv", "user,data\n1,2\n")
    write(folder / "train.log", "user log\n")
    args = exp(d, "hydra:\n  run:\n    dir: results\n")
    p = train(args, d)
    changed = (folder / "metrics.csv").read_text() != "user,data\n1,2\n"
    report("H03", "dataloss", changed, "run.dir=<non-run folder with user's metrics.csv>: overwritten?", p)


def h04():
    d = fresh("h04")
    victim = write(d / "victim" / "summary.csv", "victim's spreadsheet\n")
    sweep = d / "shared_sweep"
    sweep.mkdir()
    (sweep / "summary.csv").symlink_to(victim)
    (sweep / "jobs.csv").symlink_to(victim)
    args = exp(d, "hydra:\n  sweep:\n    dir: shared_sweep\n")
    p = train(["-m", *args, "seed=0"], d)
    report(
        "H04",
        "dataloss",
        victim.read_text() != "victim's spreadsheet\n",
        "sweep folder (hydra.sweep.dir from a file) holds summary.csv -> outside file: written through",
        p,
    )


def h05():
    d = fresh("h05")
    victim = d / "victim"
    victim.mkdir()
    sweep = d / "shared_sweep"
    sweep.mkdir()
    (sweep / "tensorboard").symlink_to(victim)
    args = exp(d, "hydra:\n  sweep:\n    dir: shared_sweep\n")
    p = (
        train(["-m", *args, "seed=0,1", "logger=[tensorboard]"], d, cheap=False)
        if False
        else train(
            ["-m", *args, "seed=0,1", "epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu"], d, cheap=False
        )
    )
    report(
        "H05",
        "dataloss",
        any(victim.iterdir()),
        "sweep folder's tensorboard/ is a symlink outside: report writes there",
        p,
    )


def h06():
    d = fresh("h06")
    run = copy_run(d / "prior")
    (run / "metrics.json").unlink()  # a run that was killed: no summary yet
    before = (run / "checkpoints" / "last.pt").read_bytes()
    args = exp(d, "hydra:\n  run:\n    dir: prior\n")
    p = train([*args, "seed=3"], d)
    report(
        "H06",
        "dataloss",
        (run / "checkpoints" / "last.pt").read_bytes() != before,
        "run.dir from a file names a killed (unfinished) run: new run replaces its checkpoints?",
        p,
    )


def h07():
    d = fresh("h07")
    keep = write(d / "proj" / "train.log", "keep\n")
    write(d / "proj" / ".lock", "")
    args = exp(d, "hydra:\n  run:\n    dir: proj\nbatch_size: 0\n")
    p = train(args, d)
    report("H07", "dataloss", not keep.exists(), "run.dir=<folder with user's train.log and .lock>, config error", p)


def h08():
    d = fresh("h08")
    victim = write(d / "victim" / "data.txt", "victim\n")
    run = copy_run(d / "prior")
    os.symlink(victim, run / ".lock.tmp") if False else None
    (run / "checkpoints" / ".last.pt.x.tmp").symlink_to(victim)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "H08",
        "dataloss",
        not victim.exists() or victim.read_text() != "victim\n",
        "resume= run whose checkpoints/ holds a '.x.tmp' symlink to an outside file (orphan clean-up)",
        p,
    )


def h09():
    d = fresh("h09")
    victim = write(d / "victim" / "x.txt", "v\n")
    run = copy_run(d / "prior")
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(victim)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "H09",
        "dataloss",
        victim.read_text() != "v\n",
        "resume= run whose .lock is a symlink to an outside file (lock truncates it?)",
        p,
    )


ATTEMPTS = [h01, h02, h03, h04, h05, h06, h07, h08, h09]
