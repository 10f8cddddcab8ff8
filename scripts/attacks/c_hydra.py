"""Class hydra: hydra.* keys and Hydra's side doors from files."""

from __future__ import annotations

from b_targets import exp
from common import copy_run, fresh, payload, report, train, write


def c01():
    d = fresh("c01")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      hydra.output_subdir: {victim}/hijack
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "C01",
        "hydra",
        (victim / "hijack").exists(),
        "experiment's hydra.sweeper.params sets hydra.output_subdir=<abs outside> (a job override)",
        p,
    )


def c02():
    d = fresh("c02")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        """\
hydra:
  sweep:
    dir: sweeps
  sweeper:
    params:
      hydra.sweep.subdir: ../victim/job
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "C02",
        "hydra",
        (victim / "job").exists(),
        "sweeper params set hydra.sweep.subdir=../victim/job (job folder outside the sweep folder)",
        p,
    )


def c03():
    d = fresh("c03")
    out = d / "victim" / "x.log"
    (d / "victim").mkdir()
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      hydra.job_logging.handlers.file.filename: {out}
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report("C03", "hydra", out.exists(), "sweeper params point job_logging's file handler outside", p)


def c04():
    d = fresh("c04")
    out = d / "victim" / "cb.log"
    (d / "victim").mkdir()
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      +hydra.callbacks.evil._target_: logging.FileHandler
      +hydra.callbacks.evil.filename: {out}
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report("C04", "hydra", out.exists(), "sweeper params add +hydra.callbacks.evil (FileHandler outside)", p)


def c05():
    d = fresh("c05")
    mark = d / "MARK"
    write(d / "evilmod" / "__init__.py", payload(mark))
    write(
        d / "prim" / "evil.yaml",
        """\
        defaults:
          - config
          - _self_
        hydra:
          searchpath: ["Pkg://evilmod", "pkg ://evilmod", "structured://evilmod"]
        """,
    )
    p = train(["--config-dir", str(d / "prim"), "--config-name", "evil"], d)
    report(
        "C05",
        "hydra",
        mark.exists(),
        "primary config's hydra.searchpath with scheme case/space variants (Pkg://, 'pkg ://', structured://)",
        p,
    )


def c06():
    d = fresh("c06")
    victim = d / "victim"
    victim.mkdir()
    (d / "outs").symlink_to(victim)
    args = exp(
        d,
        """\
hydra:
  run:
    dir: outs/run1
""",
    )
    p = train(args, d)
    report(
        "C06",
        "hydra",
        (victim / "run1").exists(),
        "experiment's relative hydra.run.dir through a symlink in the folder (outs -> outside)",
        p,
    )


def c07():
    d = fresh("c07")
    out = d / "victim" / "lg.log"
    (d / "victim").mkdir()
    write(
        d / "cfg" / "hydra" / "job_logging" / "rich.yaml",
        f"""\
        version: 1
        handlers:
          file: {{class: logging.FileHandler, filename: {out}}}
        root: {{level: INFO, handlers: [file]}}
        """,
    )
    p = train(["--config-dir", str(d / "cfg")], d)
    report(
        "C07", "hydra", out.exists(), "--config-dir overlay of hydra/job_logging/rich.yaml (same name as shipped)", p
    )


def c08():
    d = fresh("c08")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        """\
hydra:
  run:
    dir: ${hydra:runtime.cwd}/../victim/r
""",
    )
    p = train(args, d)
    report("C08", "hydra", (victim / "r").exists(), "hydra.run.dir via ${hydra:runtime.cwd}/..", p)


def c09():
    d = fresh("c09")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      hydra.run.dir: ../victim/r
      hydra.mode: RUN
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "C09",
        "hydra",
        (victim / "r").exists() or any(victim.iterdir()),
        "sweeper params set hydra.run.dir/hydra.mode (job in RUN mode outside)",
        p,
    )


def c10():
    d = fresh("c10")
    d / "MARK"
    write(
        d / "prim" / "config.yaml",
        """\
        defaults:
          - /config
          - override hydra/launcher: submitit_local
          - _self_
        """,
    )
    p = train(["-m", "--config-path", str(d / "prim"), "--config-name", "config", "seed=0"], d)
    report(
        "C10",
        "hydra",
        False if p.returncode else False,
        "primary config's defaults `override hydra/launcher` (choice from a file; informational: shipped option)",
        p,
    )


def c11():
    d = fresh("c11")
    victim = d / "victim"
    victim.mkdir()
    write(
        d / "run" / ".hydra" / "hydra.yaml",
        f"""\
        hydra:
          output_subdir: {victim}/sub
          run: {{dir: r}}
        """,
    )
    p = train(["--config-path", str(d / "run" / ".hydra"), "--config-name", "hydra"], d)
    report(
        "C11",
        "hydra",
        any(victim.iterdir()),
        "re-running a shared run's .hydra/hydra.yaml as primary config (output_subdir outside)",
        p,
    )


def c12():
    d = fresh("c12")
    run = copy_run(d / "shared_run")
    victim = d / "victim"
    victim.mkdir()
    import yaml

    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    cfg.setdefault("callbacks", {})["evil"] = {"_target_": "logging.FileHandler", "filename": f"{victim}/rerun.log"}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    p = train(["--config-path", str(run / ".hydra"), "--config-name", "config"], d, cheap=False)
    report(
        "C12",
        "target",
        (victim / "rerun.log").exists(),
        "re-running a shared run (--config-path <run>/.hydra) whose config.yaml adds a FileHandler callback",
        p,
    )


ATTEMPTS = [c12, c01, c02, c03, c04, c05, c06, c07, c08, c09, c11]
