"""Smaller and resized versions of an in-memory data set, for transfer learning: a subset of
its classes (relabelled 0..k-1), a few training images per class, another image size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from trainer_cli import checks
from trainer_cli.data.sources import TensorData


def class_subset(source: TensorData, classes: Sequence[int | str]) -> TensorData:
    """Only the images of `classes` (indices or names), relabelled 0..k-1 in the order given."""
    if not classes:
        raise ValueError("classes: expected a non-empty list of class indices or names")
    indices = []
    for c in classes:
        index = source.classes.index(c) if isinstance(c, str) and c in source.classes else c
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(source.classes):
            raise ValueError(f"classes: '{c}' is not a class; choose indices 0..{len(source.classes) - 1} or names")
        indices.append(index)
    if len(set(indices)) != len(indices):
        raise ValueError(f"classes: {list(classes)} names a class twice")
    relabel = torch.full((len(source.classes),), -1, dtype=torch.int64)
    relabel[torch.tensor(indices)] = torch.arange(len(indices))

    def keep(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = relabel[y] >= 0
        return x[mask], relabel[y[mask]]

    train_x, train_y = keep(source.train_x, source.train_y)
    test_x, test_y = keep(source.test_x, source.test_y)
    return TensorData(train_x, train_y, test_x, test_y, [source.classes[i] for i in indices])


def few_shot(source: TensorData, samples_per_class: int, seed: int) -> TensorData:
    """`samples_per_class` training images of each class, drawn at random by `seed`; the test set is kept."""
    checks.whole_number("samples_per_class", samples_per_class)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(source.classes)):
        members = torch.nonzero(source.train_y == label).flatten()
        if len(members) < samples_per_class:
            raise ValueError(
                f"samples_per_class: class '{source.classes[label]}' has {len(members)} training images, "
                f"fewer than {samples_per_class}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:samples_per_class]])
    picked = torch.cat(chosen).sort().values
    return TensorData(source.train_x[picked], source.train_y[picked], source.test_x, source.test_y, source.classes)


def resized(source: TensorData, image_size: int) -> TensorData:
    """Images scaled to `image_size` x `image_size` (bilinear, antialiased when shrinking)."""
    checks.whole_number("image_size", image_size)

    def scale(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == image_size and x.shape[-2] == image_size:
            return x
        out = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
        return out.clamp(0, 1)

    return TensorData(scale(source.train_x), source.train_y, scale(source.test_x), source.test_y, source.classes)
