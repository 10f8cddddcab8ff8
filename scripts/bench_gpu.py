"""Images per second of `train` against a hand-written loop on the same GPU, side by side.

ResNet-20 and the VGG-style CNN on CIFAR-shaped synthetic data (3x32x32, 10 classes; CIFAR
itself cannot be downloaded here), with and without channels-last, mixed precision (bf16
autocast; fp16 with grad scaling) and torch.compile. Both sides train the same model (same
parameter groups and optimizer, built by trainer_cli.build) on the same tensors, resident on
the GPU, and evaluate the validation split after every epoch; the hand-written loop
normalizes the tensors once and has no logging, checkpoints, NaN check or progress bar.
The first epoch of every run is dropped (cuDNN autotuning, compilation); images/s are over
the remaining epochs, wall time with the GPU synchronized at each epoch's end. `train` with
`trainer.nan_check=step` (a host sync every step) is measured too, for fp32: the cost of
the per-step sync that the deferred check removes.

    python scripts/bench_gpu.py                       # the full table (about 5-8 min on one GPU)
    python scripts/bench_gpu.py --models cnn --variants fp32 bf16   # a subset
    python scripts/bench_gpu.py --device cpu --num-train 512 --epochs 2 --models cnn --variants fp32  # smoke test
"""

from __future__ import annotations

import argparse
import csv
import datetime
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from trainer_cli import build
from trainer_cli.config import CONF_DIR, register_resolvers, resolve
from trainer_cli.loop import autocast
from trainer_cli.train import run, seed_everything

# Each variant: the trainer overrides that turn it on.
VARIANTS = {
    "fp32": [],
    "channels_last": ["trainer.channels_last=true"],
    "bf16": ["trainer.precision=bf16", "trainer.channels_last=true"],
    "fp16": ["trainer.precision=16", "trainer.channels_last=true"],
    "bf16+compile": ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=true"],
}
MODELS = {"resnet": ["model=resnet", "model.depth=20"], "cnn": ["model=cnn"]}


def config(model: str, variant: list[str], args: argparse.Namespace, extra: list[str] = ()):
    register_resolvers()
    overrides = [
        "experiment=synthetic_bench", *MODELS[model], *variant, *extra, f"epochs={args.epochs}",
        f"batch_size={args.batch_size}", f"data.source.num_train={args.num_train}", "data.source.num_test=1000",
        f"trainer.device={args.device}", "trainer.log_every_n_steps=50", "optimizer=momentum", "scheduler=constant",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return resolve(compose(config_name="config", overrides=overrides))


def ours(cfg) -> float:
    """Images/s of the real `run()` (per-epoch times from its metrics.csv), first epoch dropped."""
    with tempfile.TemporaryDirectory() as folder:
        run(cfg, Path(folder) / "run")
        with open(Path(folder) / "run" / "metrics.csv") as f:
            times = [float(row["time_s"]) for row in csv.DictReader(f)]
    samples = int(cfg.data.source.num_train * (1 - cfg.data.val_fraction))
    return samples * (len(times) - 1) / (times[-1] - times[0])


def hand_written(cfg) -> float:
    """The loop a user would write by hand, with the same model, optimizer and options."""
    seed_everything(int(cfg.seed))
    device = build.device(str(cfg.trainer.device))
    data = build.data(cfg, device)
    train_x, train_y = data.preprocess(data.train.images), data.train.labels
    val_x, val_y = data.preprocess(data.val.images), data.val.labels
    channels_last = bool(cfg.trainer.channels_last)
    if channels_last:
        train_x = train_x.contiguous(memory_format=torch.channels_last)
    model = build.model(cfg).to(device)
    build.fast_path(cfg, model)
    optimizer = build.optimizer(cfg, model)
    precision = str(cfg.trainer.precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "16" and device.type == "cuda" else None
    loss_fn = torch.nn.CrossEntropyLoss()
    batch, times = int(cfg.batch_size), []
    for _ in range(int(cfg.epochs)):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_y), device=device)
        for i in range(0, len(train_y), batch):
            index = order[i : i + batch]
            with autocast(device, precision):
                loss = loss_fn(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad(), autocast(device, precision):
            correct = sum(
                (model(val_x[i : i + batch]).argmax(1) == val_y[i : i + batch]).sum()
                for i in range(0, len(val_y), batch)
            )
        float(correct)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return len(train_y) * (len(times) - 1) / sum(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-train", type=int, default=50000)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name()
    else:
        name = "CPU"
    print(f"{name}, torch {torch.__version__}, {datetime.date.today()}, batch {args.batch_size}, "
          f"{args.num_train} CIFAR-shaped synthetic images, {args.epochs} epochs (first dropped)")  # fmt: skip
    print("| model | variant | train img/s | hand-written img/s | hand / train |")
    print("|---|---|---:|---:|---:|")
    for model in args.models:
        for variant in args.variants:
            cfg = config(model, VARIANTS[variant], args)
            hand = hand_written(cfg)
            train = ours(cfg)  # alternate: hand, train
            print(f"| {model} | {variant} | {train:,.0f} | {hand:,.0f} | {hand / train:.3f} |", flush=True)
        if "fp32" in args.variants:
            synced = ours(config(model, VARIANTS["fp32"], args, ["trainer.nan_check=step"]))
            print(f"| {model} | fp32, nan_check=step (a sync every step) | {synced:,.0f} | | |", flush=True)


if __name__ == "__main__":
    main()
