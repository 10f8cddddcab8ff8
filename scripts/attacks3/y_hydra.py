# ruff: noqa: E501
"""Class hydra: Hydra's side doors from files: defaults-list choices of hydra groups, links on a
file-given run/sweep folder's way, group-path keys in a search space, a primary-config overlay."""

from __future__ import annotations

import shutil

from common import anything_in, exp, finished_run, fresh, listing, report, train, write

SWEEP_CHEAP = ["epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu", "logger=[]"]


def evil_logging(folder, out):
    write(
        folder / "cfg" / "hydra" / "job_logging" / "evil.yaml",
        f"""\
version: 1
handlers:
  file:
    class: logging.FileHandler
    filename: {out}
root:
  handlers: [file]
  level: INFO
""",
    )


def r3_y01():
    """An experiment's defaults list chooses `override /hydra/job_logging: evil`, an option in the
    same --config-dir whose FileHandler writes outside."""
    d = fresh("y01")
    out = d / "victim" / "created.log"
    out.parent.mkdir()
    evil_logging(d, out)
    args = exp(d, "defaults:\n  - override /hydra/job_logging: evil\n")
    p = train(args, d)
    report(
        "R3-Y01",
        "hydra",
        out.exists(),
        "experiment defaults `override /hydra/job_logging: evil` (overlay option, FileHandler outside)",
        p,
    )


def r3_y02():
    """A search space from a file sweeps the *group* hydra/job_logging (a key with '/', not 'hydra.')."""
    d = fresh("y02")
    out = d / "victim" / "created.log"
    out.parent.mkdir()
    evil_logging(d, out)
    args = exp(d, "hydra:\n  sweeper:\n    params:\n      hydra/job_logging: evil\n")
    p = train(["-m", *args, *SWEEP_CHEAP, "hydra.sweep.dir=sw"], d, cheap=False)
    report(
        "R3-Y02", "hydra", out.exists(), "experiment params `hydra/job_logging: evil` (group path, not a hydra. key)", p
    )


def r3_y03():
    """As Y02 choosing Hydra's own shipped launcher group from the params: hydra/launcher=submitit_local."""
    d = fresh("y03")
    out = d / "victim"
    out.mkdir()
    args = exp(
        d, "hydra:\n  sweeper:\n    params:\n      hydra/job_logging: default\n      +hydra/output@hydra: default\n"
    )
    p = train(["-m", *args, *SWEEP_CHEAP, "hydra.sweep.dir=sw"], d, cheap=False)
    report(
        "R3-Y03",
        "hydra",
        anything_in(out),
        f"experiment params group choices hydra/job_logging=default, +hydra/output@hydra [left: {listing(out)}]",
        p,
    )


def r3_y04():
    """An experiment's (relative) hydra.run.dir whose first folder is a link out (not the default folder)."""
    d = fresh("y04")
    victim = d / "victim"
    victim.mkdir()
    work = d / "repo"
    work.mkdir()
    (work / "runs").symlink_to(victim)
    args = exp(work, "hydra:\n  run:\n    dir: runs/r1\n")
    p = train(args, work)
    report(
        "R3-Y04",
        "hydra",
        anything_in(victim),
        f"experiment hydra.run.dir=runs/r1 where cwd's runs -> <outside> [left: {listing(victim)}]",
        p,
    )


def r3_y05():
    """An experiment's (relative) hydra.sweep.dir whose first folder is a link out."""
    d = fresh("y05")
    victim = d / "victim"
    victim.mkdir()
    work = d / "repo"
    work.mkdir()
    (work / "sweeps").symlink_to(victim)
    args = exp(work, "hydra:\n  sweep:\n    dir: sweeps/s1\n")
    p = train(["-m", *args, "seed=1", *SWEEP_CHEAP], work, cheap=False)
    report(
        "R3-Y05",
        "hydra",
        anything_in(victim),
        f"experiment hydra.sweep.dir=sweeps/s1 where cwd's sweeps -> <outside> [left: {listing(victim)}]",
        p,
    )


def r3_y06():
    """A --config-dir that holds `config.yaml` (the primary config's name) with a hydra.job_logging FileHandler."""
    d = fresh("y06")
    out = d / "victim" / "created.log"
    out.parent.mkdir()
    write(
        d / "cfg" / "config.yaml",
        f"""\
defaults:
  - mode: train
  - data: digits
  - model: mlp
  - finetune: full
  - loss: cross_entropy
  - optimizer: adam
  - scheduler: cosine
  - trainer: default
seed: 0
lr: null
epochs: 1
batch_size: 64
optimized_metric: val/acc
hydra:
  job_logging:
    version: 1
    handlers:
      file: {{class: logging.FileHandler, filename: {out}}}
    root: {{handlers: [file]}}
""",
    )
    p = train(["--config-dir", str(d / "cfg")], d)
    report(
        "R3-Y06",
        "hydra",
        out.exists(),
        "--config-dir with its own config.yaml (primary name) setting hydra.job_logging",
        p,
    )


def r3_y07():
    """Re-running a shared run: its .hydra/config.yaml has a defaults list choosing the overlay
    job_logging option from a file:// searchpath it also names."""
    d = fresh("y07")
    out = d / "victim" / "created.log"
    out.parent.mkdir()
    evil_logging(d, out)
    run = d / "shared"
    shutil.copytree(finished_run(), run, symlinks=True)
    text = (run / ".hydra" / "config.yaml").read_text()
    (run / ".hydra" / "config.yaml").write_text(
        f"defaults:\n  - override hydra/job_logging: evil\n  - _self_\nhydra:\n  searchpath: [file://{d / 'cfg'}]\n"
        + text
    )
    p = train(["--config-path", str(run / ".hydra"), "--config-name", "config"], d, cheap=False)
    report(
        "R3-Y07",
        "hydra",
        out.exists(),
        "--config-path <run>/.hydra: defaults override hydra/job_logging + file:// searchpath",
        p,
    )


def r3_y08():
    """A file-given sweep subdir built from the allowed ${hydra.job.name} with job.name set by an
    override the search space applies (params `hydra.job.name` is refused, but `hydra/job`?)."""
    d = fresh("y08")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"hydra:\n  sweep:\n    dir: sw\n    subdir: ${{hydra.job.name}}\n  sweeper:\n    params:\n      +hydra.job.name@_global_: {victim}\n",
    )
    p = train(["-m", *args, *SWEEP_CHEAP], d, cheap=False)
    report(
        "R3-Y08",
        "hydra",
        anything_in(victim),
        f"experiment subdir ${{hydra.job.name}}, params '+hydra.job.name@_global_' [left: {listing(victim)}]",
        p,
    )


def r3_y09():
    """Re-running a shared run (--config-path <run>/.hydra --config-name config) whose saved config
    adds an MLflow logger under another name with tracking_uri=<outside>."""
    import yaml

    d = fresh("y09")
    victim = d / "victim"
    victim.mkdir()
    run = d / "shared"
    shutil.copytree(finished_run(), run, symlinks=True)
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    cfg["logger"] = {
        "ml2": {"_target_": "trainer_cli.sinks.MLflow", "_partial_": True, "tracking_uri": f"{victim}/mlruns"}
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    p = train(["--config-path", str(run / ".hydra"), "--config-name", "config"], d, cheap=False)
    report(
        "R3-Y09",
        "hydra",
        anything_in(victim),
        f"--config-path <run>/.hydra: saved config's logger.ml2 MLflow tracking_uri=<outside> [left: {listing(victim)}]",
        p,
    )


ATTEMPTS = [r3_y01, r3_y02, r3_y03, r3_y04, r3_y05, r3_y06, r3_y07, r3_y08, r3_y09]
