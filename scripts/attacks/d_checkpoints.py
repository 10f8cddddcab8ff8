"""Class checkpoint: pickles, tampered checkpoint configs, symlinked run folders."""

from __future__ import annotations

import os
import pickle

import torch
from common import copy_run, fresh, payload, report, train, write


class Boom:
    def __init__(self, mark):
        self.mark = str(mark)

    def __reduce__(self):
        return (exec, (payload(self.mark),))


def pickled_run(d, mark):
    run = copy_run(d / "run")
    state = {"config": "x", "epoch": 1, "step": 1, "model": Boom(mark)}
    for name in ("last.pt", "best.pt"):
        with open(run / "checkpoints" / name, "wb") as f:
            pickle.dump(state, f)  # a plain pickle
    torch.save(state, run / "checkpoints" / "last.pt")  # and torch's zip pickle
    return run


def tampered_config(d, edit):
    """The fixture run, with its checkpoints' config text edited by `edit(text) -> text`."""
    run = copy_run(d / "run")
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        state["config"] = edit(state["config"])
        torch.save(state, path)
    return run


def d01():
    d = fresh("d01")
    mark = d / "MARK"
    run = pickled_run(d, mark)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report("D01", "checkpoint", mark.exists(), "resume= a run whose last.pt is a pickle with __reduce__ -> exec", p)


def d02():
    d = fresh("d02")
    mark = d / "MARK"
    run = pickled_run(d, mark)
    p = train(["mode=evaluate", f"checkpoint={run}/checkpoints/last.pt"], d)
    report("D02", "checkpoint", mark.exists(), "mode=evaluate checkpoint=<pickle>", p)


def d03():
    d = fresh("d03")
    mark = d / "MARK"
    run = pickled_run(d, mark)
    p = train([f"init_from={run}/checkpoints/last.pt"], d)
    report("D03", "checkpoint", mark.exists(), "init_from=<pickle>", p)


def d04():
    d = fresh("d04")
    out = d / "victim" / "x.log"
    (d / "victim").mkdir()
    import yaml

    def edit(text):
        cfg = yaml.safe_load(text)
        cfg["model"]["width"] = {"_target_": "logging.FileHandler", "filename": str(out)}
        return yaml.safe_dump(cfg)

    run = tampered_config(d, edit)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "D04",
        "checkpoint",
        out.exists(),
        "resume= run whose checkpoint config builds logging.FileHandler(<outside>)",
        p,
    )


def d05():
    d = fresh("d05")
    mark = d / "MARK"
    import yaml

    def edit(text):
        cfg = yaml.safe_load(text)
        cfg["model"]["width"] = {"_target_": "torch.os.system", "_args_": [f"touch {mark}"]}
        return yaml.safe_dump(cfg)

    run = tampered_config(d, edit)
    p = train(["mode=evaluate", f"checkpoint={run}"], d)
    report("D05", "checkpoint", mark.exists(), "mode=evaluate with a checkpoint config naming torch.os.system", p)


def d06():
    d = fresh("d06")
    run = copy_run(d / "run")
    victim = d / "victim"
    victim.mkdir()
    (victim / "best.pt").write_text("victim's own file\n")
    os.replace(run / "checkpoints" / "last.pt", victim / "last.pt")
    (run / "checkpoints" / "best.pt").unlink()
    (run / "checkpoints").rmdir()
    (run / "checkpoints").symlink_to(victim)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    changed = (victim / "best.pt").read_text(errors="replace") != "victim's own file\n"
    report(
        "D06",
        "checkpoint",
        changed,
        "resume= run whose checkpoints/ is a symlink to an outside folder (best.pt there overwritten?)",
        p,
    )


def d07():
    d = fresh("d07")
    run = copy_run(d / "run")
    victim = write(d / "victim" / "bashrc", "# victim's rc\n")
    for name in ("resolved_config.yaml", "metrics.csv", "train.log"):
        target = write(d / "victim" / name, "victim data\n")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(victim)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    changed = victim.read_text() != "# victim's rc\n" or any(
        (d / "victim" / n).read_text() != "victim data\n" for n in ("resolved_config.yaml", "metrics.csv", "train.log")
    )
    report(
        "D07",
        "checkpoint",
        changed,
        "resume= run whose metrics.json/metrics.csv/train.log/resolved_config.yaml are symlinks to outside files",
        p,
    )


def d08():
    d = fresh("d08")
    mark = d / "MARK"
    run = pickled_run(d, mark)
    p = train([f"ensemble=[{run}]"], d)
    report("D08", "checkpoint", mark.exists(), "ensemble=[<run with pickled best.pt>]", p)


ATTEMPTS = [d01, d02, d03, d04, d05, d06, d07, d08]
