"""Batched augmentation: whole training batches on the training device, per-sample randomness.

Each function takes a float batch (N, C, H, W) and returns a new one of the same shape; no
Python loop runs over the samples of a batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def random_flip(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    flip = torch.rand(images.shape[0], device=images.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random window of the original size: a translation."""
    if padding <= 0:
        return images
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device)
    rows = (top + torch.arange(height, device=images.device)).view(n, 1, height, 1)
    cols = (left + torch.arange(width, device=images.device)).view(n, 1, 1, width)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channels = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


def build_augmentation(cfg: dict) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The training-batch augmentation the `augmentation` group selects, or None when off."""
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if "crop" in cfg:
        steps.append(lambda x, padding=int(cfg["crop"]["padding"]): random_crop(x, padding))
    if "flip" in cfg:
        steps.append(lambda x, p=float(cfg["flip"]["p"]): random_flip(x, p))
    if not steps:
        return None

    def augment(images: torch.Tensor) -> torch.Tensor:
        for step in steps:
            images = step(images)
        return images

    return augment
