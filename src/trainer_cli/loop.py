"""The explicit training loop: `train_one_epoch` and `evaluate`.

The hot path stays on the device: running sums are tensors, and the host reads them only
every `log_every_n_steps` steps (and at the end of the epoch).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn


class NonFiniteLoss(Exception):
    """The loss became NaN or Inf; raised before the optimizer step that would use it."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(
            f"loss is {value} at step {step}; stopped before the optimizer step. Likely causes: "
            "the learning rate is too high (try lr/10), a bad initialization, or bad input data"
        )
        self.step = step


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 on CPU or CUDA, fp16 on CUDA, else off."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    *,
    step: int,
    device: torch.device,
    precision: str = "32",
    scaler: torch.amp.GradScaler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    grad_clip_norm: float | None = None,
    log_every_n_steps: int = 10,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over the training batches.

    Returns the epoch's mean loss and accuracy and the global step after the epoch.
    `on_log(step, scalars)` is called every `log_every_n_steps` optimizer steps with the
    loss and accuracy since the last call, the learning rate, the gradient norm and the
    throughput. `mix(images, labels) -> (images, targets)` is the batch regularization
    (cutout, mixup, cutmix); the loss then uses its (possibly soft) targets, the accuracy
    the original labels.
    """
    model.train()
    zero = torch.zeros((), device=device)
    epoch_loss, epoch_correct, epoch_count = zero.clone(), zero.clone(), 0
    window_loss, window_correct, window_count = zero.clone(), zero.clone(), 0
    window_start = time.perf_counter()
    parameters = [p for p in model.parameters() if p.requires_grad]
    for images, labels in batches:
        if augment is not None:
            images = augment(images)
        targets = labels
        if mix is not None:
            images, targets = mix(images, labels)
        with autocast(device, precision):
            logits = model(images)
            loss = loss_fn(logits, targets)
        # One check per step: free on the CPU (no async queue); on CUDA a small sync that
        # buys stopping *before* a NaN reaches the weights.
        if not torch.isfinite(loss):
            raise NonFiniteLoss(step, float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        log_now = on_log is not None and (step + 1) % log_every_n_steps == 0
        grad_norm = None
        if grad_clip_norm is not None:
            grad_norm = nn.utils.clip_grad_norm_(parameters, grad_clip_norm)
        elif log_now:
            grad_norm = nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        step += 1

        batch = labels.shape[0]
        detached = loss.detach().float() * batch
        correct = (logits.detach().argmax(1) == labels).sum()
        epoch_loss += detached
        epoch_correct += correct
        epoch_count += batch
        if on_log is not None:
            window_loss += detached
            window_correct += correct
            window_count += batch
            if log_now:
                seconds = time.perf_counter() - window_start
                on_log(
                    step,
                    {
                        "train/loss_step": float(window_loss) / window_count,
                        "train/acc_step": float(window_correct) / window_count,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "samples_per_s": window_count / max(seconds, 1e-9),
                    },
                )
                window_loss.zero_()
                window_correct.zero_()
                window_count, window_start = 0, time.perf_counter()
    return {"loss": float(epoch_loss) / epoch_count, "acc": float(epoch_correct) / epoch_count}, step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    precision: str = "32",
) -> dict[str, float]:
    """Mean cross-entropy and accuracy over all batches, in eval mode."""
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    count = 0
    for images, labels in batches:
        with autocast(device, precision):
            logits = model(images)
        total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        count += labels.shape[0]
    return {"loss": float(total_loss) / count, "acc": float(correct) / count}
