"""Ensembles: the average of the members' predicted probabilities on the test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import run_train

JOB = ["epochs=1", "trainer.device=cpu", "trainer.log_every_n_steps=5"]


def member_probabilities(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """One run's test-set probabilities, computed here from its checkpoint and its own config."""
    from trainer_cli import build, checkpoint

    state = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    cfg = OmegaConf.create(state["config"])
    data = build.data(cfg, torch.device("cpu"))
    model = build.model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        images = torch.cat([x for x, _ in data.test])
        labels = torch.cat([y for _, y in data.test])
        return torch.softmax(model(images), dim=1).numpy(), labels.numpy()


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory) -> Path:
    """`train -m seed=0,1,2`: three one-epoch runs that differ only in their seed."""
    root = tmp_path_factory.mktemp("ensemble")
    run_train(["-m", "seed=0,1,2", *JOB, f"hydra.sweep.dir={root / 'sweep'}"], root)
    return root / "sweep"


@pytest.mark.slow
def test_ensemble_probabilities_are_the_average_of_its_members(seed_sweep, tmp_path):
    result = run_train([f"ensemble={seed_sweep}", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'ens'}"], tmp_path)
    saved = np.load(tmp_path / "ens" / "predictions.npz")
    members = [member_probabilities(seed_sweep / str(job)) for job in range(3)]
    labels = members[0][1]
    manual = np.mean([probs for probs, _ in members], axis=0)
    np.testing.assert_allclose(saved["ensemble"], manual, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], labels)
    summary = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert summary["test/acc"] == pytest.approx(float((manual.argmax(1) == labels).mean()))
    # Each member's accuracy is the test accuracy its own run reported.
    for job, member in enumerate(summary["members"]):
        run_metrics = json.loads((seed_sweep / str(job) / "metrics.json").read_text())
        assert member["test/acc"] == pytest.approx(run_metrics["test/acc"])
    assert "ensemble (mean probability)" in result.stdout


@pytest.mark.slow
def test_ensemble_of_named_run_folders(seed_sweep, tmp_path):
    runs = f"ensemble=[{seed_sweep / '0'},{seed_sweep / '2'}]"
    run_train([runs, "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'ens'}"], tmp_path)
    summary = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [Path(m["run_dir"]).name for m in summary["members"]] == ["0", "2"]


def test_failed_runs_are_left_out(tmp_path):
    from trainer_cli.ensemble import find_members

    for name, status in (("0", "ok"), ("1", "failed"), ("2", None)):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "best.pt").write_bytes(b"")
        if status:
            (tmp_path / name / "metrics.json").write_text(json.dumps({"status": status}))
    assert find_members([str(tmp_path)]) == [tmp_path / "0"]


@pytest.mark.parametrize("where", ["missing", "empty"])
@pytest.mark.slow
def test_folder_without_runs_is_a_one_line_error(where, tmp_path):
    folder = tmp_path / where
    if where == "empty":
        folder.mkdir()
    result = run_train([f"ensemble={folder}", f"hydra.run.dir={tmp_path / 'ens'}"], tmp_path, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: ensemble: '{folder}'") or line.startswith("error: ensemble: no finished run")
    assert "sweep folder or run folders" in line
