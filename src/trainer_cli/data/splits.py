"""Fixed, seeded splits of a labelled set (the test hold-out, the validation split).

`split_indices` gives exactly scikit-learn's `train_test_split(..., stratify=...)` split
(its StratifiedShuffleSplit / ShuffleSplit draws, on numpy's RandomState(seed)), in numpy
alone: importing scikit-learn costs more than a whole epoch of the default run (it loads
SciPy), and every run splits. tests/test_splits.py checks it equals scikit-learn's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trainer_cli import checks


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) index arrays; stratified by label when every class can be split."""
    n = len(labels)
    held = int(np.ceil(fraction * n))
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    # Stratify when each class has 2+ samples and both sides can hold one of each class.
    can_stratify = counts.min() >= 2 and min(held, n - held) >= len(counts)
    if not (0 < fraction < 1 and 0 < held < n):  # scikit-learn's own message for a split it refuses
        from sklearn.model_selection import train_test_split

        indices = np.arange(n)
        kept, out = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=labels if can_stratify else None
        )
        return np.sort(kept), np.sort(out)
    rng = np.random.RandomState(seed)
    n_test = math.ceil(fraction * n)
    n_train = n - n_test
    if not can_stratify:  # sklearn.model_selection.ShuffleSplit
        permutation = rng.permutation(n)
        return np.sort(permutation[n_test:]), np.sort(permutation[:n_test])
    # sklearn.model_selection.StratifiedShuffleSplit._iter_indices (scikit-learn 1.x)
    _, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(class_counts)):
        shuffled = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(shuffled[: n_i[i]])
        test.extend(shuffled[n_i[i] : n_i[i] + t_i[i]])
    # (scikit-learn then shuffles both lists with the same generator; sorted, they are the same sets)
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `utils.extmath._approximate_mode`: how many of `n_draws` each class
    gets (proportional, the remainders handed out largest first, ties broken by `rng`)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def kfold_indices(labels: np.ndarray, k: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) index arrays of fold `fold` of `k` stratified, shuffled folds."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    train, held = list(folds)[fold]
    return np.sort(train), np.sort(held)


def corrupt_labels(labels: torch.Tensor, noise: float, shuffle: bool, num_classes: int, seed: int) -> torch.Tensor:
    """The lecture's "errors in training labels", made on purpose (training split only).

    `noise=p`: exactly round(p * N) labels, drawn without replacement, each moved to one of
    the other C - 1 classes uniformly (so every chosen label really changes). `shuffle`: the
    labels permuted across the samples (unrelated to the images; the class counts stay).
    Seeded by `seed` alone, so a run and its k-fold or diagnosis copies corrupt the same labels.
    """
    checks.number("label_noise", noise, low=0.0, high=1.0)
    if noise == 0 and not shuffle:
        return labels
    generator = torch.Generator().manual_seed(seed)
    out = labels.clone()
    if shuffle:
        out = out[torch.randperm(len(out), generator=generator)]
    count = round(noise * len(out))
    if count:
        if num_classes < 2:
            raise ValueError(f"label_noise: {noise} needs at least 2 classes, this data has {num_classes}")
        chosen = torch.randperm(len(out), generator=generator)[:count]
        # An offset in 1..C-1 (mod C) lands on another class, each equally likely.
        offset = torch.randint(1, num_classes, (count,), generator=generator)
        out[chosen] = (out[chosen] + offset) % num_classes
    return out
