"""Learning-rate schedules as plain functions of the optimizer step.

Each schedule is configured with `_partial_: true` and completed in code with the run's
length (`total_steps`, `steps_per_epoch`); it returns `factor(step)`, the multiplier of the
base learning rate, which `torch.optim.lr_scheduler.LambdaLR` applies after every step.
Every schedule starts with an optional linear warmup from 0 over `warmup_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Schedule = Callable[[int], float]


def with_warmup(schedule: Schedule, warmup_steps: int) -> Schedule:
    """Ramp linearly from 0 to the schedule's value over the first `warmup_steps` steps."""
    if warmup_steps <= 0:
        return schedule

    def factor(step: int) -> float:
        # step 0 is the first update: it gets lr/warmup_steps, and step warmup_steps-1 the full lr.
        if step < warmup_steps:
            return (step + 1) / warmup_steps * schedule(warmup_steps)
        return schedule(step)

    return factor


def constant(total_steps: int, steps_per_epoch: int, warmup_steps: int = 0) -> Schedule:
    """The base learning rate throughout."""
    return with_warmup(lambda step: 1.0, warmup_steps)


def step(
    total_steps: int, steps_per_epoch: int, milestones: Sequence[int], gamma: float = 0.1, warmup_steps: int = 0
) -> Schedule:
    """Multiply by `gamma` at each milestone epoch (converted to steps)."""
    milestone_steps = sorted(int(m) * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        return gamma ** sum(step >= m for m in milestone_steps)

    return with_warmup(factor, warmup_steps)


def cosine(total_steps: int, steps_per_epoch: int, final_lr_fraction: float = 0.0, warmup_steps: int = 0) -> Schedule:
    """Cosine decay after warmup: f(t) = final + (1 - final) * (1 + cos(pi t / T)) / 2."""
    decay_steps = max(1, total_steps - max(0, warmup_steps))

    def factor(step: int) -> float:
        t = min(max(0, step - warmup_steps), decay_steps)
        return final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t / decay_steps))

    return with_warmup(factor, warmup_steps)
