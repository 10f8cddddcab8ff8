"""The verdict table: `diagnose=all` on runs with a known pathology and on a healthy run.

    PYTHONPATH=src python scripts/diagnose_pathologies.py [--out outputs/diagnose_pathologies]

Each row composes the real conf/ with `diagnose=all` plus the overrides that make the
pathology, runs the diagnosis in-process (one CPU thread), and prints each step's verdict and
its first cause. The shuffled-labels run uses `data.shuffle_labels=true`. The zoo
(`scripts/diagnose_zoo.py`) measures the curves step's first-named cause on 47 runs.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

PATHOLOGIES = {
    "healthy default": [],
    "LR far too high": ["optimizer=sgd", "lr=100"],
    "LR far too low": ["lr=1e-7"],
    "constant init": ["model.init=constant"],
    "labels shuffled": ["data.shuffle_labels=true"],
    "tiny training set, big model": ["data.val_fraction=0.9", "model.width=2048", "model.depth=3"],
    "too-small model": ["model.width=2", "model.depth=1"],
}


def first_cause(run_dir: Path, step: str) -> str:
    """The likeliest cause the step's section of diagnosis.md names (or its summary)."""
    text = (run_dir / "diagnosis.md").read_text()
    section = text.split(f"## {step}: ", 1)[1].split("\n## ", 1)[0]
    cause = re.search(r"^1\. (.*)$", section, re.MULTILINE)
    return cause.group(1) if cause else section.splitlines()[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/diagnose_pathologies")
    parser.add_argument("--only", default=None, help="one pathology's name")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hydra import compose, initialize_config_dir

    from trainer_cli import build
    from trainer_cli.config import CONF_DIR, register_resolvers, resolve

    register_resolvers()
    rows = []
    for name, overrides in PATHOLOGIES.items():
        if args.only and name != args.only:
            continue
        run_dir = Path(args.out) / re.sub(r"\W+", "_", name).strip("_")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", ["diagnose=all", "trainer.device=cpu", "logger=[]", *overrides])
        started = time.perf_counter()
        summary = build.procedure(resolve(cfg))(cfg, run_dir)
        seconds = time.perf_counter() - started
        steps = [k.split("/", 1)[1] for k in summary if k.startswith("diagnose/")]
        cells = [f"{summary[f'diagnose/{s}']}" + ("" if summary[f"diagnose/{s}"] == "PASS" else
                 f": {first_cause(run_dir, s)}") for s in steps]  # fmt: skip
        rows.append((name, " ".join(overrides) or "(defaults)", summary["verdict"], cells, seconds))
        print(f"{name}: {summary['verdict']} in {seconds:.0f} s", flush=True)
    print("\n| run | overrides | overall | " + " | ".join(steps) + " |")
    print("|---|---|---|" + "---|" * len(steps))
    for name, overrides, overall, cells, _ in rows:
        print(f"| {name} | `{overrides}` | {overall} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
