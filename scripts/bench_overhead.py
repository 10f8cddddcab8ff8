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

The cost of an epoch is the process's CPU time (`time.process_time`, one torch thread, so
other programs on a shared machine slow neither side directly) between the starts of two
consecutive epochs, marked inside each run: `train` at its reporter's `start_epoch` (and at
`final_evaluation` after the last epoch), the hand loop at its own epoch boundaries,
Lightning by a callback at `on_train_epoch_start` (and `on_fit_end`). An epoch so includes
its training steps, the validation pass and what each side does at the epoch's end
(`train`: logging, checkpoints; Lightning: its checkpoint). Start-up (data loading,
building, imports) is outside every epoch, so its noise does not enter; the first epoch is
dropped (warm-up) and each run's figure is the median of its other epochs.

Other programs still slow the CPU work itself through caches and memory bandwidth, by
10-25% from one minute to the next on a loaded machine. So the comparison is paired: each
repeat runs every side once, back to back, in a fresh random order (the load of that minute
hits all sides alike, and no side is always first), and the figure is the ratio within the
repeat, train / hand-written (and Lightning / hand-written): the median of those paired
ratios over the repeats, with their spread (min, quartiles, max). Each side runs once
first, unmeasured (imports).

    python scripts/bench_overhead.py                    # MLP on Fashion-MNIST, CPU
    python scripts/bench_overhead.py --repeats 7         # the README's figures
    python scripts/bench_overhead.py --data digits --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from trainer_cli import build, report, train
from trainer_cli.config import CONF_DIR, register_resolvers, resolve


def config(data: str, epochs: int, batch_size: int, device: str):
    register_resolvers()
    overrides = [f"data={data}", "model=mlp", "optimizer=adam", "scheduler=constant", f"epochs={epochs}",
                 f"batch_size={batch_size}", f"trainer.device={device}", "trainer.log_every_n_steps=50"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def per_epoch(marks: list[float]) -> float:
    """The median CPU seconds of an epoch from the marks at epoch starts (and the run's end),
    the first epoch dropped (warm-up)."""
    return statistics.median(b - a for a, b in zip(marks[1:], marks[2:], strict=False))


def ours(cfg) -> float:
    """The real `run()`, in a temporary run folder; epochs marked at the reporter's
    start_epoch and at final_evaluation (the run's own steps, wrapped, not changed)."""
    marks: list[float] = []
    start_epoch, final_evaluation = report.Reporter.start_epoch, train.final_evaluation

    def marked_start(self, *args, **kwargs):
        marks.append(time.process_time())
        return start_epoch(self, *args, **kwargs)

    def marked_final(*args, **kwargs):
        marks.append(time.process_time())
        return final_evaluation(*args, **kwargs)

    report.Reporter.start_epoch, train.final_evaluation = marked_start, marked_final
    try:
        with tempfile.TemporaryDirectory() as folder:
            train.run(cfg, Path(folder) / "run")
    finally:
        report.Reporter.start_epoch, train.final_evaluation = start_epoch, final_evaluation
    return per_epoch(marks)


def prepared(cfg):
    """The same data and model `train` builds, the tensors normalized once."""
    cfg = resolve(cfg)
    torch.manual_seed(cfg.seed)
    device = build.device(str(cfg.trainer.device))
    data = build.data(cfg, device)
    train_x, train_y = data.preprocess(data.train.images), data.train.labels
    val_x, val_y = data.preprocess(data.val.images), data.val.labels
    return cfg, device, (train_x, train_y, val_x, val_y), build.model(cfg).to(device)


def hand_written(cfg) -> float:
    """The loop a user would write by hand, on the same tensors, model and optimizer."""
    cfg, device, (train_x, train_y, val_x, val_y), model = prepared(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    marks = []
    for _ in range(cfg.epochs):
        marks.append(time.process_time())
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
    marks.append(time.process_time())
    return per_epoch(marks)


def lightning(cfg) -> float:
    """Trainer + DataLoader(TensorDataset), no logger: the setup a Lightning user writes."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    cfg, device, (train_x, train_y, val_x, val_y), model = prepared(cfg)
    marks: list[float] = []

    class EpochMarks(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            marks.append(time.process_time())

        def on_fit_end(self, trainer, module) -> None:
            marks.append(time.process_time())

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

    train_batches = DataLoader(TensorDataset(train_x, train_y), batch_size=cfg.batch_size, shuffle=True)
    val_batches = DataLoader(TensorDataset(val_x, val_y), batch_size=cfg.batch_size)
    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(
            max_epochs=cfg.epochs, logger=False, accelerator=device.type, devices=1, default_root_dir=folder,
            num_sanity_val_steps=0, callbacks=[EpochMarks()],
        )  # fmt: skip
        trainer.fit(Classifier(), train_batches, val_batches)
    return per_epoch(marks)


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
    cfg = config(args.data, args.epochs, args.batch_size, args.device)
    costs: dict[str, list[float]] = {name: [] for name in sides}
    for side in sides.values():  # warm-up: first imports (TensorBoard, Lightning) are not an epoch's cost
        side(config(args.data, 3, args.batch_size, args.device))
    order = random.Random(0)
    for repeat in range(args.repeats):
        names = list(sides)
        order.shuffle(names)  # paired and interleaved: all sides within the same minute, in a fresh order
        for name in names:
            costs[name].append(sides[name](cfg))
        ratio = costs["train"][-1] / costs["hand-written"][-1]
        print(f"repeat {repeat + 1}/{args.repeats} ({', '.join(names)}): train / hand-written {ratio:.3f}", flush=True)

    print(f"\n{args.data}, MLP, batch {args.batch_size}, {args.device}, 1 torch thread, process CPU time")
    print(f"each value: a run's median CPU s per epoch over epochs 2-{args.epochs}; {args.repeats} repeats")
    print(f"{'':16}{'median s/epoch':>16}{'min':>10}{'max':>10}")
    for name, values in costs.items():
        print(f"{name:16}{statistics.median(values):16.3f}{min(values):10.3f}{max(values):10.3f}")
    print(f"\npaired ratios (each repeat's side / that repeat's hand-written), over {args.repeats} repeats:")
    print(f"{'':26}{'median':>8}{'min':>8}{'q1':>8}{'q3':>8}{'max':>8}")
    for name in costs:
        if name == "hand-written":
            continue
        ratios = [a / b for a, b in zip(costs[name], costs["hand-written"], strict=True)]
        q1, _, q3 = (
            statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0], 0, ratios[0])
        )
        print(f"{name + ' / hand-written':26}{statistics.median(ratios):8.3f}{min(ratios):8.3f}{q1:8.3f}{q3:8.3f}"
              f"{max(ratios):8.3f}")  # fmt: skip
    print("target: train / hand-written <= 1.03")


if __name__ == "__main__":
    main()
