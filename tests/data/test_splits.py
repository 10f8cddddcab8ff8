"""The split without scikit-learn is scikit-learn's split, and the digits without it are its digits."""

from __future__ import annotations

import numpy as np
import pytest

from trainer_cli.data.splits import split_indices


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    "labels",
    [
        np.repeat(np.arange(10), 18)[:179],  # uneven classes: the remainders are handed out by the generator
        np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 0, 1, 2, 3, 4, 4, 4]),  # ties between classes
        np.array([0, 1, 0, 1, 2, 5, 5, 2, 0, 3]),  # a class of one sample: not stratified
    ],
)
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_split_indices_equals_scikit_learn(labels: np.ndarray, fraction: float, seed: int) -> None:
    from sklearn.model_selection import train_test_split

    kept, held = split_indices(labels, fraction, seed)
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    n_held = int(np.ceil(fraction * len(labels)))
    stratify = counts.min() >= 2 and min(n_held, len(labels) - n_held) >= len(counts)
    want_kept, want_held = train_test_split(
        np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels if stratify else None
    )
    assert kept.tolist() == sorted(want_kept.tolist())
    assert held.tolist() == sorted(want_held.tolist())


def test_digits_read_without_scikit_learn_equal_its_loader() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    from trainer_cli.data.sources import load_digits

    ours, theirs = load_digits(), sklearn_digits()
    images = np.concatenate([ours.train_x.numpy(), ours.test_x.numpy()]).reshape(-1, 64) * 16
    labels = np.concatenate([ours.train_y.numpy(), ours.test_y.numpy()])
    order = np.lexsort(np.c_[images, labels].T)
    want = np.c_[theirs.data, theirs.target]
    assert np.array_equal(np.c_[images, labels][order], want[np.lexsort(want.T)])
