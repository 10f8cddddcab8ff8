"""Each preprocessing gives the training split its stated statistics, fitted on it alone."""

from __future__ import annotations

import pytest
import torch

from trainer_cli.config import UserError
from trainer_cli.data import Preprocess, prepare
from trainer_cli.data.preprocess import KINDS
from trainer_cli.data.sources import TensorData


def correlated_images(n: int = 600, channels: int = 2, size: int = 4, seed: int = 0) -> torch.Tensor:
    """Images whose pixels are correlated and of unequal variances, with a non-zero mean."""
    generator = torch.Generator().manual_seed(seed)
    dim = channels * size * size
    mixing = torch.randn(dim, dim, generator=generator) / dim**0.5
    flat = torch.randn(n, dim, generator=generator) @ mixing + torch.linspace(0.2, 0.8, dim)
    return flat.view(n, channels, size, size)


def covariance(images: torch.Tensor) -> torch.Tensor:
    flat = images.flatten(1).double()
    centred = flat - flat.mean(0)
    return centred.T @ centred / (flat.shape[0] - 1)


def test_mean_image_zero_mean_per_pixel():
    images = correlated_images()
    out = Preprocess("mean_image").fit(images)(images)
    assert out.mean(0).abs().max() < 1e-5
    assert torch.allclose(out.std(0), images.std(0), atol=1e-5)  # only shifted


def test_channel_mean_zero_mean_per_channel_not_per_pixel():
    images = correlated_images()
    out = Preprocess("channel_mean").fit(images)(images)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert out.mean(0).abs().max() > 1e-2  # a per-pixel mean remains: it is a per-channel shift
    assert torch.allclose(out - images, (out - images)[:1, :, :1, :1].expand_as(out), atol=1e-6)


def test_channel_mean_std_zero_mean_unit_std_per_channel():
    images = correlated_images()
    out = Preprocess("channel_mean_std").fit(images)(images)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert torch.allclose(out.transpose(0, 1).flatten(1).std(1), torch.ones(2), atol=1e-4)


def test_pca_keeps_the_top_components_variance():
    images = correlated_images()
    k = 5
    out = Preprocess("pca", components=k).fit(images)(images)
    eigenvalues = torch.linalg.eigvalsh(covariance(images)).flip(0)
    out_eigenvalues = torch.linalg.eigvalsh(covariance(out)).flip(0)
    assert out.flatten(1).mean(0).abs().max() < 1e-5
    assert torch.allclose(out_eigenvalues[:k], eigenvalues[:k], rtol=1e-3)  # the top k variances kept
    assert out_eigenvalues[k:].abs().max() < 1e-6  # and nothing else: rank k
    assert out.shape == images.shape


def test_pca_whitened_components_have_unit_variance():
    images = correlated_images()
    k, epsilon = 6, 1e-6
    out = Preprocess("pca", components=k, whiten=True, epsilon=epsilon).fit(images)(images)
    out_eigenvalues = torch.linalg.eigvalsh(covariance(out)).flip(0)
    assert torch.allclose(out_eigenvalues[:k], torch.ones(k, dtype=torch.float64), atol=1e-3)
    assert out_eigenvalues[k:].abs().max() < 1e-6


@pytest.mark.parametrize("epsilon", [1e-6, 1e-2])
def test_zca_identity_covariance_up_to_epsilon(epsilon):
    images = correlated_images()
    out = Preprocess("zca", epsilon=epsilon).fit(images)(images)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance(images))
    # Exactly U diag(lambda / (lambda + eps)) U^T: the identity up to eps.
    expected = (eigenvectors * (eigenvalues / (eigenvalues + epsilon))) @ eigenvectors.T
    assert torch.allclose(covariance(out), expected, atol=2e-4)
    if epsilon == 1e-6:
        assert (covariance(out) - torch.eye(32, dtype=torch.float64)).abs().max() < 1e-3
    assert out.flatten(1).mean(0).abs().max() < 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_statistics_come_from_the_training_split_only(kind):
    """prepare() fits on the training split: the fitted transform equals one fitted on the
    training images alone, and differs from one fitted on training + validation images."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(300, 1, 4, 4, generator=generator)
    labels = torch.arange(300) % 3
    images[labels == 2] += 0.5  # a class with a different mean, so the splits' statistics differ
    source = TensorData(images, labels, images[:30], labels[:30], ["a", "b", "c"])
    data = prepare(source, val_fraction=0.3, split_seed=0, preprocess=kind, batch_size=64,
                   device=torch.device("cpu"), seed=0)  # fmt: skip
    train, val = data.train.images, data.val.images
    fitted_on_train = Preprocess(kind).fit(train)
    assert torch.equal(data.preprocess(val), fitted_on_train(val))
    if kind != "none":
        fitted_on_all = Preprocess(kind).fit(torch.cat([train, val]))
        assert not torch.allclose(data.preprocess(val), fitted_on_all(val), atol=1e-4)
    # The loaders apply it: validation batches are the preprocessed raw validation images.
    batches = torch.cat([x for x, _ in data.val])
    assert torch.equal(batches, data.preprocess(val))


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips_through_a_weights_only_checkpoint(kind, tmp_path):
    images = correlated_images(n=100)
    fitted = Preprocess(kind, components=3).fit(images)
    torch.save(fitted.state_dict(), tmp_path / "prep.pt")
    restored = Preprocess()
    restored.load_state_dict(torch.load(tmp_path / "prep.pt", weights_only=True))
    assert torch.equal(restored(images), fitted(images))


def test_bad_kind_and_too_large_images_are_one_line_errors():
    with pytest.raises(ValueError, match="preprocess: 'whiten' is not accepted"):
        Preprocess("whiten")
    with pytest.raises(UserError, match="at most 4096 values per image"):
        Preprocess("zca").fit(torch.rand(4, 3, 40, 40))
