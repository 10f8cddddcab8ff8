"""k-fold cross-validation: stratified disjoint folds; the run returns the mean of its folds."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from tests.conftest import run_train
from trainer_cli.config import UserError
from trainer_cli.data.splits import kfold_indices

JOB = ["epochs=1", "trainer.device=cpu", "trainer.log_every_n_steps=5"]


def test_folds_are_stratified_disjoint_and_cover_the_training_set():
    labels = np.repeat(np.arange(4), [30, 20, 10, 40])
    held_out = [kfold_indices(labels, 5, fold, seed=0) for fold in range(5)]
    everything = np.concatenate([held for _, held in held_out])
    assert sorted(everything.tolist()) == list(range(len(labels)))  # each sample held out once
    for train, held in held_out:
        assert not set(train) & set(held) and len(train) + len(held) == len(labels)
        assert np.bincount(labels[held]).tolist() == [6, 4, 2, 8]  # each class's share in each fold
    again = kfold_indices(labels, 5, 2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, held_out[2], strict=True))
    assert not np.array_equal(kfold_indices(labels, 5, 2, seed=1)[1], held_out[2][1])


def test_kfold_returns_the_mean_of_its_folds(tmp_path, make_cfg):
    from trainer_cli.kfold import run_folds

    summary = run_folds(make_cfg("data.kfold=2", "data=digits", *JOB), tmp_path)
    folds = [json.loads((tmp_path / f"fold_{i}" / "metrics.json").read_text()) for i in range(2)]
    values = [fold["best/val/acc"] for fold in folds]
    assert summary["best/val/acc"] == pytest.approx(statistics.fmean(values))
    assert summary["best/val/acc_std"] == pytest.approx(statistics.stdev(values))
    assert summary["test/acc"] == pytest.approx(statistics.fmean(f["test/acc"] for f in folds))
    assert json.loads((tmp_path / "metrics.json").read_text())["best/val/acc"] == summary["best/val/acc"]
    # Each fold validated on its own held-out fold and kept its own curves.
    for i in range(2):
        assert f"fold: {i}" in (tmp_path / f"fold_{i}" / "resolved_config.yaml").read_text()
        assert any((tmp_path / f"fold_{i}" / "tensorboard").iterdir())


@pytest.mark.parametrize("k", [1, "two"])
def test_bad_kfold_is_a_one_line_error(k, tmp_path, make_cfg):
    from trainer_cli.kfold import run_folds

    with pytest.raises(UserError, match="data.kfold: expected a whole number >= 2"):
        run_folds(make_cfg(f"data.kfold={k}", "data=digits", *JOB), tmp_path)


@pytest.mark.slow
def test_kfold_in_an_optuna_sweep_reports_the_mean_to_the_study(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    run_train(["hparams_search=random", "hydra.sweeper.n_trials=1", "data.kfold=2", *JOB,
               f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    trial = optuna.load_study(study_name="random", storage=f"sqlite:///{sweep / 'optuna.db'}").trials[0]
    folds = [json.loads((sweep / "0" / f"fold_{i}" / "metrics.json").read_text())["best/val/acc"] for i in range(2)]
    assert trial.value == pytest.approx(statistics.fmean(folds))  # what main() returned to the sweeper
