"""Class data: data files and inputs (npy pickles, .pt pickles, output paths, dataset roots)."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from b_targets import exp
from common import copy_run, fresh, report, train, write
from d_checkpoints import Boom


def e01():
    d = fresh("e01")
    mark = d / "MARK"
    run = copy_run(d / "run")
    arr = np.empty(2, dtype=object)
    arr[0] = Boom(mark)
    with open(d / "in.npy", "wb") as f:
        np.save(f, arr, allow_pickle=True)
    p = train(["mode=predict", f"checkpoint={run}", f"mode.input={d}/in.npy"], d)
    report("E01", "data", mark.exists(), "mode=predict mode.input=<.npy of pickled objects>", p)


def e02():
    d = fresh("e02")
    mark = d / "MARK"
    run = copy_run(d / "run")
    torch.save({"x": Boom(mark)}, d / "in.pt")
    p = train(["mode=predict", f"checkpoint={run}", f"mode.input={d}/in.pt"], d)
    report("E02", "data", mark.exists(), "mode=predict mode.input=<.pt pickle>", p)


def e03():
    d = fresh("e03")
    run = copy_run(d / "run")
    victim = write(d / "victim" / "important.csv", "keep me\n")
    torch.save(torch.rand(2, 1, 8, 8), d / "in.pt")
    args = exp(
        d,
        f"""\
mode:
  output: {victim}
""",
    )
    p = train([*args, "mode=predict", f"checkpoint={run}", f"mode.input={d}/in.pt"], d)
    report(
        "E03",
        "data",
        victim.read_text() != "keep me\n",
        "experiment sets mode.output=<outside file> for mode=predict (overwrites it)",
        p,
    )


def e04():
    d = fresh("e04")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
defaults:
  - override /data: mnist
data:
  source:
    root: {victim}/mnist
""",
    )  # noqa
    p = train(args, d, timeout=120)
    report(
        "E04",
        "data",
        (victim / "mnist").exists(),
        "experiment points data=mnist's download root outside (folders created there)",
        p,
    )


def e05():
    d = fresh("e05")
    victim = d / "victim"
    victim.mkdir()
    run = copy_run(d / "run")
    torch.save(torch.rand(2, 1, 8, 8), d / "in.pt")
    write(run / ".hydra" / "config.yaml", (run / ".hydra" / "config.yaml").read_text())
    p = train(["mode=predict", f"checkpoint={run}", f"mode.input={d}/in.pt", "mode.output=../victim/p.csv"], d)
    report(
        "E05",
        "data",
        (victim / "p.csv").exists(),
        "(control: victim's own command line) mode.output=../victim/p.csv: informational",
        p,
    )


def e06():
    d = fresh("e06")
    mark = d / "MARK"
    root = d / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            with open(root / cls / f"x{i}.png", "wb") as f:
                pickle.dump(Boom(mark), f)
    (root / "a" / "evil.npy").write_bytes(pickle.dumps(Boom(mark)))
    p = train(["data=imagefolder", f"data.path={root}"], d)
    report("E06", "data", mark.exists(), "image folder of pickles named .png/.npy", p)


ATTEMPTS = [e01, e02, e03, e04, e06]
