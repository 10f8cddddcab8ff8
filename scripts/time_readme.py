"""The README's stated times, measured as a user waits for them: the whole `train` command,
start-up included, from an empty folder, each command `--repeats` times in turn; prints the
range (min-max) and the median of the wall time, with the machine's load before and after.

    python scripts/time_readme.py --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("train"))
COMMANDS = {
    "train": [],
    "train experiment=digits_mlp": ["experiment=digits_mlp"],
    "train experiment=digits_cnn": ["experiment=digits_cnn"],
    "train experiment=fashion_mnist_mlp": ["experiment=fashion_mnist_mlp"],
    "train experiment=synthetic_bench": ["experiment=synthetic_bench"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="command names (as printed) to time")
    args = parser.parse_args()
    chosen = {k: v for k, v in COMMANDS.items() if not args.only or k in args.only}
    times: dict[str, list[float]] = {name: [] for name in chosen}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name, extra in chosen.items():
                start = time.perf_counter()
                run_dir = f"{folder}/{len(times[name])}_{name.replace(' ', '_').replace('=', '-')}"
                subprocess.run([TRAIN, *extra, f"hydra.run.dir={run_dir}"], cwd=folder, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                times[name].append(time.perf_counter() - start)
    print(f"{os.cpu_count()} CPU cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    for name, values in times.items():
        print(f"{name:40} {min(values):6.1f}-{max(values):6.1f} s   (median {statistics.median(values):.1f} s, "
              f"{len(values)} runs)")  # fmt: skip


if __name__ == "__main__":
    main()
