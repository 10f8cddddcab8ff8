"""Runs that survive preemption and kills: stop requests, the run folder's lock, leftovers.

- SIGTERM (what SLURM and Kubernetes send before preemption) and SIGUSR1 (SLURM's warning
  signal) only set a flag: the loop finishes its current optimizer step, writes a checkpoint
  that resumes exactly (mid-epoch included), prints the resume command and exits with
  `PREEMPTED_EXIT` (75, EX_TEMPFAIL: "try again later").
- One run folder, one writer: `lock_run_folder` holds an `fcntl.flock` on `<run>/.lock` for the
  run's life; the kernel drops it when the process dies, so a killed run never leaves it stuck.
- `remove_orphans` deletes the `*.tmp` files a kill during a checkpoint write leaves.
- A stopped run marks its checkpoint (`preempted.json`: the step and the signal): a run started
  again in the same folder with the same config (a requeued or re-run sweep job, a restarted
  pod) continues from it (train.resume_point).
- In a job that submitit started, submitit's own preemption/timeout signal (SIGUSR2, which
  SLURM sends `signal_delay_s` before the time limit) stops the run the same way; then
  submitit's handler, deferred until the checkpoint is written, requeues the job
  (`requeue_with_submitit`).

This module imports no torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import IO, Any

from trainer_cli import run_folder
from trainer_cli.config import UserError
from trainer_cli.errors import PREEMPTED_EXIT as PREEMPTED_EXIT  # re-exported: faults.PREEMPTED_EXIT
from trainer_cli.trust import user_trusted_modules

SIGNALS = ("SIGTERM", "SIGUSR1")
PREEMPTED_MARK = "preempted.json"
_requested: list[str] = []
_held: dict[str, IO[str]] = {}  # this process's run-folder locks
_new_folders: set[str] = set()  # single runs' folders claimed new or empty (all in them is ours)
_kept_folders: set[str] = set()  # claimed with files in them (overwrite=true, a stopped run)
_deferred: dict[str, Any] = {}  # submitit's handler of its preemption signal, run after the checkpoint


class Preempted(Exception):
    """The run stopped on request after writing a checkpoint; the message is the one line to print."""


def _on_signal(signum: int, _frame: Any) -> None:
    _requested.append(signal.Signals(signum).name)


def install_stop_handlers() -> None:
    """SIGTERM and SIGUSR1 ask the run to stop after the current step (main thread only); in a
    submitit job, submitit's preemption signal too (its handler then runs after the checkpoint)."""
    if threading.current_thread() is threading.main_thread():
        for name in SIGNALS:
            signal.signal(getattr(signal, name), _on_signal)
        submitit_signal = _submitit_signal()
        if submitit_signal is not None:
            handler = signal.getsignal(submitit_signal)
            if type(getattr(handler, "__self__", None)).__module__.startswith("submitit."):
                _deferred[submitit_signal.name] = handler
                signal.signal(submitit_signal, _on_signal)
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


def _submitit_signal() -> signal.Signals | None:
    """The signal submitit's job handler checkpoints and requeues on (SIGUSR2 unless set), in a
    process that submitit started; None elsewhere."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def requeue_with_submitit() -> None:
    """After the checkpoint of a run that submitit's preemption signal stopped: run submitit's
    own handler, deferred until now. It calls the launcher's `checkpoint()` (Hydra's submitit
    launcher resubmits the same job: same overrides, same job folder, where the run continues
    from `preempted.json`'s checkpoint) and requeues; it exits the process. Else a no-op."""
    name = stop_requested()
    if name is not None and name in _deferred:
        _deferred[name](getattr(signal, name), None)


def mark_preempted(run_dir: Path, step: int) -> None:
    """Mark `last.pt` (just written at `step`) as the checkpoint of a run stopped on request."""
    mark = run_dir / PREEMPTED_MARK
    temporary = mark.with_name(f".{mark.name}.tmp")
    temporary.write_text(json.dumps({"step": step, "signal": stop_requested() or "a stop request"}) + "\n")
    os.replace(temporary, mark)


def preempted_mark(run_dir: Path) -> dict[str, Any] | None:
    """The mark `mark_preempted` left in `run_dir`, or None."""
    try:
        mark = json.loads((run_dir / PREEMPTED_MARK).read_text())
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and isinstance(mark.get("step"), int) else None


def resume_command(run_dir: Path) -> str:
    """The command that continues the run: its real folder, and the user's own trust."""
    trust = "".join(f" --trust {shlex.quote(name)}" for name in user_trusted_modules())
    return f"train{trust} resume={shlex.quote(str(Path(run_dir).resolve()))}"


def progress(epochs_done: int, step: int) -> str:
    """Where a run stands, in the same words when it stops and when it resumes:
    `step 27 (1 epoch done)` (a stop mid-epoch counts only the whole epochs)."""
    return f"step {step} ({epochs_done} epoch{'' if epochs_done == 1 else 's'} done)"


def preempted(run_dir: Path, epoch: int, step: int, *, writer: bool = True) -> Preempted:
    """The stop of a run whose checkpoint at `step` is written (marked by the `writer`, rank 0)."""
    if writer:
        mark_preempted(run_dir, step)
    name = stop_requested() or "a stop request"
    return Preempted(
        f"stopped by {name} at {progress(epoch, step)}; checkpoint written; continue with: {resume_command(run_dir)}"
    )


def lock_run_folder(run_dir: Path, config_key: str = "resume", note_owner: bool = True) -> IO[str]:
    """Hold `<run>/.lock` (released when the returned file is closed or the process dies);
    `config_key` names the key that chose the folder in the refusal. `note_owner=False`: the
    lock is held but its text (who holds it) not yet written (`note_lock_owner`), so a folder
    refused after the lock keeps its `.lock` as it was."""
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _held and not _held[key].closed:
        _held.pop(key).close()  # this process's own earlier run of the folder ended by an exception
    run_folder.refuse_links(run_dir, config_key)
    # Never through a link (a shared run folder's `.lock` could point at a file to truncate).
    created = not (run_dir / ".lock").exists()
    descriptor = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    handle = os.fdopen(descriptor, "a+")  # held for the run's life
    handle.created = created  # type: ignore[attr-defined]
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise UserError(
            f"{config_key}: {run_dir} is in use by a running train ({owner}); wait for it to end or stop it first"
        ) from None
    _held[key] = handle
    if note_owner:
        note_lock_owner(handle)
    return handle


def release_run_folder(run_dir: Path) -> None:
    """Let go of this process's lock on `run_dir` (a sweep job handing its folder to the ranks
    it starts: rank 0 takes the lock for the run)."""
    handle = _held.pop(str(Path(run_dir).resolve()), None)
    if handle is not None:
        handle.close()


def note_lock_owner(handle: IO[str]) -> None:
    """Write who holds the lock (`pid N`: a second run's refusal names it)."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()


def _release_refused(key: str, run_dir: Path) -> None:
    """Let go of a folder the claim refused: the lock, and its file when this claim made it."""
    handle = _held.pop(key)
    if getattr(handle, "created", False):
        (run_dir / ".lock").unlink(missing_ok=True)
    handle.close()


def claim_run_folder(run_dir: Path, command_line: list[str]) -> None:
    """A new single run's folder, before anything is written into it (Hydra's `train.log`
    handler and `.hydra/` included): take its lock, so a second run in a running run's folder
    is refused before it touches a file; then refuse a folder that holds a run, finished or
    not, unless the command line continues it (`resume=`), names the overwrite switch
    (`overwrite=true`), or the folder holds this command's own stopped run (`preempted.json`:
    a requeued job continues it)."""
    key = str(run_dir.resolve())
    if key in _held and not _held[key].closed:
        return  # claimed already (Hydra writes several files)
    overrides = {arg.partition("=")[0].lstrip("+~"): arg.partition("=")[2] for arg in command_line}
    if overrides.get("resume") not in (None, "", "null"):
        # A resume writes in the resumed folder (train.run locks it); Hydra's log opens its
        # train.log first: no link there either.
        run_folder.refuse_links(Path(overrides["resume"].strip("'\"")), "resume")  # as cli_argv quoted it
        return
    existed = run_dir.is_dir()
    lock = lock_run_folder(run_dir, config_key="hydra.run.dir", note_owner=False)
    if not existed or run_folder.is_empty(run_dir):
        _new_folders.add(key)  # everything in it is this run's: a failed start may clean it up
        note_lock_owner(lock)
        return
    if overrides.get("overwrite", "").lower() == "true" or same_job(run_dir, command_line):
        _kept_folders.add(key)  # told to, or this very job's own earlier run (stopped, requeued, resumed)
        note_lock_owner(lock)
        return
    _release_refused(key, run_dir)
    if run_folder.holds_run(run_dir):
        raise UserError(
            f"hydra.run.dir: {run_dir} holds a run already; continue it with resume={run_dir}, "
            "or replace it with overwrite=true"
        )
    raise UserError(
        f"hydra.run.dir: {run_dir} is not empty; a new run starts in a new or empty folder (overwrite=true "
        "writes into it anyway, replacing files of the same names)"
    )


def same_job(run_dir: Path, command_line: list[str]) -> bool:
    """Whether the folder holds a run of exactly these overrides (`.hydra/overrides.yaml`): the
    same job, stopped and requeued or continued by a resumed sweep; any other run is not."""
    import yaml

    try:
        recorded = yaml.safe_load((run_dir / run_folder.HYDRA / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(recorded, list) and [str(o) for o in recorded] == [str(o) for o in command_line]


def claim_hydra_run_folder() -> None:
    """`claim_run_folder` for the folder Hydra is about to write: a run's, or a sweep job's (a
    job folder holding another job's run, from `hydra.sweep.subdir` or someone's sweep folder,
    is refused; the same job's is continued); not the ranks of a multi-process run, which share
    rank 0's folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from trainer_cli import distributed

    if not HydraConfig.initialized() or distributed.launched():
        return
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.get("output_dir")
    named = {arg.partition("=")[0].lstrip("+~") for arg in hydra_cfg.overrides.hydra}
    key = "hydra.run.dir" if hydra_cfg.mode == RunMode.RUN else "hydra.sweep.dir"
    if output_dir and key not in named:
        refuse_link_on_the_way(Path(output_dir), key)
    if output_dir:
        from omegaconf import OmegaConf

        # The overrides as typed: iterating the node would resolve `${...}` in them (a traceback
        # for an unknown resolver, before the config's own one-line check)
        claim_run_folder(Path(output_dir), OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False))


def refuse_link_on_the_way(run_dir: Path, key: str) -> None:
    """A run folder chosen by a config file or the default is reached through real folders of
    the current folder only: a folder one runs `train` in (a downloaded repo) may hold a link
    (`outputs -> ~/somewhere`) that would put the run elsewhere. Named on the command line, the
    folder is the user's choice, links and all."""
    path = run_folder.link_on_the_way(run_dir)
    if path is not None:
        _remove_empty_folders(Path(os.path.abspath(run_dir)), stop=path)  # Hydra made them a moment ago
        raise UserError(
            f"{key}: {path} is a symbolic link (to {os.readlink(path)}); a run folder from a config or the "
            f"default is written only through real folders; name it on your command line ({key}=...) to "
            "write there"
        )


def _remove_empty_folders(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop`, each only while empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temporary files a kill during a checkpoint write left behind."""
    removed = []
    for path in run_folder.checkpoint_dir(run_dir).glob(".*.tmp"):
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


# What a run makes in its folder before its own first write: Hydra's record, the log, the lock.
HYDRA_WRITES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log", ".lock")


def process_start() -> float:
    """When this process started (Linux's /proc; elsewhere +inf: no file counts as ours)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return float("inf")


def discard_empty_run_folder(run_dir: Path) -> None:
    """A run that failed before writing anything leaves no trace: the files it made itself
    (`HYDRA_WRITES`) go, then the folders they leave empty. Only in a folder this process
    claimed new or empty (`claim_run_folder`), or, for a sweep's job folder (which the sweeper
    makes), files written since this process started. Anything else, at any depth, stays."""
    if not run_dir.is_dir() or run_dir.is_symlink():
        return
    claimed_new = str(run_dir.resolve()) in _new_folders
    if str(run_dir.resolve()) in _kept_folders:
        return  # claimed with its files in it (overwrite=true, a stopped run): nothing here is only ours
    started = float("-inf") if claimed_new else process_start()
    ours = [p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= started]
    if any(p.relative_to(run_dir).as_posix() not in HYDRA_WRITES for p in ours):
        return  # the run wrote more than Hydra's record: a failed run's record, kept
    for path in ours:
        path.unlink(missing_ok=True)
    for folder in (run_dir / ".hydra", run_dir):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: what was there before stays
