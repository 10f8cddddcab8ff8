"""Checkpoints: written atomically, read only with `weights_only=True`.

A checkpoint holds everything a run needs to continue bit for bit: the `state_dict()` of
each entry of the run's state list (`build.Pieces.stateful()`: model, optimizer, scheduler,
scaler, preprocessing, EMA, SWA, every random number generator as tensors, the loop's
counters and history), the epoch and step, and the resolved config as YAML text.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer_cli.config import UserError


def rng_state(shuffle_generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator the run draws from, as tensors."""
    version, mt_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle_generator.get_state(),
        "python": torch.tensor([version, *mt_state], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss if gauss is not None else float("nan")], dtype=torch.float64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_meta": torch.tensor([np_pos, np_has_gauss, np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any], shuffle_generator: torch.Generator) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    shuffle_generator.set_state(state["shuffle"])
    python = state["python"].tolist()
    gauss = float(state["python_gauss"][0])
    random.setstate((python[0], tuple(python[1:]), None if gauss != gauss else gauss))
    pos, has_gauss, np_gauss = state["numpy_meta"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), np_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


class RandomState:
    """Every random number generator of a run, as one entry of its state list."""

    def __init__(self, shuffle_generator: torch.Generator) -> None:
        self.shuffle_generator = shuffle_generator

    def state_dict(self) -> dict[str, Any]:
        return rng_state(self.shuffle_generator)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state, self.shuffle_generator)


def snapshot(stateful: dict[str, Any], config_yaml: str, epoch: int, step: int) -> dict[str, Any]:
    """A checkpoint's content: each stateful entry's `state_dict()` (entries that are None,
    features that are off, are left out), the counters, and the config that ran."""
    state = {name: obj.state_dict() for name, obj in stateful.items() if obj is not None}
    return {**state, "epoch": epoch, "step": step, "config": config_yaml}


# State that checkpoints written before it existed lack (their default is right for them).
OPTIONAL_STATE = ("position",)


def restore(stateful: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """Load a checkpoint's entries back into the run's stateful objects."""
    for name, obj in stateful.items():
        if obj is None:
            continue
        if name not in checkpoint and name in OPTIONAL_STATE:
            continue
        if name not in checkpoint:
            raise UserError(f"resume: the checkpoint has no '{name}' state; it was written by another configuration")
        try:
            obj.load_state_dict(trained_weights(checkpoint) if name == "model" else checkpoint[name])
        except (ValueError, KeyError) as error:  # torch's own mismatch errors (group counts, sizes)
            raise UserError(
                f"resume: the checkpoint's '{name}' state does not fit this run ({str(error).splitlines()[0]}); "
                "it was written by another configuration or version of trainer_cli"
            ) from None


def trained_weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The weights of the model as it trained: `model`, except after a LoRA run, whose `model`
    is the merged plain model and `trained_model` the one with its adapters."""
    return checkpoint.get("trained_model", checkpoint["model"])


def save(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # A full disk, a file-size limit, a read-only folder: torch's zip writer reports a short
        # write as a RuntimeError ("unexpected pos"), so the likely cause is looked up here.
        if isinstance(error, (OSError, RuntimeError)):
            reason = _write_failure(error, path.parent)
            raise UserError(
                f"checkpoint: cannot write {path} ({reason}); the previous checkpoint is intact; "
                "free some space and continue with `train resume=<run folder>`"
            ) from None
        raise


def _write_failure(error: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS's reason, else the disk's or the file-size limit."""
    import resource

    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"File too large: the file-size limit is {limit:,} bytes (ulimit -f)"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    if free < 64 * 2**20:
        return f"No space left on device: {free:,} bytes free"
    return str(error).splitlines()[0][:160] if str(error) else type(error).__name__


def load(path: Path, map_location: str | torch.device = "cpu", key: str = "resume") -> dict[str, Any]:
    """Read a checkpoint with the safe loader; a damaged file is a one-line error naming `key`."""
    if not path.is_file():
        raise UserError(f"{key}: no checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{key}: checkpoint '{path}' is corrupted or truncated ({reason[:120]}); "
            "use another checkpoint or start a new run"
        ) from None
    return state


def load_run(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A run's checkpoint (`load`), refused in one line when the file loads but is not one
    that `train` wrote (e.g. `torch.save({"a": tensor})`)."""
    state = load(path, map_location)
    needed = ("config", "epoch", "step", "model")
    missing = [key for key in needed if key not in state] if isinstance(state, dict) else list(needed)
    if missing or not isinstance(state["config"], str):
        raise UserError(
            f"resume: '{path}' is not a trainer_cli checkpoint (it lacks {', '.join(missing) or 'the config text'}); "
            "give a run folder written by `train`"
        )
    return state
