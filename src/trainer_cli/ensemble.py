"""Ensembles (`train ensemble=<sweep folder>` or `'ensemble=[<run folder>,...]'`, i.e. `mode=ensemble`).

Loads the best-on-validation checkpoint of each finished run, averages the predicted class
probabilities on the test set, and reports the ensemble's accuracy beside each member's.
Writes `ensemble.json` and `predictions.npz` (each member's and the ensemble's probabilities,
and the labels) in the ensemble's own run folder. Trains nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from rich.table import Table

from trainer_cli import build, run_folder
from trainer_cli.config import UserError

log = logging.getLogger("trainer_cli")


def find_members(paths: list[str]) -> list[Path]:
    """The finished run folders (trained weights, metrics.json status ok) under `paths`."""
    members: list[Path] = []
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            raise UserError(f"ensemble: '{given}' is not a folder; give a sweep folder or run folders")
        found = []
        for run_dir in run_folder.find_runs(root):
            metrics = run_folder.metrics_file(run_dir)
            status = json.loads(metrics.read_text()).get("status") if metrics.is_file() else "unfinished"
            if status == "ok":
                found.append(run_dir)
            else:
                log.warning(f"ensemble: leaving out {run_dir} ({status})")
        if not found:
            raise UserError(
                f"ensemble: no finished run (checkpoints/best.pt or last.pt, and metrics.json) under '{given}'; "
                "give a sweep folder or run folders"
            )
        members += found
    return list(dict.fromkeys(members))


def snapshot_members(run_dirs: list[Path]) -> list[Path]:
    """The snapshot checkpoints (`checkpoints/snapshot_<i>.pt`, one per SGDR cycle) of each run."""
    members = []
    for run_dir in run_dirs:
        found = run_folder.snapshots(run_dir)
        if not found:
            raise UserError(f"ensemble: {run_dir} has no checkpoints/snapshot_*.pt; train it with scheduler=sgdr")
        members += found
    return members


@torch.no_grad()
def predict_proba(member: Path, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(test-set class probabilities, test labels) of a run's trained model (`member` is the
    run folder: run_folder.trained_weights's rule) or of one checkpoint file. The run's own
    data config rebuilds its exact test set and preprocessing (fitted on its own training
    split, k-fold folds included); the saved statistics are then restored."""
    from trainer_cli.inference import predictions, rebuild

    trained = rebuild(member, device, key="ensemble")
    probs, labels = predictions(trained, trained.data.test)
    return probs.numpy(), labels.numpy()


def run_ensemble(
    cfg: DictConfig,
    run_dir: Path,
    hparams: dict[str, Any] | None = None,
    user_keys: set[str] | None = None,
    runs: Any = None,
    snapshots: bool = False,
) -> dict[str, Any]:
    """Evaluate the ensemble of `runs` (`mode.runs`, which the `ensemble=` shortcut sets: a sweep
    folder, run folders or checkpoints; with `snapshots`: their SGDR snapshots,
    `mode.snapshots=true`); returns its summary."""
    from trainer_cli.report import Reporter

    given = runs
    if not given:
        raise UserError("ensemble: give the runs to ensemble, e.g. ensemble=<sweep folder> or 'ensemble=[<run>,<run>]'")
    paths = [str(p) for p in given] if isinstance(given, (list, ListConfig)) else [str(given)]
    members = find_members(paths)
    if snapshots:
        members = snapshot_members(members)
    device = build.device(str(cfg.trainer.device))
    member_probs, labels = [], None
    for member in members:
        probs, member_labels = predict_proba(member, device)
        if labels is not None and not np.array_equal(labels, member_labels):
            raise UserError(f"ensemble: {member} was tested on other data than {members[0]}; use runs of one data set")
        labels = member_labels
        member_probs.append(probs)
    stacked = np.stack(member_probs)
    ensemble = stacked.mean(axis=0)  # the average of the members' predicted probabilities

    def accuracy(probs: np.ndarray) -> float:
        return float((probs.argmax(1) == labels).mean())

    def nll(probs: np.ndarray) -> float:
        return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())

    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / "predictions.npz", members=stacked, ensemble=ensemble, labels=labels)
    summary = {
        "status": "ok",
        "run_dir": str(run_dir),
        "members": [
            {"run_dir": str(m), "test/acc": accuracy(p), "test/loss": nll(p)}
            for m, p in zip(members, stacked, strict=True)
        ],
        "test/acc": accuracy(ensemble),
        "test/loss": nll(ensemble),
    }
    (run_dir / "ensemble.json").write_text(json.dumps(summary, indent=2) + "\n")
    with Reporter(run_dir) as reporter:
        reporter.print(ensemble_table(summary))
    return summary


def ensemble_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Ensemble of {len(summary['members'])} runs ({summary['run_dir']})")
    for column, justify in (("model", "left"), ("test acc", "right"), ("test loss", "right")):
        table.add_column(column, justify=justify)
    for member in summary["members"]:
        table.add_row(member["run_dir"], f"{member['test/acc']:.4f}", f"{member['test/loss']:.4f}")
    mean_acc = float(np.mean([m["test/acc"] for m in summary["members"]]))
    table.add_row("members' mean", f"{mean_acc:.4f}", "")
    table.add_row("ensemble (mean probability)", f"{summary['test/acc']:.4f}", f"{summary['test/loss']:.4f}")
    return table
