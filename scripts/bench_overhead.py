"""CPU seconds per epoch of `train` against a hand-written PyTorch loop and Lightning, side by side.

All three train the same MLP on the same data tensors (Fashion-MNIST by default, already on
the device) with the same batch size and optimizer (Adam), and evaluate on the validation
split after every epoch:
- `train`: the real `run()`; it also logs to TensorBoard, updates the progress bar and
  writes last.pt every epoch and best.pt when validation improves: that is the overhead measured.
- hand-written: the loop a user writes by hand on tensors normalized once, up front.
- Lightning (`pip install trainer_cli[bench]`): what a user would otherwise write, a
  LightningModule with `Trainer(logger=False)` and `DataLoader(TensorDataset)` over the same
  normalized tensors (its default checkpointing and progress bar on, like ours).

How it is measured. Other programs on a shared machine slow the CPU work itself (caches,
memory bandwidth, clock) by 10-30% from one second to the next, so timing the sides one
after the other compares different minutes. Here the three run side by side, in turns:
each side runs in its own thread, and only the side holding the turn runs while the others
wait at a mark, so no two share the CPU. Each side marks every epoch's start, every 50th
optimizer step (`trainer.log_every_n_steps=50`, where `train` logs), and the end of its
last epoch, at the same points of the same training: the stretch between two marks is one
turn, its process CPU time (`time.process_time`, one torch thread) is recorded, and the
turn passes; turns go round in a fresh random order each round. So the same 50 steps of
every side run within about a second of each other, and an epoch's cost is the sum of its
turns: its training steps, the validation pass and what each side does at the epoch's end
(`train`: logging, checkpoints; Lightning: its checkpoint). Start-up (imports, data,
building) is the first turn and not measured; the first epoch is dropped (warm-up). The
figure is the ratio of each epoch to the hand loop's same epoch: its median over all the
repeats' epochs, with the spread (min, quartiles, max). Each side runs once first,
unmeasured (imports).

    python scripts/bench_overhead.py                    # MLP on Fashion-MNIST, CPU
    python scripts/bench_overhead.py --repeats 12 --epochs 5 --noise   # the figures of docs/benchmarks.md
    python scripts/bench_overhead.py --data digits --repeats 5
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from hydra import compose, initialize_config_dir

from trainer_cli import build, report, train
from trainer_cli.config import CONF_DIR, register_resolvers, resolve

EVERY = 50  # steps between marks within an epoch: where `train` logs (trainer.log_every_n_steps)

Mark = Callable[[bool], None]  # mark(epoch_start): at an epoch's start (True) or every EVERY steps (False)


def config(data: str, epochs: int, batch_size: int, device: str):
    register_resolvers()
    overrides = [f"data={data}", "model=mlp", "optimizer=adam", "scheduler=constant", f"epochs={epochs}",
                 f"batch_size={batch_size}", f"trainer.device={device}",
                 f"trainer.log_every_n_steps={EVERY}"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class Turns:
    """The sides run in turns, one thread each, and only the side holding the turn runs.

    A side calls `mark(epoch_start)` at each epoch's start, every EVERY steps, and once more
    (`epoch_start=True`) after its last epoch. Its first mark ends its start-up turn (not
    measured); each later one records the turn's process CPU time under its epoch and
    passes the turn. Turns go round the running sides in a fresh random order each round.
    """

    def __init__(self, names: list[str], rng: random.Random) -> None:
        self.names, self.rng = names, rng
        self.epochs: dict[str, list[float]] = {name: [] for name in names}  # CPU s of each epoch
        self.running, self.queue, self.current = set(names), [], None
        self.condition = threading.Condition()
        self.started: dict[str, float | None] = dict.fromkeys(names)

    def _pass(self) -> None:
        with self.condition:
            if not self.queue:
                self.queue = self.rng.sample(sorted(self.running), len(self.running))
            self.current = self.queue.pop(0) if self.queue else None
            self.condition.notify_all()

    def _wait(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.current == name)
        self.started[name] = time.process_time()

    def mark(self, name: str, epoch_start: bool) -> None:
        now, started = time.process_time(), self.started[name]
        if started is not None:  # not the start-up turn
            self.epochs[name][-1] += now - started
        if epoch_start:
            self.epochs[name].append(0.0)
        self._pass()
        self._wait(name)

    def run(self, sides: dict[str, Callable[[Mark], None]]) -> dict[str, list[float]]:
        """Run every side, in turns; the CPU seconds of each side's epochs. A side's error is
        raised after the other sides have ended."""
        errors: list[BaseException] = []

        def side(name: str) -> None:
            self._wait(name)
            self.started[name] = None  # start-up: not an epoch
            try:
                sides[name](functools.partial(self.mark, name))
            except BaseException as error:  # noqa: BLE001 (raised below)
                errors.append(error)
            finally:
                with self.condition:
                    self.running.discard(name)
                    self.queue = [other for other in self.queue if other != name]
                self._pass()

        threads = [threading.Thread(target=side, args=(name,), name=name) for name in self.names]
        for thread in threads:
            thread.start()
        self._pass()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return {name: epochs[:-1] for name, epochs in self.epochs.items()}  # the last: after the run's end


def ours(cfg, mark: Mark) -> None:
    """The real `run()`, in a temporary run folder; marked at the reporter's `start_epoch` and
    `log_step` and at `final_evaluation` (the run's own steps, wrapped, not changed)."""
    start_epoch, log_step = report.Reporter.start_epoch, report.Reporter.log_step
    final_evaluation = train.final_evaluation

    def marked_start(self, *args, **kwargs):
        mark(True)
        return start_epoch(self, *args, **kwargs)

    def marked_log(self, *args, **kwargs):
        log_step(self, *args, **kwargs)
        mark(False)

    def marked_final(*args, **kwargs):
        mark(True)
        return final_evaluation(*args, **kwargs)

    with (
        mock.patch.object(report.Reporter, "start_epoch", marked_start),
        mock.patch.object(report.Reporter, "log_step", marked_log),
        mock.patch.object(train, "final_evaluation", marked_final),
        tempfile.TemporaryDirectory() as folder,
    ):
        train.run(cfg, Path(folder) / "run")


def prepared(cfg):
    """The same data and model `train` builds, the tensors normalized once."""
    cfg = resolve(cfg)
    torch.manual_seed(cfg.seed)
    device = build.device(str(cfg.trainer.device))
    data = build.data(cfg, device)
    train_x, train_y = data.preprocess(data.train.images), data.train.labels
    val_x, val_y = data.preprocess(data.val.images), data.val.labels
    return cfg, device, (train_x, train_y, val_x, val_y), build.model(cfg).to(device)


def hand_written(cfg, mark: Mark) -> None:
    """The loop a user would write by hand, on the same tensors, model and optimizer."""
    cfg, device, (train_x, train_y, val_x, val_y), model = prepared(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    step = 0
    for _ in range(cfg.epochs):
        mark(True)
        model.train()
        order = torch.randperm(len(train_y), device=device)
        for i in range(0, len(train_y), cfg.batch_size):
            index = order[i : i + cfg.batch_size]
            loss = loss_fn(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % EVERY == 0:
                mark(False)
        model.eval()
        with torch.no_grad():
            correct = sum(
                (model(val_x[i : i + cfg.batch_size]).argmax(1) == val_y[i : i + cfg.batch_size]).sum()
                for i in range(0, len(val_y), cfg.batch_size)
            )
        float(correct)
    mark(True)


def lightning(cfg, mark: Mark) -> None:
    """Trainer + DataLoader(TensorDataset), no logger: the setup a Lightning user writes."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    cfg, device, (train_x, train_y, val_x, val_y), model = prepared(cfg)

    class Marks(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            mark(True)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
            if trainer.global_step % EVERY == 0:
                mark(False)

        def on_fit_end(self, trainer, module) -> None:
            mark(True)

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
            num_sanity_val_steps=0, callbacks=[Marks()],
        )  # fmt: skip
        trainer.fit(Classifier(), train_batches, val_batches)


def spread(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return f"{statistics.median(values):8.3f}{min(values):8.3f}{q1:8.3f}{q3:8.3f}{max(values):8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lightning", action="store_true", help="leave the Lightning column out")
    parser.add_argument(
        "--noise", action="store_true", help="a second hand-written side: its ratio to the first is the noise floor"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # CPU time of one thread: no spinning of idle pool threads counted
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    sides: dict[str, Callable] = {"train": ours, "hand-written": hand_written}
    if not args.no_lightning:
        sides["Lightning"] = lightning
    if args.noise:  # an A/A comparison: the same loop twice, measured as the others are
        sides["hand-written again"] = hand_written
    cfg = config(args.data, args.epochs, args.batch_size, args.device)
    for side in sides.values():  # warm-up: first imports (TensorBoard, Lightning) are not an epoch's cost
        side(config(args.data, 2, args.batch_size, args.device), lambda epoch_start: None)
    rng = random.Random(0)
    costs: dict[str, list[float]] = {name: [] for name in sides}  # CPU s of epochs 2.., every repeat
    ratios: dict[str, list[float]] = {name: [] for name in sides if name != "hand-written"}
    for repeat in range(args.repeats):
        epochs = Turns(list(sides), rng).run({name: functools.partial(side, cfg) for name, side in sides.items()})
        epochs = {name: values[1:] for name, values in epochs.items()}  # the first epoch: warm-up
        for name, values in epochs.items():
            costs[name] += values
        for name in ratios:  # each epoch against the hand loop's same epoch, run in the same rounds
            ratios[name] += [a / b for a, b in zip(epochs[name], epochs["hand-written"], strict=True)]
        line = statistics.median(a / b for a, b in zip(epochs["train"], epochs["hand-written"], strict=True))
        print(f"repeat {repeat + 1}/{args.repeats}: train / hand-written {line:.3f} (median of epochs 2-{args.epochs})",
              flush=True)  # fmt: skip

    pairs = len(costs["hand-written"])
    print(f"\n{args.data}, MLP, batch {args.batch_size}, {args.device}, 1 torch thread, process CPU time, in turns")
    print(f"CPU s per epoch, epochs 2-{args.epochs} of {args.repeats} repeats ({pairs} epochs per side)")
    print(f"{'':16}{'median s/epoch':>16}{'min':>10}{'max':>10}")
    for name, values in costs.items():
        print(f"{name:16}{statistics.median(values):16.3f}{min(values):10.3f}{max(values):10.3f}")
    print(f"\nratios, each epoch / the hand loop's same epoch (run in the same rounds), {pairs} pairs:")
    print(f"{'':26}{'median':>8}{'min':>8}{'q1':>8}{'q3':>8}{'max':>8}")
    for name, values in ratios.items():
        print(f"{name + ' / hand-written':26}{spread(values)}")
    print("target: train / hand-written <= 1.03")


if __name__ == "__main__":
    main()
