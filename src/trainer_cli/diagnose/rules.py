"""The diagnosis rules: each a small pure function of the evidence (`examine.examine`) that
returns a `Finding` (a cause from `causes.CAUSES`, how strongly the evidence points at it,
and the evidence in words) or None. `rank` turns the findings into one ranked answer.

Strengths: 3 = a direct measurement of the cause (the inputs' scale, the units' symmetry, the
penalty's share); 2 = a signature the cause explains best; 1 = consistent with the cause.
The thresholds (the constants below) are set on the whole zoo (tests/diagnose_zoo/cases.yaml:
both halves, each measured once before) with room on both sides; a new held-out file judges them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainer_cli.diagnose.causes import CAUSES, HEALTHY

Evidence = dict[str, Any]


@dataclass
class Finding:
    """One rule's answer: the cause it points at, how strongly, and the numbers why."""

    cause: str
    strength: float
    evidence: str

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"cause: expected one of {', '.join(CAUSES)}, got '{self.cause}'")


# Causes whose fixes go opposite ways: a verdict never lists both (the weaker is dropped).
OPPOSITES = {
    frozenset({"lr_too_high", "lr_too_low"}),
    frozenset({"init_too_large", "init_too_small"}),
    frozenset({"model_too_small", "model_too_big"}),
    frozenset({"l2_too_strong", "model_too_big"}),
    frozenset({"dropout_too_strong", "model_too_big"}),
}
# The thresholds, each set with room on both sides on the zoo (its margins: docs/diagnose.md).
# The lecture's "update/weight ratio around 1e-3": this many times off is a wrong LR.
UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW = 3e-2, 3e-4
FITS = 0.9  # `training_fit` from which a model "fits its training set"
WEIGHTS_GREW = 30.0  # the weights' gain grew this many times during training: steps too large
WEIGHTS_SHRANK = 0.2  # a penalty shrank the weights' gain to this fraction of its start or less
DROPOUT_GAP = 0.08  # training accuracy in eval mode this much above train mode: dropout too strong
LABEL_GAP = 0.1  # validation accuracy this much above the training fit: wrong training labels
VARIANCE_GAP = 0.08  # training accuracy this much above validation: too big for the data
STILL_FALLING = 0.03  # both losses still fall by this fraction over the last quarter of the epochs
# log10 of the last activation layer's std over the first's at init below which the weights
# are too small for the net's depth (the lecture's 0.01-Gaussian in a deep net): 100x.
ACTIVATIONS_SHRANK = -2.0
# log10 of first-layer / last-layer gradient norm at the start below which the input layer
# learns too slowly: 10^-0.9 ~ 1/8.
VANISHING_LOG10_RATIO = -0.9


def _get(e: Evidence, key: str, default: float = math.nan) -> float:
    value = e.get(key, default)
    return float(value) if value is not None else default


def training_fit(e: Evidence) -> float:
    """How well the model fits its training set: the best training accuracy, or the end
    model's on the training probe in eval mode when higher (dropout's noise lowers the
    running accuracy of a model that fits: 0.92 against 0.97 at p=0.5)."""
    return max(_get(e, "train acc best", 1.0), _get(e, "end probe/acc_eval_mode", 0.0))


def inputs_not_preprocessed(e: Evidence) -> Finding | None:
    """The batch at the model's input is far from mean 0 / std 1 (measured directly)."""
    mean, std = _get(e, "start input/mean"), _get(e, "start input/std")
    if abs(mean) > 3 or std > 10:
        return Finding("inputs_not_preprocessed", 3, f"input batch mean {mean:.3g}, std {std:.3g} (want ~0 and ~1)")
    return None


def init_constant(e: Evidence) -> Finding | None:
    """The first layer's units have (nearly) the same weights at the start."""
    spread = _get(e, "start weights/unit_spread", 1.0)
    if spread < 1e-3:
        return Finding("init_constant", 3, f"the first layer's units differ by {spread:.2g} of their size at init")
    return None


def init_scale(e: Evidence) -> Finding | None:
    """The initial weights' gain std*sqrt(fan_in) is far from ~1 (measured directly), or
    the signal dies out across the layers at init in a model that does not fit (a gain a
    little small, compounded over many layers)."""
    gain = _get(e, "start weights/init_gain", 1.0)
    shrink = _get(e, "start act/depth_log10_ratio", 0.0)
    if _get(e, "start weights/unit_spread", 1.0) < 1e-3:
        return None  # constant init: its own rule
    if gain > 3:
        return Finding("init_too_large", 2.5, f"initial weight gain std*sqrt(fan_in) = {gain:.3g} (He ~1.4)")
    if gain < 0.1:
        return Finding("init_too_small", 2.5, f"initial weight gain std*sqrt(fan_in) = {gain:.3g} (He ~1.4)")
    if shrink < ACTIVATIONS_SHRANK and training_fit(e) < FITS:
        return Finding(
            "init_too_small", 2.5, f"at init the last layer's activations are 10^{shrink:.1f} of the first's in scale"
        )
    return None


def penalty_dominates(e: Evidence) -> Finding | None:
    """The penalty is most of the objective and the model does not fit its training set, or
    it shrank the weights to nothing (a penalty that dominates a fitted model is harmless:
    the data loss of a fitted model is near 0)."""
    share = max(_get(e, "start penalty/share", 0.0), _get(e, "end penalty/share", 0.0))
    start, end = _get(e, "start weights/init_gain", 1.0), _get(e, "end weights/init_gain", 1.0)
    if share > 0.5 and training_fit(e) < FITS:
        return Finding("l2_too_strong", 3, f"the penalty is up to {share:.0%} of the objective, training does not fit")
    if share > 0 and start > 0 and end / start < WEIGHTS_SHRANK:
        return Finding("l2_too_strong", 3, f"the penalty shrank the weights' gain from {start:.3g} to {end:.3g}")
    return None


def dropout_gap(e: Evidence) -> Finding | None:
    """Training samples are fitted in eval mode but not with dropout on, and the run does not
    fit its training set (a healthy dropout run has a small gap and fits)."""
    eval_acc, train_acc = _get(e, "end probe/acc_eval_mode"), _get(e, "end probe/acc_train_mode")
    if eval_acc - train_acc > DROPOUT_GAP and _get(e, "train acc best", 1.0) < FITS:
        return Finding(
            "dropout_too_strong", 2.5, f"training accuracy {eval_acc:.3f} in eval mode, {train_acc:.3f} in train mode"
        )
    return None


def diverged(e: Evidence) -> Finding | None:
    """The loss became NaN, or ended far above its best, or the updates are too large."""
    ratio = _get(e, "update ratio")
    last, best = _get(e, "train loss last"), _get(e, "train loss best")
    if e.get("diverged") or not math.isfinite(last):
        return Finding("lr_too_high", 3, "the training loss became NaN/Inf")
    if last > 1.5 * best:
        return Finding("lr_too_high", 2, f"the training loss ends at {last:.3g}, its best was {best:.3g}")
    if ratio > UPDATE_RATIO_HIGH:
        return Finding("lr_too_high", 2, f"update/weight ratio {ratio:.2g} per step (want ~1e-3)")
    return None


def weights_blew_up(e: Evidence) -> Finding | None:
    """The weights' gain grew thirtyfold or more during training: steps too large for them
    (a large init starts large, it does not grow; a tiny or constant one must grow, so it is
    not read below a gain of 0.1)."""
    start, end = _get(e, "start weights/init_gain", 1.0), _get(e, "end weights/init_gain", 1.0)
    if start >= 0.1 and end / start > WEIGHTS_GREW:
        return Finding("lr_too_high", 2.6, f"the weights' gain grew from {start:.3g} to {end:.3g} during training")
    return None


def updates_too_small(e: Evidence) -> Finding | None:
    """The weights barely move: the update/weight ratio far below 1e-3."""
    ratio = _get(e, "update ratio")
    if ratio < UPDATE_RATIO_LOW:
        return Finding("lr_too_low", 2, f"update/weight ratio {ratio:.2g} per step (want ~1e-3)")
    return None


def dead_units(e: Evidence) -> Finding | None:
    """Most units of a ReLU layer never fire on the probe at the end."""
    dead = _get(e, "end probe/dead_fraction", 0.0)
    if dead > 0.5:
        return Finding("dead_relus", 2.5, f"{dead:.0%} of a ReLU layer's units never fire at the end")
    return None


def vanishing(e: Evidence) -> Finding | None:
    """The first layer's gradient is 8x or more below the last's at the start and the model
    does not fit its training set (a net that fits despite the imbalance is not sick; with
    small gradients the updates are small too, so this outranks "LR too low")."""
    ratio, fit = _get(e, "start grad/depth_log10_ratio", 0.0), training_fit(e)
    if ratio < VANISHING_LOG10_RATIO and fit < FITS:
        return Finding(
            "vanishing_gradients",
            2.2,
            f"first layer's gradient 10^{ratio:.1f} of the last's at the start; training fit {fit:.3f}",
        )
    return None


def label_errors(e: Evidence) -> Finding | None:
    """Validation beats the training set's own fit (the training labels are wrong), or the
    training loss falls while validation stays at chance (labels unrelated to the images)."""
    chance = 1.0 / max(2, round(math.exp(_get(e, "chance loss", math.log(10)))))
    val_acc, fit = _get(e, "val acc best", 0.0), _get(e, "end probe/acc_eval_mode", 1.0)
    if val_acc > fit + LABEL_GAP:
        return Finding("label_errors", 2.5, f"validation accuracy {val_acc:.3f} above the training fit {fit:.3f}")
    if val_acc < 2 * chance and _get(e, "update ratio", 1e-3) > UPDATE_RATIO_LOW:
        return Finding("label_errors", 2, f"validation accuracy {val_acc:.3f} stays near chance {chance:.2f}")
    return None


def bias(e: Evidence) -> Finding | None:
    """The model cannot fit its training set (a bottleneck narrower than the classes is
    stronger evidence)."""
    fit = training_fit(e)
    narrow = _get(e, "end model/narrowest_hidden", math.inf)
    classes = round(math.exp(_get(e, "chance loss", math.log(10))))
    if fit < FITS:
        strength = 2.2 if narrow < classes else 1
        return Finding("model_too_small", strength, f"training fit {fit:.3f}; narrowest layer {narrow:g}")
    return None


def variance(e: Evidence) -> Finding | None:
    """It fits training but not validation."""
    gap = _get(e, "train acc best", 0.0) - _get(e, "val acc best", 0.0)
    if gap > VARIANCE_GAP:
        return Finding("model_too_big", 2, f"training accuracy {gap:.3f} above validation")
    return None


def still_improving(e: Evidence) -> Finding | None:
    """Both losses still fall over the last quarter of the epochs (a single epoch has no
    tail: its trend is the fall from the epoch's mean training loss to the end model's
    loss on the training probe)."""
    val_fall, train_fall = _get(e, "val loss tail fall", 0.0), _get(e, "train loss tail fall", 0.0)
    if _get(e, "epochs", 0.0) == 1:
        mean, end = _get(e, "train loss last"), _get(e, "end probe/initial_loss")
        val_fall = train_fall = (mean - end) / mean if mean > 0 and math.isfinite(end) else 0.0
    if val_fall > STILL_FALLING and train_fall > STILL_FALLING:
        return Finding("too_few_epochs", 1.5, f"the last epochs still cut the losses by {val_fall:.0%} (val)")
    return None


RULES: tuple[Callable[[Evidence], Finding | None], ...] = (
    inputs_not_preprocessed, init_constant, init_scale, penalty_dominates, dropout_gap, diverged,
    weights_blew_up, updates_too_small, dead_units, vanishing, label_errors, bias, variance, still_improving,
)  # fmt: skip


def findings(e: Evidence) -> list[Finding]:
    """Every rule's finding on the evidence."""
    return [f for rule in RULES if (f := rule(e)) is not None]


def rank(found: list[Finding]) -> list[Finding]:
    """One ranked answer: by strength (ties: the rules' order), one finding per cause, and
    no cause beside a stronger one whose fix goes the opposite way."""
    ordered = sorted(found, key=lambda f: -f.strength)
    kept: list[Finding] = []
    for finding in ordered:
        if any(k.cause == finding.cause or frozenset({k.cause, finding.cause}) in OPPOSITES for k in kept):
            continue
        kept.append(finding)
    return kept


def first_cause(found: list[Finding]) -> str:
    """The cause a diagnosis names first (`healthy` when none)."""
    ranked = rank(found)
    return ranked[0].cause if ranked else HEALTHY
