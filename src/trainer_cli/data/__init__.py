"""The data pipeline: a source's tensors -> train/val/test split -> preprocessing -> loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer_cli import checks
from trainer_cli.data.augment import Augmentation
from trainer_cli.data.loaders import DeviceLoader, ShardedBatchSampler, TensorLoader
from trainer_cli.data.preprocess import Preprocess
from trainer_cli.data.sources import FolderData, TensorData
from trainer_cli.data.splits import corrupt_labels, kfold_indices, split_indices

__all__ = ["Data", "prepare", "split_indices", "Augmentation", "Preprocess"]

# How many training images an image folder's normalization statistics are read from.
FOLDER_STATS_SAMPLES = 2048


@dataclass
class Data:
    """Everything the loop needs from the data: three loaders and what was fitted."""

    train: TensorLoader | DeviceLoader
    val: TensorLoader | DeviceLoader
    test: TensorLoader | DeviceLoader
    preprocess: Preprocess
    classes: list[str]
    shuffle_generator: torch.Generator

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# The last in-memory source this process loaded, by its config node's YAML: a sweep's jobs
# (one after another, or each joblib worker's) that share the data node load it once. One
# entry, so memory stays one data set's; folders are read lazily and are not cached.
_LOADED: dict[str, TensorData] = {}


def cached_source(node_yaml: str, load: Callable[[], Any]) -> Any:
    """The source `node_yaml` describes, loaded by `load()` unless this process already has it.

    Each caller gets its own tensors (clones): nothing a run does to its data reaches the next.
    """
    source = _LOADED.get(node_yaml)
    if source is None:
        source = load()
        if not isinstance(source, TensorData):
            return source
        _LOADED.clear()
        _LOADED[node_yaml] = source
    tensors = (source.train_x, source.train_y, source.test_x, source.test_y)
    return TensorData(*(t.clone() for t in tensors), classes=list(source.classes))


def prepare(
    source: TensorData | FolderData,
    val_fraction: float,
    split_seed: int,
    preprocess: str | Preprocess,
    batch_size: int,
    device: torch.device,
    seed: int,
    num_workers: int = 0,
    fold: tuple[int, int] | None = None,
    augment: Augmentation | None = None,
    shard: tuple[int, int] = (0, 1),
    label_noise: float = 0.0,
    shuffle_labels: bool = False,
) -> Data:
    """Split off validation, fit preprocessing (and augmentation statistics) on the training
    split, and build the loaders; only the training loader augments. A `preprocess` that
    comes fitted (a pretrained run's statistics, carried by `init_from`) is kept as it is.

    With `fold=(k, i)` the validation set is fold i of k stratified folds (cross-validation).
    `shard=(rank, world_size)`: this process's share of every batch (several processes).
    `label_noise=p` / `shuffle_labels`: errors put into the training split's labels on purpose
    (`splits.corrupt_labels`, seeded by `split_seed`); validation and test stay true.
    """
    checks.open_interval("val_fraction", val_fraction, 0.0, 1.0)

    def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if fold is not None:
            return kfold_indices(labels, fold[0], fold[1], split_seed)
        return split_indices(labels, val_fraction, split_seed)

    shuffle_generator = torch.Generator().manual_seed(seed)
    prep = Preprocess(preprocess) if isinstance(preprocess, str) else preprocess
    if isinstance(source, TensorData):
        corrupt = (label_noise, shuffle_labels, len(source.classes), split_seed)
        return _tensor_data(source, split, prep, augment, batch_size, device, shuffle_generator, shard, corrupt)
    if label_noise or shuffle_labels:
        raise ValueError("label_noise: label errors are made in in-memory data sets only (not image folders)")
    return _folder_data(source, split, prep, augment, batch_size, device, shuffle_generator, shard, num_workers)


def _tensor_data(
    source: TensorData,
    split: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    prep: Preprocess,
    augment: Augmentation | None,
    batch_size: int,
    device: torch.device,
    shuffle_generator: torch.Generator,
    shard: tuple[int, int],
    corrupt: tuple[float, bool, int, int] = (0.0, False, 0, 0),
) -> Data:
    """In-memory tensors: raw pixels live on the device; each batch is augmented, then preprocessed."""
    train_idx, val_idx = split(source.train_y.numpy())
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    if not prep.fitted:
        prep.fit(source.train_x[train_idx])
    if augment is not None:
        augment.fit(source.train_x[train_idx])

    def loader(images: torch.Tensor, labels: torch.Tensor, **train: Any) -> TensorLoader:
        return TensorLoader(
            images.to(device), labels.to(device), batch_size, shuffle=bool(train), preprocess=prep,
            rank=shard[0], world_size=shard[1], **train,
        )  # fmt: skip

    return Data(
        train=loader(
            source.train_x[train_idx],
            corrupt_labels(source.train_y[train_idx], *corrupt),
            generator=shuffle_generator,
            augment=augment,
        ),
        val=loader(source.train_x[val_idx], source.train_y[val_idx]),
        test=loader(source.test_x, source.test_y),
        preprocess=prep,
        classes=source.classes,
        shuffle_generator=shuffle_generator,
    )


def _folder_data(
    source: FolderData,
    split: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    prep: Preprocess,
    augment: Augmentation | None,
    batch_size: int,
    device: torch.device,
    shuffle_generator: torch.Generator,
    shard: tuple[int, int],
    num_workers: int,
) -> Data:
    """Image folders, read by DataLoaders; each rank's batches moved to the device there.
    Preprocessing (and augmentation) statistics come from the first training images."""
    labels = np.array(_targets(source.train))
    train_idx, val_idx = split(labels)
    train_set = torch.utils.data.Subset(source.train, train_idx.tolist())
    val_set = torch.utils.data.Subset(source.train, val_idx.tolist())
    pin = device.type == "cuda"

    def loader(dataset, shuffle: bool, ranks: tuple[int, int] = shard) -> torch.utils.data.DataLoader:
        generator = shuffle_generator if shuffle else None
        if ranks[1] > 1:  # this rank's share of each global batch (the same draws as one process)
            sampler = (
                torch.utils.data.RandomSampler(dataset, generator=generator)
                if shuffle
                else torch.utils.data.SequentialSampler(dataset)
            )
            return torch.utils.data.DataLoader(
                dataset, batch_sampler=ShardedBatchSampler(sampler, batch_size, *ranks, drop_small_last=shuffle),
                num_workers=num_workers, pin_memory=pin, generator=generator, persistent_workers=num_workers > 0,
            )  # fmt: skip
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=pin,
            generator=generator, persistent_workers=num_workers > 0,
        )  # fmt: skip

    sample = torch.utils.data.Subset(train_set, list(range(min(FOLDER_STATS_SAMPLES, len(train_set)))))
    sample_images = torch.cat([images for images, _ in loader(sample, shuffle=False, ranks=(0, 1))])  # all ranks alike
    if not prep.fitted:
        prep.fit(sample_images)
    if augment is not None:
        augment.fit(sample_images)
    return Data(
        train=DeviceLoader(loader(train_set, True), device, prep, augment),
        val=DeviceLoader(loader(val_set, False), device, prep),
        test=DeviceLoader(loader(source.test, False), device, prep),
        preprocess=prep,
        classes=source.classes,
        shuffle_generator=shuffle_generator,
    )


def _targets(dataset) -> list[int]:
    if isinstance(dataset, torch.utils.data.Subset):
        parent = _targets(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    return list(dataset.targets)


def preview_images(loader: TensorLoader | DeviceLoader, count: int = 64) -> torch.Tensor:
    """The first `count` training images as raw pixels, read without drawing from the
    shuffle generator (a preview must not change the run)."""
    while not isinstance(loader, (TensorLoader, DeviceLoader)):
        loader = loader.loader  # a wrapper such as `trainer.limit_train_batches`'s LimitedBatches
    if isinstance(loader, TensorLoader):
        return loader.images[:count]
    dataset = loader.loader.dataset
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    return images.to(loader.device)
