"""`train compare A B ...`: runs side by side, without a tracker server.

Each argument is a run folder or a sweep folder (its jobs are the runs). Prints the config keys
that differ between the runs (nothing else: a shared value says nothing), each run's metrics
with its delta from the first run, and writes `compare.png`: the runs' curves overlaid.

Reading a run folder runs none of its code: the config is read as YAML (`yaml.safe_load`), the
metrics as JSON and CSV; no checkpoint is opened. Imports no torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from trainer_cli.config import UserError

# The summary entries compared, in this order (when some run has them).
METRICS = ("best/val/acc", "best/val/loss", "test/acc", "test/loss", "epochs_run", "time_s")
# The curves overlaid in compare.png, one panel each (when some run logged them).
CURVES = ("val/acc", "val/loss", "train/loss")
# Config keys that differ between any two runs without being a choice: where each run lives.
IGNORED_KEYS = ("resume", "hydra")


def run_folders(paths: list[str]) -> list[Path]:
    """The run folders the arguments name: a run folder itself, or each job of a sweep folder."""
    folders: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise UserError(f"compare: '{text}' is not a folder; give run folders or sweep folders")
        if is_run(path):
            folders.append(path)
            continue
        jobs = sorted((p for p in path.iterdir() if p.is_dir() and is_run(p)), key=lambda p: (len(p.name), p.name))
        if not jobs:
            raise UserError(f"compare: '{text}' holds no run (no metrics.json or config); give run or sweep folders")
        folders += jobs
    if len(folders) < 2:
        raise UserError(f"compare: {len(folders)} run found in {' '.join(paths)}; compare needs 2 or more")
    return folders


def is_run(folder: Path) -> bool:
    """A run folder has its summary or its config."""
    return (folder / "metrics.json").is_file() or config_file(folder) is not None


def config_file(folder: Path) -> Path | None:
    """The effective config (`resolved_config.yaml`), else Hydra's composed one."""
    for candidate in (folder / "resolved_config.yaml", folder / ".hydra" / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'optimizer.lr': 0.1, ...}: nested mappings as dotted keys; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def load_run(folder: Path) -> dict[str, Any]:
    """A run's config (flattened), summary and per-epoch history: YAML, JSON and CSV only."""
    path = config_file(folder)
    config = flatten(yaml.safe_load(path.read_text()) or {}) if path else {}
    summary_path = folder / "metrics.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    history: list[dict[str, str]] = []
    if (folder / "metrics.csv").is_file():
        with open(folder / "metrics.csv", newline="") as f:
            history = list(csv.DictReader(f))
    return {"folder": folder, "config": config, "summary": summary, "history": history}


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The config keys whose value is not the same in every run, in the first run's order."""
    keys: dict[str, None] = {}
    for config in configs:
        keys.update(dict.fromkeys(config))
    return [
        key
        for key in keys
        if key.split(".")[0] not in IGNORED_KEYS
        and len({json.dumps(c[key], default=str) if key in c else "<absent>" for c in configs}) > 1
    ]


def labels(folders: list[Path]) -> list[str]:
    """Each run's name: its path below the folders' common parent (`sweep/3`, `run_a`)."""
    resolved = [f.resolve() for f in folders]
    parts = [p.parts for p in resolved]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ["/".join(p[max(common - 1, 0) :]) for p in parts]  # with the parent: `sweep/3`, not `3`


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _delta(value: Any, reference: Any) -> str:
    numbers = isinstance(value, (int, float)) and isinstance(reference, (int, float))
    if not numbers or isinstance(value, bool) or not math.isfinite(value - reference):
        return ""
    return f" ({value - reference:+.4g})"


def tables(runs: list[dict[str, Any]], names: list[str]) -> tuple[Table, Table]:
    """The differing config keys (a row per key) and the metrics with deltas from the first run."""
    from rich.text import Text  # cells and headers as text: `[flip, crop]` is no rich markup

    keys = differing_keys([r["config"] for r in runs])
    config_table = Table(title=f"config keys that differ ({len(keys)})")
    config_table.add_column("key", overflow="fold")
    for name in names:
        config_table.add_column(Text(name), overflow="fold")
    for key in keys:
        config_table.add_row(*map(Text, [key, *[_value(r["config"].get(key)) for r in runs]]))
    shown = [m for m in METRICS if any(m in r["summary"] for r in runs)]
    metric_table = Table(title=Text(f"metrics (delta from {names[0]})"))
    metric_table.add_column("metric")
    for name in names:
        metric_table.add_column(Text(name), overflow="fold")
    for metric in shown:
        reference = runs[0]["summary"].get(metric)
        cells = [_value(r["summary"].get(metric)) + (_delta(r["summary"].get(metric), reference) if i else "")
                 for i, r in enumerate(runs)]  # fmt: skip
        metric_table.add_row(metric, *cells)
    metric_table.add_row("status", *[str(r["summary"].get("status", "-")) for r in runs])
    return config_table, metric_table


def plot(runs: list[dict[str, Any]], names: list[str], path: Path) -> Path | None:
    """`compare.png`: one panel per curve (validation accuracy and loss, training loss), the runs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = [c for c in CURVES if any(row.get(c) not in (None, "") for r in runs for row in r["history"])]
    if not curves:
        return None
    figure, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.5), squeeze=False)
    for axis, curve in zip(axes[0], curves, strict=True):
        for run, name in zip(runs, names, strict=True):
            points = [
                (int(row["epoch"]), float(row[curve])) for row in run["history"] if row.get(curve) not in (None, "")
            ]
            if points:
                axis.plot(*zip(*points, strict=True), marker="." if len(points) < 3 else None, label=name)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(curve)
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    from trainer_cli.figures import save

    save(figure, path, dpi=100)
    plt.close(figure)
    return path


def main(argv: list[str]) -> int:
    """`train compare A B ... [--out FOLDER]`; compare.png goes to --out, else the current folder."""
    parser = argparse.ArgumentParser(prog="train compare", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="run folders or sweep folders")
    parser.add_argument("--out", default=".", help="where compare.png is written (default: the current folder)")
    args = parser.parse_args(argv)
    folders = run_folders(args.folders)
    out = Path(args.out)
    if not out.is_dir():
        raise UserError(f"compare: --out '{args.out}' is not a folder")
    runs = [load_run(f) for f in folders]
    names = labels(folders)
    from trainer_cli.report import console

    for table in tables(runs, names):
        console.print(table)
    written = plot(runs, names, out / "compare.png")
    console.print(f"curves: {written}" if written else "curves: no run has a metrics.csv")
    return 0
