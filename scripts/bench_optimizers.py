"""The lecture's optimizer pictures as numbers, every optimizer side by side in one run.

1. A 2-D quadratic ravine, f = (x^2 + 100 y^2) / 2 (condition number 100), from (0.9, 0.37):
   steps to reach f < 1e-6.
2. A saddle, f = x^2 - y^2 + y^4 / 4, from (0.9, 1e-6) (almost on the saddle's ridge): steps
   to reach f < f* + 1e-3 (f* = -1 at (0, +-sqrt 2)).
   For both, each optimizer runs at each learning rate of a grid; the table shows the fewest
   steps and the rate that achieved them ("-" if none reached the tolerance in --max-steps).
   L-BFGS counts function evaluations, not its outer steps.
3. Digits (the default MLP, --epochs epochs): the best validation accuracy of each optimizer
   at its own default learning rate (conf/optimizer/*.yaml), and the final training loss
   (which separates optimizers that all end near the same accuracy), mean over --seeds seeds.

    python scripts/bench_optimizers.py --seeds 3       # the table of docs/optimization.md, ~2 minutes on 2 CPU cores
    python scripts/bench_optimizers.py --epochs 20
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from trainer_cli import build
from trainer_cli.config import CONF_DIR, register_resolvers, resolve
from trainer_cli.report import console
from trainer_cli.train import run

OPTIMIZERS = sorted(p.stem for p in Path(CONF_DIR, "optimizer").glob("*.yaml"))
LR_GRID = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]


def ravine(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * (w[0] ** 2 + 100 * w[1] ** 2)


def saddle(w: torch.Tensor) -> torch.Tensor:
    return w[0] ** 2 - w[1] ** 2 + w[1] ** 4 / 4


PROBLEMS = {
    "ravine (cond. 100)": (ravine, [0.9, 0.37], 0.0, 1e-6),
    "saddle": (saddle, [0.9, 1e-6], -1.0, 1e-3),
}


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=["trainer.device=cpu", *overrides])


class Point(nn.Module):
    def __init__(self, start: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(start, dtype=torch.float64))


def steps_to_tolerance(cfg, lr: float, problem: str, max_steps: int) -> int | None:
    """Optimizer steps (L-BFGS: function evaluations) until f - f* < tolerance, or None."""
    f, start, optimum, tolerance = PROBLEMS[problem]
    point = Point(start)
    cfg = cfg.copy()
    cfg.lr = lr
    optimizer = build.optimizer(resolve(cfg), point)
    option = cfg.optimizer._target_
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = f(point.w)
        loss.backward()
        return loss

    for step in range(1, max_steps + 1):
        optimizer.step(closure)
        with torch.no_grad():
            value = float(f(point.w))
        if not math.isfinite(value) or value > 1e6:
            return None
        if value - optimum < tolerance:
            return evaluations if option == "torch.optim.LBFGS" else step
        if evaluations >= max_steps:
            return None
    return None


def best_over_grid(option: str, problem: str, max_steps: int) -> tuple[int | None, float | None]:
    cfg = compose_cfg(f"optimizer={option}")
    results = [(steps_to_tolerance(cfg, lr, problem, max_steps), lr) for lr in LR_GRID]
    reached = [(steps, lr) for steps, lr in results if steps is not None]
    return min(reached) if reached else (None, None)


def digits(option: str, epochs: int, seed: int) -> tuple[float, float]:
    """(best validation accuracy, final training loss) of one run."""
    cfg = compose_cfg("data=digits", f"optimizer={option}", f"epochs={epochs}", f"seed={seed}")
    with tempfile.TemporaryDirectory() as folder:
        summary = run(cfg, Path(folder))
    return summary["best/val/acc"], summary["final/train/loss"]


def mean_sd(values: list[float], places: int) -> str:
    spread = f" ± {statistics.stdev(values):.{places}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{places}f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=3000)
    args = parser.parse_args()
    register_resolvers()
    logging.getLogger("trainer_cli").setLevel(logging.WARNING)
    console.quiet = True
    # Tiny models: one thread is faster than a pool that spins against other processes.
    torch.set_num_threads(1)

    header = ["optimizer", "default lr", *[f"{p}: steps (lr)" for p in PROBLEMS]]
    header += ["digits: best val acc", "digits: final train loss"]
    rows = []
    for option in OPTIMIZERS:
        default_lr = resolve(compose_cfg(f"optimizer={option}")).lr
        cells = [option, f"{default_lr:g}"]
        for problem in PROBLEMS:
            steps, lr = best_over_grid(option, problem, args.max_steps)
            cells.append("-" if steps is None else f"{steps} ({lr:g})")
        runs = [digits(option, args.epochs, seed) for seed in range(args.seeds)]
        cells += [mean_sd([acc for acc, _ in runs], 3), mean_sd([loss for _, loss in runs], 4)]
        rows.append(cells)
        print(" | ".join(cells), flush=True)

    print(
        f"\nRavine and saddle: fewest steps over lr in {LR_GRID}, at most {args.max_steps}. Digits: "
        f"default MLP, cosine schedule, {args.epochs} epochs, batch 64, mean ± sd of {args.seeds} seed(s) "
        f"(144 validation images: one image is 0.7%), at each optimizer's default lr; "
        f"torch {torch.__version__}.\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
