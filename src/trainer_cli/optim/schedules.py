"""Learning-rate schedules as plain functions of the optimizer step.

Each schedule is configured with `_partial_: true` and completed in code with the run's
length (`total_steps`, `steps_per_epoch`); it returns `factor(step)`, the multiplier of the
base learning rate, which `torch.optim.lr_scheduler.LambdaLR` applies after every step.
Every schedule starts with an optional linear warmup from 0 over `warmup_steps` (or
`warmup_epochs`, converted to steps); decay schedules count their time t from the end of
the warmup, so T = total_steps - warmup. Quantities given in epochs are converted to steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from trainer_cli import checks, metrics

Schedule = Callable[[int], float]


class MonitoredSchedule:
    """A schedule that also follows a per-epoch metric (`monitor`), told by `observe`."""

    monitor: str

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def observe(self, value: float) -> None:
        raise NotImplementedError


class Scheduler(torch.optim.lr_scheduler.LambdaLR):
    """The run's schedule: LambdaLR over one factor, stepped after every optimizer step.

    `end_epoch(row)` hands the epoch's metrics to a schedule that follows one (reduce on
    plateau); for the others it does nothing. A factor that is a callable object (Plateau)
    has its state saved by `state_dict()`; plain functions have none.
    """

    def end_epoch(self, row: dict[str, Any]) -> None:
        factor = self.lr_lambdas[0]
        if isinstance(factor, MonitoredSchedule):
            factor.observe(row[factor.monitor])

    def cycle_ended(self, step: int, steps_per_epoch: int) -> int | None:
        """For a restarting schedule (SGDR): the index of the cycle that ended within the
        epoch that finished at `step`, else None."""
        factor = self.lr_lambdas[0]
        if not isinstance(factor, SGDR):
            return None
        ends = factor.restarts(step)
        return next((i for i, end in enumerate(ends) if step - steps_per_epoch < end <= step), None)


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


def warmup_length(steps_per_epoch: int, warmup_steps: int = 0, warmup_epochs: float = 0) -> int:
    """The warmup in steps, from either `warmup_steps` or `warmup_epochs` (not both)."""
    if warmup_steps < 0 or warmup_epochs < 0:
        raise ValueError("scheduler.warmup_steps / warmup_epochs: expected a number >= 0")
    if warmup_steps and warmup_epochs:
        raise ValueError("scheduler.warmup_steps / warmup_epochs: set one of them, not both")
    return int(warmup_steps) or round(warmup_epochs * steps_per_epoch)


def constant(total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, warmup_epochs: float = 0) -> Schedule:
    """The base learning rate throughout."""
    return with_warmup(lambda step: 1.0, warmup_length(steps_per_epoch, warmup_steps, warmup_epochs))


def step(
    total_steps: int,
    steps_per_epoch: int,
    milestones: Sequence[int],
    gamma: float = 0.1,
    warmup_steps: int = 0,
    warmup_epochs: float = 0,
) -> Schedule:
    """Multiply by `gamma` at each milestone epoch (converted to steps)."""
    milestone_steps = sorted(int(m) * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        return gamma ** sum(step >= m for m in milestone_steps)

    return with_warmup(factor, warmup_length(steps_per_epoch, warmup_steps, warmup_epochs))


def cosine(
    total_steps: int,
    steps_per_epoch: int,
    final_lr_fraction: float = 0.0,
    warmup_steps: int = 0,
    warmup_epochs: float = 0,
) -> Schedule:
    """Cosine decay after warmup: f(t) = final + (1 - final) * (1 + cos(pi t / T)) / 2."""
    warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        t = min(max(0, step - warmup), decay_steps)
        return final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t / decay_steps))

    return with_warmup(factor, warmup)


def linear(total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, warmup_epochs: float = 0) -> Schedule:
    """Linear decay to 0 after warmup: f(t) = 1 - t / T."""
    warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        return 1.0 - min(max(0, step - warmup), decay_steps) / decay_steps

    return with_warmup(factor, warmup)


def inverse_sqrt(total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, warmup_epochs: float = 0) -> Schedule:
    """The Transformer's schedule: f(t) = sqrt(W / t) for steps t >= W after a warmup of W
    steps, so the rate is 1 where the warmup ends and then falls as 1/sqrt(t)."""
    warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)

    def factor(step: int) -> float:
        return math.sqrt(max(1, warmup) / max(step, warmup, 1))

    return with_warmup(factor, warmup)


def inverse_time(total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, warmup_epochs: float = 0) -> Schedule:
    """The lecture's "1/t decay": f(t) = 1 / sqrt(t + 1), t in epochs (fractional: it moves
    every step) counted from the end of the warmup. In steps it would halve the rate after 3
    steps."""
    warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)

    def factor(step: int) -> float:
        return 1.0 / math.sqrt(max(0, step - warmup) / steps_per_epoch + 1.0)

    return with_warmup(factor, warmup)


def exponential(
    total_steps: int, steps_per_epoch: int, gamma: float = 0.95, warmup_steps: int = 0, warmup_epochs: float = 0
) -> Schedule:
    """f(t) = gamma ** t, t in epochs (fractional: it moves every step) after the warmup."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"scheduler.gamma: expected a value in (0, 1], got {gamma}")
    warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)

    def factor(step: int) -> float:
        return gamma ** (max(0, step - warmup) / steps_per_epoch)

    return with_warmup(factor, warmup)


class SGDR:
    """Cosine with warm restarts (Loshchilov & Hutter): cycle i lasts T0 * t_mult**i epochs;
    within a cycle, f = final + (1 - final) * (1 + cos(pi t_cur / T_i)) / 2, after the
    optional linear warmup. `restarts(until_step)` lists the steps where cycles end: a run
    saves its weights there (snapshot ensembles). A callable object, so `Scheduler` can ask it."""

    def __init__(
        self,
        total_steps: int,
        steps_per_epoch: int,
        t0_epochs: float = 10,
        t_mult: int = 2,
        final_lr_fraction: float = 0.0,
        warmup_steps: int = 0,
        warmup_epochs: float = 0,
    ) -> None:
        if t0_epochs <= 0 or t_mult < 1:
            raise ValueError(f"scheduler.t0_epochs, t_mult: expected > 0 and >= 1, got {t0_epochs}, {t_mult}")
        self.warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)
        self.first, self.t_mult, self.final = max(1, round(t0_epochs * steps_per_epoch)), t_mult, final_lr_fraction

    def _cosine(self, step: int) -> float:
        t, cycle = max(0, step - self.warmup), self.first
        while t >= cycle:
            t -= cycle
            cycle *= self.t_mult
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t / cycle))

    def __call__(self, step: int) -> float:
        # step 0 is the first update: it gets lr/warmup, as `with_warmup` gives every schedule.
        if step < self.warmup:
            return (step + 1) / self.warmup * self._cosine(self.warmup)
        return self._cosine(step)

    def restarts(self, until_step: int) -> list[int]:
        """The steps at which the cycles end (the restarts), up to `until_step`."""
        end, cycle, ends = self.warmup, self.first, []
        while end + cycle <= until_step:
            end += cycle
            ends.append(end)
            cycle *= self.t_mult
        return ends


def onecycle(
    total_steps: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    warmup_steps: int = 0,
    warmup_epochs: float = 0,
) -> Schedule:
    """Smith's 1cycle, with cosine ramps (as torch's OneCycleLR): from lr/div_factor up to lr
    over pct_start of the run, then down to lr/(div_factor*final_div_factor)."""
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"scheduler.pct_start: expected a value in (0, 1), got {pct_start}")
    warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)
    steps = max(2, total_steps - warmup)
    peak = max(1, round(pct_start * steps))
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)

    def cosine_between(a: float, b: float, fraction: float) -> float:
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * fraction))

    def factor(step: int) -> float:
        t = min(max(0, step - warmup), steps)
        if t < peak:
            return cosine_between(start, 1.0, t / peak)
        return cosine_between(1.0, end, (t - peak) / max(1, steps - peak))

    return with_warmup(factor, warmup)


class Plateau(MonitoredSchedule):
    """Reduce on plateau: multiply the rate by `factor` when the monitored per-epoch metric
    has not improved by more than `threshold` (relative) for `patience` epochs. Which way
    is an improvement follows from the metric's name (losses down, accuracies up).

    A callable object, not a closure, so `LambdaLR.state_dict()` saves its state (scale, best,
    bad epochs) and a resumed run continues it exactly. `Scheduler.end_epoch` calls
    `observe(value)` after each validation.
    """

    def __init__(
        self,
        total_steps: int,
        steps_per_epoch: int,
        monitor: str = "val/loss",
        factor: float = 0.1,
        patience: int = 5,
        threshold: float = 1e-4,
        min_lr_fraction: float = 0.0,
        warmup_steps: int = 0,
        warmup_epochs: float = 0,
    ) -> None:
        checks.choice("monitor", monitor, metrics.epoch_metrics())
        checks.open_interval("factor", factor, 0.0, 1.0)
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.threshold, self.min_lr_fraction = threshold, min_lr_fraction
        self.warmup = warmup_length(steps_per_epoch, warmup_steps, warmup_epochs)
        self.scale, self.best, self.bad_epochs = 1.0, math.nan, 0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup * self.scale
        return self.scale

    def observe(self, value: float) -> None:
        """One epoch's validation value of `monitor`."""
        sign = 1.0 if metrics.minimized(self.monitor) else -1.0
        if math.isnan(self.best) or sign * (self.best - value) > self.threshold * abs(self.best):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale = max(self.scale * self.factor, self.min_lr_fraction)
            self.bad_epochs = 0
