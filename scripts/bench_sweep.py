"""How much of a sweep of small jobs is training: wall time against the sum of its jobs' `time_s`.

Runs one 12-job digits sweep (lr=0.1,0.03,0.01,0.003 x seed=0,1,2; 3 epochs a job, or each of
`--epochs`; CPU) with the basic launcher (one job after another) and with joblib (2 workers), and
prints for each: the wall time, the jobs' summed `time_s` (each job's run(), from its
metrics.json), their share of the workers' time (time_s sum / (workers x wall)), the rest per job
((workers x wall - time_s sum) / jobs: the sweep's own cost, the process start and torch's import
included) and the console lines it printed. `--src` runs another checkout's code (an earlier
commit, for a before/after in one run):

    nice -n 10 python scripts/bench_sweep.py --epochs 3 20 60
    nice -n 10 python scripts/bench_sweep.py --src /tmp/before/src     # the same, older code
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "lr=0.1,0.03,0.01,0.003", "seed=0,1,2", "trainer.device=cpu"]
LAUNCHERS = {"n_jobs=1": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
WORKERS = {"n_jobs=1": 1, "joblib": 2}  # the ratio is of the workers' wall time: workers x wall


def bench(extra: list[str], src: str | None, folder: Path, epochs: int) -> dict[str, float]:
    """Run the sweep once; wall seconds, summed job seconds, and console lines."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    command = [sys.executable, "-m", "trainer_cli", *SWEEP, f"epochs={epochs}", *extra, f"hydra.sweep.dir={folder}"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder.parent)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the sweep failed: {result.stderr[-2000:]}")
    jobs = [json.loads(p.read_text()) for p in folder.glob("*/metrics.json")]
    return {"wall": wall, "train": sum(j["time_s"] for j in jobs), "jobs": len(jobs),
            "lines": len((result.stdout + result.stderr).splitlines())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", help="a checkout's src/ folder to run instead of the installed trainer_cli")
    parser.add_argument("--launcher", choices=list(LAUNCHERS), action="append", help="default: both")
    parser.add_argument("--epochs", type=int, nargs="+", default=[3], help="each job's epochs (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for epochs, name in ((e, n) for e in args.epochs for n in args.launcher or list(LAUNCHERS)):
            r = bench(LAUNCHERS[name], args.src, Path(tmp) / f"{name.replace('=', '_')}_{epochs}", epochs)
            share = r["train"] / (WORKERS[name] * r["wall"])
            per_job = (r["wall"] * WORKERS[name] - r["train"]) / r["jobs"]
            print(f"epochs={epochs} {name}: {r['jobs']} jobs, wall {r['wall']:.1f} s, "
                  f"training (sum of time_s) {r['train']:.1f} s, training share {share:.0%}, "
                  f"the rest {per_job:.2f} s a job, {r['lines']} console lines", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
