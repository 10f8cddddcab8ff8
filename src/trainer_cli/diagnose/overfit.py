"""The lecture's step 2: overfit a small sample. A fixed handful of minibatches, no
regularization or augmentation, a constant LR: a working model and loop reach 100% training
accuracy. When they do not, the loss curve ranks the lecture's causes."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer_cli.diagnose.context import Context, fixed_sample, fresh, plain, train_steps
from trainer_cli.verdict import Verdict

# The loss counts as flat when the last pass keeps more than this share of the first loss.
FLAT_FRACTION = 0.9
# ... and as exploding when it rises above this multiple of the first loss (or is not finite).
EXPLODE_FACTOR = 3.0


@torch.no_grad()
def identical_units(model: nn.Module) -> list[str]:
    """Weight matrices (and conv kernels) whose output units all have the same weights: the
    symmetry a constant initialization never breaks (every unit gets the same gradient)."""
    names = []
    for name, weight in model.named_parameters():
        if weight.ndim < 2 or weight.shape[0] < 2:
            continue
        rows = weight.reshape(weight.shape[0], -1)
        spread = (rows - rows[0]).abs().max()
        if float(spread) <= 1e-6 * max(float(rows.abs().max()), 1e-12):
            names.append(name)
    return names


def classify(losses: list[float], accuracy: float, exploded: bool) -> str:
    """What the curve showed: `fit` (100%), `exploded`, `flat` or `slow` (decreasing, not fit)."""
    if accuracy >= 1.0:
        return "fit"
    first = losses[0]
    if exploded or any(not math.isfinite(x) or x > EXPLODE_FACTOR * first for x in losses):
        return "exploded"
    if losses[-1] > FLAT_FRACTION * first:
        return "flat"
    return "slow"


def causes_for(shape: str, symmetric: list[str]) -> list[str]:
    """The lecture's causes, the likeliest first given the curve's shape."""
    init = "bad initialization"
    if symmetric:
        init += f" (units with identical weights in {', '.join(symmetric)}: a constant init breaks no symmetry)"
    if shape == "exploded":
        return ["learning rate too high (loss explodes to Inf or NaN)", init, "bug in code"]
    if shape == "flat":
        first = [init, "learning rate too low"] if symmetric else ["learning rate too low", init]
        return [*first, "bug in code or errors in training labels"]
    return [
        *([init] if symmetric else []),
        "model too small to memorize the sample (large bias: a bigger model)",
        "too few passes over the sample (mode.overfit_epochs) or learning rate too low",
        "errors in training labels",
    ]


def overfit(ctx: Context) -> Verdict:
    """Train on `overfit_batches` fixed batches for up to `overfit_epochs` passes."""
    from trainer_cli.loop import NonFiniteLoss, evaluate

    count, passes = int(ctx.options["overfit_batches"]), int(ctx.options["overfit_epochs"])
    pieces = fresh(plain(ctx.cfg))
    sample = fixed_sample(pieces.data.train, count)
    device, precision = pieces.device, pieces.options.precision
    losses = [evaluate(pieces.model, sample, device, precision)["loss"]]
    accuracy, exploded, step = 0.0, False, 0
    try:
        for _ in range(passes):
            trained, step = train_steps(pieces, sample, step)
            losses.append(trained["loss"])
            if trained["acc"] >= 1.0:  # confirm in eval mode, as the model would be used
                accuracy = evaluate(pieces.model, sample, device, precision)["acc"]
                if accuracy >= 1.0:
                    break
        else:
            accuracy = evaluate(pieces.model, sample, device, precision)["acc"]
    except NonFiniteLoss:
        exploded = True
        losses.append(math.nan)
    shape = classify(losses, accuracy, exploded)
    samples = sum(len(labels) for _, labels in sample)
    numbers = {
        "sample": f"{len(sample)} batches, {samples} images",
        "passes": len(losses) - 1,
        "lr": float(ctx.cfg.optimizer.lr),
        "loss first → last": f"{losses[0]:.4g} → {losses[-1]:.4g}",
        "train accuracy": accuracy,
    }
    figure = _plot(losses, ctx.run_dir / "overfit.png")
    lr = float(ctx.cfg.optimizer.lr)
    if shape == "fit":
        return Verdict(
            "overfit",
            "PASS",
            f"100% training accuracy on the sample after {len(losses) - 1} passes",
            numbers,
            [],
            ctx.command("diagnose=lr"),
            [figure],
        )
    symmetric = identical_units(pieces.model)
    if shape == "exploded":
        summary, next_command = "the loss exploded", ctx.command(f"lr={lr / 10:g}", "diagnose=overfit")
    elif shape == "flat":
        summary, next_command = "the loss is not going down", ctx.command("diagnose=lr_range")
    else:
        summary = f"the loss goes down but training accuracy stops at {accuracy:.3f}"
        next_command = ctx.command("diagnose=overfit", f"mode.overfit_epochs={2 * passes}")
    if symmetric:
        numbers["identical units"] = ", ".join(symmetric)
        next_command = ctx.command("model.init=default", "diagnose=overfit")
    return Verdict("overfit", "FAIL", summary, numbers, causes_for(shape, symmetric), next_command, [figure])


def _plot(losses: list[float], path) -> str:
    from trainer_cli.figures import line_plot

    line_plot(
        path,
        {"loss": (list(range(len(losses))), losses)},
        "pass over the sample",
        "training loss",
        "Overfitting a small sample",
        log_y=True,
    )
    return path.name
