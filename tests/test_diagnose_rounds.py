"""The recipe's own picks hold: refine tries the next lower LR before failing at the grid's,
and `diagnose=all` repeats grid and refine until the best point is stable ("GOTO step 5")."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trainer_cli.diagnose.context import Context, diagnose_defaults
from trainer_cli.diagnose.grid import WEIGHT_DECAY_KEY, lower_if_unstable
from trainer_cli.verdict import Verdict


def write_history(folder: Path, losses: list[float]) -> list[dict]:
    folder.mkdir(parents=True)
    rows = [
        {"epoch": i + 1, "train/loss": x, "train/acc": 0.9, "val/loss": x, "val/acc": 0.9} for i, x in enumerate(losses)
    ]
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_refine_takes_the_next_lower_lr_when_the_best_point_diverges(tmp_path):
    rules = {**diagnose_defaults(), "num_classes": 10}
    ctx = Context(None, tmp_path, rules)
    diverging = write_history(tmp_path / "refine" / "0", [2.0, 0.5, 0.4, 3.0])  # ends far above its best
    write_history(tmp_path / "refine" / "1", [2.0, 1.0, 0.6, 0.5])
    write_history(tmp_path / "refine" / "2", [2.0, 1.5, 1.2, 1.0])
    finished = [
        {"job": "0", "values": {"lr": "0.1", WEIGHT_DECAY_KEY: "0"}, "best_val": 0.95},
        {"job": "1", "values": {"lr": "0.05", WEIGHT_DECAY_KEY: "0"}, "best_val": 0.94},
        {"job": "2", "values": {"lr": "0.01", WEIGHT_DECAY_KEY: "0"}, "best_val": 0.90},
    ]
    numbers: dict = {}
    chosen, history = lower_if_unstable(ctx, finished[0], diverging, finished, rules, numbers)
    assert chosen["job"] == "1" and float(history[-1]["train/loss"]) == 0.5
    assert "took lr 0.05" in numbers["lower lr"]
    # a stable best point stays
    calm = [{**r, "train/loss": str(r["train/loss"])} for r in write_history(tmp_path / "calm", [2.0, 1.0, 0.5])]
    assert lower_if_unstable(ctx, finished[2], calm, finished, rules, {})[0]["job"] == "2"


def fake_steps(moves: list[float]):
    """A grid that keeps the found LR and a refine that halves it `len(moves)` times, then stays."""
    calls: list[str] = []

    def grid(ctx):
        calls.append(f"grid{ctx.round}")
        ctx.found.setdefault("lr", 0.1)
        return Verdict("grid", "PASS", "")

    def refine(ctx):
        calls.append(f"refine{ctx.round}")
        if moves:
            ctx.found["lr"] = moves.pop(0)
        return Verdict("refine", "PASS", "")

    return calls, {"grid": grid, "refine": refine}


def run_rounds(monkeypatch, make_cfg, tmp_path, moves, max_rounds):
    from trainer_cli import diagnose

    calls, steps = fake_steps(moves)
    monkeypatch.setattr(diagnose, "_steps", lambda: steps)
    options = {**diagnose_defaults(), "max_rounds": max_rounds}
    options.pop("steps")
    diagnose.run_diagnosis(make_cfg(), tmp_path, steps=["grid", "refine"], **options)
    return calls


def test_grid_and_refine_repeat_until_the_best_point_is_stable(monkeypatch, make_cfg, tmp_path):
    calls = run_rounds(monkeypatch, make_cfg, tmp_path / "a", [0.05, 0.05], max_rounds=5)
    assert calls == ["grid1", "refine1", "grid2", "refine2"]  # round 2's refine kept 0.05: stable
    assert "rounds: 2 of at most 5 (the best point is stable)" in (tmp_path / "a" / "diagnosis.md").read_text()
    calls = run_rounds(monkeypatch, make_cfg, tmp_path / "b", [0.05, 0.02, 0.01, 0.005], max_rounds=3)
    assert calls == ["grid1", "refine1", "grid2", "refine2", "grid3", "refine3"]  # stopped by max_rounds


@pytest.mark.slow
def test_the_healthy_default_passes_the_whole_recipe(make_cfg, tmp_path):
    """`train diagnose=all` on the defaults (digits, CPU): every step PASS (~9 min on the
    loaded 2-core CPU; grid and refine may run up to mode.max_rounds rounds)."""
    from trainer_cli import build
    from trainer_cli.config import resolve

    cfg = make_cfg("diagnose=all", "trainer.device=cpu", "logger=[]", fast=False)
    summary = build.procedure(resolve(cfg))(cfg, tmp_path)
    assert summary["verdict"] == "PASS", (tmp_path / "diagnosis.md").read_text()
