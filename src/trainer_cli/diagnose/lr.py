"""The lecture's step 3 (`lr`: short runs at a few candidate LRs, keep the one whose loss
drops most) and Smith's LR range test (`lr_range`: one run whose LR grows exponentially)."""

from __future__ import annotations

import logging
import math
from typing import Any

from trainer_cli.diagnose.context import Context, endless, fixed_sample, fresh, plain, train_steps, with_lr
from trainer_cli.diagnose.overfit import identical_units
from trainer_cli.verdict import Verdict

log = logging.getLogger("trainer_cli")

# The lecture's good LRs to try (1e-1 ... 1e-4, and 3e-4 for Adam), to which the configured
# LR is added.
DEFAULT_CANDIDATES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
# "Drops significantly": the best candidate must remove at least this share of the loss.
SIGNIFICANT_DROP = 0.3
# fastai's smoothing and divergence rule: loss EMA with beta 0.98, stop above 4x the best.
SMOOTHING, DIVERGENCE_FACTOR = 0.98, 4.0


def loss_drop(cfg, iterations: int, weight_decay: float, probe_batches: int = 4) -> tuple[float, float]:
    """(loss before, loss after) `iterations` steps on all training data with a small
    coupled weight decay, both on the same fixed training batches; after is NaN on divergence."""
    from trainer_cli.loop import NonFiniteLoss, evaluate

    pieces = fresh(plain(cfg, weight_decay))
    probe = fixed_sample(pieces.data.train, probe_batches)
    device, precision = pieces.device, pieces.options.precision
    before = evaluate(pieces.model, probe, device, precision)["loss"]
    source = endless(pieces.data.train)
    batches = [next(source) for _ in range(iterations)]
    try:
        train_steps(pieces, batches)
    except NonFiniteLoss:
        return before, math.nan
    return before, evaluate(pieces.model, probe, device, precision)["loss"]


def lr(ctx: Context) -> Verdict:
    """Try each candidate LR for `lr_iterations` steps; pick the one whose loss drops most."""
    options = ctx.options
    configured = float(ctx.cfg.optimizer.lr)
    candidates = sorted({*(float(x) for x in options["lr_candidates"] or DEFAULT_CANDIDATES), configured})
    iterations, decay = int(options["lr_iterations"]), float(options["lr_weight_decay"])
    drops: dict[float, float] = {}
    for candidate in candidates:
        before, after = loss_drop(with_lr(ctx.cfg, candidate), iterations, decay)
        drops[candidate] = (before - after) / before if math.isfinite(after) else -math.inf
    best = max(candidates, key=lambda c: drops[c])
    ctx.found["lr"] = best  # the grid step centres on it
    numbers = {
        f"lr {c:g}": (f"loss drop {drops[c]:.1%}" if math.isfinite(drops[c]) else "diverged") for c in candidates
    }
    numbers["iterations each"] = iterations
    numbers["weight decay"] = decay
    figure = _plot(drops, ctx.run_dir / "lr_candidates.png")
    command = ctx.command(f"lr={best:g}")
    if drops[best] < SIGNIFICANT_DROP:
        causes = [
            "no LR makes the loss drop: bug in code or errors in training labels",
            "bad initialization",
            "the model is too small for the data",
        ]
        symmetric = identical_units(fresh(plain(ctx.cfg)).model)
        if symmetric:  # the initial weights show which cause it is
            causes.insert(0, f"bad initialization (units with identical weights in {', '.join(symmetric)})")
            del causes[2]
        return Verdict(
            "lr",
            "FAIL",
            f"the best LR, {best:g}, removes only {drops[best]:.1%} of the loss",
            numbers,
            causes,
            ctx.command("diagnose=overfit"),
            [figure],
        )
    if drops[configured] < 0.5 * drops[best]:
        side = "too high" if configured > best else "too low"
        verdict = "diverges" if not math.isfinite(drops[configured]) else f"drops the loss by {drops[configured]:.1%}"
        return Verdict(
            "lr",
            "WARN",
            f"the configured lr {configured:g} {verdict}; lr={best:g} drops it by {drops[best]:.1%}",
            numbers,
            [f"learning rate {side}"],
            command,
            [figure],
        )
    return Verdict(
        "lr",
        "PASS",
        f"lr={best:g} drops the loss most ({drops[best]:.1%} in {iterations} iterations)",
        numbers,
        [],
        command,
        [figure],
    )


def _plot(drops: dict[float, float], path) -> str:
    from trainer_cli.figures import line_plot

    xs = list(drops)
    ys = [100 * d if math.isfinite(d) else math.nan for d in drops.values()]
    line_plot(path, {"drop": (xs, ys)}, "learning rate", "loss drop (%)", "Loss drop per candidate LR", log_x=True)
    return path.name


def range_test(cfg, min_lr: float, max_lr: float, steps: int) -> tuple[list[float], list[float]]:
    """Smith's range test: one step per LR on an exponential grid from `min_lr` to `max_lr`,
    the loss smoothed by an EMA (bias-corrected), stopped when it exceeds 4x its best.
    Returns the LRs and smoothed losses reached."""
    from trainer_cli.loop import NonFiniteLoss

    pieces = fresh(plain(cfg))
    source = endless(pieces.data.train)
    lrs, smoothed, average, best = [], [], 0.0, math.inf
    for i in range(steps):
        rate = min_lr * (max_lr / min_lr) ** (i / max(steps - 1, 1))
        for group in pieces.optimizer.param_groups:
            group["lr"] = rate
        try:
            trained, _ = train_steps(pieces, [next(source)], i)
        except NonFiniteLoss:
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * trained["loss"]
        value = average / (1 - SMOOTHING ** (i + 1))
        lrs.append(rate)
        smoothed.append(value)
        best = min(best, value)
        if value > DIVERGENCE_FACTOR * best:
            break
    return lrs, smoothed


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The LR at the smoothed loss's minimum, divided by 10 (Smith; fastai's `lr_min`)."""
    return lrs[min(range(len(smoothed)), key=smoothed.__getitem__)] / 10


def lr_range(ctx: Context) -> Verdict:
    options = ctx.options
    low, high = float(options["range_min_lr"]), float(options["range_max_lr"])
    lrs, smoothed = range_test(ctx.cfg, low, high, int(options["range_steps"]))
    configured = float(ctx.cfg.optimizer.lr)
    if len(smoothed) < 2:
        return Verdict(
            "lr_range",
            "FAIL",
            f"the loss diverged at once (lr {low:g})",
            {"steps": len(smoothed)},
            ["bug in code", "bad initialization"],
            ctx.command("diagnose=initial_loss"),
        )
    suggestion = suggest(lrs, smoothed)
    ctx.found["lr"] = suggestion
    path = ctx.run_dir / "lr_range.png"
    from trainer_cli.figures import line_plot

    line_plot(
        path,
        {"smoothed loss": (lrs, smoothed)},
        "learning rate",
        "smoothed training loss",
        "LR range test",
        log_x=True,
        marks={f"suggested {suggestion:.2g}": suggestion, f"configured {configured:.2g}": configured},
    )
    numbers = {
        "steps": len(lrs),
        "lr swept": f"{lrs[0]:.2g} → {lrs[-1]:.2g}",
        "minimum smoothed loss": min(smoothed),
        "lr at the minimum": suggestion * 10,
        "suggested lr": suggestion,
        "configured lr": configured,
    }
    command = ctx.command(f"lr={suggestion:.2g}")
    if min(smoothed) > 0.9 * smoothed[0]:
        return Verdict(
            "lr_range",
            "FAIL",
            "the loss did not go down at any LR",
            numbers,
            ["bug in code or errors in training labels", "bad initialization"],
            ctx.command("diagnose=overfit"),
            [path.name],
        )
    if not suggestion / 10 <= configured <= suggestion * 10:
        side = "too high" if configured > suggestion else "too low"
        return Verdict(
            "lr_range",
            "WARN",
            f"the configured lr {configured:g} is more than 10x from the suggested {suggestion:.2g}",
            numbers,
            [f"learning rate {side}"],
            command,
            [path.name],
        )
    return Verdict(
        "lr_range",
        "PASS",
        f"suggested lr {suggestion:.2g} (the configured {configured:g} is within 10x)",
        numbers,
        [],
        command,
        [path.name],
    )


def automatic_lr(cfg, run_dir) -> Any:
    """`lr=auto`, the step before any procedure: the LR range test's suggestion (fastai's
    defaults: 1e-7 to 10 over 100 steps), plotted to `lr_range.png`; returns a new config with
    that LR, so the run record holds the LR that trains. Any other `lr`: `cfg` as given."""
    from trainer_cli import distributed
    from trainer_cli.config import UserError
    from trainer_cli.figures import line_plot

    if cfg.get("lr") != "auto":
        return cfg
    if distributed.world_size() > 1:
        raise UserError("lr: auto runs the LR range test in one process; run `train diagnose=lr_range`, then set lr")
    lrs, smoothed = range_test(cfg, 1e-7, 10.0, 100)
    if len(smoothed) < 2:
        raise UserError("lr: auto found no LR: the loss diverged at once (try train diagnose=initial_loss)")
    suggestion = float(f"{suggest(lrs, smoothed):.2g}")
    line_plot(
        run_dir / "lr_range.png",
        {"smoothed loss": (lrs, smoothed)},
        "learning rate",
        "smoothed training loss",
        "LR range test (lr=auto)",
        log_x=True,
        marks={f"chosen {suggestion:.2g}": suggestion},
    )
    log.info(f"lr=auto: the LR range test suggests lr {suggestion:g} ({run_dir / 'lr_range.png'})")
    return with_lr(cfg, suggestion)
