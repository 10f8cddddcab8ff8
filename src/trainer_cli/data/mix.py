"""Regularization by noise on training batches: cutout, mixup and cutmix.

Each is chosen by `'regularization=[<name>]'`; `conf/regularization/<name>.yaml` puts its
node under the run config's `mix` key (`mix.mixup.alpha`, keys = constructor arguments), and
`build.regularization` builds every node there into one `BatchRegularization`. Each is
called on a preprocessed training batch as `(images, targets) -> (images, targets)`, where
targets are class indices (N,) or class probabilities (N, num_classes). Mixup and cutmix
return probabilities, so the loss is the cross-entropy with soft targets. Every sample gets
its own random parameters, drawn at once for the batch; its partner is the previous image
of the (shuffled) batch, `roll(1)`. Nothing here runs in evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainer_cli import checks


def _soft(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(targets, num_classes).float() if targets.ndim == 1 else targets


def _beta(alpha: float, n: int, device: torch.device) -> torch.Tensor:
    concentration = torch.tensor(float(alpha), device=device)
    return torch.distributions.Beta(concentration, concentration).sample((n,))


def _boxes(n: int, height: int, width: int, box_h: torch.Tensor, box_w: torch.Tensor, device) -> torch.Tensor:
    """(N, 1, H, W) masks of one box per image: random centre, clipped at the borders."""
    cy = torch.randint(0, height, (n,), device=device)
    cx = torch.randint(0, width, (n,), device=device)
    top, bottom = (cy - box_h // 2).clamp(0, height), (cy - box_h // 2 + box_h).clamp(0, height)
    left, right = (cx - box_w // 2).clamp(0, width), (cx - box_w // 2 + box_w).clamp(0, width)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside = (rows >= top.view(n, 1, 1)) & (rows < bottom.view(n, 1, 1))
    inside = inside & (cols >= left.view(n, 1, 1)) & (cols < right.view(n, 1, 1))
    return inside.unsqueeze(1)


class Cutout:
    """Random erasing (DeVries & Taylor): set `holes` squares of `size` pixels to 0 (the
    training mean after preprocessing); each square's centre is anywhere in the image and
    the square is clipped at the borders. Labels are unchanged."""

    def __init__(self, holes: int = 1, size: int = 8) -> None:
        self.holes, self.size = checks.whole_number("holes", holes), checks.whole_number("size", size)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        side = torch.full((n,), self.size, device=images.device)
        erase = torch.zeros(n, 1, height, width, dtype=torch.bool, device=images.device)
        for _ in range(self.holes):  # a loop over holes (a few), not over samples
            erase |= _boxes(n, height, width, side, side, images.device)
        return images.masked_fill(erase, 0.0), targets


class Mixup:
    """mixup (Zhang et al.): x = lam x_i + (1 - lam) x_j and the same blend of the one-hot
    targets, lam ~ Beta(alpha, alpha) per sample."""

    def __init__(self, alpha: float = 0.2, num_classes: int = 10) -> None:
        self.alpha, self.num_classes = checks.positive("alpha", alpha), num_classes

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = _soft(targets, self.num_classes)
        weight = _beta(self.alpha, images.shape[0], images.device)
        mixed = torch.lerp(images.roll(1, 0), images, weight.view(-1, 1, 1, 1).to(images.dtype))
        return mixed, torch.lerp(targets.roll(1, 0), targets, weight.view(-1, 1))


class CutMix:
    """CutMix (Yun et al.): paste a box of the partner image, of area (1 - lam) of the image
    with lam ~ Beta(alpha, alpha) per sample; the target weight of the partner is the area
    actually pasted (after clipping at the borders)."""

    def __init__(self, alpha: float = 1.0, num_classes: int = 10) -> None:
        self.alpha, self.num_classes = checks.positive("alpha", alpha), num_classes

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = _soft(targets, self.num_classes)
        n, _, height, width = images.shape
        cut = torch.sqrt(1 - _beta(self.alpha, n, images.device))  # side fraction of the box
        box_h, box_w = (cut * height).round().long(), (cut * width).round().long()
        pasted = _boxes(n, height, width, box_h, box_w, images.device)
        area = pasted.float().mean(dim=(1, 2, 3)).view(-1, 1)
        mixed = torch.where(pasted, images.roll(1, 0), images)
        return mixed, torch.lerp(targets, targets.roll(1, 0), area)


class BatchRegularization:
    """The selected batch regularizers, applied in the order they were listed."""

    def __init__(self, steps: Sequence) -> None:
        self.steps = list(steps)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for step in self.steps:
            images, targets = step(images, targets)
        return images, targets
