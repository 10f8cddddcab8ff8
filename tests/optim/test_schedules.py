"""Each schedule's learning rate, read from the LambdaLR that build.scheduler makes from the
real conf/, equals its formula at several steps; warmup rises linearly; plateau reacts to
the metric and its state survives a state_dict round trip."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import conf_options
from trainer_cli import build
from trainer_cli.config import UserError, resolve
from trainer_cli.optim import schedules

EPOCHS, STEPS_PER_EPOCH = 20, 10
TOTAL = EPOCHS * STEPS_PER_EPOCH
BASE_LR = 0.5


def lrs(make_cfg, *overrides: str) -> tuple[list[float], torch.optim.lr_scheduler.LambdaLR]:
    """The learning rate used by each of the run's optimizer steps 0..TOTAL-1."""
    cfg = resolve(make_cfg(*overrides, f"epochs={EPOCHS}"))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    scheduler = build.scheduler(cfg, optimizer, STEPS_PER_EPOCH)
    out = []
    for _ in range(TOTAL):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out, scheduler


def cos_decay(t: float, period: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / period))


FORMULAS = {
    "constant": ([], lambda t: 1.0),
    # milestones [5, 8] epochs, gamma 0.1
    "step": (["scheduler.milestones=[5,8]"], lambda t: 0.1 ** ((t >= 50) + (t >= 80))),
    "cosine": ([], lambda t: cos_decay(t, TOTAL)),
    "linear": ([], lambda t: 1 - t / TOTAL),
    # warmup W=100 (the file's default) then sqrt(W / t)
    "inverse_sqrt": ([], lambda t: (t + 1) / 100 if t < 100 else math.sqrt(100 / t)),
    # t in epochs
    "inverse_time": ([], lambda t: 1 / math.sqrt(t / STEPS_PER_EPOCH + 1)),
    "exponential": (["scheduler.gamma=0.8"], lambda t: 0.8 ** (t / STEPS_PER_EPOCH)),
    # cycles of 5, 10, 20 epochs = 50, 100, 200 steps
    "sgdr": (
        ["scheduler.t0_epochs=5", "scheduler.t_mult=2"],
        lambda t: cos_decay(t, 50) if t < 50 else cos_decay(t - 50, 100) if t < 150 else cos_decay(t - 150, 200),
    ),
    # 1/25 -> 1 over the first 60 steps (cosine), then down to 1/(25*1e4) at step 200
    "onecycle": (
        [],
        lambda t: 1 + (1 / 25 - 1) * cos_decay(t, 60) if t < 60 else 1 / 25e4 + (1 - 1 / 25e4) * cos_decay(t - 60, 140),
    ),
    "plateau": ([], lambda t: 1.0),  # without observations it holds the base rate
}
CHECK_STEPS = [0, 1, 25, 49, 50, 51, 60, 99, 100, 149, 150, 199]


def test_every_scheduler_option_has_a_formula():
    assert set(conf_options("scheduler")) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_lr_equals_the_formula(name, make_cfg):
    overrides, formula = FORMULAS[name]
    got, _ = lrs(make_cfg, f"scheduler={name}", *overrides)
    for t in CHECK_STEPS:
        assert got[t] == pytest.approx(BASE_LR * formula(t), rel=1e-9, abs=1e-12), (name, t)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_warmup_rises_linearly_from_zero_then_follows_the_schedule(name, make_cfg):
    overrides, _ = FORMULAS[name]
    warmup = 30
    got, _ = lrs(make_cfg, f"scheduler={name}", *overrides, f"scheduler.warmup_steps={warmup}")
    peak = got[warmup]
    # the warmup's target is the schedule's value where the warmup ends
    for t in range(warmup):
        assert got[t] == pytest.approx(peak * (t + 1) / warmup, rel=1e-9)
    steps = [b - a for a, b in zip(got[: warmup - 1], got[1:warmup], strict=True)]
    assert max(steps) == pytest.approx(min(steps), rel=1e-9) and steps[0] > 0


def test_decay_counts_from_the_end_of_warmup(make_cfg):
    got, _ = lrs(make_cfg, "scheduler=cosine", "scheduler.warmup_steps=40")
    assert got[39] == pytest.approx(BASE_LR)
    assert got[40 + 80] == pytest.approx(BASE_LR * 0.5)  # half of T = 200 - 40
    got, _ = lrs(make_cfg, "scheduler=linear", "scheduler.warmup_steps=40")
    assert got[40 + 40] == pytest.approx(BASE_LR * 0.75)


def test_warmup_epochs_are_converted_to_steps(make_cfg):
    by_epochs, _ = lrs(make_cfg, "scheduler=cosine", "scheduler.warmup_epochs=3")
    by_steps, _ = lrs(make_cfg, "scheduler=cosine", "scheduler.warmup_steps=30")
    assert by_epochs == by_steps


def test_plateau_reduces_after_patience_and_its_state_is_saved(make_cfg):
    got, scheduler = lrs(make_cfg, "scheduler=plateau", "scheduler.patience=2", "scheduler.factor=0.5")
    plateau = scheduler.lr_lambdas[0]
    for value in [1.0, 0.9, 0.95, 0.9, 0.91]:  # improves, then 3 epochs without: > patience
        plateau.observe(value)
    assert plateau.scale == 0.5
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 0.5)
    for value in [0.5, 0.6, 0.6]:  # a real improvement resets the count
        plateau.observe(value)
    assert plateau.scale == 0.5 and plateau.best == 0.5

    state = scheduler.state_dict()
    _, fresh = lrs(make_cfg, "scheduler=plateau", "scheduler.patience=2", "scheduler.factor=0.5")
    fresh.load_state_dict(state)
    restored = fresh.lr_lambdas[0]
    assert (restored.scale, restored.best, restored.bad_epochs) == (0.5, 0.5, 2)


def test_plateau_direction_follows_the_monitored_metric():
    accuracy = schedules.Plateau(100, 10, monitor="val/acc", patience=0, factor=0.1)
    accuracy.observe(0.5)
    accuracy.observe(0.6)  # an accuracy that rises is an improvement
    assert accuracy.scale == 1.0
    accuracy.observe(0.6)
    assert accuracy.scale == pytest.approx(0.1)
    loss = schedules.Plateau(100, 10, monitor="val/loss", patience=0, factor=0.1)
    loss.observe(0.5)
    loss.observe(0.6)  # a loss that rises is not
    assert loss.scale == pytest.approx(0.1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["scheduler.warmup_steps=10", "scheduler.warmup_epochs=1"], "set one of them, not both"),
        (["scheduler=sgdr", "scheduler.t0_epochs=0"], "scheduler.t0_epochs"),
        (["scheduler=exponential", "scheduler.gamma=1.5"], "scheduler.gamma"),
        (["scheduler=onecycle", "scheduler.pct_start=1.5"], "scheduler.pct_start"),
        (["scheduler=plateau", "scheduler.monitor=val/f1"], "scheduler.monitor: 'val/f1' is not accepted"),
        (["scheduler=plateau", "scheduler.factor=2"], "scheduler.factor"),
    ],
)
def test_bad_schedule_values_are_one_line_errors(overrides, message, make_cfg):
    with pytest.raises(UserError) as error:
        lrs(make_cfg, *overrides)
    assert message in str(error.value) and "\n" not in str(error.value)
