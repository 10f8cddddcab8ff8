"""Fixtures that compose the real conf/ with small overrides: few epochs, CPU, tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from trainer_cli.config import CONF_DIR, register_resolvers

# Small and fast: every test run trains on the CPU for a couple of epochs.
FAST = ["epochs=2", "trainer.device=cpu", "trainer.log_every_n_steps=2"]
TRAIN = str(Path(sys.executable).with_name("train"))


@pytest.fixture(autouse=True)
def one_thread():
    """In-process tests run many tiny forward passes: one CPU thread each.

    On a small shared machine, torch's intra-op thread pool spins against the other
    processes: a 4-channel conv block took 27 ms per forward with 2 threads under load,
    0.16 ms with one.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conf_options(group: str) -> list[str]:
    """Every option of a config group, read from the conf/ listing."""
    return sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml"))


@pytest.fixture
def make_cfg():
    """compose(*overrides) -> the composed run config, as `train` would see it."""
    register_resolvers()

    def _compose(*overrides: str, fast: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=[*(FAST if fast else []), *overrides])

    return _compose


def wait_for_epoch(victim: subprocess.Popen, run_dir: Path, epoch: int, timeout: float = 240) -> Path:
    """Wait until the running `victim`'s last.pt holds `epoch` (it must still be running, to
    be killed mid-run); returns that checkpoint's path."""
    import time

    from trainer_cli import checkpoint

    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + timeout
    while time.time() < deadline and victim.poll() is None:
        if last.is_file() and checkpoint.load(last)["epoch"] >= epoch:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    return last


def build_run(cfg: DictConfig):
    """The pieces of a run from a composed config, as `train` builds them (where a value
    that a constructor refuses becomes a one-line UserError)."""
    from trainer_cli import build
    from trainer_cli.config import resolve

    return build.pieces(resolve(cfg))


def run_train(args: list[str], cwd: Path, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `train` command in a subprocess, with outputs under `cwd`."""
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def write_image_folder(root: Path, classes: int = 3, per_class: int = 10, size: int = 10) -> Path:
    """A folder of class sub-folders with small PNGs whose colour depends on the class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")
