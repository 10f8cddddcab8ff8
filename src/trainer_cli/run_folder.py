"""The run folder's layout, and which checkpoint each use of a run folder takes.

Every other module asks here for a path inside a run folder; none spells it. The layout:

    <run folder>/
      .hydra/                 what Hydra composed (config.yaml, overrides.yaml, hydra.yaml)
      resolved_config.yaml    the effective values, after shortcuts
      metrics.json            the run's summary (`status: ok` once it finished)
      metrics.csv             one row per epoch
      checkpoints/last.pt     the latest state, every epoch (and mid-epoch): resume reads it
      checkpoints/best.pt     the best epoch by `optimized_metric`
      checkpoints/snapshot_<i>.pt   one per SGDR cycle (snapshot ensembles)

The rule for "run folder -> trained weights" (evaluate, predict, export, ensemble members,
`init_from`) is one: `best.pt`, else `last.pt` (a run trained with
`trainer.checkpoint.save_best=false` has only last.pt). Resuming always takes `last.pt`: it
continues where the run stopped, not where it was best. A checkpoint file given directly is
taken as it is.

Imports nothing of the project above `errors`: it is the lowest layer that knows a run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from trainer_cli.errors import UserError

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
SNAPSHOT = "snapshot_{cycle}.pt"
METRICS = "metrics.json"
RESOLVED_CONFIG = "resolved_config.yaml"
HYDRA = ".hydra"
SEARCH_RECORD = "search.yaml"  # a sweep folder's record of its search space and fixed overrides


def checkpoint_dir(run_dir: Path) -> Path:
    """`<run>/checkpoints`."""
    return Path(run_dir) / CHECKPOINTS


def last_checkpoint(run_dir: Path) -> Path:
    """`<run>/checkpoints/last.pt`: the latest state (what resume reads)."""
    return checkpoint_dir(run_dir) / LAST


def best_checkpoint(run_dir: Path) -> Path:
    """`<run>/checkpoints/best.pt`: the best epoch by `optimized_metric`."""
    return checkpoint_dir(run_dir) / BEST


def snapshot_checkpoint(run_dir: Path, cycle: int) -> Path:
    """`<run>/checkpoints/snapshot_<cycle>.pt`: the weights at the end of an SGDR cycle."""
    return checkpoint_dir(run_dir) / SNAPSHOT.format(cycle=cycle)


def snapshots(run_dir: Path) -> list[Path]:
    """The run's snapshot checkpoints, in cycle order (2 before 10)."""
    found = checkpoint_dir(run_dir).glob(SNAPSHOT.format(cycle="*"))
    return sorted(found, key=lambda path: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)])


def metrics_file(run_dir: Path) -> Path:
    """`<run>/metrics.json`: the summary a run returns, written when it ends."""
    return Path(run_dir) / METRICS


def resolved_config(run_dir: Path) -> Path:
    """`<run>/resolved_config.yaml`: the effective config."""
    return Path(run_dir) / RESOLVED_CONFIG


def find_runs(root: Path) -> list[Path]:
    """The run folders at or under `root` that hold trained weights, in natural order."""
    found = {path.parent.parent for name in (BEST, LAST) for path in Path(root).rglob(f"{CHECKPOINTS}/{name}")}
    return sorted(found, key=lambda path: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))])


def holds_run(run_dir: Path) -> bool:
    """Whether a folder holds a run (finished or not): its record, metrics or checkpoints."""
    run_dir = Path(run_dir)
    return any(path.exists() for path in (resolved_config(run_dir), metrics_file(run_dir), checkpoint_dir(run_dir)))


def refuse_links(folder: Path, key: str) -> None:
    """A folder a run writes into holds no symbolic link, at any depth: writing through one
    would change a file outside the folder (a shared run or sweep folder can hold one that
    points at the user's own files). `key` names the config key that chose the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            raise UserError(
                f"{key}: {path} is a symbolic link (to {os.readlink(path)}); a run writes only into real folders "
                "and files, so the folder it writes into may hold no link"
            )
        if path.is_file() and path.stat().st_nlink > 1:  # a hard link: the same file is elsewhere too
            raise UserError(
                f"{key}: {path} is a hard link (the same file has {path.stat().st_nlink} names); a run writes "
                "only into files of its own, so the folder it writes into may hold no link"
            )


def link_on_the_way(path: Path) -> Path | None:
    """The first symbolic link between the current folder and `path` (a path inside it), else
    None: a folder `train` runs in (a downloaded repo) may hold one that leads elsewhere."""
    here = Path.cwd()
    try:
        inside = Path(os.path.abspath(path)).relative_to(here)
    except ValueError:
        return None
    step = here
    for part in inside.parts:
        step = step / part
        if step.is_symlink():
            return step
    return None


def is_empty(run_dir: Path, ignoring: tuple[str, ...] = (".lock",)) -> bool:
    """Whether a folder holds nothing (but the names in `ignoring`)."""
    return not any(path.name not in ignoring for path in Path(run_dir).iterdir())


def trained_weights(given: str | Path, key: str = "checkpoint") -> Path:
    """The checkpoint that stands for a run's trained model: a file as given, or a run
    folder's `best.pt`, else its `last.pt` (the one rule for evaluate, predict, export,
    ensembles and `init_from`). `key` names the config key in the error."""
    path = Path(str(given)).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (best_checkpoint(path), last_checkpoint(path)):
            if candidate.is_file():
                return candidate
        raise UserError(f"{key}: '{given}' has no {CHECKPOINTS}/{BEST} or {CHECKPOINTS}/{LAST}")
    raise UserError(f"{key}: '{given}' is neither a run folder nor a checkpoint file")
