"""The data pipeline: a source's tensors -> train/val/test split -> preprocessing -> loaders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer_cli.data.augment import build_augmentation
from trainer_cli.data.loaders import DeviceLoader, TensorLoader
from trainer_cli.data.preprocess import Preprocess
from trainer_cli.data.sources import FolderData, TensorData
from trainer_cli.data.splits import split_indices

__all__ = ["Data", "prepare", "build_augmentation", "split_indices"]

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


def prepare(
    source: TensorData | FolderData,
    val_fraction: float,
    split_seed: int,
    preprocess: str,
    batch_size: int,
    device: torch.device,
    seed: int,
    num_workers: int = 0,
) -> Data:
    """Split off validation, fit preprocessing on the training split, and build the loaders."""
    shuffle_generator = torch.Generator().manual_seed(seed)
    prep = Preprocess(preprocess)
    if isinstance(source, TensorData):
        train_idx, val_idx = split_indices(source.train_y.numpy(), val_fraction, split_seed)
        train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        prep.fit(source.train_x[train_idx])

        def put(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return prep(images).to(device), labels.to(device)

        train_x, train_y = put(source.train_x[train_idx], source.train_y[train_idx])
        val_x, val_y = put(source.train_x[val_idx], source.train_y[val_idx])
        test_x, test_y = put(source.test_x, source.test_y)
        return Data(
            train=TensorLoader(train_x, train_y, batch_size, shuffle=True, generator=shuffle_generator),
            val=TensorLoader(val_x, val_y, batch_size, shuffle=False),
            test=TensorLoader(test_x, test_y, batch_size, shuffle=False),
            preprocess=prep,
            classes=source.classes,
            shuffle_generator=shuffle_generator,
        )

    labels = np.array(_targets(source.train))
    train_idx, val_idx = split_indices(labels, val_fraction, split_seed)
    train_set = torch.utils.data.Subset(source.train, train_idx.tolist())
    val_set = torch.utils.data.Subset(source.train, val_idx.tolist())
    pin = device.type == "cuda"

    def loader(dataset, shuffle: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=pin,
            generator=shuffle_generator if shuffle else None, persistent_workers=num_workers > 0,
        )  # fmt: skip

    sample = torch.utils.data.Subset(train_set, list(range(min(FOLDER_STATS_SAMPLES, len(train_set)))))
    prep.fit(torch.cat([images for images, _ in loader(sample, shuffle=False)]))
    return Data(
        train=DeviceLoader(loader(train_set, True), device, prep),
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
