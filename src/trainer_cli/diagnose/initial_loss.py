"""The lecture's step 1: with C classes and small random weights the softmax is near uniform,
so the initial cross-entropy is about ln C (penalties off)."""

from __future__ import annotations

import math

from trainer_cli.diagnose.context import Context, fresh, plain
from trainer_cli.diagnose.verdict import Verdict

# Why 0.25 nats: for logits with a small spread s around their mean, the expected
# cross-entropy is about ln C + s^2/2 (second-order expansion of log-sum-exp), so 0.25 nats
# above ln C means logits with a std of about 0.7: no longer "small random weights".
DEFAULT_TOLERANCE = 0.25


def judge(loss: float, num_classes: int, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """The verdict on an initial loss: PASS within `tolerance` nats of ln C, WARN beyond,
    FAIL when it is not a finite number."""
    expected = math.log(num_classes)
    numbers = {"initial loss": loss, "ln C": expected, "C": num_classes, "tolerance (nats)": tolerance}
    if not math.isfinite(loss):
        return Verdict(
            "initial_loss",
            "FAIL",
            f"the initial loss is {loss}",
            numbers,
            ["bug in code (a log of 0: a softmax applied twice, or a missing one)", "bad input data"],
        )
    excess = loss - expected
    numbers["difference"] = excess
    if abs(excess) <= tolerance:
        return Verdict("initial_loss", "PASS", f"initial loss {loss:.4f} is close to ln C = {expected:.4f}", numbers)
    if excess > 0:
        causes = [
            "initialization scale too large: the logits are not small (check model.init / model.init_std)",
            "a missing or doubled softmax / a wrong loss for the outputs",
            "label problems (labels outside 0..C-1 or shifted)",
        ]
        summary = f"initial loss {loss:.4f} is {excess:.2f} nats above ln C = {expected:.4f}"
    else:
        causes = [
            "the model already 'knows' the answer at step 0: labels leak into the inputs",
            "fewer classes really present than C (check data.num_classes)",
        ]
        summary = f"initial loss {loss:.4f} is {-excess:.2f} nats below ln C = {expected:.4f}"
    return Verdict("initial_loss", "WARN", summary, numbers, causes)


def initial_loss(ctx: Context) -> Verdict:
    """Build the run with penalties off and judge its validation loss before any step."""
    from trainer_cli.loop import evaluate

    pieces = fresh(plain(ctx.cfg))
    loss = evaluate(pieces.model, pieces.data.val, pieces.device, pieces.options.precision)["loss"]
    verdict = judge(loss, pieces.data.num_classes, float(ctx.options.get("initial_loss_tolerance", DEFAULT_TOLERANCE)))
    if verdict.status == "PASS":
        verdict.next_command = ctx.command("diagnose=overfit")
    else:
        verdict.next_command = ctx.command("diagnose=initial_loss", "trainer.log_activations=true")
    return verdict
