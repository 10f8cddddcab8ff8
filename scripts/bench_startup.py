"""Start-up: the wall time of a tiny `train` run against `python -c "import torch, torchvision"`.

The tiny run is one epoch of the MLP on digits (11 steps) with the default loggers; the
baseline is the bare import of the libraries every run needs. Runs alternate (import, train,
import, ...) so that load on a shared machine hits both alike; medians (and the range) are
reported, of the wall time and of the CPU time of the child process (user + system, from
getrusage), which other programs on the machine inflate less; and the ratio of each pair
(train / the import just before it), whose median and range say how much the load moved it.
`--also SRC` times the same run with another checkout's `src` (PYTHONPATH=SRC), interleaved
in the same pairs: a before/after comparison measured side by side.

`train --help` is paired the same way with a bare `@hydra.main` app's `--help` in the same
environment (so Hydra discovers the same plugins, trainer_cli's included). The noise floor
(as in bench_overhead.py): each baseline is run twice in a row and the second copy's ratio to
the first is reported beside the real ratios; a real ratio inside the floor's range says nothing.
Targets (issue 23): tiny run <= 1.3x the imports, --help <= 1.2x the bare app.

A second reference is timed in the same rounds: the imports plus one optimizer step. Every
`torch.optim` step imports `torch._dynamo` (torch/optim/optimizer.py, `_use_grad`), about a
second and a half of imports that a hand-written loop pays too and the bare import does not;
the tiny run's ratio over it is printed as well.

    python scripts/bench_startup.py              # 5 alternating pairs
    python scripts/bench_startup.py --repeats 9 --also /tmp/main/src   # with another checkout, side by side
    python scripts/bench_startup.py --help-only --repeats 9             # only --help against the bare app
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
ONE_STEP = (
    "import torch, torchvision\n"
    "m = torch.nn.Linear(64, 10)\n"
    "o = torch.optim.Adam(m.parameters())\n"
    "m(torch.randn(8, 64)).sum().backward()\n"
    "o.step()\n"
)
BARE_APP = """import hydra


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    pass


if __name__ == "__main__":
    main()
"""


def timed(command: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def paired(
    name: str,
    baseline: list[str],
    commands: dict[str, tuple[list[str], dict[str, str] | None]],
    repeats: int,
    folder: str,
    target: float,
    reference: str | None = None,
) -> None:
    """Alternate the baseline (twice: the noise floor), then each command; print the medians and
    the paired ratios (each command over the baseline run just before it)."""
    times: dict[str, list[tuple[float, float]]] = {name: [], f"{name} (again)": [], **{c: [] for c in commands}}
    ratios: dict[str, list[tuple[float, float]]] = {f"{name} (again)": [], **{c: [] for c in commands}}
    for i in range(repeats):
        first = timed(baseline, folder)
        again = timed(baseline, folder)
        times[name].append(first)
        times[f"{name} (again)"].append(again)
        ratios[f"{name} (again)"].append((again[0] / first[0], again[1] / first[1]))
        for label, (command, env) in commands.items():
            took = timed([a.replace("{i}", str(i)) for a in command], folder, env)
            times[label].append(took)
            ratios[label].append((took[0] / first[0], took[1] / first[1]))
    print(f"\n{name}: {repeats} alternating rounds; {os.cpu_count()} CPU cores (shared)")
    print(f"{'':44}{'wall s: median (min-max)':>26}{'CPU s: median (min-max)':>26}")
    for label, values in times.items():
        print(f"{label:44}{spread([v[0] for v in values]):>26}{spread([v[1] for v in values]):>26}")
    print(f"paired ratio over '{name}' (target <= {target}): median (min-max); the '(again)' row is the noise floor")
    for label, values in ratios.items():
        print(f"{label:44}wall {spread([r[0] for r in values]):>20}   CPU {spread([r[1] for r in values]):>20}")
    if reference is not None:
        print(f"paired ratio over '{reference}' (the same rounds): median (min-max)")
        for label in commands:
            if label == reference:
                continue
            pairs = list(zip(times[label], times[reference], strict=True))
            print(f"{label:44}wall {spread([a[0] / b[0] for a, b in pairs]):>20}   CPU "
                  f"{spread([a[1] / b[1] for a, b in pairs]):>20}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--also", metavar="SRC", help="also time the run with PYTHONPATH=SRC (another checkout)")
    parser.add_argument("--help-only", action="store_true", help="only `train --help` against the bare Hydra app")
    parser.add_argument("--run-only", action="store_true", help="only the tiny run against the imports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.help_only:
            tiny = [TRAIN, "data=digits", "epochs=1", "trainer.device=cpu", f"hydra.run.dir={folder}/run{{i}}"]
            step = "import torch, torchvision + one Adam step"
            runs = {step: ([sys.executable, "-c", ONE_STEP], None), "train (1 epoch, digits)": (tiny, None)}
            if args.also:
                also = [*tiny[:-1], f"hydra.run.dir={folder}/also{{i}}"]
                runs[f"train with {args.also}"] = (also, dict(os.environ, PYTHONPATH=args.also))
            paired("import torch, torchvision", [sys.executable, "-c", "import torch, torchvision"], runs,
                   args.repeats, folder, 1.3, reference=step)  # fmt: skip
        if not args.run_only:
            app = Path(folder, "bare_app.py")
            app.write_text(BARE_APP)
            helps = {"train --help": ([TRAIN, "--help"], None)}
            if args.also:
                helps[f"train --help with {args.also}"] = ([TRAIN, "--help"], dict(os.environ, PYTHONPATH=args.also))
            paired("bare @hydra.main --help", [sys.executable, str(app), "--help"], helps, args.repeats, folder, 1.2)


if __name__ == "__main__":
    main()
