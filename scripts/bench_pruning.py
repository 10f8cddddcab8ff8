"""Pruning against none: epochs spent and the best value a random search finds, over seeds.

    nice -n 10 python scripts/bench_pruning.py --experiment digits_mlp --trials 30 --seeds 0 1 2

For each seed, two sweeps of the same random search (`hparams_search=random`, `--trials` trials of
`--experiment`, for its own epochs unless `--epochs` is given, n_jobs=1, on the CPU): one with
`--pruner`, one without. Epochs spent: the sum of every job's `epochs_run` (its metrics.json);
the best value: the study's, read back with Optuna's own API. Prints one line per sweep, then
mean ± sd over seeds of both, and the ratio of epochs. The issue's goal: half the epochs or
fewer, at the same best value within its sd.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("train"))


def sweep(folder: Path, seed: int, args: argparse.Namespace, pruner: str) -> tuple[int, float, float]:
    """One search; returns (epochs spent, best value, wall seconds)."""
    import optuna

    command = [TRAIN, "hparams_search=random", *([f"experiment={args.experiment}"] if args.experiment else []),
               f"hydra.sweeper.n_trials={args.trials}",
               f"hydra/sweeper/pruner={pruner}", f"seed={seed}", *([f"epochs={args.epochs}"] if args.epochs else []),
               "trainer.device=cpu", f"optimized_metric={args.metric}", f"hydra.sweep.dir={folder}"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="random", storage=f"sqlite:///{folder / 'optuna.db'}")
    # What each job trained (early stopping and pruning both end a run before its epochs).
    epochs = sum(json.loads((folder / str(t.user_attrs["job"]) / "metrics.json").read_text())["epochs_run"]
                 for t in study.trials)  # fmt: skip
    return epochs, study.best_value, wall


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the experiment's own")
    parser.add_argument("--experiment", default=None, help="an experiment option (default: the MLP on digits)")
    parser.add_argument("--metric", default="val/acc")
    parser.add_argument("--pruner", default="median", help="a hydra/sweeper/pruner option")
    args = parser.parse_args()
    results: dict[str, list[tuple[int, float, float]]] = {"none": [], args.pruner: []}
    with tempfile.TemporaryDirectory(prefix="bench_pruning_") as tmp:
        for seed in args.seeds:
            for pruner in results:
                epochs, best, wall = sweep(Path(tmp) / f"{pruner}-{seed}", seed, args, pruner)
                results[pruner].append((epochs, best, wall))
                print(f"seed {seed} pruner {pruner:>18}: {epochs:4d} epochs, best {args.metric} {best:.4f}, "
                      f"{wall:.0f} s", flush=True)  # fmt: skip
    for pruner, rows in results.items():
        print(
            f"{pruner:>18}: epochs {mean_sd([r[0] for r in rows])}, best {args.metric} {mean_sd([r[1] for r in rows])}"
        )
    none, pruned = (statistics.mean(r[0] for r in results[k]) for k in results)
    print(f"epochs with {args.pruner} / without: {pruned / none:.2f} ({len(args.seeds)} seeds, {args.trials} trials)")


if __name__ == "__main__":
    main()
