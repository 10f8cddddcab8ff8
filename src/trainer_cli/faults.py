"""Runs that survive preemption and kills: stop requests, the run folder's lock, leftovers.

- SIGTERM (what SLURM and Kubernetes send before preemption) and SIGUSR1 (SLURM's warning
  signal) only set a flag: the loop finishes its current optimizer step, writes a checkpoint
  that resumes exactly (mid-epoch included), prints the resume command and exits with
  `PREEMPTED_EXIT` (75, EX_TEMPFAIL: "try again later").
- One run folder, one writer: `lock_run_folder` holds an `fcntl.flock` on `<run>/.lock` for the
  run's life; the kernel drops it when the process dies, so a killed run never leaves it stuck.
- `remove_orphans` deletes the `*.tmp` files a kill during a checkpoint write leaves.

This module imports no torch.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import IO, Any

from trainer_cli.config import UserError
from trainer_cli.trust import user_trusted_modules

PREEMPTED_EXIT = 75
SIGNALS = ("SIGTERM", "SIGUSR1")
_requested: list[str] = []
_held: dict[str, IO[str]] = {}  # this process's run-folder locks


class Preempted(Exception):
    """The run stopped on request after writing a checkpoint; the message is the one line to print."""


def _on_signal(signum: int, _frame: Any) -> None:
    _requested.append(signal.Signals(signum).name)


def install_stop_handlers() -> None:
    """SIGTERM and SIGUSR1 ask the run to stop after the current step (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for name in SIGNALS:
            signal.signal(getattr(signal, name), _on_signal)
        # Over a file-size limit a write fails with EFBIG (a one-line error, the temporary
        # file removed) instead of the process being killed mid-write.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def stop_requested() -> str | None:
    """The name of the signal that asked the run to stop, or None."""
    return _requested[0] if _requested else None


def request_stop(name: str = "SIGTERM") -> None:
    """Ask the run to stop as a signal would (tests, and code that wants a clean stop)."""
    _requested.append(name)


def clear_stop_request() -> None:
    _requested.clear()


def resume_command(run_dir: Path) -> str:
    """The command that continues the run: its real folder, and the user's own trust."""
    trust = "".join(f" --trust {shlex.quote(name)}" for name in user_trusted_modules())
    return f"train{trust} resume={shlex.quote(str(Path(run_dir).resolve()))}"


def preempted(run_dir: Path, epoch: int, step: int) -> Preempted:
    name = stop_requested() or "a stop request"
    return Preempted(
        f"stopped by {name} at epoch {epoch + 1}, step {step}; checkpoint written; "
        f"continue with: {resume_command(run_dir)}"
    )


def lock_run_folder(run_dir: Path) -> IO[str]:
    """Hold `<run>/.lock` (released when the returned file is closed or the process dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _held and not _held[key].closed:
        _held.pop(key).close()  # this process's own earlier run of the folder ended by an exception
    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 (held for the run's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise UserError(
            f"resume: {run_dir} is in use by a running train ({owner}); wait for it to end or stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    _held[key] = handle
    return handle


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temporary files a kill during a checkpoint write left behind."""
    removed = []
    for path in (run_dir / "checkpoints").glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def finished_summary(run_dir: Path, checkpoint_epoch: int, epochs: int, saved_epochs: int) -> dict[str, Any] | None:
    """The summary of a run that already finished (and is not being extended), else None."""
    path = run_dir / "metrics.json"
    if not path.is_file() or epochs > saved_epochs:
        return None
    try:
        summary = json.loads(path.read_text())
    except ValueError:
        return None
    if summary.get("status") != "ok" or summary.get("epochs_run") != checkpoint_epoch:
        return None
    return summary


def discard_empty_run_folder(run_dir: Path) -> None:
    """A run that failed before writing anything leaves no folder (Hydra's own files only)."""
    if not run_dir.is_dir():
        return
    if {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", ".lock"}:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
