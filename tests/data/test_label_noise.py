"""`data.label_noise` / `data.shuffle_labels`: label errors on purpose, training split only;
and `data.preprocess=standardize`, the per-dimension (x_i - m_i) / sigma_i."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import build_run
from trainer_cli.data.preprocess import Preprocess
from trainer_cli.data.splits import corrupt_labels


def test_exactly_the_fraction_changes_each_to_another_class():
    labels = torch.arange(1000) % 10
    noisy = corrupt_labels(labels, 0.4, False, 10, seed=3)
    assert int((noisy != labels).sum()) == 400  # every chosen label really moves
    assert noisy.min() >= 0 and noisy.max() <= 9
    assert torch.equal(noisy, corrupt_labels(labels, 0.4, False, 10, seed=3))  # seeded
    assert not torch.equal(noisy, corrupt_labels(labels, 0.4, False, 10, seed=4))
    assert torch.equal(corrupt_labels(labels, 0.0, False, 10, seed=3), labels)


def test_shuffled_labels_keep_the_class_counts():
    labels = torch.arange(500) % 10
    shuffled = corrupt_labels(labels, 0.0, True, 10, seed=0)
    assert torch.equal(torch.bincount(shuffled), torch.bincount(labels))
    assert (shuffled != labels).float().mean() > 0.8


def test_only_the_training_split_is_corrupted(make_cfg):
    clean = build_run(make_cfg()).data
    noisy = build_run(make_cfg("data.label_noise=0.25")).data
    changed = int((noisy.train.labels != clean.train.labels).sum())
    assert changed == round(0.25 * len(clean.train.labels))
    assert torch.equal(noisy.val.labels, clean.val.labels)
    assert torch.equal(noisy.test.labels, clean.test.labels)
    assert torch.equal(noisy.train.images, clean.train.images)


def test_a_noise_outside_0_1_is_a_one_line_error(make_cfg):
    from trainer_cli.config import UserError

    with pytest.raises(UserError, match=r"data.label_noise.*1.5"):
        build_run(make_cfg("data.label_noise=1.5"))


def test_standardize_is_per_dimension_and_matches_a_hand_computation():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(50, 2, 3, 3, generator=generator) * torch.arange(1, 19).view(1, 2, 3, 3)
    images[:, 0, 0, 0] = 0.5  # a constant pixel: centred, not divided by 0
    prep = Preprocess("standardize").fit(images)
    out = prep(images)
    flat = images.double().flatten(1)
    mean, std = flat.mean(0), flat.std(0)
    expected = ((flat - mean) / torch.where(std > 1e-6, std, torch.ones_like(std))).view_as(images)
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert torch.allclose(out.flatten(1)[:, 1:].std(0), torch.ones(17), atol=1e-5)  # every other pixel: std 1
    assert torch.equal(out[:, 0, 0, 0], torch.zeros(50))
    # channel_mean_std would leave pixels of one channel on different scales
    per_channel = Preprocess("channel_mean_std").fit(images)(images)
    assert not torch.allclose(per_channel.flatten(1).std(0)[1:], torch.ones(17), atol=0.05)
