"""Kill `train` at random moments (SIGTERM or SIGKILL), resume it to the end, compare bit for bit.

    python scripts/kill_resume.py --trials 20 --seed 0

One uninterrupted reference run, then `--trials` runs of the same command, each sent SIGTERM
or SIGKILL (chosen at random) after a random delay within a run's wall time (so the kill lands
in start-up, mid-epoch, at an epoch's end or during a checkpoint write; a kill that would land
after the run finished is drawn again, up to three times), then
resumed with `train resume=<run>` until it finishes (started afresh when it was killed before
its first checkpoint). A trial counts as identical when the final `last.pt` (model and
optimizer tensors, step) and `metrics.json` (best/val, test, final train loss) equal the
reference's exactly. Prints one line per trial and `identical X/N`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TRAIN = str(Path(sys.executable).with_name("train"))
ARGS = ["epochs=5", "trainer.device=cpu", "logger=[]", "model.width=32", "trainer.checkpoint.every_n_steps=3"]
KEYS = ("best/val/acc", "best/val/loss", "test/acc", "test/loss", "final/train/loss", "steps", "epochs_run")


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread: CPU results independent of the pool
    return subprocess.Popen([TRAIN, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def fingerprint(run_dir: Path) -> dict:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    tensors = dict(state["model"])
    for index, entry in state["optimizer"]["state"].items():
        tensors.update({f"opt/{index}/{k}": v for k, v in entry.items() if torch.is_tensor(v)})
    summary = json.loads((run_dir / "metrics.json").read_text())
    return {"tensors": tensors, "step": state["step"], "metrics": {k: summary[k] for k in KEYS}}


def finished(run_dir: Path) -> bool:
    path = run_dir / "metrics.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "ok"


def same(a: dict, b: dict) -> bool:
    if a["step"] != b["step"] or a["metrics"] != b["metrics"] or a["tensors"].keys() != b["tensors"].keys():
        return False
    return all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    began = time.perf_counter()
    reference = start([*ARGS, f"hydra.run.dir={work / 'reference'}"], work)
    if reference.wait() != 0:
        sys.exit(f"reference run failed: {reference.stderr.read().decode()[-2000:]}")
    wall = time.perf_counter() - began
    expected = fingerprint(work / "reference")
    identical = interrupted = 0
    stages: dict[str, int] = {}
    for trial in range(options.trials):
        run_dir = work / f"trial_{trial}"
        name = rng.choice(["SIGTERM", "SIGKILL"])
        for _attempt in range(3):  # a kill that lands after the run finished interrupts nothing: draw again
            shutil.rmtree(run_dir, ignore_errors=True)
            delay = rng.uniform(0.3, 1.0) * wall
            began = time.perf_counter()
            process = start([*ARGS, f"hydra.run.dir={run_dir}"], work)
            time.sleep(delay)
            finished_first = process.poll() is not None
            if not finished_first:
                process.send_signal(getattr(signal, name))
                break
            process.wait()
            wall = min(wall, time.perf_counter() - began)  # the reference also paid cold caches
        interrupted += not finished_first
        code = process.wait()
        if finished_first:
            stage = "after it finished"
        elif finished(run_dir):
            stage = "after training (metrics.json written)"
        elif (run_dir / "checkpoints" / "last.pt").is_file():
            stage = "mid-run (resumed from its checkpoint)"
        else:
            stage = "before its first checkpoint"
        stages[stage] = stages.get(stage, 0) + 1
        resumes = 0
        while not finished(run_dir):
            resumes += 1
            if (run_dir / "checkpoints" / "last.pt").is_file():
                again = start([f"resume={run_dir}"], work)
            else:  # killed before its first checkpoint: start afresh in the same folder
                again = start([*ARGS, f"hydra.run.dir={run_dir}"], work)
            if again.wait() != 0 or resumes > 3:
                print(f"trial {trial}: resume failed: {again.stderr.read().decode()[-500:]}")
                break
        ok = (run_dir / "metrics.json").is_file() and same(fingerprint(run_dir), expected)
        identical += ok
        verdict = "identical" if ok else "DIFFERENT"
        print(f"trial {trial}: {name} after {delay:.1f} s, {stage} (exit {code}), {resumes} resume(s): {verdict}")
    print(f"identical {identical}/{options.trials}, of which {interrupted} interrupted by the signal "
          f"(run wall time {wall:.1f} s; work folder {work})")  # fmt: skip
    print("where the signals landed: " + ", ".join(f"{stage} {n}" for stage, n in stages.items()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
