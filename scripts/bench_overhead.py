"""Seconds per epoch of `train` against a hand-written PyTorch loop, measured side by side.

Both train the same MLP on the same data tensors (Fashion-MNIST by default, already on the
device) with the same batch size and optimizer, and both evaluate on the validation split
after every epoch. `train` also logs to TensorBoard, updates the progress bar and writes two
checkpoints per epoch: that is the overhead measured. Runs alternate (ours, hand, ours, ...)
so that load on a shared machine hits both alike; the first epoch of each run is dropped as
warm-up, and medians are reported.

    python scripts/bench_overhead.py                    # MLP on Fashion-MNIST, CPU
    python scripts/bench_overhead.py --data digits --repeats 5
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from trainer_cli import build
from trainer_cli.config import CONF_DIR, register_resolvers, resolve
from trainer_cli.train import run


def config(data: str, epochs: int, batch_size: int, device: str):
    register_resolvers()
    overrides = [f"data={data}", "model=mlp", "optimizer=adam", "scheduler=constant", f"epochs={epochs}",
                 f"batch_size={batch_size}", f"trainer.device={device}", "trainer.log_every_n_steps=50"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def ours(cfg) -> list[float]:
    """Per-epoch seconds of the real `run()` (from its metrics.csv), first epoch dropped."""
    with tempfile.TemporaryDirectory() as folder:
        run(cfg, Path(folder) / "run")
        with open(Path(folder) / "run" / "metrics.csv") as f:
            times = [float(row["time_s"]) for row in csv.DictReader(f)]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def hand_written(cfg) -> list[float]:
    """The loop a user would write by hand, on the same tensors, model and optimizer."""
    cfg = resolve(cfg)
    torch.manual_seed(cfg.seed)
    device = build.device(str(cfg.trainer.device))
    data = build.data(cfg, device)
    # The loaders hold raw pixels and preprocess per batch; a hand-written loop would
    # normalize its tensors once, up front.
    train_x, train_y = data.preprocess(data.train.images), data.train.labels
    val_x, val_y = data.preprocess(data.val.images), data.val.labels
    model = build.model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_y), device=device)
        for i in range(0, len(train_y), cfg.batch_size):
            index = order[i : i + cfg.batch_size]
            loss = loss_fn(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(
                (model(val_x[i : i + cfg.batch_size]).argmax(1) == val_y[i : i + cfg.batch_size]).sum()
                for i in range(0, len(val_y), cfg.batch_size)
            )
        float(correct)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = config(args.data, args.epochs, args.batch_size, args.device)
    ours_times, hand_times = [], []
    for _ in range(args.repeats):
        ours_times += ours(cfg)
        hand_times += hand_written(cfg)
    ours_median, hand_median = statistics.median(ours_times), statistics.median(hand_times)
    print(f"\n{args.data}, MLP, batch {args.batch_size}, {args.device}, torch threads {torch.get_num_threads()}")
    print(f"epochs timed: {len(ours_times)} per side ({args.repeats} alternating runs x {args.epochs - 1})")
    print(f"{'':16}{'median s/epoch':>16}{'min':>10}{'max':>10}")
    print(f"{'train':16}{ours_median:16.3f}{min(ours_times):10.3f}{max(ours_times):10.3f}")
    print(f"{'hand-written':16}{hand_median:16.3f}{min(hand_times):10.3f}{max(hand_times):10.3f}")
    print(f"ratio train / hand-written: {ours_median / hand_median:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
