"""The readings the lectures' causes imply, each a small pure function of a model and a fixed
probe batch (no host sync on the training step; called at an epoch's end or once per run):

- the statistics of the batch at the model's input (not normalised: far from mean 0, std 1
  means the inputs were not preprocessed);
- the gradient norm by depth (the first weight layer's against the last: vanishing or exploding);
- the activations' scale by depth (the last activation layer's std against the first's);
- the penalty's share of the objective (regularization too strong);
- the training accuracy in eval mode against train mode (dropout too strong);
- how the per-sample training loss is spread (a group the model cannot fit: label errors);
- how alike a layer's units are (constant initialization never breaks the symmetry).

`Signals` is the hook (the `Callback` contract in RULES.md) that writes them into each
epoch's history row; `read` returns them as one flat dict for the rules.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer_cli.callbacks import Callback

PROBE_SAMPLES = 256  # the fixed probe batch: the first training samples, in order


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv layers in forward (registration) order: depth 1 first."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def input_statistics(images: torch.Tensor) -> dict[str, float]:
    """Mean, std and largest magnitude of the batch the model receives."""
    images = images.detach().float()
    return {
        "input/mean": float(images.mean()),
        "input/std": float(images.std()),
        "input/abs_max": float(images.abs().max()),
    }


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The cross-entropy gradient's norm per weight layer (depth order), relative to the
    layer's weight norm being irrelevant here: the plain norms, on the probe batch, in eval
    mode (no dropout noise); the model's gradients are left as they were."""
    layers = weight_layers(model)
    saved = [p.grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        weights = [layer.weight for layer in layers]
        loss = F.cross_entropy(model(images).float(), labels)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), saved, strict=True):
            p.grad = g
    return [float(g.norm()) if g is not None else 0.0 for g in grads]


def depth_ratio(norms: list[float]) -> float:
    """log10 of the first weight layer's gradient norm over the last's: -2 means the input
    layer learns 100x slower (vanishing), +2 100x faster (exploding)."""
    if len(norms) < 2 or norms[-1] <= 0 or norms[0] <= 0:
        return 0.0
    return math.log10(norms[0] / norms[-1])


@torch.no_grad()
def accuracy_by_mode(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Training-sample accuracy in eval mode and in train mode (dropout on; batch norm's
    running statistics and the RNGs restored, so the run is unchanged)."""
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        model.eval()
        eval_acc = float((model(images).argmax(1) == labels).float().mean())
        model.train()
        with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
            train_acc = float((model(images).argmax(1) == labels).float().mean())
    finally:
        model.train(was_training)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return {"probe/acc_eval_mode": eval_acc, "probe/acc_train_mode": train_acc}


@torch.no_grad()
def loss_spread(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The per-sample cross-entropy of the training probe in eval mode: its median, and the
    share of samples the model gets wrong with confidence (loss above ln C while the median
    is far below it): a group it cannot fit, as mislabelled samples are."""
    was_training = model.training
    model.eval()
    try:
        logits = model(images).float()
    finally:
        model.train(was_training)
    losses = F.cross_entropy(logits, labels, reduction="none")
    chance = math.log(logits.shape[1])
    return {
        "probe/loss_median": float(losses.median()),
        "probe/loss_above_chance": float((losses > chance).float().mean()),
        "probe/initial_loss": float(losses.mean()),
    }


@torch.no_grad()
def unit_similarity(model: nn.Module) -> float:
    """How alike the first weight layer's units are: the spread of its rows across units
    over their typical size (0 when every unit has the same weights: constant init)."""
    layers = weight_layers(model)
    if not layers:
        return 1.0
    rows = layers[0].weight.detach().float().flatten(1)
    scale = rows.abs().mean()
    return float(rows.std(dim=0).mean() / scale) if scale > 0 else 0.0


@torch.no_grad()
def init_gain(model: nn.Module) -> float:
    """The weight layers' median of std(W) * sqrt(fan_in): the scale of the initialization in
    the lecture's units (Xavier ~1, He ~1.4, PyTorch's default ~0.58; 0.01-Gaussian on 64
    inputs 0.08)."""
    layers = [m.weight.float() for m in weight_layers(model) if m.weight.numel() > 1]
    gains = sorted(float(w.std() * math.sqrt(w[0].numel())) for w in layers)
    return gains[len(gains) // 2] if gains else 1.0


def narrowest_hidden(model: nn.Module) -> int:
    """The fewest units (or channels) of any hidden weight layer: a bottleneck below the
    number of classes is a model too small."""
    layers = weight_layers(model)[:-1]
    widths = [m.weight.shape[0] for m in layers]
    return min(widths) if widths else 0


def penalty_share(penalties: Any, data_loss: float) -> float:
    """The penalties' share of the objective, penalty / (data loss + penalty) (0 without any)."""
    if not penalties:
        return 0.0
    with torch.no_grad():
        total = float(sum(v.float() for v in penalties().values()))
    return total / (total + data_loss) if total + data_loss > 0 else 0.0


def activation_depth_ratio(values: dict[str, torch.Tensor]) -> float:
    """log10 of the last activation layer's std over the first's (the lecture's per-layer
    activation plots in one number): -3 means the signal shrinks 1000x on its way through
    the net, as with weights too small for its depth; 0 with fewer than two layers."""
    stds = [float(v.std()) for v in values.values() if v.numel() > 1]
    if len(stds) < 2 or stds[0] <= 0:
        return 0.0
    return math.log10(max(stds[-1], 1e-12) / stds[0])


def dead_and_saturated(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """The worst layer's dead ReLU share and saturated tanh/sigmoid share on the probe, and
    how the activations' scale changes with depth."""
    from trainer_cli.models.stats import activation_values, unit_fractions

    values = activation_values(model, images)
    fractions = unit_fractions(model, values, images.shape[0])
    return {
        "probe/dead_fraction": max(fractions["dead_fraction"].values(), default=0.0),
        "probe/saturated_fraction": max(fractions["saturated_fraction"].values(), default=0.0),
        "act/depth_log10_ratio": activation_depth_ratio(values),
    }


def probe_batch(data: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe: the first `PROBE_SAMPLES` training samples, preprocessed as the
    model sees them (unaugmented); for image folders, the first validation batch."""
    train = data.train
    if hasattr(train, "images"):
        images, labels = train.images[:PROBE_SAMPLES], train.labels[:PROBE_SAMPLES]
        return data.preprocess(images.to(device)), labels.to(device)
    images, labels = next(iter(data.val))
    return images.to(device), labels.to(device)


def read(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, penalties: Any = None) -> dict[str, float]:
    """Every reading on the probe batch, one flat dict (the names are history columns)."""
    norms = gradient_norms(model, images, labels)
    out = {**input_statistics(images), **accuracy_by_mode(model, images, labels), **loss_spread(model, images, labels)}
    out.update(dead_and_saturated(model, images))
    out["grad/first_norm"], out["grad/last_norm"] = (norms[0], norms[-1]) if norms else (0.0, 0.0)
    out["grad/depth_log10_ratio"] = depth_ratio(norms)
    out["weights/unit_spread"] = unit_similarity(model)
    out["weights/init_gain"] = init_gain(model)
    out["model/narrowest_hidden"] = float(narrowest_hidden(model))
    out["penalty/share"] = penalty_share(penalties, out["probe/initial_loss"])
    return out


class Signals(Callback):
    """The hook (`conf/callbacks/diagnose_signals.yaml`) that records `read` at every epoch's
    end on the fixed probe batch, and the start's readings (prefixed `start/`) in the first
    epoch's row; it never changes the step (no optimizer state, gradients, buffers or RNG
    touched). Not in the default list: a few forward passes and a backward on 256 samples cost
    ~80 ms an epoch on the loaded 2-core CPU, half a digits epoch; the `curves` step reads the
    same signals itself."""

    def __init__(self) -> None:
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self.start: dict[str, float] = {}

    def _read(self, run: Any) -> dict[str, float]:
        pieces = run.pieces
        if self.probe is None:
            self.probe = probe_batch(pieces.data, pieces.device)
        return read(pieces.model, *self.probe, pieces.penalties)

    def on_train_start(self, run: Any) -> None:
        self.start = {f"start/{k}": v for k, v in self._read(run).items()}

    def on_epoch_end(self, run: Any, epoch: int, row: dict) -> None:
        row.update(self._read(run))
        if epoch == 1:
            row.update(self.start)
