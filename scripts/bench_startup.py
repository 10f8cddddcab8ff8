"""Start-up: the wall time of a tiny `train` run against `python -c "import torch, torchvision"`.

The tiny run is one epoch of the MLP on digits (11 steps) with the default loggers; the
baseline is the bare import of the libraries every run needs. Runs alternate (import, train,
import, ...) so that load on a shared machine hits both alike; medians are reported, of the
wall time and of the CPU time of the child process (user + system, from getrusage), which
other programs on the machine do not inflate.

    python scripts/bench_startup.py              # 5 alternating pairs
    python scripts/bench_startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("train"))


def timed(command: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    baseline = [sys.executable, "-c", "import torch, torchvision"]
    results: dict[str, list[tuple[float, float]]] = {"import torch, torchvision": [], "train (1 epoch, digits)": []}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.repeats):
            tiny = [TRAIN, "data=digits", "epochs=1", "trainer.device=cpu", f"hydra.run.dir={folder}/run{i}"]
            results["import torch, torchvision"].append(timed(baseline, folder))
            results["train (1 epoch, digits)"].append(timed(tiny, folder))
    print(f"\n{args.repeats} alternating runs each; {os.cpu_count()} CPU cores (shared)")
    print(f"{'':28}{'median wall s':>15}{'median CPU s':>15}")
    medians = {}
    for name, values in results.items():
        medians[name] = (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        print(f"{name:28}{medians[name][0]:15.2f}{medians[name][1]:15.2f}")
    (wall_import, cpu_import), (wall_train, cpu_train) = medians.values()
    wall_ratio, cpu_ratio = wall_train / wall_import, cpu_train / cpu_import
    print(f"ratio train / import: wall {wall_ratio:.2f}, CPU {cpu_ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
