"""The sweep report: one table of every job of a multirun, also written as summary.csv, and
`sweep.png` with every job's validation curve and the metric against each searched value.

Runs as a Hydra callback at the end of every multirun, and on demand for any sweep folder:
`python -m trainer_cli.sweep <sweep folder> [optimized_metric]`. Imports no torch at load.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainer_cli import metrics


def collect(sweep_dir: Path, metric: str) -> list[dict[str, Any]]:
    """One row per job folder under `sweep_dir`, best first by `metric`."""
    rows = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        given = [str(o) for o in OmegaConf.load(overrides_file)]
        metrics_file = job_dir / "metrics.json"
        row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(given)}
        row["values"] = {o.partition("=")[0].lstrip("+~"): o.partition("=")[2] for o in given}
        if metrics_file.is_file():
            summary = json.loads(metrics_file.read_text())
            row.update(
                status=summary.get("status", "ok"),
                best_val=summary.get(metrics.best(metric)),
                test_acc=summary.get("test/acc"),
                epochs=summary.get("epochs_run"),
                time_s=summary.get("time_s"),
                error=summary.get("error"),
            )
        else:
            # A job writes metrics.json when it ends, even when it fails: none means the
            # process was killed (or is still running, for a report on a live sweep).
            row.update(status="killed", best_val=None, test_acc=None, epochs=None, time_s=None, error=None)
        rows.append(row)
    stages_file = sweep_dir / "stages.yaml"  # written by the coarse-to-fine search
    if stages_file.is_file():
        stage_of = {str(job): stage for stage, node in OmegaConf.load(stages_file).items() for job in node.jobs}
        for row in rows:
            row["stage"] = stage_of.get(row["job"], "")
    return sorted(rows, key=lambda row: metrics.sort_key(row["best_val"], metric))


def report(sweep_dir: Path, metric: str = "val/acc", console: Console | None = None) -> list[dict[str, Any]]:
    """Print the sweep's table and write `summary.csv` in the sweep folder."""
    rows = collect(sweep_dir, metric)
    columns = ["job", "overrides", "best_val", "test_acc", "epochs", "time_s", "status"]
    if rows and "stage" in rows[0]:
        columns.insert(1, "stage")
    keys = swept_keys(rows)
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        # One column per swept key (for pandas and spreadsheets), then every override as typed.
        writer = csv.DictWriter(f, fieldnames=[columns[0], *keys, *columns[1:], "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, **{k: row["values"].get(k, "") for k in keys}} for row in rows)
    # The table shows what differs between jobs; summary.csv keeps every override.
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows)) if len(rows) > 1 else set()
    title = f"Sweep {sweep_dir} (sorted by best {metric})"
    if shared:
        title += f"\nevery job: {' '.join(o for o in rows[0]['overrides'].split() if o in shared)}"
    table = Table(title=title)
    for column in columns:
        table.add_column(f"best {metric}" if column == "best_val" else column.replace("_", " "))

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    def fmt_row(row: dict[str, Any]) -> list[str]:
        differing = " ".join(_short(o) for o in row["overrides"].split() if o not in shared)
        cells = [fmt(differing if c == "overrides" else row[c]) for c in columns]
        if row["time_s"] is not None:
            cells[columns.index("time_s")] = f"{row['time_s']:.1f}"
        return cells

    for row in rows:
        table.add_row(*fmt_row(row))
    (console or Console()).print(table)
    plot(sweep_dir, rows, metric)
    return rows


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The override keys whose value differs between jobs, in the order first seen."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for key in row["values"]:
            seen.setdefault(key, set())
    for row in rows:
        for key in seen:
            seen[key].add(row["values"].get(key, ""))
    return [key for key, values in seen.items() if len(values) > 1]


def numeric(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _short(override: str) -> str:
    """`lr=0.010323260351976565` as `lr=0.01032`: sampled values, readable in a table."""
    key, _, value = override.partition("=")
    try:
        return f"{key}={float(value):.4g}" if len(value) > 8 else override
    except ValueError:
        return override


def searched_values(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """{override key: [(value, best metric)]} for each numeric override that varies across jobs."""
    table: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["status"] != "ok" or row["best_val"] is None or not math.isfinite(row["best_val"]):
            continue
        for override in row["overrides"].split():
            key, _, text = override.partition("=")
            try:
                value = float(text)
            except ValueError:
                continue
            table.setdefault(key, []).append((value, row["best_val"]))
    return {k: v for k, v in table.items() if len({value for value, _ in v}) > 1}


def categorical_keys(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The swept keys with a non-numeric value (optimizer=sgd|adam, augmentation=[...])."""
    return [k for k in keys if any(numeric(r["values"].get(k, "")) is None for r in rows)]


def job_curves(
    sweep_dir: Path, rows: list[dict[str, Any]], metric: str
) -> list[tuple[str, list[int], list[float], Any]]:
    """(label, epochs, values, colour) of each job's `metric` curve (k-fold jobs: each fold's).

    Labelled by the job's swept overrides; the first categorical choice colours the curves
    (one colour per choice, tab10), numeric values (lr) are in the labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept_keys(rows)
    categorical = categorical_keys(rows, keys)
    colour_key = categorical[0] if categorical else None
    choices = sorted({r["values"].get(colour_key, "") for r in rows}) if colour_key else []
    palette = plt.get_cmap("tab10")
    curves = []
    for row in rows:
        job_dir = sweep_dir / row["job"]
        csv_files = [job_dir / "metrics.csv"] if (job_dir / "metrics.csv").is_file() else []
        csv_files = csv_files or sorted(job_dir.glob("fold_*/metrics.csv"))  # k-fold jobs: one curve per fold
        for i, csv_file in enumerate(csv_files):
            with open(csv_file, newline="") as f:
                history = [r for r in csv.DictReader(f) if r.get(metric) not in (None, "")]
            if history:
                label = " ".join(_short(f"{k}={row['values'][k]}") for k in keys if k in row["values"]) or row["job"]
                label = label if len(csv_files) == 1 else f"{label} fold {i}"
                colour = palette(choices.index(row["values"].get(colour_key, "")) % 10) if colour_key else None
                epochs = [int(r["epoch"]) for r in history]
                curves.append((label, epochs, [float(r[metric]) for r in history], colour))
    return curves


def plot(sweep_dir: Path, rows: list[dict[str, Any]], metric: str) -> Path | None:
    """`sweep.png`: every job's validation curve, then the metric against each searched value.

    The second row is the lecture's coarse-to-fine picture: where along a log axis the good
    learning rates (and the rest) lie. Values that are all positive go on a log axis.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = swept_keys(rows)
    categorical = categorical_keys(rows, keys)
    colour_key = categorical[0] if categorical else None
    palette = plt.get_cmap("tab10")
    curves = job_curves(sweep_dir, rows, metric)
    searched = searched_values(rows)
    finished = [r for r in rows if r["status"] == "ok" and r["best_val"] is not None and math.isfinite(r["best_val"])]
    panels = [*searched.items(), *((k, None) for k in categorical)]
    if not curves and not panels:
        return None
    columns, lines = max(1, len(panels)), 2 if panels else 1
    figure, axes = plt.subplots(lines, columns, figsize=(max(6, 5 * columns), 4.5 * lines), squeeze=False)
    curve_axis = axes[0][0]
    styles, used = ["-", "--", ":", "-."], {}
    for label, epochs, values, colour in curves:
        # Jobs that share a colour (the same choice) differ by line style.
        style = styles[used.setdefault(colour, 0) % len(styles)] if colour is not None else "-"
        used[colour] = used.get(colour, 0) + 1
        curve_axis.plot(epochs, values, style, marker="." if len(epochs) < 3 else None, label=label, alpha=0.85,
                        color=colour)  # fmt: skip
    curve_axis.set_xlabel("epoch")
    curve_axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    curve_axis.set_ylabel(metric)
    curve_axis.set_title(f"{metric} of every job" + (f" (colour: {colour_key})" if colour_key else ""))
    for extra in axes[0][1:]:
        extra.axis("off")
    if len(curves) <= 24:
        # The legend beside the curves (in the free space of the first row when there is one).
        handles, labels = curve_axis.get_legend_handles_labels()
        where = axes[0][1] if columns > 1 else curve_axis
        where.legend(handles, labels, fontsize="small", loc="upper left" if columns > 1 else "best")
    for axis, (key, points) in zip(axes[-1] if panels else [], panels, strict=False):
        if points is None:  # a categorical choice: each choice's jobs in its own colour
            names = sorted({r["values"].get(key, "") for r in rows})
            for i, name in enumerate(names):
                ys = [r["best_val"] for r in finished if r["values"].get(key, "") == name]
                axis.scatter([i] * len(ys), ys, color=palette(i % 10), label=name)
            axis.set_xticks(range(len(names)), names, rotation=20 if sum(map(len, names)) > 30 else 0)
            axis.set_xlim(-0.5, len(names) - 0.5)
        else:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            axis.scatter(xs, ys)
            value_axis(axis, xs)
        axis.set_xlabel(key)
        axis.set_ylabel(f"best {metric}")
        axis.set_title(f"best {metric} vs {key}")
    figure.tight_layout()
    path = sweep_dir / "sweep.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def value_axis(axis: Any, xs: list[float]) -> None:
    """A searched value's axis: log when its values are positive (symlog when a 0 joins them,
    as a weight-decay grid's does), and a grid's few values as the ticks, written as typed."""
    from matplotlib.ticker import NullFormatter

    positive = [x for x in xs if x > 0]
    if positive and min(xs) > 0:
        axis.set_xscale("log")
    elif positive and min(xs) == 0 and max(positive) / min(positive) >= 10:
        axis.set_xscale("symlog", linthresh=min(positive))
    axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap within a decade
    distinct = sorted(set(xs))
    if len(distinct) <= 8:
        axis.set_xticks(distinct, [f"{x:g}" for x in distinct])


def assign_gpu(cfg: DictConfig, job_num: int) -> None:
    """On a machine with several GPUs, sweep job n runs on GPU n mod count.

    Parallel jobs (hydra/launcher=joblib) then each get their own GPU instead of all
    sharing cuda:0. Only `trainer.device=auto` is changed; an explicit device is kept.
    """
    if str(cfg.trainer.device) != "auto":
        return
    import torch

    count = torch.cuda.device_count()
    if count > 1:
        cfg.trainer.device = f"cuda:{job_num % count}"


class SweepSummary(Callback):
    """Hydra callback: the sweep report at the end of each multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = report(sweep_dir, str(config.get("optimized_metric", "val/acc")))
            if rows and all(row["status"] != "ok" for row in rows):
                # The sweep went on past each failure; a sweep with no result still fails.
                # SystemExit, because Hydra turns a callback's exceptions into warnings.
                import sys

                print(f"error: every job of the sweep failed; summary.csv in {sweep_dir} says why", file=sys.stderr)
                sys.exit(1)


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (2, 3) or not Path(sys.argv[1]).is_dir():
        print("usage: python -m trainer_cli.sweep <sweep folder> [optimized_metric, default val/acc]", file=sys.stderr)
        sys.exit(2)
    report(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "val/acc")
