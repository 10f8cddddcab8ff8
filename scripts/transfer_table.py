"""The lectures' transfer-learning table, measured: pretrain a small CNN on Fashion-MNIST
classes 0-4, then transfer it to a similar task (Fashion-MNIST classes 5-9) and a different
one (digits resized to 28x28), each with 10 images per class and with more (2,000 per class
of Fashion-MNIST, all of the digits); every
method against the same CNN trained from scratch on the same data, over several seeds.

Each run is `train experiment=<recipe> finetune=<method> [init_from=<pretrained run>]`
(conf/experiment/transfer_*.yaml), run in this process; results are appended to
`<out>/results.jsonl` as they finish, so the table can be printed at any time from what
has finished (--table-only).

    python scripts/transfer_table.py --out outputs/transfer --seeds 3     # ~1 h on 2 busy CPU cores
    python scripts/transfer_table.py --out outputs/transfer --table-only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from trainer_cli.config import CONF_DIR, register_resolvers
from trainer_cli.train import run

# (cell column, recipe) -> the methods compared in it: name -> extra overrides.
# `None` as init_from: from scratch (the same CNN, randomly initialised).
CELLS = {
    "similar, little": "transfer_similar_little",
    "different, little": "transfer_different_little",
    "similar, lots": "transfer_similar_lots",
    "different, lots": "transfer_different_lots",
}
METHODS = {
    "from scratch": ["finetune=full"],
    "linear probe (head)": ["finetune=linear_probe"],
    "probe stage 0": ["finetune=probe_stage", "finetune.stage=0"],
    "fine-tune last block + head": ["finetune=last_k", "finetune.last_k=1"],
    "fine-tune all": ["finetune=full"],
    "LoRA r=4 + head": ["finetune=lora"],
}
# Which methods each cell runs (the stage probes where the lecture suggests them).
RUNS = {
    "similar, little": ["from scratch", "linear probe (head)", "fine-tune last block + head", "fine-tune all"],
    "different, little": [
        "from scratch", "linear probe (head)", "probe stage 0", "fine-tune all",
    ],
    "similar, lots": [
        "from scratch", "linear probe (head)", "fine-tune last block + head", "fine-tune all", "LoRA r=4 + head",
    ],
    "different, lots": [
        "from scratch", "linear probe (head)", "fine-tune last block + head", "fine-tune all", "LoRA r=4 + head",
    ],
}  # fmt: skip


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=["trainer.device=cpu", "logger=[]", *overrides])


def done(results: Path) -> dict[tuple[str, str, int], dict]:
    if not results.is_file():
        return {}
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["cell"], r["method"], r["seed"]): r for r in rows}


def table(results: Path) -> str:
    rows = done(results)
    methods = [m for m in METHODS if any(m in RUNS[c] for c in CELLS)]
    header = "| method | " + " | ".join(CELLS) + " |"
    lines = [header, "|---|" + "---|" * len(CELLS)]
    for method in methods:
        cells = []
        for cell in CELLS:
            found = [r for (c, m, _), r in sorted(rows.items()) if c == cell and m == method]
            if method not in RUNS[cell]:
                cells.append("")
            elif not found:
                cells.append("not run")
            else:
                accs = [r["test/acc"] for r in found]
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                seconds = statistics.mean(r["time_s"] for r in found)
                cells.append(f"{statistics.mean(accs):.3f} ± {sd:.3f} ({seconds:.0f} s, n={len(accs)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/transfer"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="start at this seed (a second process for later seeds)"
    )
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--only", action="append", help="run only this method (repeatable), e.g. 'fine-tune all'")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: kind to a shared machine)")
    args = parser.parse_args()
    results = args.out / "results.jsonl"
    if args.table_only:
        print(table(results))
        return
    register_resolvers()
    torch.set_num_threads(args.threads)
    logging.getLogger("trainer_cli").setLevel(logging.WARNING)
    os.environ.setdefault("TRAINER_CLI_DATA", str(args.out / "data"))
    pretrained = args.out / "pretrain"
    if not (pretrained / "metrics.json").is_file():
        started = time.perf_counter()
        summary = run(compose_cfg("experiment=transfer_pretrain"), pretrained)
        print(f"pretrain: test/acc {summary['test/acc']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    finished = done(results)
    for seed in range(args.first_seed, args.seeds):
        for cell, recipe in CELLS.items():
            for method in RUNS[cell]:
                if (cell, method, seed) in finished or (args.only and method not in args.only):
                    continue
                source = "init_from=null" if method == "from scratch" else f"init_from={pretrained}"
                overrides = [f"experiment={recipe}", f"seed={seed}", source, *METHODS[method]]
                run_dir = args.out / "runs" / recipe / method.replace(" ", "_") / str(seed)
                try:
                    summary = run(compose_cfg(*overrides), run_dir)
                except Exception as error:  # report it and go on with the grid
                    print(f"{cell} {method} seed {seed}: FAILED {type(error).__name__}: {error}", flush=True)
                    continue
                row = {
                    "cell": cell, "method": method, "seed": seed, "test/acc": summary["test/acc"],
                    "time_s": summary["time_s"], "command": "train " + " ".join(overrides),
                }  # fmt: skip
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{cell:18s} {method:28s} seed {seed}: test/acc {row['test/acc']:.4f} ({row['time_s']:.0f} s)",
                    flush=True,
                )
    print(table(results))


if __name__ == "__main__":
    main()
