"""Data sources read real files, fail in one line when files are missing, and split as stated."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from trainer_cli.config import UserError
from trainer_cli.data import prepare
from trainer_cli.data.loaders import TensorLoader
from trainer_cli.data.sources import (
    debian_fashion_mnist_folder,
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
    load_mnist,
    read_idx,
)


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist_root(root, n_train=20, n_test=10):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)
    return root


def test_idx_files_are_read_exactly(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), array)


def test_truncated_idx_file_is_a_one_line_error(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((4, 5, 5)))
    with gzip.open(tmp_path / "x.gz") as f:
        raw = f.read()
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(raw[:-7])
    with pytest.raises(UserError, match="truncated IDX file"):
        read_idx(tmp_path / "x.gz")


def test_mnist_reads_idx_files_from_root(tmp_path):
    data = load_mnist(str(fake_mnist_root(tmp_path / "mnist")), download=False)
    assert data.train_x.shape == (20, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_x.min() >= 0 and data.train_x.max() <= 1
    assert data.train_y.tolist() == [i % 10 for i in range(20)]


def test_missing_files_offline_is_one_line_saying_where_to_put_them(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError) as error:
        load_mnist(str(tmp_path / "nothing"), download=True)
    message = str(error.value)
    assert "\n" not in message and "download failed" in message
    assert str(tmp_path / "nothing") in message and "train-images-idx3-ubyte.gz" in message


@pytest.mark.skipif(debian_fashion_mnist_folder() is None, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_reads_the_debian_package(tmp_path):
    data = load_fashion_mnist(str(tmp_path / "empty"), download=False)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert data.classes[0] == "T-shirt/top"


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(seed=0), load_digits(seed=0)
    assert torch.equal(a.test_y, b.test_y) and len(a.test_y) == 360
    counts = torch.bincount(a.test_y)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of ~180 per class


def test_validation_split_is_disjoint_and_stats_come_from_train_only():
    source = load_digits()
    data = prepare(source, 0.25, 0, "channel_mean_std", 64, torch.device("cpu"), seed=0)
    n_train, n_val = data.train.num_samples, data.val.num_samples
    assert n_train + n_val == len(source.train_y) and abs(n_val - 0.25 * len(source.train_y)) <= 1
    # normalized with the training split's statistics: mean 0 and std 1 there, not on val
    # (the loaders hold raw pixels and preprocess each batch)
    train, val = data.preprocess(data.train.images), data.preprocess(data.val.images)
    assert abs(train.mean().item()) < 1e-5 and abs(train.std().item() - 1) < 1e-3
    assert abs(val.mean().item()) > 1e-5
    assert torch.equal(torch.cat([x for x, _ in data.val]), val)


def test_tensor_loader_covers_every_sample_once_per_epoch():
    images, labels = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    loader = TensorLoader(images, labels, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(loader) == 3
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(x.view(-1).long(), y) for x, y in batches)  # images stay with their labels


def test_image_folder_with_train_and_test(tmp_path):
    from tests.conftest import write_image_folder

    write_image_folder(tmp_path / "pets" / "train", classes=2, per_class=4)
    write_image_folder(tmp_path / "pets" / "test", classes=2, per_class=2)
    data = load_imagefolder(str(tmp_path / "pets"), image_size=6)
    assert len(data.train) == 8 and len(data.test) == 4 and data.classes == ["class_0", "class_1"]
    image, label = data.train[0]
    assert image.shape == (3, 6, 6) and image.dtype == torch.float32


def test_empty_image_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(UserError, match="data.path") as error:
        load_imagefolder(str(tmp_path / "empty"), image_size=8)
    assert "\n" not in str(error.value)
