"""Checkpoints: atomic writes, the safe loader, and every RNG restored."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from trainer_cli import checkpoint
from trainer_cli.config import UserError


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"epoch": 1, "w": torch.ones(3)}, path)

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(UserError, match=r"^checkpoint: cannot write .*\(disk full\); the previous checkpoint"):
        checkpoint.save({"epoch": 2, "w": torch.zeros(3)}, path)
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": object()}, path)  # needs unpickling of arbitrary classes
    with pytest.raises(UserError, match="corrupted or truncated"):
        checkpoint.load(path)


def test_rng_state_round_trips_every_generator():
    generator = torch.Generator().manual_seed(5)
    state = checkpoint.rng_state(generator)
    expected = (torch.rand(3), torch.rand(3, generator=generator), random.random(), np.random.rand())
    torch.rand(100), random.random(), np.random.rand(7)  # move every generator on
    torch.rand(5, generator=generator)
    checkpoint.set_rng_state(state, generator)
    again = (torch.rand(3), torch.rand(3, generator=generator), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_rng_state_survives_the_safe_loader(tmp_path):
    generator = torch.Generator().manual_seed(1)
    checkpoint.save({"rng": checkpoint.rng_state(generator)}, tmp_path / "c.pt")
    expected = (torch.rand(4), random.random(), np.random.rand())
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"], generator)
    again = (torch.rand(4), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
