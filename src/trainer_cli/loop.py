"""The explicit training loop: `train_one_epoch` and `evaluate`.

On an accelerator the hot path stays on the device: running sums are tensors, and the host
reads them only every `log_every_n_steps` steps (and at the end of the epoch). On the CPU a
host read costs nothing (no queue to drain), so the loop reads each step's loss once, for
the NaN check and the sums alike, and sums Python numbers: fewer tensor operations per step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from trainer_cli import checks, distributed, metrics
from trainer_cli.optim.penalties import decay_weights_

PRECISIONS = ("32", "bf16", "16")
NAN_CHECKS = ("auto", "step", "deferred")


class NonFiniteLoss(Exception):
    """The loss became NaN or Inf; raised before the optimizer step that would use it."""

    def __init__(self, step: int, value: float, noticed: int | None = None) -> None:
        where = (
            "stopped before the optimizer step"
            if noticed is None
            else f"noticed at step {noticed}: that step's gradients were zeroed, so no NaN reached the weights"
        )
        super().__init__(
            f"loss is {value} at step {step}; {where}. Likely causes: "
            "the learning rate is too high (try lr/10), a bad initialization, or bad input data"
        )
        self.step = step


class DeferredNonFiniteCheck:
    """The NaN/Inf check without a host sync every step (`trainer.nan_check=deferred`, the
    default on GPUs): each step's finiteness is recorded on the device; a step whose loss was
    not finite has its gradients zeroed before clipping and its decoupled weight decay
    skipped (as the fp16 grad scaler does for an overflow), and `check()`, called where the
    loop reads the host anyway (logging steps, the end of the epoch), raises NonFiniteLoss
    naming the first bad step. The optimizer still applies its momentum on a zeroed step."""

    def __init__(self, device: torch.device, step: int) -> None:
        self.step = torch.full((), step, device=device, dtype=torch.long)  # optimizer steps done
        self.first_step = torch.full((), -1, device=device, dtype=torch.long)
        self.first_value = torch.full((), float("nan"), device=device)  # this rank's bad loss (NaN: another rank's)
        self.window_finite = torch.ones((), device=device, dtype=torch.bool)

    def record(self, objective: torch.Tensor) -> None:
        finite = torch.isfinite(objective.detach())
        first = ~finite & (self.first_step < 0)
        self.first_step = torch.where(first, self.step, self.first_step)
        self.first_value = torch.where(first, objective.detach().float(), self.first_value)
        self.window_finite = self.window_finite & finite

    def zero_bad_gradients_(self, parameters: list[torch.Tensor]) -> torch.Tensor:
        """Zero the gradients of a step with a non-finite loss; returns 1.0 when it did."""
        bad = ~self.window_finite
        if distributed.world_size() > 1:
            # DDP's all-reduce carried one rank's NaN into every rank's gradients: every rank
            # zeroes them and stops at the same check (a tiny collective, no host sync).
            bad = distributed.all_reduce_sum(bad.float()) > 0
            self.first_step = torch.where(bad & (self.first_step < 0), self.step, self.first_step)
        for p in parameters:
            if p.grad is not None:
                p.grad.masked_fill_(bad, 0.0)
        self.window_finite = torch.ones_like(self.window_finite)
        return bad.float()

    def stepped(self) -> None:
        self.step += 1

    def check(self, now: int) -> None:
        if int(self.first_step) >= 0:  # the one host read, where the loop syncs anyway
            raise NonFiniteLoss(int(self.first_step), float(self.first_value), noticed=now)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 on CPU or CUDA, fp16 on CUDA, else off."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@dataclass
class StepOptions:
    """How each optimizer step is taken (`trainer.*`), built once per run.

    Args:
        precision: "32", "bf16" (autocast on CPU or CUDA) or "16" (fp16 autocast with
            gradient scaling; needs CUDA).
        accumulate_grad_batches: one optimizer step every k batches, on the mean of their losses.
        scaler: the fp16 gradient scaler, or None.
        nan_check: "step" (a host check of the loss before every step: free on the CPU),
            "deferred" (`DeferredNonFiniteCheck`: no per-step sync) or "auto" (step on the
            CPU, deferred on accelerators).
        channels_last: training batches in channels-last memory format (conv nets on GPUs).
    """

    @property
    def deferred_nan_check(self) -> bool:
        return self.nan_check == "deferred" or (self.nan_check == "auto" and self.device.type != "cpu")

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "32"
    grad_clip_norm: float | None = None
    grad_clip_value: float | None = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    scaler: torch.amp.GradScaler | None = None
    nan_check: str = "auto"
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.precision = checks.choice("precision", self.precision, PRECISIONS)
        checks.choice("nan_check", self.nan_check, NAN_CHECKS)
        if self.precision == "16" and torch.device(self.device).type != "cuda":
            raise ValueError(
                f"precision: '16' (fp16 with gradient scaling) needs CUDA, not {self.device}; use bf16 or 32"
            )
        checks.positive("grad_clip_norm", self.grad_clip_norm, optional=True)
        checks.positive("grad_clip_value", self.grad_clip_value, optional=True)
        checks.whole_number("accumulate_grad_batches", self.accumulate_grad_batches)
        checks.whole_number("log_every_n_steps", self.log_every_n_steps)


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs
    (null: never). Which way is better follows from the metric's name (metrics.py)."""

    monitor: str = "val/acc"
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        checks.choice("monitor", self.monitor, metrics.epoch_metrics())
        checks.whole_number("patience", self.patience, optional=True)
        checks.number("min_delta", self.min_delta, low=0.0)


@dataclass
class LoopState:
    """The loop's counters and bookkeeping, in every checkpoint: the epoch and optimizer step
    done, the best value of the optimized metric (and its epoch), early stopping's memory and
    the per-epoch history."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    stop_best: float | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # The running sums of an epoch interrupted mid-way (empty between epochs).
    partial: dict[str, float] = field(default_factory=dict)

    def end_epoch(self, row: dict[str, Any], metric: str, stopping: EarlyStopping) -> tuple[bool, bool]:
        """Record an epoch's row; returns (is it the best so far by `metric`, stop now?)."""
        self.epoch = int(row["epoch"])
        self.partial = {}
        self.history.append(row)
        improved = metrics.improved(row[metric], self.best, metric)
        if improved:
            self.best, self.best_epoch = row[metric], self.epoch
        monitored = row[stopping.monitor]
        if metrics.improved(monitored, self.stop_best, stopping.monitor, stopping.min_delta):
            self.stop_best, self.bad_epochs = monitored, 0
        else:
            self.bad_epochs += 1
        return improved, stopping.patience is not None and self.bad_epochs >= stopping.patience

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in copy.deepcopy(state).items():
            setattr(self, name, value)


@dataclass
class StepParts:
    """What a training step uses, named once (`Pieces.step_parts` builds it for a run).

    Args:
        model: what the step calls (a run's model, or its DDP wrapper).
        penalties: `penalties() -> {name: term}` added to the objective (regularization).
        batch_transform: `(images, labels) -> (images, targets)`: cutout/mixup/cutmix.
        ema: the exponential moving average of the weights, updated after each step.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    options: StepOptions = field(default_factory=StepOptions)
    penalties: Callable[[], dict[str, torch.Tensor]] | None = None
    batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    ema: AveragedModel | None = None


def train_one_epoch(
    parts: StepParts,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    step: int,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    totals: dict[str, float] | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over the training batches; returns the epoch's mean loss and accuracy and the
    global step after it.

    `batch_transform(images, labels) -> (images, targets)` is cutout/mixup/cutmix: the loss
    uses its (soft) targets, the accuracy the labels. With `accumulate_grad_batches` = k, one
    optimizer step (`optimizer_step`) follows every k batches, on the mean of their losses (a
    shorter last window is averaged over its own length; no gradients are left pending).
    `on_log(step, scalars)`, every `log_every_n_steps` steps: the window's loss and accuracy,
    LR per group, gradient norm, penalty terms, update-to-weight ratios, throughput.
    `on_step(step, totals)` after every step gets the epoch's running sums (mid-epoch
    checkpoints, stop requests); `totals` continues an epoch resumed mid-way.
    """
    model, optimizer, scheduler, loss_fn, options = (
        parts.model, parts.optimizer, parts.scheduler, parts.loss_fn, parts.options
    )  # fmt: skip
    penalties, batch_transform, ema = parts.penalties, parts.batch_transform, parts.ema
    device, accumulate = options.device, options.accumulate_grad_batches
    model.train()
    host = device.type == "cpu"  # sums of Python numbers; on accelerators tensors, read at the epoch's end
    zero = None if host else torch.zeros((), device=device)
    epoch = RunningSums(zero, totals)
    window = RunningSums(zero) if on_log is not None else None  # since the last log line
    parameters = [p for p in model.parameters() if p.requires_grad]
    # Weight matrices, by their names without DDP's "module." prefix (for the update ratios).
    ratios = UpdateRatios(
        [(n, p) for n, p in distributed.unwrap(model).named_parameters() if p.requires_grad and p.ndim >= 2]
    )
    num_batches = len(batches)  # type: ignore[arg-type]
    accumulated = 1
    nonfinite = DeferredNonFiniteCheck(device, step) if options.deferred_nan_check else None
    for index, (images, labels) in enumerate(batches):
        logits, loss, terms, objective = forward(
            model, images, labels, loss_fn, options, batch_transform, penalties, getattr(batches, "shard_weight", 1.0)
        )
        # One check per step: free on the CPU (no async queue); on GPUs recorded on the device
        # and read at the next logging step (DeferredNonFiniteCheck): no per-step sync.
        read = None  # the loss as read on the host for the check, when it is the objective
        if nonfinite is not None:
            nonfinite.record(objective)
        elif not math.isfinite(value := objective.item()):
            raise NonFiniteLoss(step, value)
        elif objective is loss:
            read = value
        if index % accumulate == 0:
            optimizer.zero_grad(set_to_none=True)
            accumulated = min(accumulate, num_batches - index)
        if accumulated > 1:
            objective = objective / accumulated
        if options.scaler is not None:
            options.scaler.scale(objective).backward()
        else:
            objective.backward()

        loss_sum, correct = batch_sums(loss, logits, labels, host, read)
        epoch.add(loss_sum, correct, labels.shape[0])
        if window is not None:
            window.add(loss_sum, correct, labels.shape[0], terms)
        if (index + 1) % accumulate != 0 and index + 1 != num_batches:
            continue

        log_now = window is not None and (step + 1) % options.log_every_n_steps == 0
        before = ratios.read() if log_now else None
        grad_norm = optimizer_step(optimizer, scheduler, options, parameters, nonfinite, measure_norm=log_now)
        step += 1
        if nonfinite is not None:
            nonfinite.stepped()
        if ema is not None:
            ema.update_parameters(model)
        if on_step is not None:
            on_step(step, epoch.totals())
        if log_now:
            if nonfinite is not None:
                nonfinite.check(step)
            scalars = window.scalars(scheduler.get_last_lr()[0], grad_norm)
            on_log(step, {**scalars, **_group_lrs(optimizer), **ratios.since(before)})
            window.reset()
    if nonfinite is not None:
        nonfinite.check(step)
    loss_sum, correct_sum, count = sum_over_ranks(epoch.loss, epoch.correct, epoch.count)
    return {"loss": float(loss_sum) / float(count), "acc": float(correct_sum) / float(count)}, step


def forward(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    options: StepOptions,
    batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    penalties: Callable[[], dict[str, torch.Tensor]] | None,
    shard_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """A training batch's forward pass: (logits, data loss, penalty terms, objective).

    The batch in channels-last format when asked, then transformed (cutout/mixup/cutmix: the
    loss uses the transform's targets); the forward pass under autocast. The objective is the
    data loss weighted by `shard_weight` (several processes: this rank's share of an unevenly
    split batch, so that DDP's average of the ranks' gradients is the gradient of the global
    batch's mean) plus the penalties.
    """
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    images, targets = batch_transform(images, labels) if batch_transform is not None else (images, labels)
    with autocast(options.device, options.precision):
        logits = model(images)
        loss = loss_fn(logits, targets)
    terms = penalties() if penalties is not None else {}
    weighted = loss * shard_weight if shard_weight != 1.0 else loss
    return logits, loss, terms, (weighted + sum(terms.values()) if terms else weighted)


def batch_sums(
    loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, host: bool, read: float | None = None
) -> tuple[torch.Tensor | float, torch.Tensor | int]:
    """A batch's loss summed over its samples and its correct predictions: Python numbers
    when `host` (the CPU, where a host read is free; `read`, the loss already read, is not
    read again), else device tensors (no sync)."""
    correct = (logits.detach().argmax(1) == labels).sum()
    if host:
        return (loss.item() if read is None else read) * labels.shape[0], correct.item()
    return loss.detach().float() * labels.shape[0], correct


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    options: StepOptions,
    parameters: list[torch.nn.Parameter],
    nonfinite: DeferredNonFiniteCheck | None = None,
    measure_norm: bool = False,
) -> torch.Tensor | None:
    """One optimizer step on the gradients already accumulated: unscale (fp16), clip by norm
    and by value, the decoupled weight decay (skipped with the step when a gradient is not
    finite), the step, the schedule's step. Returns the gradient norm before clipping when
    clipping by norm or `measure_norm`, else None."""
    scaler = options.scaler
    skipped = nonfinite.zero_bad_gradients_(parameters) if nonfinite is not None else None
    if scaler is not None:
        scaler.unscale_(optimizer)
        # The scaler will skip this step if a gradient overflowed: so must the decoupled decay.
        overflow = sum(scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values())
        skipped = overflow if skipped is None else torch.maximum(skipped, overflow.to(skipped.device))
    grad_norm = None
    if options.grad_clip_norm is not None:
        grad_norm = nn.utils.clip_grad_norm_(parameters, options.grad_clip_norm)  # the norm before clipping
    elif measure_norm:
        grad_norm = nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    if options.grad_clip_value is not None:
        nn.utils.clip_grad_value_(parameters, options.grad_clip_value)
    decay_weights_(optimizer, skipped)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    return grad_norm


class RunningSums:
    """A training loss and accuracy summed over batches, and each penalty term: of the epoch
    (`totals` continues one resumed mid-way) or of the log window. Kept on the device (`zero`,
    a device scalar: no host sync) or, with `zero=None`, as Python numbers (the CPU)."""

    def __init__(self, zero: torch.Tensor | None, totals: dict[str, float] | None = None) -> None:
        self.zero = zero
        self.reset()
        if totals:
            self.loss += totals["loss"]
            self.correct += totals["correct"]
            self.count = int(totals["count"])

    def totals(self) -> dict[str, Any]:
        return {"loss": self.loss, "correct": self.correct, "count": self.count}

    def add(
        self,
        loss_sum: torch.Tensor | float,
        correct: torch.Tensor | int,
        count: int,
        terms: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.loss += loss_sum
        self.correct += correct
        self.count += count
        self.batches += 1
        for name, term in (terms or {}).items():
            value = term.item() if self.zero is None else term.detach().float()
            self.penalties[name] = self.penalties.get(name, 0.0 if self.zero is None else self.zero) + value

    def scalars(self, lr: float, grad_norm: torch.Tensor) -> dict[str, float]:
        seconds = time.perf_counter() - self.start
        scalars = {
            "train/loss_step": float(self.loss) / self.count,
            "train/acc_step": float(self.correct) / self.count,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "samples_per_s": self.count / max(seconds, 1e-9),
        }
        scalars.update({f"train/penalty/{k}": float(v) / self.batches for k, v in self.penalties.items()})
        return scalars

    def reset(self) -> None:
        if self.zero is None:
            self.loss, self.correct = 0.0, 0
        else:
            self.loss, self.correct = self.zero.clone(), self.zero.clone()
        self.penalties: dict[str, Any] = {}
        self.count, self.batches, self.start = 0, 0, time.perf_counter()


def sum_over_ranks(
    loss: torch.Tensor | float, correct: torch.Tensor | int, count: int
) -> tuple[torch.Tensor | float, torch.Tensor | int, int | torch.Tensor]:
    """A metric's sums over every rank's shard (unchanged in a single process): each sample
    of the split is counted once."""
    if distributed.world_size() == 1:
        return loss, correct, count
    if isinstance(loss, torch.Tensor):
        stacked = torch.stack([loss.double(), correct.double(), loss.new_tensor(count).double()])
    else:  # Python numbers (the CPU loop's sums): gloo reduces CPU tensors
        stacked = torch.tensor([loss, correct, count], dtype=torch.float64)
    totals = distributed.all_reduce_sum(stacked)
    return totals[0], totals[1], totals[2]


def _group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {f"lr/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


UPDATE_SAMPLE = 4096  # entries of each weight the update ratio reads (every entry of a smaller weight)


class UpdateRatios:
    """||W_new - W_old|| / ||W_old|| of each weight matrix over an optimizer step: the
    lecture's rule of thumb is about 1e-3 (the curves diagnosis reads it on a log scale).

    A weight of more than UPDATE_SAMPLE entries is read at a fixed sample of that many
    (drawn once, from a generator of its own: the run's random numbers are not touched),
    an estimate within a few percent, instead of copying every weight at every logging step
    (for a 270k-parameter MLP on the CPU, 0.45 ms a log line). Smaller weights: exact.
    """

    def __init__(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        self.weights = weights
        self.index = [
            None
            if w.numel() <= UPDATE_SAMPLE
            else torch.randint(
                w.numel(), (UPDATE_SAMPLE,), generator=torch.Generator(w.device).manual_seed(i), device=w.device
            )
            for i, (_, w) in enumerate(weights)
        ]

    @torch.no_grad()
    def read(self) -> list[torch.Tensor]:
        """The weights' values now (their samples), before the step."""
        pairs = zip(self.weights, self.index, strict=True)
        return [w.detach().clone() if i is None else torch.take(w, i) for (_, w), i in pairs]

    @torch.no_grad()
    def since(self, before: list[torch.Tensor]) -> dict[str, float]:
        """`update_ratio/<name>` of each weight, from `before` (`read()`) to now."""
        if not self.weights:
            return {}
        ratios = torch.stack(
            [(now - old).norm() / old.norm().clamp_min(1e-12) for now, old in zip(self.read(), before, strict=True)]
        )
        return {f"update_ratio/{name}": value for (name, _), value in zip(self.weights, ratios.tolist(), strict=True)}


def train_full_batch(
    parts: StepParts,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    step: int,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    totals: dict[str, float] | None = None,
) -> tuple[dict[str, float], int]:
    """One full-batch optimizer step (L-BFGS): the closure is the mean loss over every
    training batch plus the penalties; the line search calls it several times per step.

    Returns the loss and accuracy at the start of the step (the closure's first call) and
    the step after it. Same signature as `train_one_epoch`; a full-batch objective takes no
    batch transform (the config check refuses one).
    """
    model, optimizer, scheduler, loss_fn, options = (
        parts.model, parts.optimizer, parts.scheduler, parts.loss_fn, parts.options
    )  # fmt: skip
    penalties, ema = parts.penalties, parts.ema
    device, precision = options.device, options.precision
    model.train()
    num_samples = sum(labels.shape[0] for _, labels in batches)
    evaluations: list[dict[str, torch.Tensor]] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for images, labels in batches:
            with autocast(device, precision):
                logits = model(images)
                loss = loss_fn(logits, labels) * (labels.shape[0] / num_samples)
            loss.backward()
            total += loss.detach().float()
            correct += (logits.detach().argmax(1) == labels).sum()
        terms = penalties() if penalties is not None else {}
        if terms:
            sum(terms.values()).backward()
        objective = total + sum(t.detach() for t in terms.values())
        if not torch.isfinite(objective):
            raise NonFiniteLoss(step, float(objective))
        evaluations.append({"loss": total, "correct": correct, **{f"train/penalty/{k}": v for k, v in terms.items()}})
        return objective

    optimizer.step(closure)
    scheduler.step()
    step += 1
    if ema is not None:
        ema.update_parameters(model)
    first = evaluations[0]
    metrics = {"loss": float(first["loss"]), "acc": float(first["correct"]) / num_samples}
    if on_log is not None:
        lr = scheduler.get_last_lr()[0]
        scalars = {"train/loss_step": metrics["loss"], "train/acc_step": metrics["acc"], "lr": lr}
        scalars.update({k: float(v) for k, v in first.items() if k.startswith("train/penalty/")})
        scalars.update({"function_evaluations": float(len(evaluations)), "samples_per_s": 0.0})
        on_log(step, scalars)
    return metrics, step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    precision: str = "32",
    loss_fn: nn.Module | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy over all batches, in eval mode.

    `loss`: the run's own loss (`loss_fn`, a batch mean, as the training step computes it), so
    train/loss, val/loss and test/loss are one quantity; with `loss_fn`, `cross_entropy` too
    (the softmax cross-entropy, for rules written for it: the initial loss near ln C). Without
    `loss_fn`: the cross-entropy, as `loss` (the diagnosis's yardstick).
    """
    model.eval()
    total_loss = torch.zeros((), device=device)
    total_cross_entropy = torch.zeros((), device=device)  # the same as total_loss without loss_fn
    correct = torch.zeros((), device=device)
    count = 0
    for images, labels in batches:
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        cross_entropy = nn.functional.cross_entropy(logits, labels, reduction="sum")
        total_cross_entropy += cross_entropy
        # The run's loss is a batch mean: times the batch, summed, over all samples at the end.
        total_loss += cross_entropy if loss_fn is None else loss_fn(logits, labels) * labels.shape[0]
        correct += (logits.argmax(1) == labels).sum()
        count += labels.shape[0]
    summed_loss, summed_correct, samples = sum_over_ranks(total_loss, correct, count)
    result = {"loss": float(summed_loss) / float(samples), "acc": float(summed_correct) / float(samples)}
    if loss_fn is not None:
        summed_cross_entropy = sum_over_ranks(total_cross_entropy, correct, count)[0]
        result["cross_entropy"] = float(summed_cross_entropy) / float(samples)
    return result
