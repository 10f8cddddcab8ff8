"""`train compare`: the config keys that differ, metrics with deltas, overlaid curves; runs no code."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import TRAIN
from trainer_cli.config import UserError


class WritesAFile:
    """A pickle that, if ever loaded, leaves a marker file: the proof that it was not."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "loaded"))


def make_run(folder: Path, config: dict, summary: dict, curve: list[float]) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    (folder / "metrics.json").write_text(json.dumps(summary))
    rows = "".join(f"{epoch},{value},{1 - value}\n" for epoch, value in enumerate(curve, 1))
    (folder / "metrics.csv").write_text("epoch,val/acc,val/loss\n" + rows)
    marker = folder.parent / f"{folder.name}.loaded"
    (folder / "checkpoints" / "last.pt").write_bytes(pickle.dumps(WritesAFile(marker)))
    return folder


BASE = {"seed": 0, "epochs": 3, "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}, "data": {"name": "digits"}}


def test_compare_shows_only_the_differing_keys_with_metric_deltas(tmp_path):
    from trainer_cli.compare import differing_keys, labels, load_run, run_folders, tables

    a = make_run(tmp_path / "runs" / "a", BASE, {"best/val/acc": 0.90, "test/acc": 0.88}, [0.5, 0.8, 0.9])
    adam = {**BASE, "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01}}
    b = make_run(tmp_path / "runs" / "b", adam, {"best/val/acc": 0.95, "test/acc": 0.93}, [0.7, 0.9, 0.95])
    runs = [load_run(f) for f in run_folders([str(a), str(b)])]
    assert differing_keys([r["config"] for r in runs]) == ["optimizer._target_", "optimizer.lr"]
    assert labels([a, b]) == ["runs/a", "runs/b"]
    from io import StringIO

    from rich.console import Console

    text = StringIO()
    for table in tables(runs, ["a", "b"]):
        Console(file=text, width=200).print(table)
    printed = text.getvalue()
    assert "torch.optim.Adam" in printed and "seed" not in printed and "epochs " not in printed
    assert "0.95 (+0.05)" in printed and "0.93 (+0.05)" in printed


def test_a_sweep_folder_is_its_jobs_and_bad_folders_are_one_line_errors(tmp_path):
    from trainer_cli.compare import run_folders

    for job, lr in enumerate((0.1, 0.01)):
        make_run(tmp_path / "sweep" / str(job), {**BASE, "lr": lr}, {"best/val/acc": 0.5}, [0.5])
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    assert [f.name for f in run_folders([str(tmp_path / "sweep")])] == ["0", "1"]
    with pytest.raises(UserError, match="'nowhere' is not a folder"):
        run_folders(["nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no run"):
        run_folders([str(tmp_path / "empty")])
    with pytest.raises(UserError, match="compare needs 2"):
        run_folders([str(tmp_path / "sweep" / "0")])


def test_train_compare_writes_the_overlaid_curves_and_opens_no_checkpoint(tmp_path):
    make_run(tmp_path / "a", BASE, {"best/val/acc": 0.9}, [0.5, 0.8, 0.9])
    make_run(tmp_path / "b", {**BASE, "lr": 0.01}, {"best/val/acc": 0.7}, [0.3, 0.6, 0.7])
    result = subprocess.run([TRAIN, "compare", "a", "b", "--out", "."], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, COLUMNS="200"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0.7 (-0.2)" in result.stdout
    from PIL import Image

    with Image.open(tmp_path / "compare.png") as image:
        assert image.size[0] > 800  # two panels: val/acc and val/loss
    assert not list(tmp_path.glob("*.loaded"))  # the checkpoints' pickles never ran
    missing = subprocess.run([TRAIN, "compare", "a", "nowhere"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr
