"""Numeric against analytic gradients (the lecture's gradient check): central differences in
float64 on a few samples, compared with autograd, per parameter tensor."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from trainer_cli.diagnose.context import Context, fixed_sample, fresh
from trainer_cli.verdict import Verdict

# Relative errors in float64 (CS231n's rule of thumb): below 1e-4 is right even across a
# ReLU kink; 1e-4 to 1e-2 is uncomfortable; above 1e-2 the gradient is probably wrong.
PASS_BELOW, FAIL_ABOVE = 1e-4, 1e-2
STEP = 1e-6  # float64 central differences: error O(h^2) ~ 1e-12, rounding ~ 1e-16/h ~ 1e-10


def relative_errors(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    entries: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """The largest relative error |analytic - numeric| / max(|analytic|, |numeric|) over
    `entries` random entries of each parameter tensor, in float64, in eval mode (dropout off,
    batch norm on its running statistics: one deterministic function)."""
    model = copy.deepcopy(model).double().eval()
    images = images.double()

    def objective() -> torch.Tensor:
        return loss_fn(model(images), labels)

    model.zero_grad(set_to_none=True)
    objective().backward()
    generator = torch.Generator().manual_seed(seed)
    errors = {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            analytic = parameter.grad.flatten() if parameter.grad is not None else torch.zeros(parameter.numel())
            flat = parameter.view(-1)
            picked = torch.randperm(flat.numel(), generator=generator)[:entries]
            worst = 0.0
            for index in picked.tolist():
                original = float(flat[index])
                flat[index] = original + STEP
                plus = float(objective())
                flat[index] = original - STEP
                minus = float(objective())
                flat[index] = original
                numeric = (plus - minus) / (2 * STEP)
                exact = float(analytic[index])
                scale = max(abs(exact), abs(numeric))
                if scale > 1e-10:  # both below: agreement at the rounding level
                    worst = max(worst, abs(exact - numeric) / scale)
            errors[name] = worst
    return errors


def judge(errors: dict[str, float]) -> Verdict:
    largest = max(errors.values(), default=0.0)
    numbers = {name: error for name, error in errors.items()}
    wrong = [name for name, error in errors.items() if error > FAIL_ABOVE]
    if wrong:
        return Verdict(
            "gradcheck",
            "FAIL",
            f"autograd and numeric gradients disagree for {', '.join(wrong)}",
            numbers,
            ["bug in code: a wrong backward (a custom autograd Function or an in-place op)"],
        )
    if largest > PASS_BELOW:
        return Verdict(
            "gradcheck",
            "WARN",
            f"largest relative error {largest:.2g}: uncomfortable (ReLU kinks?)",
            numbers,
            ["a kink (ReLU, max pooling) crossed by the finite difference", "bug in code"],
        )
    return Verdict(
        "gradcheck", "PASS", f"autograd matches central differences (largest relative error {largest:.2g})", numbers
    )


def gradcheck(ctx: Context) -> Verdict:
    """Check the configured model's gradients on `gradcheck_samples` training images."""
    pieces = fresh(ctx.cfg)
    images, labels = fixed_sample(pieces.data.train, 1)[0]
    count = int(ctx.options["gradcheck_samples"])
    errors = relative_errors(
        pieces.model, images[:count], labels[:count], pieces.loss_fn, int(ctx.options["gradcheck_entries"])
    )
    verdict = judge(errors)
    verdict.numbers = {
        "samples": count,
        "entries per tensor": int(ctx.options["gradcheck_entries"]),
        **{f"relative error {k}": v for k, v in verdict.numbers.items()},
    }
    if verdict.status == "PASS":
        verdict.next_command = ctx.command("diagnose=initial_loss")
    return verdict
