"""The device-resident loader: evaluation and unaugmented splits are preprocessed once."""

from __future__ import annotations

import pytest
import torch

from trainer_cli.data.loaders import TensorLoader, _augment_then_preprocess
from trainer_cli.data.preprocess import Preprocess


def loader(kind: str, augment=None) -> TensorLoader:
    images = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    prep = Preprocess(kind).fit(images)
    return TensorLoader(images, torch.arange(50), 16, shuffle=False, augment=augment, preprocess=prep)


@pytest.mark.parametrize("kind", ["channel_mean_std", "mean_image", "none"])
def test_preprocessing_once_gives_the_same_batches_as_per_batch(kind):
    data = loader(kind)
    per_batch = list(_augment_then_preprocess(data.raw_batches(), None, data.preprocess))
    once = list(data)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(once, per_batch, strict=True))  # bit for bit
    assert data.preprocessed_images() is data.preprocessed_images()  # computed once, reused every epoch


def test_loaded_statistics_are_applied_again():
    data = loader("channel_mean_std")
    before = next(iter(data))[0]
    other = Preprocess("channel_mean_std").fit(torch.rand(20, 1, 4, 4) * 3)
    data.preprocess.load_state_dict(other.state_dict())  # as on resume from a checkpoint
    after = next(iter(data))[0]
    assert not torch.allclose(before, after)
    assert torch.equal(after, other(data.images[:16]))


def test_an_augmented_loader_preprocesses_each_batch_after_augmenting():
    data = loader("channel_mean_std", augment=lambda x: x.flip(-1))
    assert torch.equal(next(iter(data))[0], data.preprocess(data.images[:16].flip(-1)))
    assert data._preprocessed is None
