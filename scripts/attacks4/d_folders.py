# ruff: noqa: E501
"""Class D: output folders and data: a reused composition must not send a job into another
job's folder, nor lose a finished job's files."""

from __future__ import annotations

from common import compare_sweep, fresh, hits, report, train


def r4_d01():
    # Every job the same folder (hydra.sweep.subdir=same): job 1 must not clear job 0's files.
    folder = fresh("R4-D01")
    proc = train(["-m", "lr=0.1,0.01", "hydra.sweep.dir=sw", "hydra.sweep.subdir=same"], folder)
    kept = (folder / "sw/same/metrics.json").exists()
    lost = not kept
    report(
        "R4-D01",
        "D-folders",
        "GOT-THROUGH" if lost else "BLOCKED",
        f"two jobs, one subdir: job 0's metrics.json {'kept' if kept else 'LOST'}",
        proc,
    )


def r4_d02():
    # The sweep run again in its folder (resumable sweeper): finished jobs kept, not re-run.
    folder = fresh("R4-D02")
    args = ["-m", "lr=0.1,0.01", "seed=0,1", "hydra.sweep.dir=sw"]
    first = train(args, folder)
    before = {p: p.stat().st_mtime_ns for p in (folder / "sw").rglob("metrics.json")}
    again = train(args, folder)
    after = {p: p.stat().st_mtime_ns for p in (folder / "sw").rglob("metrics.json")}
    changed = [str(p.relative_to(folder)) for p in before if after.get(p) != before[p]]
    report(
        "R4-D02",
        "D-folders",
        "GOT-THROUGH" if changed or first.returncode else "BLOCKED",
        f"sweep run twice in its folder (reuse hits {hits(folder)}): finished jobs rewritten: {changed[:3]}",
        again,
    )


def r4_d03():
    # Each job's folder from its own values (override_dirname), joblib: compare with Hydra alone.
    compare_sweep(
        "R4-D03",
        "D-folders",
        "joblib, subdir=${hydra.job.override_dirname}: each job's folder",
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweep.subdir=${hydra.job.override_dirname}",
            "lr=0.1,0.01",
            "model=mlp,cnn",
        ],
        expect_jobs=4,
    )


ATTEMPTS = [r4_d01, r4_d02, r4_d03]
