"""Batching: in-memory tensors indexed on the device, or a DataLoader for image folders."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorLoader:
    """Batches of (images, labels) cut from tensors that already live on the training device.

    Each epoch draws one permutation from `generator` and indexes the tensors with it: no
    per-sample Python, no worker processes. The generator lives on the CPU so the order is
    the same on every device, and its state goes into checkpoints for an exact resume.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.labels.device)
        else:
            order = None
        for i in range(len(self)):
            if order is None:
                yield self.images[i * self.batch_size : (i + 1) * self.batch_size], self.labels[
                    i * self.batch_size : (i + 1) * self.batch_size
                ]
            else:
                index = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.images[index], self.labels[index]


class DeviceLoader:
    """A DataLoader whose batches are moved to the device (and preprocessed) as they come."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device, transform=None) -> None:
        self.loader, self.device, self.transform = loader, device, transform

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield (self.transform(images) if self.transform else images), labels
