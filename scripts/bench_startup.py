"""Start-up: the wall time of a tiny `train` run against `python -c "import torch, torchvision"`.

The tiny run is one epoch of the MLP on digits (11 steps) with the default loggers; the
baseline is the bare import of the libraries every run needs. Runs alternate (import, train,
import, ...) so that load on a shared machine hits both alike; medians (and the range) are
reported, of the wall time and of the CPU time of the child process (user + system, from
getrusage), which other programs on the machine inflate less; and the ratio of each pair
(train / the import just before it), whose median and range say how much the load moved it.
`--also SRC` times the same run with another checkout's `src` (PYTHONPATH=SRC), interleaved
in the same pairs: a before/after comparison measured side by side.

    python scripts/bench_startup.py              # 5 alternating pairs
    python scripts/bench_startup.py --repeats 9 --also /tmp/main/src   # with another checkout, side by side
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


def timed(command: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--also", metavar="SRC", help="also time the run with PYTHONPATH=SRC (another checkout)")
    args = parser.parse_args()
    baseline = [sys.executable, "-c", "import torch, torchvision"]
    import_name, train_name = "import torch, torchvision", "train (1 epoch, digits)"
    envs = {train_name: None}
    if args.also:
        envs[f"train with {args.also}"] = dict(os.environ, PYTHONPATH=args.also)
    results: dict[str, list[tuple[float, float]]] = {import_name: [], **{name: [] for name in envs}}
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in envs}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.repeats):
            imported = timed(baseline, folder)
            results[import_name].append(imported)
            for j, (name, env) in enumerate(envs.items()):
                tiny = [TRAIN, "data=digits", "epochs=1", "trainer.device=cpu", f"hydra.run.dir={folder}/run{i}_{j}"]
                took = timed(tiny, folder, env)
                results[name].append(took)
                ratios[name].append((took[0] / imported[0], took[1] / imported[1]))
    print(f"\n{args.repeats} alternating runs each; {os.cpu_count()} CPU cores (shared)")
    print(f"{'':40}{'wall s: median (min-max)':>26}{'CPU s: median (min-max)':>26}")

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    for name, values in results.items():
        print(f"{name:40}{spread([v[0] for v in values]):>26}{spread([v[1] for v in values]):>26}")
    print("ratio train / import (target <= 1.5), of the medians; and each pair's ratio: median (min-max)")
    wall_import = statistics.median(v[0] for v in results[import_name])
    cpu_import = statistics.median(v[1] for v in results[import_name])
    for name in envs:
        wall = statistics.median(v[0] for v in results[name]) / wall_import
        cpu = statistics.median(v[1] for v in results[name]) / cpu_import
        print(f"{name:40}wall {wall:.2f}, CPU {cpu:.2f}; paired: wall {spread([r[0] for r in ratios[name]])}, "
              f"CPU {spread([r[1] for r in ratios[name]])}")  # fmt: skip


if __name__ == "__main__":
    main()
