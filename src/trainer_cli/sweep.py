"""The sweep report: one table of every job of a multirun, also written as summary.csv, and
`sweep.png` with every job's validation curve and the metric against each searched value.

Runs as a Hydra callback at the end of every multirun, and on demand for any sweep folder:
`python -m trainer_cli.sweep <sweep folder> [optimized_metric]`. Imports no torch at load.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trainer_cli import metrics

if TYPE_CHECKING:  # rich is imported where a table is drawn: every `train`, --help too, imports this module
    from rich.console import Console
    from rich.table import Table


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


SEED_KEY = "seed"  # jobs that differ only by this key are one config, repeated


def report(sweep_dir: Path, metric: str = "val/acc", console: Console | None = None) -> list[dict[str, Any]]:
    """Print the sweep's table and write `summary.csv` in the sweep folder.

    When `seed` is swept, jobs that differ only by it are one config: the table and
    `summary.csv` have a row per config (mean, sd, 95% interval over its seeds; the jobs' own
    rows go to `jobs.csv`), and a line says whether the best config beats the runner-up.
    """
    rows = collect(sweep_dir, metric)
    keys = swept_keys(rows)
    groups = seed_groups(rows, metric) if SEED_KEY in keys else []
    out = console or _console()
    if len(groups) > 1:
        write_jobs_csv(sweep_dir / "jobs.csv", rows, keys)
        write_configs_csv(sweep_dir / "summary.csv", groups, [k for k in keys if k != SEED_KEY])
        out.print(configs_table(sweep_dir, groups, rows, metric))
        out.print(best_versus_runner_up(groups, metric), markup=False)  # a config may read `[flip,crop]`
    else:
        # One config (over seeds, or none): a row per job keeps each job's seed, status and
        # error (a stopped job's command to continue it); one config's statistics go beside.
        write_jobs_csv(sweep_dir / "summary.csv", rows, keys, groups[0] if groups else None)
        out.print(jobs_table(sweep_dir, rows, keys, metric))
        if groups:
            out.print(seed_statistics_line(groups[0], metric), markup=False)
    plot(sweep_dir, rows, metric, groups)
    tensorboard_runs(sweep_dir, rows, keys, metric)
    return rows


# What the report imports that a sweep's own process may not have yet (its jobs ran elsewhere).
REPORT_MODULES = (
    "matplotlib.figure",
    "matplotlib.ticker",
    "scipy.special",
    "tensorboard.backend.event_processing.event_file_loader",
    "tensorboard.plugins.hparams.metadata",
    "tensorboard.summary.writer.event_file_writer",
)


def import_report_modules_meanwhile() -> Any:
    """Import the report's libraries in a background thread while the jobs run in worker
    processes (joblib): this process only waits for them, and the report at the end then starts
    without importing matplotlib, scipy and TensorBoard (about a second). Returns the thread."""
    import importlib
    import threading

    def load() -> None:
        for name in REPORT_MODULES:
            with contextlib.suppress(Exception):  # the report says what is missing, if it is
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="trainer_cli report imports", daemon=True)
    thread.start()
    return thread


def _console() -> Console:
    """The run's console (240 columns off a terminal: a swept value is never cut at 80)."""
    from trainer_cli.report import console

    return console


JOB_COLUMNS = ["job", "overrides", "best_val", "test_acc", "epochs", "time_s", "status"]


STAT_COLUMNS = ["seeds", "mean", "sd", "ci95_low", "ci95_high"]


def write_jobs_csv(
    path: Path, rows: list[dict[str, Any]], keys: list[str], config: dict[str, Any] | None = None
) -> None:
    """One row per job: a column per swept key (for pandas and spreadsheets), then every override
    as typed; with `config` (a sweep of one config over seeds), its statistics in every row."""
    columns = JOB_COLUMNS[:1] + (["stage"] if rows and "stage" in rows[0] else []) + JOB_COLUMNS[1:]
    stats = {c: config[c] for c in STAT_COLUMNS} if config is not None else {}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[columns[0], *keys, *columns[1:], "error", *stats], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, **{k: row["values"].get(k, "") for k in keys}, **stats} for row in rows)


def seed_statistics_line(group: dict[str, Any], metric: str) -> str:
    """One line: a single config's best `metric` over its seeds, mean ± sd and 95% interval."""
    if group["mean"] is None:
        return f"{group['seeds']} seeds finished: no statistics"
    if group["sd"] is None:
        return f"best {metric} over 1 seed: {group['mean']:.4f} (an sd and an interval need 2 seeds)"
    return (
        f"best {metric} over {group['seeds']} seeds: {group['mean']:.4f} ± {group['sd']:.4f} (sd), "
        f"95% interval [{group['ci95_low']:.4f}, {group['ci95_high']:.4f}]"
    )


def write_configs_csv(path: Path, groups: list[dict[str, Any]], keys: list[str]) -> None:
    """One row per config: its swept values, then the statistics over its seeds."""
    columns = ["config", *keys, "seeds", "mean", "sd", "ci95_low", "ci95_high", "jobs", "failed"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for group in groups:
            writer.writerow({**group, **group["values"], "jobs": " ".join(group["jobs"])})


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def jobs_table(sweep_dir: Path, rows: list[dict[str, Any]], keys: list[str], metric: str) -> Table:
    """One row per job, a column per swept key: every swept value is shown whole."""
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows)) if len(rows) > 1 else set()
    title = f"Sweep {sweep_dir} (sorted by best {metric})"
    if shared:
        title += f"\nevery job: {' '.join(o for o in rows[0]['overrides'].split() if o in shared)}"
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))  # cells and titles as text: `[flip,crop]` is no rich markup
    staged = bool(rows) and "stage" in rows[0]
    for column in ["job", *(["stage"] if staged else []), *keys]:
        table.add_column(column, overflow="fold")
    if not keys:  # one job, or jobs that differ in nothing: what each ran with
        table.add_column("overrides", overflow="fold")
    for column in JOB_COLUMNS[2:]:
        table.add_column(f"best {metric}" if column == "best_val" else column.replace("_", " "))
    for row in rows:
        values = [_short_value(row["values"].get(k, "")) for k in keys] or [row["overrides"]]
        stats = [_fmt(row[c]) for c in JOB_COLUMNS[2:]]
        if row["time_s"] is not None:
            stats[JOB_COLUMNS[2:].index("time_s")] = f"{row['time_s']:.1f}"
        cells = [row["job"], *([str(row.get("stage", ""))] if staged else []), *values, *stats]
        table.add_row(*map(Text, cells))
    return table


def configs_table(sweep_dir: Path, groups: list[dict[str, Any]], rows: list[dict[str, Any]], metric: str) -> Table:
    """One row per config: mean ± sd and the 95% interval of its best `metric` over its seeds."""
    from rich.table import Table
    from rich.text import Text

    keys = [k for k in swept_keys(rows) if k != SEED_KEY]
    table = Table(title=Text(f"Sweep {sweep_dir}: {len(groups)} configs x seeds (sorted by mean best {metric})"))
    for column in [*keys, "seeds"]:
        table.add_column(column, overflow="fold")
    for column in (f"best {metric} mean ± sd", "95% interval", "jobs"):
        table.add_column(column)
    for group in groups:
        sd = "" if group["sd"] is None else f" ± {group['sd']:.4f}"
        mean = "-" if group["mean"] is None else f"{group['mean']:.4f}{sd}"
        interval = "-" if group["ci95_low"] is None else f"[{group['ci95_low']:.4f}, {group['ci95_high']:.4f}]"
        failed = f" ({group['failed']} failed)" if group["failed"] else ""
        cells = [*[_short_value(group["values"][k]) for k in keys], str(group["seeds"]), mean, interval,
                 " ".join(group["jobs"]) + failed]  # fmt: skip
        table.add_row(*map(Text, cells))
    return table


def _short_value(value: str) -> str:
    return _short(f"x={value}")[2:]


def describe(values: list[float]) -> dict[str, float | None]:
    """Mean, sample sd (n - 1) and the 95% Student-t interval of the mean; sd and interval need 2 values."""
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "ci95_low": None, "ci95_high": None}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "sd": None, "ci95_low": None, "ci95_high": None}
    from scipy.special import stdtrit  # Student's t quantile (scipy.stats's import is 5x longer)

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stdtrit(n - 1, 0.975)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half}


def welch(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """Welch's t-test of two samples' means (unequal variances): (t, degrees of freedom, two-sided p).

    None when a sample has fewer than 2 values or both have no spread (no test is possible).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.special import stdtr  # Student's t distribution function

    se_a, se_b = (describe(x)["sd"] ** 2 / len(x) for x in (a, b))
    if se_a + se_b == 0:
        return None
    # Welch–Satterthwaite: the degrees of freedom of the difference's standard error.
    df = (se_a + se_b) ** 2 / (se_a**2 / (len(a) - 1) + se_b**2 / (len(b) - 1))
    t = (sum(a) / len(a) - sum(b) / len(b)) / math.sqrt(se_a + se_b)
    return t, df, float(2 * stdtr(df, -abs(t)))


def seed_groups(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The jobs grouped by their swept values but `seed`: one entry per config, best mean first."""
    keys = [k for k in swept_keys(rows) if k != SEED_KEY]
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (len(r["job"]), r["job"])):
        grouped.setdefault(tuple(row["values"].get(k, "") for k in keys), []).append(row)
    groups = []
    for values, members in grouped.items():
        finished = [r["best_val"] for r in members if _finished(r)]
        label = " ".join(_short(f"{k}={v}") for k, v in zip(keys, values, strict=True)) or "every job"
        groups.append({"config": label, "values": dict(zip(keys, values, strict=True)), "scores": finished,
                       "seeds": len(finished), "jobs": [r["job"] for r in members],
                       "failed": sum(r["status"] not in ("ok", "pruned") for r in members),  # pruned is not failed
                       **describe(finished)})  # fmt: skip
    return sorted(groups, key=lambda g: metrics.sort_key(g["mean"], metric))


def _finished(row: dict[str, Any]) -> bool:
    return row["status"] == "ok" and row["best_val"] is not None and math.isfinite(row["best_val"])


def best_versus_runner_up(groups: list[dict[str, Any]], metric: str) -> str:
    """One line: does the best config's mean beat the runner-up's (Welch's t-test, two-sided, 5%)?"""
    ranked = [g for g in groups if g["mean"] is not None]
    if len(ranked) < 2:
        return "best vs runner-up: fewer than two configs finished; nothing to compare"
    best, second = ranked[:2]
    test = welch(best["scores"], second["scores"])
    head = (
        f"best {best['config']} vs runner-up {second['config']} ({metric}, {best['seeds']} and {second['seeds']} seeds)"
    )
    if test is None:
        return f"{head}: no Welch test (each needs 2 seeds and some spread)"
    t, df, p = test
    verdict = "the best beats the runner-up" if p < 0.05 else "not told apart at p < 0.05 (more seeds would tell)"
    return f"{head}: Welch t = {t:.2f}, df = {df:.1f}, p = {p:.3g}: {verdict}"


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


def plot(
    sweep_dir: Path, rows: list[dict[str, Any]], metric: str, groups: list[dict[str, Any]] | None = None
) -> Path | None:
    """`sweep.png`: every job's validation curve, then the metric against each searched value.

    The second row is the lecture's coarse-to-fine picture: where along a log axis the good
    learning rates (and the rest) lie. Values that are all positive go on a log axis. A numeric
    axis's points are coloured by the first categorical choice; with seeds (`groups`), each
    config is its mean with its 95% interval as error bars.
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
    searched = {k: v for k, v in searched_values(rows).items() if k != SEED_KEY}
    finished = [r for r in rows if r["status"] == "ok" and r["best_val"] is not None and math.isfinite(r["best_val"])]
    panels = [*searched.items(), *((k, None) for k in categorical)]
    choices = sorted({r["values"].get(colour_key, "") for r in rows}) if colour_key else []
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
                if groups:
                    members = [g for g in groups if g["values"].get(key, "") == name and g["mean"] is not None]
                    spread = [
                        i + 0.3 * (j - (len(members) - 1) / 2) / max(1, len(members)) for j in range(len(members))
                    ]
                    error_bars(axis, spread, members, palette(i % 10), name)
                else:
                    ys = [r["best_val"] for r in finished if r["values"].get(key, "") == name]
                    axis.scatter([i] * len(ys), ys, color=palette(i % 10), label=name)
            axis.set_xticks(range(len(names)), names, rotation=20 if sum(map(len, names)) > 30 else 0)
            axis.set_xlim(-0.5, len(names) - 0.5)
        else:
            # Coloured by the categorical choice, so that lr's best value per optimizer shows.
            by_choice = choices or [""]
            for i, choice in enumerate(by_choice):
                colour = palette(i % 10) if colour_key else None
                label = f"{colour_key}={choice}" if colour_key else None
                if groups:
                    members = [g for g in groups if g["mean"] is not None and key in g["values"]
                               and (not colour_key or g["values"].get(colour_key, "") == choice)]  # fmt: skip
                    error_bars(axis, [float(g["values"][key]) for g in members], members, colour, label)
                else:
                    mine = [r for r in finished if key in r["values"]
                            and (not colour_key or r["values"].get(colour_key, "") == choice)]  # fmt: skip
                    axis.scatter([float(r["values"][key]) for r in mine], [r["best_val"] for r in mine],
                                 color=colour, label=label)  # fmt: skip
            value_axis(axis, [p[0] for p in points])
            if colour_key:
                axis.legend(fontsize="small")
        axis.set_xlabel(key)
        axis.set_ylabel(f"best {metric}" + (" (mean, 95% interval over seeds)" if groups else ""))
        axis.set_title(f"best {metric} vs {key}")
    figure.tight_layout()
    path = sweep_dir / "sweep.png"
    from trainer_cli.figures import save

    save(figure, path, dpi=100)
    plt.close(figure)
    return path


def error_bars(axis: Any, xs: list[float], groups: list[dict[str, Any]], colour: Any, label: str | None) -> None:
    """Each config's mean at x, its 95% interval over seeds as the error bar (none with one seed)."""
    if not groups:
        return
    ys = [g["mean"] for g in groups]
    low = [g["mean"] - g["ci95_low"] if g["ci95_low"] is not None else 0.0 for g in groups]
    high = [g["ci95_high"] - g["mean"] if g["ci95_high"] is not None else 0.0 for g in groups]
    axis.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=4, color=colour, label=label)


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


def run_name(row: dict[str, Any], keys: list[str]) -> str:
    """A job's name in TensorBoard: its swept overrides, `lr=0.1,optimizer=adam` (a folder name: no `/`)."""
    name = ",".join(f"{k}={row['values'][k]}" for k in keys if k in row["values"]) or f"job {row['job']}"
    return name.replace("/", "_")


def tensorboard_runs(sweep_dir: Path, rows: list[dict[str, Any]], keys: list[str], metric: str) -> Path | None:
    """`<sweep>/tensorboard/<lr=0.1,optimizer=adam>/`: each job's TensorBoard events under its
    swept overrides (copies), and one HParams experiment listing the swept keys first
    (marked as differing, so shown) and the constant ones after them (hidden by default).

    `tensorboard --logdir <sweep>/tensorboard` then names each run by what was swept, not `0/tensorboard`.
    """
    jobs = [(row, sorted((sweep_dir / row["job"] / "tensorboard").glob("events.out.tfevents.*"))) for row in rows]
    jobs = [(row, files) for row, files in jobs if files]
    if not jobs:
        return None
    import shutil

    root = sweep_dir / "tensorboard"
    names: dict[str, int] = {}
    for row, files in sorted(jobs, key=lambda job: (len(job[0]["job"]), job[0]["job"])):
        name = run_name(row, keys)
        names[name] = names.get(name, 0) + 1
        folder = root / (name if names[name] == 1 else f"{name},job={row['job']}")
        folder.mkdir(parents=True, exist_ok=True)
        for file in files:
            # A copy, not a hard link: a sweep folder holds no links (run_folder.refuse_links), so
            # a link here would stop the same sweep from resuming in its folder. Copied again at
            # each report: the job's file may have grown.
            target = folder / file.name
            target.unlink(missing_ok=True)  # never write through what is there
            shutil.copy2(file, target)
    write_hparams_experiment(root, [files for _, files in jobs], keys, metric)
    return root


def write_hparams_experiment(root: Path, event_files: list[list[Path]], keys: list[str], metric: str) -> None:
    """The sweep's HParams experiment: swept keys first (`differs`: TensorBoard shows them), then constants."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    values: dict[str, list[Any]] = {}
    tag = metadata.SESSION_START_INFO_TAG.encode()
    for files in event_files:
        for file in files:
            # Only the one event that holds the job's hyperparameters is parsed: a job's file
            # has a few scalars per epoch, and parsing them all took a second at 100 epochs.
            for record in RawEventFileLoader(str(file)).Load():
                if tag not in record:
                    continue
                for value in event_pb2.Event.FromString(record).summary.value:
                    if value.tag == metadata.SESSION_START_INFO_TAG:
                        content = value.metadata.plugin_data.content
                        start = metadata.parse_session_start_info_plugin_data(content)
                        for key, given in start.hparams.items():
                            values.setdefault(key, []).append(given)
    if not values:
        return
    differing = [k for k in keys if k in values] + [
        k for k in values if k not in keys and len({str(v) for v in values[k]}) > 1
    ]
    constant = sorted(k for k in values if k not in differing)
    infos = []
    for key in [*differing, *constant]:
        kind = values[key][0].WhichOneof("kind")
        data_type = {"number_value": api_pb2.DATA_TYPE_FLOAT64, "bool_value": api_pb2.DATA_TYPE_BOOL}.get(
            kind, api_pb2.DATA_TYPE_STRING
        )
        infos.append(api_pb2.HParamInfo(name=key, type=data_type, differs=key in differing))
    scores = [metrics.best(metric), metrics.best("val/loss" if metric != "val/loss" else "val/acc"), "test/acc"]
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"hparam/{tag}")) for tag in dict.fromkeys(scores)]
    for old in root.glob("events.out.tfevents.*"):
        old.unlink()  # the sweep's own experiment from an earlier report
    writer = EventFileWriter(str(root))
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metric_infos)
    plugin_data = plugin_data_pb2.HParamsPluginData(experiment=experiment, version=metadata.PLUGIN_DATA_VERSION)
    summary = Summary(
        value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=metadata.create_summary_metadata(plugin_data))]
    )
    writer.add_event(event_pb2.Event(summary=summary))
    writer.close()


def expand_seeds(argv: list[str]) -> list[str]:
    """`seeds=N` on the command line: the run or sweep repeated over `seed=0..N-1` (a multirun).

    Any `seed=` given beside it is refused (two sources for one key); with `-m` the seeds
    multiply the sweep's jobs.
    """
    from trainer_cli.config import UserError

    given = [a for a in argv if a.split("=", 1)[0] == "seeds"]
    if not given:
        return argv
    text = given[-1].split("=", 1)[1]
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"seeds: '{text}' is not accepted; a whole number of seeds >= 1 (seeds=3 runs seed=0,1,2)")
    if any(a.split("=", 1)[0].lstrip("+~") == SEED_KEY for a in argv):
        raise UserError("seeds: give either seeds=N or seed=..., not both")
    out = [a for a in argv if a.split("=", 1)[0] != "seeds"]
    out.append(f"{SEED_KEY}={','.join(str(i) for i in range(int(text)))}")
    return out if any(a in ("-m", "--multirun") for a in out) else ["-m", *out]


@contextlib.contextmanager
def one_line_per_job(metric: str) -> Iterator[dict[str, Any]]:
    """A sweep job prints one line (its swept overrides, best metric, time); its model summary,
    epochs and results table go to its train.log and folder only. Yields the dict for the summary."""
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console
    from rich.text import Text

    from trainer_cli.report import console, quiet_console

    hydra_cfg = HydraConfig.get()
    started, outcome = time.perf_counter(), {}
    overrides = " ".join(_short(o) for o in hydra_cfg.overrides.task)
    try:
        # On a terminal, the running job on a status line (gone when its line is printed); the
        # job's own console is quiet, so the status has a console of its own on the same stream.
        running = Console().status(Text(f"job {hydra_cfg.job.num}: {overrides}")) if console.is_terminal else None
        with running or contextlib.nullcontext(), quiet_console():
            yield outcome
    except BaseException as error:  # a stop signal's checkpointed stop is no failure: say which
        outcome["status"] = "preempted" if type(error).__name__ == "Preempted" else "failed"
        raise
    finally:
        summary = outcome.get("summary") or {}
        best = summary.get(metrics.best(metric))
        status = summary.get("status", outcome.get("status", "failed"))
        result = f"best {metric} {best:.4f}" if isinstance(best, float) else status
        # Not markup: a swept list (`augmentation=[flip,crop]`) is text, not a rich style tag.
        line = f"job {hydra_cfg.job.num}: {overrides}: {result} ({time.perf_counter() - started:.1f} s)"
        console.print(line, markup=False)


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


def refuse_a_foreign_folder(sweep_dir: Path) -> None:
    """A sweep starts in a new or empty folder, or continues its own (a folder holding its
    record, `search.yaml`, whose sweeper compares the search space): Hydra writes the sweep's
    `multirun.yaml` there before any job claims its folder."""
    from trainer_cli.errors import UserError
    from trainer_cli.run_folder import SEARCH_RECORD

    if not sweep_dir.is_dir() or (sweep_dir / SEARCH_RECORD).is_file() or not any(sweep_dir.iterdir()):
        return
    raise UserError(
        f"hydra.sweep.dir: {sweep_dir} is not empty and holds no sweep record ({SEARCH_RECORD}); a new sweep "
        "starts in a new or empty folder"
    )


class SweepSummary(Callback):
    """Hydra callback: the sweep report at the end of each multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The sweep folder's report files are written by this process: never through a link.
        from trainer_cli.errors import UserError
        from trainer_cli.faults import refuse_link_on_the_way
        from trainer_cli.run_folder import refuse_links

        try:
            refuse_links(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
            named = {arg.partition("=")[0].lstrip("+~") for arg in config.hydra.overrides.hydra}
            if "hydra.sweep.dir" not in named:  # a folder from a file or the default: no link on its way
                refuse_link_on_the_way(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
            refuse_a_foreign_folder(Path(config.hydra.sweep.dir))
        except UserError as error:  # SystemExit: Hydra turns a callback's exceptions into warnings
            import sys

            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

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
