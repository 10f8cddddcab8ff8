"""The lecture's steps 4 and 5: a coarse grid over the learning rate and the weight decay, a
few epochs each (`grid`), then a finer grid around its best point trained longer at a
constant LR, without decay (`refine`).

Each point is a `train.run` of the composed config (the run's own loop, nothing copied) in
`grid/<n>` or `refine/<n>`, recorded like a Hydra multirun's job (`.hydra/overrides.yaml`),
so the sweep report that ends `hparams_search=grid` (`trainer_cli.sweep.report`) prints the
table and writes `summary.csv` and `sweep.png` for it. In-process rather than a nested
`train -m`: the diagnosis runs on the composed config, which a second Hydra launch from
inside a Hydra job could not be handed whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer_cli.config import derive
from trainer_cli.diagnose.context import Context, _key
from trainer_cli.verdict import Verdict, worst

# The weight decay is the `l2` regularization option's (conf/regularization/l2.yaml: the
# lecture's L2 in the loss), as in `hparams_search=grid`.
WEIGHT_DECAY_KEY = "regularization.l2.weight_decay"


def _option(group: str, name: str) -> DictConfig:
    from trainer_cli.config import CONF_DIR

    return OmegaConf.load(Path(CONF_DIR) / group / f"{name}.yaml")


def point_config(cfg: DictConfig, lr: float, weight_decay: float, epochs: int, constant_lr: bool) -> DictConfig:
    """The run's config at one grid point: `lr`, L2 weight decay `weight_decay` (the user's
    own `l2` node when there is one, else the option's), `epochs`; with `constant_lr` the
    constant schedule instead of the configured one. A new config: `cfg` is read-only."""

    def at_point(config: DictConfig) -> None:
        config.lr = None  # `optimizer.lr` is the one value after resolve
        config.optimizer.lr = lr
        config.epochs = epochs
        if config.get("regularization") is None:  # only switches chosen (dropout): no node left
            config.regularization = {}
        if "l2" not in config.regularization:
            config.regularization.l2 = _option("regularization", "l2").l2
        config.regularization.l2.weight_decay = weight_decay
        if constant_lr:
            config.scheduler = _option("scheduler", "constant")

    return derive(cfg, at_point)


def train_points(
    ctx: Context, folder: Path, points: list[tuple[float, float]], epochs: int, constant_lr: bool
) -> list[dict[str, Any]]:
    """Train every (lr, weight decay) point; returns the sweep report's rows, best first."""
    from trainer_cli import metrics, sweep
    from trainer_cli.loop import NonFiniteLoss
    from trainer_cli.report import console, quiet_console, record_failure
    from trainer_cli.train import run

    metric = str(ctx.cfg.optimized_metric)
    for number, (lr, weight_decay) in enumerate(points):
        job = folder / str(number)
        overrides = [f"lr={lr:g}", f"{WEIGHT_DECAY_KEY}={weight_decay:g}", f"epochs={epochs}"]
        overrides += ["scheduler=constant"] if constant_lr else []
        (job / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
        point = f"{folder.name} point {number + 1}/{len(points)}: lr {lr:g}, weight decay {weight_decay:g}"
        try:
            with quiet_console():  # each point's files and train.log as any run's; one line here
                summary = run(point_config(ctx.cfg, lr, weight_decay, epochs, constant_lr), job)
            best = summary.get(metrics.best(metric))
            console.print(f"{point}: best {metric} " + (f"{best:.4f}" if isinstance(best, float) else str(best)))
        except NonFiniteLoss as error:  # a diverged point is a result, as a failed sweep job is
            record_failure(job, error, {"lr": lr, "weight_decay": weight_decay})
            console.print(f"{point}: diverged")
    return sweep.report(folder, str(ctx.cfg.optimized_metric), console)


def regularization_overrides(ctx: Context, weight_decay: float) -> list[str]:
    """The overrides that train with L2 at `weight_decay`: the user's regularization list
    (from their command line) plus `l2`; none for no decay when the user chose no `l2`."""
    chosen = next((o.strip("'") for o in ctx.base_overrides if _key(o) == "regularization"), "regularization=[]")
    names = [n.strip() for n in chosen.split("=", 1)[1].strip("[]").split(",") if n.strip() not in ("", "none")]
    if weight_decay == 0 and "l2" not in names:
        return []
    names += [] if "l2" in names else ["l2"]
    return [f"'regularization=[{','.join(names)}]'", f"{WEIGHT_DECAY_KEY}={weight_decay:g}"]


def _rounded(value: float) -> float:
    """Two significant digits: the value the next command types is the one that ran."""
    return float(f"{value:.2g}")


def _finished(row: dict[str, Any]) -> bool:
    return row["status"] == "ok" and row["best_val"] is not None and math.isfinite(row["best_val"])


def _results(rows: list[dict[str, Any]], metric: str) -> dict[str, str]:
    """Each point's line for the panel, in the order the points ran."""
    numbers = {}
    for row in sorted(rows, key=lambda r: int(r["job"])):
        point = f"lr {row['values']['lr']}, wd {row['values'][WEIGHT_DECAY_KEY]}"
        if _finished(row):
            numbers[point] = f"best {metric} {row['best_val']:.4f}"
        else:
            numbers[point] = "diverged" if row["status"] == "failed" else str(row["status"])
    return numbers


def _search(ctx: Context, step: str, lrs: list[float], decays: list[float], epochs: int, constant_lr: bool):
    """Train the grid `lrs` x `decays` in `<run folder>/<step>`; (numbers, the best row and
    its history, the figure) or, when no point finished, a FAIL verdict."""
    from trainer_cli.diagnose.curves import read_history

    folder = ctx.folder(step)
    metric = str(ctx.cfg.optimized_metric)
    rows = train_points(ctx, folder, [(lr, wd) for lr in lrs for wd in decays], epochs, constant_lr)
    numbers, finished = _results(rows, metric), [r for r in rows if _finished(r)]  # rows: best first
    figure = f"{folder.name}/sweep.png"
    if not finished:
        return Verdict(
            step,
            "FAIL",
            f"every point diverged (lr {lrs[0]:g} to {lrs[-1]:g})",
            numbers,
            ["learning rate too high", "bad initialization", "bug in code"],
            ctx.command("diagnose=lr_range"),
            [figure] if (folder / "sweep.png").is_file() else [],
        )
    best = finished[0]
    return numbers, best, read_history(folder / best["job"]), figure, finished


def symmetric(ctx: Context, step: str, numbers: dict[str, Any], figure: str) -> Verdict | None:
    """FAIL when the initial weights have units with identical weights (a constant init): no
    LR or weight decay breaks that symmetry, so the grid's best point says nothing."""
    from trainer_cli.diagnose.context import fresh, plain
    from trainer_cli.diagnose.overfit import identical_units

    layers = identical_units(fresh(plain(ctx.cfg)).model)
    if not layers:
        return None
    return Verdict(
        step,
        "FAIL",
        "no point of the grid can help: the initial weights have units with identical weights",
        {**numbers, "identical units": ", ".join(layers)},
        [
            f"bad initialization (units with identical weights in {', '.join(layers)}: a constant init breaks no "
            "symmetry)"
        ],
        ctx.command("model.init=default", "diagnose=all"),
        [figure],
    )


def grid(ctx: Context) -> Verdict:
    """The coarse grid: `grid_lr_factors` times the LR the `lr` step found (or the configured
    one) by `grid_weight_decays`, `grid_epochs` epochs each, with the configured schedule."""
    options = ctx.options
    configured = float(ctx.cfg.optimizer.lr)
    center = float(ctx.found.get("lr", configured))
    lrs = sorted({_rounded(center * float(f)) for f in options["grid_lr_factors"]})
    decays = sorted({float(w) for w in options["grid_weight_decays"]}, reverse=True)
    epochs = int(options["grid_epochs"])
    found = _search(ctx, "grid", lrs, decays, epochs, constant_lr=False)
    if isinstance(found, Verdict):
        return found
    numbers, best, history, figure, _ = found
    best_lr, best_decay = float(best["values"]["lr"]), float(best["values"][WEIGHT_DECAY_KEY])
    ctx.found.update(lr=best_lr, weight_decay=best_decay)
    metric = str(ctx.cfg.optimized_metric)
    numbers.update({"epochs each": epochs, "centred on lr": center, "best": f"lr {best_lr:g}, wd {best_decay:g}"})
    if best_lr in (lrs[0], lrs[-1]) and len(lrs) > 1:
        numbers["note"] = "the best LR is at the edge of the grid: the refinement looks beyond it"
    next_command = ctx.command(f"lr={best_lr:g}", *regularization_overrides(ctx, best_decay), "diagnose=refine")
    if (verdict := symmetric(ctx, "grid", numbers, figure)) is not None:
        return verdict
    chance = 1.0 / int(ctx.cfg.data.num_classes)
    val_acc = max(float(row["val/acc"]) for row in history)
    if val_acc < 2 * chance:
        return Verdict(
            "grid",
            "FAIL",
            f"no point of the grid learns: the best reaches val acc {val_acc:.3f} (chance {chance:.3f})",
            numbers,
            ["errors in training labels", "bad initialization", "bug in code"],
            ctx.command("diagnose=overfit"),
            [figure],
        )
    # Short runs favour larger LRs (a healthy Adam run's grid prefers 30x its lr=1e-3 after 2
    # epochs): only two orders of magnitude or more say the configured LR is wrong.
    if not best_lr / 100 <= configured <= best_lr * 100:
        side = "too high" if configured > best_lr else "too low"
        return Verdict(
            "grid",
            "WARN",
            f"the grid's best lr {best_lr:g} (wd {best_decay:g}) is more than 100x from the configured {configured:g}",
            numbers,
            [f"learning rate {side}"],
            next_command,
            [figure],
        )
    return Verdict(
        "grid",
        "PASS",
        f"best point lr {best_lr:g}, weight decay {best_decay:g}: best {metric} {best['best_val']:.4f} "
        f"after {epochs} epochs",
        numbers,
        [],
        next_command,
        [figure],
    )


# Curves rules that say the LR is too high for a run: the refinement then tries a lower LR.
UNSTABLE = ("diverging", "noisy")


def lower_if_unstable(
    ctx: Context, best: dict[str, Any], history: list, finished: list[dict[str, Any]], rules: dict, numbers: dict
) -> tuple[dict[str, Any], list]:
    """The best point, or, when its curves diverge or are noisy, the next lower LR at the same
    weight decay (a finished point of the grid, else one more point trained at half the LR):
    the refinement does not fail at the grid's LR without trying the next lower one."""
    from trainer_cli.diagnose.curves import findings, read_history

    if not any(f.rule in UNSTABLE for f in findings(history, rules)):
        return best, history
    lr, decay = float(best["values"]["lr"]), float(best["values"][WEIGHT_DECAY_KEY])
    lower = [r for r in finished if float(r["values"]["lr"]) < lr and float(r["values"][WEIGHT_DECAY_KEY]) == decay]
    if lower:
        chosen = max(lower, key=lambda r: float(r["values"]["lr"]))
        chosen_history = read_history(ctx.folder("refine") / chosen["job"])
    else:
        folder = ctx.folder("refine_lower")
        epochs = int(ctx.options["refine_epochs"])
        rows = [r for r in train_points(ctx, folder, [(_rounded(lr / 2), decay)], epochs, True) if _finished(r)]
        if not rows:
            numbers["lower lr"] = f"{_rounded(lr / 2):g} diverged too"
            return best, history
        chosen, chosen_history = rows[0], read_history(folder / rows[0]["job"])
    numbers["lower lr"] = f"lr {lr:g} was unstable at a constant LR; took lr {chosen['values']['lr']}"
    return chosen, chosen_history


def refine(ctx: Context) -> Verdict:
    """The finer grid around the best coarse point (or the configured LR and L2 weight
    decay): `refine_lr_factors` x `refine_weight_decay_factors`, `refine_epochs` epochs at a
    constant LR; the best point's curves are read by the curves rules."""
    from trainer_cli.diagnose.curves import findings, one_ranked_list

    options = ctx.options
    cfg = ctx.cfg
    center_lr = float(ctx.found.get("lr", cfg.optimizer.lr))
    own_decay = float(cfg.regularization.l2.weight_decay) if "l2" in (cfg.get("regularization") or {}) else 0.0
    center_decay = float(ctx.found.get("weight_decay", own_decay))
    lrs = sorted({_rounded(center_lr * float(f)) for f in options["refine_lr_factors"]})
    decays = sorted({_rounded(center_decay * float(f)) for f in options["refine_weight_decay_factors"]})
    epochs = int(options["refine_epochs"])
    found = _search(ctx, "refine", lrs, decays[::-1], epochs, constant_lr=True)
    if isinstance(found, Verdict):
        return found
    numbers, best, history, figure, finished = found
    rules = {**options, "num_classes": int(cfg.data.num_classes)}
    best, history = lower_if_unstable(ctx, best, history, finished, rules, numbers)
    best_lr, best_decay = float(best["values"]["lr"]), float(best["values"][WEIGHT_DECAY_KEY])
    ctx.found.update(lr=best_lr, weight_decay=best_decay)
    used = sorted({float(row["lr"]) for row in history})  # the schedule the run really used
    numbers.update(
        {
            "epochs each": epochs,
            "best": f"lr {best_lr:g}, wd {best_decay:g}",
            "lr per epoch (best point)": f"constant {used[0]:g}" if len(used) == 1 else ", ".join(map(str, used)),
        }
    )
    if (verdict := symmetric(ctx, "refine", numbers, figure)) is not None:
        return verdict
    # "Still improving" is not read here: the refinement's runs are short on purpose, and
    # training longer is the next command anyway.
    found_rules = [f for f in findings(history, rules) if f.rule != "still_improving"]
    metric = str(cfg.optimized_metric)
    train_command = ctx.command(f"lr={best_lr:g}", *regularization_overrides(ctx, best_decay))
    if found_rules:
        found_rules.sort(key=lambda f: f.status != "FAIL")  # FAIL first: one ranked answer
        numbers["findings"] = ", ".join(f.rule for f in found_rules)
        overrides = found_rules[0].overrides  # the next command tests the top finding
        return Verdict(
            "refine",
            worst([f.status for f in found_rules]),
            f"best point lr {best_lr:g}, wd {best_decay:g}; its curves: " + "; ".join(f.summary for f in found_rules),
            numbers,
            one_ranked_list([c for f in found_rules for c in f.causes]),
            ctx.command(f"lr={best_lr:g}", *regularization_overrides(ctx, best_decay), *overrides),
            [figure],
        )
    return Verdict(
        "refine",
        "PASS",
        f"best point lr {best_lr:g}, weight decay {best_decay:g}: best {metric} {best['best_val']:.4f} after "
        f"{epochs} epochs at a constant LR",
        numbers,
        [],
        train_command,
        [figure],
    )
