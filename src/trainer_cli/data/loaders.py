"""Batching: in-memory tensors indexed on the device, or a DataLoader for image folders.

With several processes both shard each global batch across the ranks in the same way.

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

    With several processes (`rank` of `world_size`), `batch_size` is the global batch: every
    rank draws the same permutation and takes its contiguous share of each global batch
    (`torch.tensor_split`: shares differ by at most one sample), so the ranks together see
    exactly the batches one process sees. `shard_weight` is the current batch's share
    relative to an even split (1.0 unless the last batch divides unevenly): the loop scales
    the mean loss by it so that DDP's gradient average is the mean over the global batch. A
    shuffled loader drops a last batch smaller than `world_size` (a rank would get nothing
    to train on); the evaluation loaders keep every sample.
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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator
        self.augment, self.preprocess = augment, preprocess
        self.rank, self.world_size, self.shard_weight = rank, world_size, 1.0
        self._preprocessed: tuple[list, torch.Tensor] | None = None  # (the statistics used, the images)
        self.position = EpochPosition()

    def __len__(self) -> int:
        n = len(self.labels)
        if self.world_size > 1 and self.shuffle and 0 < n % self.batch_size < self.world_size:
            return n // self.batch_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def raw_batches(self, images: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches before augmentation and preprocessing: pixel values in [0, 1] (or the
        rows of `images`, the same samples preprocessed, when given)."""
        images = self.images if images is None else images
        n = len(self.labels)
        skip = self.position.begin_epoch(self.generator)
        order = torch.randperm(n, generator=self.generator).to(self.labels.device) if self.shuffle else None
        for i in range(skip, len(self)):
            self.position.batches = i + 1
            if self.world_size > 1:
                index = order if order is not None else torch.arange(n, device=self.labels.device)
                index = index[i * self.batch_size : (i + 1) * self.batch_size]
                shares = torch.tensor_split(index, self.world_size)
                index = shares[self.rank]
                self.shard_weight = len(index) * self.world_size / sum(len(s) for s in shares)
                if len(index):
                    yield images[index], self.labels[index]
            elif order is None:
                window = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield images[window], self.labels[window]
            else:
                index = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield images[index], self.labels[index]
        self.position.end_epoch()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.augment is None and hasattr(self.preprocess, "state_dict"):
            return self.raw_batches(self.preprocessed_images())
        return _augment_then_preprocess(self.raw_batches(), self.augment, self.preprocess)

    def preprocessed_images(self) -> torch.Tensor:
        """All images preprocessed once (nothing to augment before), not every batch of every
        epoch; again whenever the preprocessing's statistics change (`fit`, or a checkpoint's
        state loaded on resume). It keeps a second copy of the images on the device."""
        statistics = list(self.preprocess.state_dict().values())
        cached = self._preprocessed
        if cached is None or len(cached[0]) != len(statistics) or not all(map(_same, cached[0], statistics)):
            self._preprocessed = cached = (statistics, self.preprocess(self.images))
        return cached[1]


def _same(a: object, b: object) -> bool:
    # Statistics are replaced, never changed in place: the same tensor object is the same value.
    return a is b if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) else a == b


class ShardedBatchSampler(torch.utils.data.Sampler):
    """A DataLoader's batches for one rank of several: the global batches of `sampler`
    (`batch_size` indices each), each cut into `world_size` contiguous shares exactly as
    TensorLoader cuts them (`torch.tensor_split`: shares differ by at most one index); this
    rank's share is yielded.

    Every rank iterates the same sampler (a RandomSampler on the shuffle generator, seeded
    alike on every rank, or a SequentialSampler), so the ranks together see each sample of
    the epoch once and one process with the same `batch_size` sees the same global batches.
    PyTorch's DistributedSampler is not used: it pads a split that does not divide evenly
    with repeated samples (a validation sample counted twice) or drops its tail, and it
    draws its own permutation, so one process and N would train on different batches.
    A last global batch smaller than `world_size` is dropped when `drop_small_last`
    (training: a rank with nothing would stall DDP's gradient all-reduce); evaluation keeps
    every sample and a rank may then skip an empty share.
    """

    def __init__(
        self, sampler: torch.utils.data.Sampler, batch_size: int, rank: int, world_size: int, drop_small_last: bool
    ) -> None:
        self.sampler, self.batch_size, self.rank, self.world_size = sampler, batch_size, rank, world_size
        self.drop_small_last = drop_small_last

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest and (rest >= self.world_size or not self.drop_small_last) else 0)

    def share(self, size: int) -> slice:
        """This rank's part of a global batch of `size` indices (torch.tensor_split's cut)."""
        base, extra = divmod(size, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def global_size(self, index: int) -> int:
        """How many samples the global batch number `index` of the epoch holds."""
        return min(self.batch_size, len(self.sampler) - index * self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch[self.share(len(batch))]
                batch = []
        last = batch[self.share(len(batch))]
        if last and (len(batch) >= self.world_size or not self.drop_small_last):  # an empty share: nothing
            yield last


class DeviceLoader:
    """A DataLoader whose batches are moved to the device, augmented and preprocessed there.

    With several processes its batch sampler is a ShardedBatchSampler, and `shard_weight`
    is the current batch's share relative to an even split, as for TensorLoader.
    """

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        device: torch.device,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.loader, self.device, self.preprocess, self.augment = loader, device, preprocess, augment
        self.position = EpochPosition()
        self.shard_weight = 1.0

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
            sharded = self.loader.batch_sampler
            if isinstance(sharded, ShardedBatchSampler):
                self.shard_weight = len(labels) * sharded.world_size / sharded.global_size(i)
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
