"""CPU seconds per epoch of `train` against a hand-written PyTorch loop and Lightning, side by side.

All three train the same MLP on the same data tensors (Fashion-MNIST by default, already on
the device) with the same batch size and optimizer (Adam), and evaluate on the validation
split after every epoch:
- `train`: the real `run()`; it also logs to TensorBoard, updates the progress bar and
  writes two checkpoints per epoch: that is the overhead measured.
- hand-written: the loop a user writes by hand on tensors normalized once, up front.
- Lightning (`pip install trainer_cli[bench]`): what a user would otherwise write, a
  LightningModule with `Trainer(logger=False)` and `DataLoader(TensorDataset)` over the same
  normalized tensors (its default checkpointing and progress bar on, like ours).

The cost of an epoch is measured as the difference of two runs, E epochs and 1 epoch, so
that start-up (data loading, building) cancels out: (t(E) - t(1)) / (E - 1). Time is the
process's CPU time (`time.process_time`) with one torch thread, so that other programs on a
shared machine slow neither side; runs alternate (train, hand, Lightning, train, ...) and
medians over the repeats are reported, and the minima (the least disturbed repeat: on a
machine shared with other programs the CPU time of the same work still varies by 10-20%).
Each side runs once first, unmeasured (imports).

    python scripts/bench_overhead.py                    # MLP on Fashion-MNIST, CPU
    python scripts/bench_overhead.py --data digits --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
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


def ours(cfg) -> None:
    """The real `run()`, in a temporary run folder."""
    with tempfile.TemporaryDirectory() as folder:
        run(cfg, Path(folder) / "run")


def prepared(cfg):
    """The same data and model `train` builds, the tensors normalized once."""
    cfg = resolve(cfg)
    torch.manual_seed(cfg.seed)
    device = build.device(str(cfg.trainer.device))
    data = build.data(cfg, device)
    train_x, train_y = data.preprocess(data.train.images), data.train.labels
    val_x, val_y = data.preprocess(data.val.images), data.val.labels
    return cfg, device, (train_x, train_y, val_x, val_y), build.model(cfg).to(device)


def hand_written(cfg) -> None:
    """The loop a user would write by hand, on the same tensors, model and optimizer."""
    cfg, device, (train_x, train_y, val_x, val_y), model = prepared(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(cfg.epochs):
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


def lightning(cfg) -> None:
    """Trainer + DataLoader(TensorDataset), no logger: the setup a Lightning user writes."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    cfg, device, (train_x, train_y, val_x, val_y), model = prepared(cfg)

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_index):
            images, labels = batch
            return torch.nn.functional.cross_entropy(self.model(images), labels)

        def validation_step(self, batch, batch_index):
            images, labels = batch
            self.log("val_acc", (self.model(images).argmax(1) == labels).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=cfg.lr)

    train = DataLoader(TensorDataset(train_x, train_y), batch_size=cfg.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=cfg.batch_size)
    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(
            max_epochs=cfg.epochs, logger=False, accelerator=device.type, devices=1, default_root_dir=folder,
            num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(Classifier(), train, val)


def cpu_seconds(side, cfg) -> float:
    start = time.process_time()
    side(cfg)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lightning", action="store_true", help="leave the Lightning column out")
    args = parser.parse_args()
    torch.set_num_threads(1)  # CPU time of one thread: no spinning of idle pool threads counted
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    sides = {"train": ours, "hand-written": hand_written}
    if not args.no_lightning:
        sides["Lightning"] = lightning
    long_cfg = config(args.data, args.epochs, args.batch_size, args.device)
    short_cfg = config(args.data, 1, args.batch_size, args.device)
    per_epoch: dict[str, list[float]] = {name: [] for name in sides}
    for side in sides.values():  # warm-up: first imports (TensorBoard, Lightning) are not an epoch's cost
        side(short_cfg)
    for _ in range(args.repeats):
        for name, side in sides.items():
            long, short = cpu_seconds(side, long_cfg), cpu_seconds(side, short_cfg)
            per_epoch[name].append((long - short) / (args.epochs - 1))

    hand = statistics.median(per_epoch["hand-written"])
    print(f"\n{args.data}, MLP, batch {args.batch_size}, {args.device}, 1 torch thread, process CPU time")
    print(f"each value: (t({args.epochs} epochs) - t(1 epoch)) / {args.epochs - 1}; {args.repeats} alternating repeats")
    print(f"{'':16}{'median s/epoch':>16}{'min':>10}{'max':>10}{'/ hand':>10}")
    for name, values in per_epoch.items():
        median = statistics.median(values)
        print(f"{name:16}{median:16.3f}{min(values):10.3f}{max(values):10.3f}{median / hand:10.3f}")
    ratio_median = statistics.median(per_epoch["train"]) / hand
    ratio_min = min(per_epoch["train"]) / min(per_epoch["hand-written"])
    print(f"ratio train / hand-written: {ratio_median:.3f} of the medians, {ratio_min:.3f} of the minima", end="")
    print(" (target <= 1.03)")


if __name__ == "__main__":
    main()
