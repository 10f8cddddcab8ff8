# ruff: noqa: E501
"""Class path: where a file-given key makes the run write (FILE_PATH_KEYS variants: other key
names, group-packaged files, the TRAINER_CLI_DATA default, links under the shipped defaults)."""

from __future__ import annotations

import os

from common import CHEAP, anything_in, exp, finished_run, fresh, listing, npy_input, report, train, write

NO_LOGGER = [a for a in CHEAP if not a.startswith("logger=")]


def r3_p01():
    """A `logger/` group option in a --config-dir: MLflow with an absolute tracking_uri."""
    d = fresh("p01")
    victim = d / "victim"
    victim.mkdir()
    write(
        d / "cfg" / "logger" / "evil.yaml",
        f"""\
mlflow:
  _target_: trainer_cli.sinks.MLflow
  _partial_: true
  tracking_uri: {victim}/mlruns
""",
    )
    p = train(["--config-dir", str(d / "cfg"), "logger=evil", *NO_LOGGER], d, cheap=False)
    report(
        "R3-P01",
        "path",
        anything_in(victim),
        f"--config-dir logger/evil.yaml: MLflow tracking_uri=<outside> (group-packaged file) [left: {listing(victim)}]",
        p,
    )


def r3_p02():
    """An experiment adds an MLflow logger under another name (logger.ml2.tracking_uri)."""
    d = fresh("p02")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
logger:
  ml2:
    _target_: trainer_cli.sinks.MLflow
    _partial_: true
    tracking_uri: {victim}/mlruns
""",
    )
    p = train(args, d)
    report(
        "R3-P02",
        "path",
        anything_in(victim),
        f"experiment adds logger.ml2 (MLflow) tracking_uri=<outside>: key-name variant [left: {listing(victim)}]",
        p,
    )


def r3_p03():
    """The shipped MLflow default `mlruns` (relative) where the attacker's folder has `mlruns -> outside`."""
    d = fresh("p03")
    victim = d / "victim"
    victim.mkdir()
    work = d / "repo"
    work.mkdir()
    (work / "mlruns").symlink_to(victim)
    p = train(["logger=[mlflow]", *NO_LOGGER], work, cheap=False)
    report(
        "R3-P03",
        "path",
        anything_in(victim),
        f"cwd link mlruns -> <outside>; victim runs shipped 'logger=[mlflow]' [left: {listing(victim)}]",
        p,
    )


def r3_p04():
    """A `mode/` group option in a --config-dir: run_predict with output=<outside>."""
    d = fresh("p04")
    victim = d / "victim"
    victim.mkdir()
    inputs = npy_input(d)
    run = finished_run()
    write(
        d / "cfg" / "mode" / "evil.yaml",
        f"""\
_target_: trainer_cli.inference.run_predict
_partial_: true
input: {inputs}
output: {victim}/preds.csv
""",
    )
    p = train(["--config-dir", str(d / "cfg"), "mode=evil", f"checkpoint={run}"], d)
    report(
        "R3-P04",
        "path",
        (victim / "preds.csv").exists(),
        "--config-dir mode/evil.yaml: run_predict output=<outside> (group-packaged)",
        p,
    )


def r3_p05():
    """An experiment whose header packages it under `mode` sets output=<outside>."""
    d = fresh("p05")
    victim = d / "victim"
    victim.mkdir()
    inputs = npy_input(d)
    run = finished_run()
    args = exp(d, f"output: {victim}/preds.csv\n", header="# @package _global_.mode\n")
    p = train([*args, "mode=predict", f"checkpoint={run}", f"mode.input={inputs}"], d)
    report(
        "R3-P05",
        "path",
        (victim / "preds.csv").exists(),
        "experiment with '# @package _global_.mode' sets output=<outside>",
        p,
    )


def r3_p06():
    """mode.output from a file as ${oc.env:TRAINER_CLI_DATA,<outside>} (the allowed data-folder
    interpolation, its default an absolute path; the victim has no TRAINER_CLI_DATA)."""
    d = fresh("p06")
    victim = d / "victim"
    victim.mkdir()
    inputs = npy_input(d)
    run = finished_run()
    args = exp(
        d,
        f"""\
defaults:
  - override /mode: predict
checkpoint: {run}
mode:
  input: {inputs}
  output: ${{oc.env:TRAINER_CLI_DATA,{victim}}}/preds.csv
""",
    )
    p = train(args, d)
    report(
        "R3-P06",
        "path",
        (victim / "preds.csv").exists(),
        "experiment mode.output=${oc.env:TRAINER_CLI_DATA,<outside>}/preds.csv",
        p,
    )


def r3_p07():
    """logger.mlflow.tracking_uri from a file through the TRAINER_CLI_DATA default."""
    d = fresh("p07")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
defaults:
  - override /logger: [mlflow]
logger:
  mlflow:
    tracking_uri: ${{oc.env:TRAINER_CLI_DATA,{victim}}}/mlruns
""",
    )
    p = train([*args, *NO_LOGGER], d, cheap=False)
    report(
        "R3-P07",
        "path",
        anything_in(victim),
        f"experiment logger.mlflow.tracking_uri=${{oc.env:TRAINER_CLI_DATA,<outside>}} [left: {listing(victim)}]",
        p,
    )


def r3_p08():
    """data.source.root from a file through the TRAINER_CLI_DATA default (mnist, download)."""
    d = fresh("p08")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
defaults:
  - override /data: mnist
data:
  source:
    root: ${{oc.env:TRAINER_CLI_DATA,{victim}}}/mnist
""",
    )
    p = train(args, d, timeout=120)
    report(
        "R3-P08",
        "path",
        anything_in(victim),
        f"experiment data.source.root=${{oc.env:TRAINER_CLI_DATA,<outside>}} (download creates folders) [left: {listing(victim)}]",
        p,
    )


def r3_p09():
    """A `data/` group option in a --config-dir: mnist with root=<outside>, download."""
    d = fresh("p09")
    victim = d / "victim"
    victim.mkdir()
    write(
        d / "cfg" / "data" / "evil.yaml",
        f"""\
defaults:
  - mnist
  - _self_
source:
  root: {victim}/mnist
""",
    )
    p = train(["--config-dir", str(d / "cfg"), "data=evil"], d, timeout=120)
    report(
        "R3-P09",
        "path",
        anything_in(victim),
        f"--config-dir data/evil.yaml: mnist root=<outside> (group-packaged) [left: {listing(victim)}]",
        p,
    )


def r3_p10():
    """The shipped data root `data/mnist` (relative) where the attacker's folder has `data -> outside`."""
    d = fresh("p10")
    victim = d / "victim"
    victim.mkdir()
    work = d / "repo"
    work.mkdir()
    (work / "data").symlink_to(victim)
    p = train(["data=mnist"], work, timeout=120)
    report(
        "R3-P10",
        "path",
        anything_in(victim),
        f"cwd link data -> <outside>; victim runs shipped data=mnist [left: {listing(victim)}]",
        p,
    )


def r3_p11():
    """mode.output from a file inside the current folder, but a dangling link there points out."""
    d = fresh("p11")
    victim = d / "victim"
    victim.mkdir()
    work = d / "repo"
    work.mkdir()
    inputs = npy_input(work)
    run = finished_run()
    os.symlink(victim / "preds.csv", work / "preds.csv")
    args = exp(
        work,
        f"""\
defaults:
  - override /mode: predict
checkpoint: {run}
mode:
  input: inputs.npy
  output: preds.csv
""",
    )
    p = train(args, work)
    report(
        "R3-P11",
        "path",
        (victim / "preds.csv").exists(),
        "experiment mode.output=preds.csv, a dangling link in cwd to <outside>",
        p,
    )
    del inputs


ATTEMPTS = [r3_p01, r3_p02, r3_p03, r3_p04, r3_p05, r3_p06, r3_p07, r3_p08, r3_p09, r3_p10, r3_p11]
