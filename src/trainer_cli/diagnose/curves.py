"""The lecture's step 6: read a run's loss and accuracy curves. Each rule is a small
function of the per-epoch history (`metrics.csv` rows) that returns a finding or None."""

from __future__ import annotations

import copy
import csv
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainer_cli.diagnose.context import Context
from trainer_cli.diagnose.examine import examine
from trainer_cli.verdict import STATUSES, Verdict, worst

Row = dict[str, Any]


@dataclass
class Finding:
    """What one rule saw: its status, a sentence, the lecture's causes, the next overrides."""

    rule: str
    status: str
    summary: str
    causes: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


def column(history: list[Row], name: str) -> list[float]:
    return [float(row[name]) for row in history]


def optional_column(history: list[Row], name: str) -> list[float]:
    """A column only some epochs have (the training-health readings): its values where present."""
    return [float(row[name]) for row in history if row.get(name) not in (None, "")]


def diverging(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """A non-finite loss, or a training loss that ends far above its best."""
    losses = column(history, "train/loss")
    if any(not math.isfinite(x) for x in losses) or losses[-1] > 2 * min(losses):
        return Finding(
            "diverging",
            "FAIL",
            f"the training loss diverges (best {min(losses):.4g}, last {losses[-1]:.4g})",
            ["learning rate too high", "bad initialization"],
            ["lr=<lr/10>"],
        )
    return None


def not_decreasing(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """The training loss ends within 5% of where it started."""
    losses = column(history, "train/loss")
    if len(losses) >= 2 and math.isfinite(losses[-1]) and losses[-1] > 0.95 * losses[0]:
        return Finding(
            "not_decreasing",
            "FAIL",
            f"the training loss is not going down ({losses[0]:.4g} → {losses[-1]:.4g})",
            ["learning rate too low", "bad initialization", "bug in code or errors in training labels"],
            ["diagnose=lr_range"],
        )
    return None


def labels_unrelated(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """The training loss goes down while validation accuracy stays near chance (below twice
    chance): what the model learns of the training labels says nothing about unseen images."""
    chance = 1.0 / int(options["num_classes"])
    losses = column(history, "train/loss")
    train_acc, val_acc = max(column(history, "train/acc")), max(column(history, "val/acc"))
    if val_acc < 2 * chance and losses[-1] < 0.95 * losses[0]:
        return Finding(
            "labels_unrelated",
            "FAIL",
            f"validation accuracy stays near chance ({val_acc:.3f}, chance "
            f"{chance:.3f}) while training accuracy reaches {train_acc:.3f}",
            [
                "errors in training labels (labels unrelated to the images)",
                "bug in code (inputs and labels out of step)",
            ],
            ["diagnose=overfit"],
        )
    return None


def high_bias(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """The model cannot fit its own training set."""
    threshold = float(options["fit_threshold"])
    train_acc = max(column(history, "train/acc"))
    if train_acc < threshold:
        return Finding(
            "high_bias",
            "WARN",
            f"training accuracy peaks at {train_acc:.3f} (< {threshold})",
            ["large bias: a bigger model (model.width, model.depth), more features, train longer"],
            ["model.width=<2x>", "epochs=<2x>"],
        )
    return None


def high_variance(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """It fits training but not validation: the train-val gap at the best validation epoch."""
    gap_tolerance = float(options["gap_tolerance"])
    best = max(range(len(history)), key=lambda i: float(history[i]["val/acc"]))
    gap = float(history[best]["train/acc"]) - float(history[best]["val/acc"])
    if gap > gap_tolerance:
        return Finding(
            "high_variance",
            "WARN",
            f"train accuracy is {gap:.3f} above validation (> {gap_tolerance})",
            ["large variance: more data, regularization (weight decay, dropout, augmentation)"],
            ["'regularization=[l2]'"],
        )
    return None


def noisy(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """The training loss goes up between epochs often and by much: rises in more than a third
    of the epochs, the mean rise above 10% of the loss."""
    losses = column(history, "train/loss")
    rises = [(b - a) / a for a, b in zip(losses, losses[1:], strict=False) if b > a and a > 0]
    if len(losses) >= 4 and len(rises) > (len(losses) - 1) / 3 and statistics.fmean(rises) > 0.1:
        return Finding(
            "noisy",
            "WARN",
            f"the training loss rises in {len(rises)} of {len(losses) - 1} epochs",
            ["batch size too small or learning rate too high"],
            ["batch_size=<2x>", "lr=<lr/3>"],
        )
    return None


def still_improving(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """Validation loss still falling over the last fifth of the epochs (by more than 2%)."""
    losses = column(history, "val/loss")
    tail = max(2, len(losses) // 5)
    if len(losses) > tail and losses[-1] < 0.98 * min(losses[: -tail + 1] or losses[:1]):
        return Finding(
            "still_improving",
            "WARN",
            f"validation loss still falls at the end ({losses[-tail]:.4g} → "
            f"{losses[-1]:.4g} over the last {tail} epochs)",
            ["train longer"],
            ["epochs=<2x>"],
        )
    return None


def plateau_then_drop(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """The training loss stays within 5% of its first epoch's for `plateau_epochs` (2) epochs
    or more, then falls below 70% of it: the lecture's picture of a bad initialization (the
    signal or the gradient is too small until the weights grow)."""
    losses = column(history, "train/loss")
    if not all(math.isfinite(x) for x in losses):
        return None
    flat = next((i for i, x in enumerate(losses) if x < 0.95 * losses[0]), len(losses))
    if flat >= int(options["plateau_epochs"]) and flat < len(losses) and losses[-1] < 0.7 * losses[0]:
        return Finding(
            "plateau_then_drop",
            "WARN",
            f"the training loss stays flat for {flat} epochs ({losses[0]:.4g} → {losses[flat - 1]:.4g}), "
            f"then drops to {losses[-1]:.4g}",
            ["bad initialization (weights too small: the signal and the gradient vanish at first)"],
            ["model.init=kaiming_normal"],
        )
    return None


# The lecture's rule of thumb for ||ΔW|| / ||W|| per step (CS231n: "somewhere around 1e-3").
UPDATE_RATIO_TARGET = 1e-3


def update_ratio(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """The median over the epochs of the update/weight ratio (each epoch's median over its
    weight matrices and log windows) more than `update_ratio_tolerance` (30x) from ~1e-3."""
    ratios = optional_column(history, "update_ratio")
    if not ratios:
        return None
    typical = statistics.median(ratios)
    tolerance = float(options["update_ratio_tolerance"])
    if typical > UPDATE_RATIO_TARGET * tolerance:
        side, override = "high", "lr=<lr/10>"
    elif typical < UPDATE_RATIO_TARGET / tolerance:
        side, override = "low", "lr=<10x lr>"
    else:
        return None
    return Finding(
        "update_ratio",
        "WARN",
        f"the update/weight ratio is {typical:.2g} per step, far from ~1e-3 (more than {tolerance:g}x {side})",
        [f"learning rate too {side}"],
        [override],
    )


def last_unit_fraction(history: list[Row], kind: str, tolerance: float) -> tuple[float, Any] | None:
    """The last recorded `<kind>_fraction` (dead or saturated units of the worst layer) and its
    `<kind>_layer`, when above `tolerance`; else None."""
    rows = [row for row in history if row.get(f"{kind}_fraction") not in (None, "")]
    if not rows or float(rows[-1][f"{kind}_fraction"]) <= tolerance:
        return None
    return float(rows[-1][f"{kind}_fraction"]), rows[-1].get(f"{kind}_layer")


def dead_units(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """At the last epoch, more than `dead_tolerance` (40%) of a ReLU layer's units output 0
    for every image of the probe batch (CS231n: "as much as 40% of your network can be dead")."""
    worst = last_unit_fraction(history, "dead", float(options["dead_tolerance"]))
    if worst is None:
        return None
    fraction, layer = worst
    return Finding(
        "dead_units",
        "WARN",
        f"{fraction:.0%} of the ReLU units of layer {layer} are dead (never active on the probe batch)",
        ["dead ReLUs: learning rate too high (a large update pushed them where they never fire)", "bad initialization"],
        ["lr=<lr/3>", "model.activation=leaky_relu"],
    )


def saturated_units(history: list[Row], options: dict[str, Any]) -> Finding | None:
    """At the last epoch, more than `saturation_tolerance` (30%) of a tanh/sigmoid layer's
    outputs are within 0.01 of their bounds, where the local gradient is nearly 0."""
    worst = last_unit_fraction(history, "saturated", float(options["saturation_tolerance"]))
    if worst is None:
        return None
    fraction, layer = worst
    return Finding(
        "saturated_units",
        "WARN",
        f"{fraction:.0%} of layer {layer}'s tanh/sigmoid outputs are saturated (gradient nearly 0)",
        ["bad initialization: weights too large (use Xavier for tanh)", "inputs not normalized"],
        ["model.init=xavier_normal"],
    )


RULES = (
    diverging, not_decreasing, labels_unrelated, high_bias, high_variance, noisy, still_improving,
    plateau_then_drop, update_ratio, dead_units, saturated_units,
)  # fmt: skip
# Rules still read when the loss diverged or stayed flat (they name its cause); the others
# (bias, variance, noise, ...) say nothing about a run that did not train.
EXPLAIN_FAILURE = ("diverging", "not_decreasing", "labels_unrelated", "update_ratio", "dead_units", "saturated_units")


def findings(history: list[Row], options: dict[str, Any]) -> list[Finding]:
    """Every rule's finding; a diverged or flat run is not also judged on bias or variance."""
    found = [f for rule in RULES if (f := rule(history, options)) is not None]
    if any(f.rule in ("diverging", "not_decreasing") for f in found):
        found = [f for f in found if f.rule in EXPLAIN_FAILURE]
    return found


def read_history(run_dir: Path) -> list[Row]:
    """A finished run's per-epoch rows, from its metrics.csv."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        from trainer_cli.config import UserError

        raise UserError(f"mode.finished_run: {run_dir} has no metrics.csv; give a folder a training run wrote")
    with open(path) as f:
        return list(csv.DictReader(f))


def judge(history: list[Row], options: dict[str, Any], command) -> Verdict:
    """The curves' verdict: the worst finding's status, every finding's causes."""
    found = findings(history, options)
    last = history[-1]
    numbers = {
        "epochs": len(history),
        "train loss / acc (last)": f"{float(last['train/loss']):.4g} / {float(last['train/acc']):.3f}",
        "val loss / acc (last)": f"{float(last['val/loss']):.4g} / {float(last['val/acc']):.3f}",
        "best val acc": max(column(history, "val/acc")),
    }
    ratios = optional_column(history, "update_ratio")
    if ratios:
        numbers["update/weight ratio (median over epochs)"] = statistics.median(ratios)
    for kind, label in (("dead_fraction", "dead ReLU units"), ("saturated_fraction", "saturated tanh/sigmoid")):
        values = optional_column(history, kind)
        if values:
            numbers[f"{label} (worst layer, last epoch)"] = f"{values[-1]:.1%}"
    if not found:
        return Verdict(
            "curves", "PASS", "loss goes down, training and validation agree, the run has converged", numbers, [], ""
        )
    found = sorted(found, key=lambda f: -STATUSES.index(f.status))  # FAIL first, then the rules' order
    numbers["findings"] = ", ".join(f.rule for f in found)
    return Verdict(
        "curves",
        worst([f.status for f in found]),
        "; ".join(f.summary for f in found),
        numbers,
        one_ranked_list([c for f in found for c in f.causes]),
        command(*found[0].overrides),  # the next command tests the top finding
    )


# Words whose fixes go opposite ways: a ranked list keeps the first of each pair it meets.
OPPOSITE_WORDS = (("too high", "too low"), ("large bias", "large variance"))


def one_ranked_list(causes: list[str]) -> list[str]:
    """The causes in order, each once, without one whose opposite is already listed."""
    kept: list[str] = []
    for cause in causes:
        flipped = [cause.replace(a, b) if a in cause else cause.replace(b, a) for a, b in OPPOSITE_WORDS]
        if cause not in kept and not any(
            f != cause and f.split(":")[0] in [k.split(":")[0] for k in kept] for f in flipped
        ):
            kept.append(cause)
    return kept


def curves(ctx: Context) -> Verdict:
    """Diagnose `mode.finished_run`'s curves, or train the configured run first (in `run/`)
    and read its curves with the signals on a fixed probe batch (`examine`): one ranked
    answer, whose next command tests the top cause."""
    folder = ctx.options["finished_run"]  # null in the yaml: train the config first
    if folder:
        run_dir = Path(str(folder))
        options = {**ctx.options, "num_classes": int(ctx.cfg.data.num_classes)}
        verdict = judge(read_history(run_dir), options, ctx.command)
    else:
        run_dir = ctx.run_dir / "run"
        verdict = judge_evidence(examine(copy.deepcopy(ctx.cfg), run_dir), ctx)
    verdict.numbers = {"run": str(run_dir), **verdict.numbers}
    if (run_dir / "curves.png").is_file():
        verdict.figures.append(os.path.relpath(run_dir / "curves.png", ctx.run_dir))
    return verdict


def judge_evidence(evidence: dict[str, Any], ctx: Context) -> Verdict:
    """The verdict from the rules' ranked findings: PASS when none; else FAIL for a cause
    measured directly or a run that did not learn, WARN otherwise."""
    from trainer_cli.diagnose.causes import CAUSES
    from trainer_cli.diagnose.rules import findings, rank

    ranked = rank(findings(evidence))
    numbers: dict[str, Any] = {
        k: evidence[k]
        for k in ("epochs", "train loss last", "train acc best", "val acc best", "update ratio")
        if k in evidence
    }
    if not ranked:
        return Verdict("curves", "PASS", "loss goes down, training and validation agree, the run converged", numbers)
    top = ranked[0]
    numbers.update({f"evidence ({f.cause})": f.evidence for f in ranked})
    learned = float(evidence.get("val acc best", 0.0)) > 0.5
    status = "FAIL" if top.strength >= 2.5 or not learned else "WARN"
    return Verdict(
        "curves",
        status,
        f"{CAUSES[top.cause].words}: {top.evidence}",
        numbers,
        [CAUSES[f.cause].words for f in ranked],
        ctx.command(*CAUSES[top.cause].next_overrides),
    )


def diagnose_finished_run(run_dir: Path) -> Verdict:
    """`trainer.diagnose_at_end=true` (cli.execute, after the run): the curves' verdict on the
    run that just ended, from its metrics.csv and resolved_config.yaml."""
    from trainer_cli.report import Reporter

    with Reporter(run_dir) as reporter:
        return diagnose_history(
            read_history(run_dir), OmegaConf.load(run_dir / "resolved_config.yaml"), reporter, run_dir
        )


def diagnose_history(history: list[Row], cfg, reporter, run_dir: Path) -> Verdict:
    """`trainer.diagnose_at_end=true`: the curves' verdict on the run that just ended,
    printed as a panel and written to its `diagnosis.md`."""
    from trainer_cli.diagnose.context import Context, diagnose_defaults, user_overrides
    from trainer_cli.verdict import panel, write_markdown

    options = {**diagnose_defaults(), "num_classes": int(cfg.data.num_classes)}
    ctx = Context(cfg, run_dir, options, reporter, user_overrides(run_dir))
    verdict = judge(history, options, ctx.command)
    verdict.figures.append("curves.png")  # the reporter writes it as the run finishes
    reporter.print(panel(verdict))
    write_markdown([verdict], run_dir)
    return verdict
