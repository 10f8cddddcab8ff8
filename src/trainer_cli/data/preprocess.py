"""Preprocessing fitted on the training split only, stored in checkpoints, applied everywhere."""

from __future__ import annotations

import torch


class Preprocess:
    """A per-channel affine normalization x -> (x - mean) / std, or the identity.

    `fit` reads statistics from the training split alone; `state_dict` carries them into
    checkpoints so evaluation and later inference apply exactly the same transform.
    """

    def __init__(self, kind: str = "channel_mean_std") -> None:
        self.kind = kind
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, images: torch.Tensor) -> Preprocess:
        if self.kind == "channel_mean_std":
            images = images.double()
            self.mean = images.mean(dim=(0, 2, 3)).float()
            # A constant channel (std 0) is left unscaled rather than divided by zero.
            self.std = images.std(dim=(0, 2, 3)).float().clamp_min(1e-6)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "none" or self.mean is None:
            return images
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def state_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        self.kind, self.mean, self.std = state["kind"], state["mean"], state["std"]
