"""The lecture's step 1: with C classes and small random weights the softmax is near uniform,
so the initial cross-entropy is about ln C (penalties off)."""

from __future__ import annotations

from trainer_cli.diagnose.context import Context, fresh, plain
from trainer_cli.verdict import Verdict
from trainer_cli.verdict import judge_initial_loss as judge


def initial_loss(ctx: Context) -> Verdict:
    """Build the run with penalties off and judge its validation loss before any step."""
    from trainer_cli.loop import evaluate

    pieces = fresh(plain(ctx.cfg))
    loss = evaluate(pieces.model, pieces.data.val, pieces.device, pieces.options.precision)["loss"]
    verdict = judge(loss, pieces.data.num_classes, float(ctx.options["initial_loss_tolerance"]))
    if verdict.status == "PASS":
        verdict.next_command = ctx.command("diagnose=overfit")
    else:
        verdict.next_command = ctx.command("diagnose=initial_loss", "trainer.log_activations=true")
    return verdict
