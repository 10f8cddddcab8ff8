"""Data sources: each turns a data set on disk (or in a package) into tensors or a Dataset.

In-memory sources return `TensorData` with float images in [0, 1], shape (N, C, H, W),
and int64 labels. `load_imagefolder` returns `FolderData` for a DataLoader, since an image
folder need not fit in memory.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer_cli import checks, run_folder
from trainer_cli.config import UserError
from trainer_cli.data.splits import split_indices


@dataclass
class TensorData:
    """A data set held in memory: train and test images and labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]


@dataclass
class FolderData:
    """A data set read from disk by a DataLoader: torchvision datasets of (image, label)."""

    train: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    classes: list[str]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> TensorData:
    """scikit-learn's embedded 8x8 digits (values 0..16), with a fixed stratified test split.

    Read from the file scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`, as its
    `load_digits` reads it) without importing scikit-learn, which loads SciPy: most of a
    tiny run's start-up otherwise.
    """
    from importlib.util import find_spec

    package = find_spec("sklearn")
    if package is None or not package.submodule_search_locations:
        raise UserError("data: the digits data set ships with scikit-learn; pip install scikit-learn")
    path = Path(package.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    with gzip.open(path, mode="rt", encoding="utf-8") as file:
        table = np.loadtxt(file, delimiter=",")  # 64 pixel columns, then the label
    target = table[:, -1].astype(int)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 8, 8).astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(target.astype(np.int64))
    train_idx, test_idx = split_indices(target, test_fraction, seed)
    return TensorData(
        images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], [str(i) for i in range(10)]
    )


def load_synthetic(num_train: int, num_test: int, channels: int, size: int, classes: int, seed: int = 0) -> TensorData:
    """Random images whose class shifts their mean: learnable, any shape, no files."""
    generator = torch.Generator().manual_seed(seed)
    class_means = torch.rand(classes, channels, size, size, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (n,), generator=generator)
        noise = torch.randn(n, channels, size, size, generator=generator) * 0.5
        return (class_means[labels] + noise).clamp(0, 1), labels

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    return TensorData(train_x, train_y, test_x, test_y, [str(i) for i in range(classes)])


# ---------------------------------------------------------------- MNIST and Fashion-MNIST

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): the format MNIST and Fashion-MNIST ship in."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise UserError(f"{path}: truncated IDX file ({len(data) - offset} of {expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find_idx_files(folders: list[Path]) -> dict[str, Path] | None:
    """The first folder holding all four IDX files (plain or .gz), or None."""
    for folder in folders:
        found = {}
        for key, stem in IDX_FILES.items():
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    found[key] = folder / name
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def debian_fashion_mnist_folder() -> Path | None:
    """Where Debian's `dataset-fashion-mnist` package put the files, if it is installed."""
    default = Path("/usr/share/datasets/fashion-mnist")
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.endswith("train-images-idx3-ubyte.gz"):
                return Path(line).parent
    return default if default.is_dir() else None


def _load_idx_dataset(name: str, torchvision_class: str, root: str, download: bool, extra: list[Path]) -> TensorData:
    root_path = Path(root)
    # torchvision's downloader stores the files under <root>/<ClassName>/raw.
    candidates = [root_path, root_path / "raw", root_path / torchvision_class / "raw", *extra]
    files = _find_idx_files(candidates)
    link = run_folder.link_on_the_way(root_path)
    if files is None and download and link is not None:
        raise UserError(
            f"data.source.root: {name} files not found in '{root_path}', and a download is not written through "
            f"{link} (a link in the current folder, to {os.readlink(link)}); download into a real folder, or give "
            "data.source.root=<the real folder>"
        )
    if files is None and download:
        import torchvision

        try:
            getattr(torchvision.datasets, torchvision_class)(str(root_path), train=True, download=True)
            getattr(torchvision.datasets, torchvision_class)(str(root_path), train=False, download=True)
        except Exception as error:  # offline: URLError, socket errors, checksum errors
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(
                f"data.source.root: {name} files not found in '{root_path}' and the download failed "
                f"({reason}); put {', '.join(s + '.gz' for s in IDX_FILES.values())} in '{root_path}'"
                + (" or run `apt-get install dataset-fashion-mnist`" if name == "Fashion-MNIST" else "")
            ) from None
        files = _find_idx_files(candidates)
    if files is None:
        raise UserError(
            f"data.source.root: {name} files not found in '{root_path}'; put "
            f"{', '.join(s + '.gz' for s in IDX_FILES.values())} there, or set data.source.download=true"
        )
    arrays = {}
    for key, path in files.items():
        try:
            arrays[key] = read_idx(path)
        except Exception as error:  # garbage, a truncated download, another format
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(
                f"data.source.root: cannot read {name} file '{path}' ({type(error).__name__}: {reason[:120]}); "
                "replace it with the original IDX file (gzipped or not)"
            ) from None
    to_images = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # noqa: E731
    to_labels = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    classes = FASHION_CLASSES if name == "Fashion-MNIST" else [str(i) for i in range(10)]
    return TensorData(
        to_images(arrays["train_x"]), to_labels(arrays["train_y"]),
        to_images(arrays["test_x"]), to_labels(arrays["test_y"]), classes,
    )  # fmt: skip


def load_mnist(root: str, download: bool = True) -> TensorData:
    """MNIST from the standard IDX files in `root`, downloaded by torchvision when absent."""
    return _load_idx_dataset("MNIST", "MNIST", root, download, [])


def load_fashion_mnist(root: str, download: bool = True) -> TensorData:
    """Fashion-MNIST from `root`, else Debian's `dataset-fashion-mnist`, else a download."""
    debian = debian_fashion_mnist_folder()
    return _load_idx_dataset("Fashion-MNIST", "FashionMNIST", root, download, [debian] if debian else [])


# ---------------------------------------------------------------- CIFAR


def load_cifar(root: str, classes: int = 10, download: bool = True) -> TensorData:
    """CIFAR-10 or CIFAR-100 through torchvision's dataset class (which also downloads it)."""
    import torchvision

    if classes not in (10, 100):
        raise UserError(f"data.source.classes: {classes} is not accepted; choose 10 or 100")
    dataset_class = torchvision.datasets.CIFAR10 if classes == 10 else torchvision.datasets.CIFAR100
    link = run_folder.link_on_the_way(Path(root))
    if download and link is not None:  # reads through the link, never downloads through it
        download = False
    try:
        train = dataset_class(root, train=True, download=download)
        test = dataset_class(root, train=False, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        raise UserError(
            f"data.source.root: CIFAR-{classes} not found in '{root}' ({str(error).splitlines()[0]}); "
            f"set data.source.download=true or put the extracted python version there"
        ) from None
    except Exception as error:  # offline download
        raise UserError(
            f"data.source.root: CIFAR-{classes} not found in '{root}' and the download failed "
            f"({str(error).splitlines()[0] or type(error).__name__}); put the extracted "
            f"'cifar-{classes}-python' archive in '{root}'"
        ) from None

    def to_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).float() / 255.0
        return images.contiguous(), torch.tensor(dataset.targets, dtype=torch.int64)

    train_x, train_y = to_tensors(train)
    test_x, test_y = to_tensors(test)
    return TensorData(train_x, train_y, test_x, test_y, list(train.classes))


# ---------------------------------------------------------------- image folders


def load_imagefolder(path: str, image_size: int, test_fraction: float = 0.2, seed: int = 0) -> FolderData:
    """A folder of class sub-folders, read lazily; `path/train` and `path/test` if present."""
    import torchvision
    from torchvision.transforms import v2

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"data.path: '{path}' is not a folder of class sub-folders")
    checks.whole_number("data.image_size", image_size, error=UserError)
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )

    def open_folder(folder: Path) -> torchvision.datasets.ImageFolder:
        try:
            dataset = torchvision.datasets.ImageFolder(str(folder), transform=transform, loader=_rgb_loader)
        except (FileNotFoundError, OSError) as error:
            raise UserError(
                f"data.path: '{folder}' has no readable images in class sub-folders ({str(error).splitlines()[0]})"
            ) from None
        if len(dataset.classes) < 2:
            raise UserError(
                f"data.path: '{folder}' has {len(dataset.classes)} class sub-folder ({', '.join(dataset.classes)}); "
                "a classifier needs at least 2, one sub-folder of images per class"
            )
        return dataset

    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = open_folder(root / "train"), open_folder(root / "test")
        if train.classes != test.classes:
            raise UserError(f"data.path: '{root}/train' and '{root}/test' have different class folders")
        return FolderData(train, test, list(train.classes))
    full = open_folder(root)
    labels = np.array(full.targets)
    if np.bincount(labels).min() < 2:
        raise UserError(f"data.path: '{root}' needs at least 2 images per class to hold out a test set")
    keep, held = split_indices(labels, test_fraction, seed)
    return FolderData(
        torch.utils.data.Subset(full, keep.tolist()), torch.utils.data.Subset(full, held.tolist()), list(full.classes)
    )


def _rgb_loader(path: str):
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def dataset_root() -> str:
    """Where downloaded data sets go by default ($TRAINER_CLI_DATA or ./data)."""
    return os.environ.get("TRAINER_CLI_DATA", "data")
