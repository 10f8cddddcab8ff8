"""Batching: in-memory tensors indexed on the device, or a DataLoader for image folders.

Both keep the images as pixel values in [0, 1] and augment (training only) and preprocess
each batch on the device as it is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator
        self.augment, self.preprocess = augment, preprocess
        self.position = EpochPosition()

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def raw_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches before augmentation and preprocessing: pixel values in [0, 1]."""
        n = len(self.labels)
        skip = self.position.begin_epoch(self.generator)
        order = torch.randperm(n, generator=self.generator).to(self.labels.device) if self.shuffle else None
        for i in range(skip, len(self)):
            self.position.batches = i + 1
            if order is None:
                window = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield self.images[window], self.labels[window]
            else:
                index = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.images[index], self.labels[index]
        self.position.end_epoch()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _augment_then_preprocess(self.raw_batches(), self.augment, self.preprocess)


class DeviceLoader:
    """A DataLoader whose batches are moved to the device, augmented and preprocessed there."""

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        device: torch.device,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.loader, self.device, self.preprocess, self.augment = loader, device, preprocess, augment
        self.position = EpochPosition()

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    def raw_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches on the device, before augmentation and preprocessing."""
        skip = self.position.begin_epoch(self.loader.generator)
        for i, (images, labels) in enumerate(self.loader):
            if i < skip:  # a mid-epoch resume: the same order, the batches already trained on skipped
                continue
            self.position.batches = i + 1
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        self.position.end_epoch()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _augment_then_preprocess(self.raw_batches(), self.augment, self.preprocess)


class EpochPosition:
    """Where a training loader is inside its epoch, for an exact mid-epoch resume: the batches
    drawn so far and the shuffle generator's state before the epoch's order was drawn.

    One entry of the run's state list (`build.Pieces.stateful()`), restored after the random
    generators: the next epoch redraws the same order and skips the batches already done.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.epoch_start: torch.Tensor | None = None
        self.resume_at = 0

    def begin_epoch(self, generator: torch.Generator | None) -> int:
        """Called as an epoch's batches start; returns how many to skip (after a resume)."""
        if self.resume_at and generator is not None and self.epoch_start is not None:
            generator.set_state(self.epoch_start)
        else:
            self.epoch_start = generator.get_state() if generator is not None else None
        skip, self.resume_at, self.batches = self.resume_at, 0, 0
        return skip

    def end_epoch(self) -> None:
        self.batches = 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"batches": torch.tensor(self.batches)}
        if self.batches and self.epoch_start is not None:
            state["epoch_start"] = self.epoch_start
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.resume_at = int(state["batches"])
        self.epoch_start = state.get("epoch_start")


def _augment_then_preprocess(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    augment: Callable[[torch.Tensor], torch.Tensor] | None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # Augment raw pixels (jitter and policies need the [0, 1] range), then preprocess.
    for images, labels in batches:
        if augment is not None:
            images = augment(images)
        if preprocess is not None:
            images = preprocess(images)
        yield images, labels
