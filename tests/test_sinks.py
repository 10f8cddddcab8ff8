"""The csv and mlflow loggers, selected together with TensorBoard, read back with their own readers."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.conftest import run_train


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One epoch on digits with 'logger=[tensorboard,csv,mlflow]' and a local MLflow store."""
    pytest.importorskip("mlflow")
    from hydra import compose, initialize_config_dir

    from trainer_cli.config import CONF_DIR, register_resolvers
    from trainer_cli.train import run

    register_resolvers()
    root = tmp_path_factory.mktemp("logged")
    store = root / "mlruns"
    overrides = [
        "epochs=2", "trainer.device=cpu", "trainer.log_every_n_steps=5", "logger=[tensorboard,csv,mlflow]",
        f"logger.mlflow.tracking_uri={store}", "logger.mlflow.experiment=tests",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run_dir = root / "run"
    summary = run(cfg, run_dir, {"augmentation": "[flip,crop]", "model": "mlp"})
    return run_dir, store, summary


@pytest.mark.slow  # MLflow's import and a training run: seconds
def test_mlflow_run_has_params_metrics_and_history(logged_run):
    from mlflow.tracking import MlflowClient

    run_dir, store, summary = logged_run
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when asked
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tests")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == run_dir.name
    assert found.data.params["augmentation"] == "[flip,crop]" and found.data.params["lr"] == "0.001"
    assert found.data.metrics["test.acc"] == pytest.approx(summary["test/acc"])
    history = client.get_metric_history(found.info.run_id, "val.acc")
    with open(run_dir / "metrics.csv") as f:
        epochs = list(csv.DictReader(f))
    assert [(m.step, m.value) for m in history if m.step > 0] == [
        (int(row["step"]), pytest.approx(float(row["val/acc"]))) for row in epochs
    ]
    assert client.get_metric_history(found.info.run_id, "train.loss_step")  # the step curves too
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"metrics.json", "metrics.csv", "resolved_config.yaml"} <= artifacts


def test_csv_logger_has_every_scalar_by_step_and_drops_a_killed_runs_rows_on_resume(tmp_path):
    from trainer_cli.report import Reporter
    from trainer_cli.sinks import CSVLogger

    row = {"epoch": 1, "train/loss": 0.5, "train/acc": 0.8, "val/loss": 0.4, "val/acc": 0.85, "lr": 1e-3}
    with Reporter(tmp_path, [CSVLogger(tmp_path)], epochs=2, steps_per_epoch=10) as reporter:
        for step in (5, 10):
            reporter.log_scalars(step, {"train/loss_step": 1.0 / step, "lr": 1e-3})
        reporter.end_epoch(10, row, [row])
        reporter.log_scalars(15, {"train/loss_step": 0.05})  # then the run is killed
        reporter.finish({"status": "ok", "run_dir": str(tmp_path)}, {"augmentation": "[flip,crop]"}, {"test/acc": 0.9})
    with open(tmp_path / "csv" / "scalars.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [(int(r["step"]), r["tag"]) for r in rows]
    assert (
        steps[:2] == [(5, "train/loss_step"), (5, "lr")]
        and (10, "val/acc") in steps
        and (15, "train/loss_step") in steps
    )
    assert float(next(r["value"] for r in rows if r["tag"] == "val/acc")) == 0.85
    final = json.loads((tmp_path / "csv" / "hparams.json").read_text())
    assert final == {"hparams": {"augmentation": "[flip,crop]"}, "final": {"test/acc": 0.9}}
    CSVLogger(tmp_path, purge_step=11).close()  # resumed after step 10: the killed run's step 15 goes
    with open(tmp_path / "csv" / "scalars.csv") as f:
        assert max(int(r["step"]) for r in csv.DictReader(f)) == 10


@pytest.mark.slow
def test_cli_selects_loggers_together_and_records_multi_select_choices(tmp_path, monkeypatch):
    """`train 'logger=[tensorboard,mlflow]'` from the command line: the MLflow run's parameters
    hold the multi-select choices (augmentation, regularization) as they were typed."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when asked
    run_train(
        ["epochs=1", "trainer.device=cpu", "logger=[tensorboard,mlflow]", "augmentation=[flip,crop]",
         "regularization=[l2,dropout]", "hydra.run.dir=run"],
        cwd=tmp_path,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("trainer_cli").experiment_id])
    assert found.data.params["augmentation"] == "[flip,crop]"
    assert found.data.params["regularization"] == "[l2,dropout]"
    assert found.data.params["logger"] == "[tensorboard,mlflow]"
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow  # MLflow's import and a training run: seconds
@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_mlflow_run_that_raises_is_not_marked_finished(tmp_path, monkeypatch, error, status):
    pytest.importorskip("mlflow")
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    import trainer_cli.loop
    from trainer_cli.config import CONF_DIR, register_resolvers
    from trainer_cli.train import run

    register_resolvers()
    store = tmp_path / "mlruns"
    overrides = ["epochs=2", "logger=[mlflow]", f"logger.mlflow.tracking_uri={store}", "logger.mlflow.experiment=t"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)

    def crash(*args, **kwargs):
        raise error

    monkeypatch.setattr(trainer_cli.loop, "train_one_epoch", crash)
    with pytest.raises(type(error)):
        run(cfg, tmp_path / "run")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert found.info.status == status
    # Issue 23: the params are logged at the start, so a failed or stopped run shows its config.
    assert found.data.params["lr"] == "0.001" and found.data.params["epochs"] == "2"


def test_mlflow_missing_is_one_line_before_anything_is_built(make_cfg, tmp_path, monkeypatch):
    """Without the extra: the error names the key and the install command, and comes before the
    model is built (no model summary) or any run file is written (the folder is discarded)."""
    import importlib.util

    from trainer_cli import build
    from trainer_cli.config import UserError
    from trainer_cli.sinks import INSTALL_MLFLOW

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a)
    )
    monkeypatch.setattr(build, "pieces", lambda *a, **k: pytest.fail("built the run before the logger check"))
    from trainer_cli.train import run

    with pytest.raises(UserError) as error:
        run(make_cfg("logger=[mlflow]"), tmp_path / "run")
    assert str(error.value) == f"logger.mlflow: needs MLflow, not installed here: {INSTALL_MLFLOW}"
    assert "pip install 'trainer_cli[mlflow]'" in INSTALL_MLFLOW and "pip install -e '.[mlflow]'" in INSTALL_MLFLOW
    assert not (tmp_path / "run").exists() or {p.name for p in (tmp_path / "run").iterdir()} <= {".lock"}


def test_tensorboard_writes_a_steps_scalars_as_one_event_read_back_as_separate_curves(tmp_path):
    # One event per log step (each event is framed and checksummed in Python), not one per tag.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from trainer_cli.report import TensorBoard

    sink = TensorBoard(tmp_path)
    sink.log_scalars(10, {"train/loss_step": 0.5, "lr": 0.01, "grad_norm": 2.0})
    sink.log_scalars(20, {"train/loss_step": 0.25, "lr": 0.01, "grad_norm": 1.0})
    sink.close()
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    steps = [e for e in EventFileLoader(str(events)).Load() if e.HasField("summary")]
    assert [(e.step, len(e.summary.value)) for e in steps] == [(10, 3), (20, 3)]
    curves = EventAccumulator(str(tmp_path / "tensorboard"))
    curves.Reload()
    assert [(s.step, s.value) for s in curves.Scalars("train/loss_step")] == [(10, 0.5), (20, 0.25)]
    assert [s.value for s in curves.Scalars("grad_norm")] == [2.0, 1.0]
