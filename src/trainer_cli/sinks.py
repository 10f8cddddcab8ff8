"""More loggers for `'logger=[...]'` (conf/logger/*.yaml): CSV files and MLflow.

Each is a `report.Sink`; the `Reporter` calls it beside the others (`'logger=[tensorboard,mlflow]'`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trainer_cli.config import UserError
from trainer_cli.report import EPOCH_TAGS, Sink, _hparam_value


class CSVLogger(Sink):
    """Every scalar, at every step it is logged, in `<run folder>/csv/scalars.csv` (long form:
    step, tag, value, wall time; flushed at the end of every epoch, so a killed run keeps
    its rows), and `csv/hparams.json` (the hyperparameters and final metrics). Spreadsheet- and
    pandas-ready: `pd.read_csv(...).pivot_table(index="step", columns="tag", values="value")`.

    `purge_step`: on resume, rows from that step on (written by the killed run) are dropped.
    """

    COLUMNS = ("step", "tag", "value", "wall_time")

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        self.folder = Path(run_dir) / "csv"
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "scalars.csv"
        kept: list[dict[str, str]] = []
        if purge_step is not None and path.is_file():
            with open(path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) < purge_step]
        self.file = open(path, "w", newline="")  # noqa: SIM115 (open for the run's whole length)
        self.writer = csv.DictWriter(self.file, fieldnames=self.COLUMNS)
        self.writer.writeheader()
        self.writer.writerows(kept)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        now = round(time.time(), 3)
        self.writer.writerows({"step": step, "tag": t, "value": v, "wall_time": now} for t, v in scalars.items())

    def log_epoch(self, step: int, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.log_scalars(step, {tag: row[tag] for tag in (*EPOCH_TAGS, "epoch") if tag in row})

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        (self.folder / "hparams.json").write_text(json.dumps({"hparams": clean, "final": final}, indent=2) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# The extra's install command, as the docs say it: for an installed wheel, and for a checkout.
INSTALL_MLFLOW = "pip install 'trainer_cli[mlflow]' (in a checkout: pip install -e '.[mlflow]')"


def metric_name(tag: str) -> str:
    """The MLflow name of a tag: `val/acc` -> `val.acc`. MLflow's file store keeps a metric
    per file, so `lr` (a file) and `lr/decay` (a file in a folder `lr`) cannot both exist."""
    return tag.replace("/", ".")


class MLflow(Sink):
    """One MLflow run per training run: the parameters (hyperparameters and every group
    choice), every scalar with its step (named with dots: `val.acc`, see `metric_name`), the
    final metrics, and the run folder's summary files as artifacts.

    Args:
        tracking_uri: where the runs go: a folder (a local file store; relative to the
            current folder; default `mlruns`), or any URI MLflow accepts (`http://host:5000`,
            `sqlite:///mlflow.db`, `databricks`).
        experiment: the MLflow experiment's name (created when missing).
        run_name: the run's name in the MLflow UI (default: the run folder's name).

    A resumed run continues the same MLflow run (its id is kept in `mlflow_run_id.txt`).
    """

    def __init__(
        self,
        run_dir: Path,
        purge_step: int | None = None,
        tracking_uri: str | None = "mlruns",
        experiment: str = "trainer_cli",
        run_name: str | None = None,
    ) -> None:
        self.check_installed()
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        uri = str(tracking_uri or "mlruns")
        if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
            from trainer_cli.run_folder import link_on_the_way

            link = link_on_the_way(Path(uri))
            if link is not None:
                raise UserError(
                    f"logger.mlflow.tracking_uri: '{uri}' goes through {link}, a link in the current folder (to "
                    f"{os.readlink(link)}); MLflow's store is not written through a link: give the real folder"
                )
            uri = Path(uri).resolve().as_uri()  # a folder: a local file store
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store working but refuses it unless asked: a folder
            # needs no server and no database, which is why it is the default here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        id_file = self.run_dir / "mlflow_run_id.txt"
        if purge_step is not None and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                experiment_id, run_name=run_name or self.run_dir.name, tags={"run_dir": str(self.run_dir)}
            )
            self.run_id = run.info.run_id
            self.run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id + "\n")
        self.pending: list[Any] = []
        self.status = "FINISHED"  # until the run says otherwise (log_summary, end)

    @staticmethod
    def check_installed(key: str = "logger.mlflow") -> None:
        """A one-line error before the run builds or writes anything when MLflow is missing
        (found without importing it: MLflow's import alone takes seconds)."""
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise UserError(f"{key}: needs MLflow, not installed here: {INSTALL_MLFLOW}")

    def log_params(self, hparams: dict[str, Any]) -> None:
        """The hyperparameters at the start, so a run that fails or is stopped carries them too."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params  # a resumed run keeps its own
        params = [Param(k, str(_hparam_value(v))[:6000]) for k, v in hparams.items() if k not in existing]
        if params:
            self.client.log_batch(self.run_id, params=params)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [
            Metric(metric_name(tag), float(value), now, step)
            for tag, value in scalars.items()
            if math.isfinite(float(value))
        ]
        if len(self.pending) >= 500:
            self.flush()

    def log_epoch(self, step: int, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.log_scalars(step, {tag: row[tag] for tag in (*EPOCH_TAGS, "epoch") if tag in row})

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        params = [Param(k, str(_hparam_value(v))[:6000]) for k, v in hparams.items() if k not in existing]
        self.flush()
        if params:
            self.client.log_batch(self.run_id, params=params)

    def log_summary(self, summary: dict[str, Any]) -> None:
        final = {
            k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" in k
        }
        self.log_scalars(int(summary.get("steps", 0) or 0), final)
        self.flush()
        if summary.get("status") not in (None, "ok"):
            self.status = "FAILED"
            self.client.set_tag(self.run_id, "error", str(summary.get("error", ""))[:5000])

    def flush(self) -> None:
        if self.pending:
            for start in range(0, len(self.pending), 1000):  # MLflow's limit per batch
                self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
            self.pending = []

    def end(self, outcome: str) -> None:
        # A run that raised never reaches log_summary: without this it would show FINISHED.
        if outcome != "ok":
            self.status = "KILLED" if outcome == "stopped" else "FAILED"

    def close(self) -> None:
        self.flush()
        for name in ("metrics.json", "metrics.csv", "resolved_config.yaml"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, self.status)
