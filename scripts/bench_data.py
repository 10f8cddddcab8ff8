"""Benchmark the data path, side by side in one run, and print ratios.

1. Images per second of one augmented pass (random crop, flip, cutout) over Fashion-MNIST's
   training images: our batched path (TensorLoader on the device: index, augment, preprocess,
   cutout) against torchvision's DataLoader with per-sample v2 transforms over the same data.
2. The cost of a training step of the Fashion-MNIST recipe's CNN with that augmentation,
   over one without it (the ratio of an augmented epoch to an unaugmented one).

The two sides of each comparison alternate, `--repeats` times, and the best time of each is
kept, so a machine shared with other work slows both alike.

    python scripts/bench_data.py                 # Fashion-MNIST (Debian's package or ./data)
    python scripts/bench_data.py --synthetic     # random 28x28 images, no files needed
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.transforms import v2

from trainer_cli.data import Preprocess
from trainer_cli.data.augment import Augmentation, RandomCrop, RandomFlip
from trainer_cli.data.loaders import TensorLoader
from trainer_cli.data.mix import Cutout
from trainer_cli.models import CNN

# Wall time by default; `--clock cpu` counts this process's CPU seconds instead, which is the
# fair measure on a machine shared with other work (the per-sample path runs with 0 workers,
# so all of its work is in this process too).
clock = time.perf_counter


def load_images(synthetic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if synthetic:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(60000, 1, 28, 28, generator=generator), torch.randint(0, 10, (60000,), generator=generator)
    from trainer_cli.data.sources import dataset_root, load_fashion_mnist

    data = load_fashion_mnist(f"{dataset_root()}/fashion_mnist", download=False)
    return data.train_x, data.train_y


def batched_epoch(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Seconds for one augmented pass through our batched path."""
    prep = Preprocess("channel_mean_std").fit(images[:10000])
    augment = Augmentation([RandomCrop(2), RandomFlip(0.5)])
    cutout = Cutout(holes=1, size=8)
    loader = TensorLoader(images, labels, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                          augment=augment, preprocess=prep)  # fmt: skip
    start = clock()
    for x, y in loader:
        x, y = cutout(x, y)
    return clock() - start


class PerSample(torch.utils.data.Dataset):
    """The usual torchvision pipeline: one image at a time through v2 transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels = images, labels
        self.transform = v2.Compose([
            v2.RandomCrop(28, padding=2),
            v2.RandomHorizontalFlip(0.5),
            v2.Normalize([mean], [std]),
            v2.RandomErasing(p=1.0, scale=(64 / 784, 64 / 784), ratio=(1.0, 1.0), value=0),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def per_sample_epoch(images: torch.Tensor, labels: torch.Tensor, batch_size: int, workers: int) -> float:
    """Seconds for one augmented pass through a DataLoader with per-sample transforms."""
    dataset = PerSample(images, labels, float(images.mean()), float(images.std()))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    start = clock()
    for _ in loader:
        pass
    return clock() - start


def train_steps(model, images, labels, batch_size: int, steps: int, augment) -> float:
    """Seconds for `steps` SGD steps of the CNN, with or without the augmentation."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    prep = Preprocess("channel_mean_std").fit(images[:10000])
    loader = TensorLoader(images[: batch_size * steps], labels[: batch_size * steps], batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0), augment=augment, preprocess=prep)  # fmt: skip
    model.train()
    start = clock()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="random images instead of Fashion-MNIST")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--per-sample-images", type=int, default=12000, help="images for the per-sample pass")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the per-sample path")
    parser.add_argument("--steps", type=int, default=30, help="training steps per timing of the CNN")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    images, labels = load_images(args.synthetic)
    print(
        f"{len(images)} images {tuple(images.shape[1:])}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, {args.clock} clock"
    )

    # 1. the data path alone
    ours, theirs = [], []
    subset = args.per_sample_images
    for _ in range(args.repeats):
        ours.append(len(images) / batched_epoch(images, labels, args.batch_size))
        theirs.append(subset / per_sample_epoch(images[:subset], labels[:subset], args.batch_size, args.workers))
    print(f"batched on the device (crop+flip+normalize+cutout):     {max(ours):12,.0f} images/s")
    print(f"DataLoader, per-sample v2 transforms, {args.workers} workers:       {max(theirs):12,.0f} images/s")
    print(f"ratio: {max(ours) / max(theirs):.1f}x  (target >= 5x)")

    # 2. augmented vs unaugmented training steps of the recipe's CNN
    model = CNN(1, 28, 10, channels=[32, 64], convs_per_stage=2)
    augment = Augmentation([RandomCrop(2), RandomFlip(0.5)])
    train_steps(model, images, labels, args.batch_size, 3, None)  # warm up the kernels
    plain, augmented = [], []
    for _ in range(args.repeats):
        plain.append(train_steps(model, images, labels, args.batch_size, args.steps, None))
        augmented.append(train_steps(model, images, labels, args.batch_size, args.steps, augment))
    per_step = 1000 / args.steps
    print(f"CNN step, no augmentation:   {min(plain) * per_step:8.1f} ms")
    print(f"CNN step, crop + flip:       {min(augmented) * per_step:8.1f} ms")
    print(f"augmented / unaugmented epoch: {min(augmented) / min(plain):.3f}x  (target <= 1.2x)")


if __name__ == "__main__":
    main()
