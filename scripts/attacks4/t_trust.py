# ruff: noqa: E501
"""Class T: a sweep job whose files the trust door refuses when composed from scratch must be
refused too when its composition could be reused (the job before it composed the same set of
files, or shipped files only); nothing an attacker's file sets may reach a later job."""

from __future__ import annotations

import shutil

from common import ROOT, WT, contains_secret, exp, fresh, hits, payload, report, sweep_dir, train, write

JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def _sweep(attempt_id, cls, what, folder, args, bad_job_dir=None, extra_check=None):
    proc = train(["-m", *args, "hydra.sweep.dir=sw"], folder)
    dh, mh = hits(folder)
    got = extra_check(folder, proc) if extra_check else None
    if got is None:
        got = proc.returncode == 0 and (
            bad_job_dir is None or (sweep_dir(folder) / bad_job_dir / "metrics.json").exists()
        )
    return report(
        attempt_id, cls, "GOT-THROUGH" if got else "BLOCKED", f"{what} (reuse hits: defaults {dh}, merged {mh})", proc
    )


def r4_t01():
    folder = fresh("R4-T01")
    args = exp(folder, "hydra:\n  job:\n    env_set:\n      EVIL: '1'\n", name="evil")
    _sweep(
        "R4-T01",
        "T-trust",
        "experiment=digits_mlp,evil: evil (overlay) sets hydra.job.env_set; job 0 shipped, reused set",
        folder,
        [*args, "experiment=digits_mlp,evil", "seed=0,1"],
        bad_job_dir="2",
    )


def r4_t02():
    folder = fresh("R4-T02")
    outside = ROOT / "R4-T02-outside"
    shutil.rmtree(outside, ignore_errors=True)
    args = exp(folder, f"data:\n  source:\n    root: {outside}\n", name="evil")
    _sweep(
        "R4-T02",
        "T-trust",
        "deferred check: evil sets data.source.root outside; evil job after a reused shipped job",
        folder,
        [*args, "experiment=digits_mlp,evil", "seed=0,1"],
        bad_job_dir="2",
    )


def r4_t03():
    # evil FIRST, then shipped: the deferred values noted for the evil job must not make the
    # shipped (reused) job fail, and the evil job must fail. Compare both orders' outcome.
    folder = fresh("R4-T03")
    outside = ROOT / "R4-T03-outside"
    args = exp(folder, f"mode:\n  output: {outside}/preds.npz\n", name="evil")
    _sweep(
        "R4-T03",
        "T-trust",
        "deferred check: evil (mode.output outside) first, shipped second",
        folder,
        [*args, "experiment=evil,digits_mlp"],
        bad_job_dir="0",
    )


def r4_t04():
    # --config-path <copy of conf/> --config-name config: the copy is the main source (conf/ is
    # not on the search path); its files identical to conf/ count as shipped (trust.same_as_shipped)
    # and their merge is reused; one changed file (experiment/digits_mlp.yaml) sets a hydra key.
    folder = fresh("R4-T04")
    shutil.copytree(WT / "conf", folder / "cfg")
    path = folder / "cfg/experiment/digits_mlp.yaml"
    path.write_text(path.read_text() + "\nhydra:\n  output_subdir: ../../../../escape\n")
    _sweep(
        "R4-T04",
        "T-trust",
        "--config-path <copy of conf/> (identical files reused) whose experiment/digits_mlp sets hydra.output_subdir; experiment=digits_cnn,digits_mlp x seed",
        folder,
        [
            "--config-path",
            str(folder / "cfg"),
            "--config-name",
            "config",
            "experiment=digits_cnn,digits_mlp",
            "seed=0,1",
        ],
        extra_check=lambda f, p: (
            (ROOT / "escape").exists() or any((sweep_dir(f) / str(i) / "metrics.json").exists() for i in (2, 3))
        ),
    )


def r4_t05():
    # joblib workers: evil job composed in a worker whose earlier job reused shipped files.
    folder = fresh("R4-T05")
    outside = ROOT / "R4-T05-outside"
    args = exp(folder, f"data:\n  source:\n    root: {outside}\n", name="evil")
    _sweep(
        "R4-T05",
        "T-trust",
        "joblib n_jobs=2: experiment=digits_mlp,evil x seed (evil data root outside)",
        folder,
        [*args, *JOBLIB, "experiment=digits_mlp,evil", "seed=0,1,2"],
        extra_check=lambda f, p: any((f / "sw" / str(i) / "metrics.json").exists() for i in (3, 4, 5)),
    )


def r4_t06():
    # A secret: an overlay option reads ${oc.env:ATTACK_SECRET}; jobs around it reuse shipped merges.
    folder = fresh("R4-T06")
    args = exp(folder, "eval:\n  tta: none\n  secret_note: ${oc.env:ATTACK_SECRET}\n", name="leak")
    proc = train(["-m", *args, "experiment=digits_mlp,leak", "seed=0,1", "hydra.sweep.dir=sw"], folder)
    found = contains_secret(folder)
    report(
        "R4-T06",
        "T-trust",
        "GOT-THROUGH" if found else "BLOCKED",
        f"overlay option reads ${{oc.env:ATTACK_SECRET}} beside reused jobs; secret in {[str(p.relative_to(folder)) for p in found][:2]}",
        proc,
    )


def r4_t07():
    # Code: an overlay option's callback _target_ = a module in the overlay folder (runs its code).
    folder = fresh("R4-T07")
    mark = folder / "MARK"
    write(folder / "cfg" / "evilmod.py", payload(mark))
    args = exp(folder, "callbacks:\n  evil:\n    _target_: evilmod.Thing\n", name="code")
    proc = train(["-m", *args, "experiment=digits_mlp,code", "seed=0,1", "hydra.sweep.dir=sw"], folder)
    report(
        "R4-T07",
        "T-trust",
        "GOT-THROUGH" if mark.exists() else "BLOCKED",
        "overlay callback _target_ to overlay module, beside reused jobs",
        proc,
    )


def r4_t08():
    # The same with a changed OPTION file (optimizer/sgd.yaml sets hydra.job.env_set) in a copy of
    # conf/ used as the main source; adam jobs (all files identical: reused) run first.
    folder = fresh("R4-T08")
    shutil.copytree(WT / "conf", folder / "cfg")
    sgd = (folder / "cfg/optimizer/sgd.yaml").read_text()
    nested = "".join(f"  {line}\n" for line in sgd.splitlines() if line.strip() and not line.startswith("#"))
    (folder / "cfg/optimizer/sgd.yaml").write_text(
        "# @package _global_\noptimizer:\n" + nested + "hydra:\n  job:\n    env_set:\n      EVIL: '1'\n"
    )
    proc = train(
        [
            "-m",
            "--config-path",
            str(folder / "cfg"),
            "--config-name",
            "config",
            "optimizer=adam,sgd",
            "lr=0.1,0.01",
            "hydra.sweep.dir=sw",
        ],
        folder,
    )
    dh, mh = hits(folder)
    ran_evil = any((sweep_dir(folder) / str(i) / "metrics.json").exists() for i in (2, 3))
    report(
        "R4-T08",
        "T-trust",
        "GOT-THROUGH" if ran_evil else "BLOCKED",
        f"--config-path <copy of conf/> (reused as shipped), its optimizer/sgd.yaml sets hydra.job.env_set (reuse hits {dh}/{mh})",
        proc,
    )


def r4_t09():
    # hparams_search from an overlay (foreign sweeper params) next to shipped options: Optuna
    # trials compose the overlay's file each time; its search space may not sweep hydra keys.
    folder = fresh("R4-T09")
    body = (WT / "conf/hparams_search/random.yaml").read_text().replace("n_trials: 20", "n_trials: 2")
    body += "      +hydra.job.env_set.EVIL: choice('1')\n"
    write(folder / "cfg/hparams_search/mine.yaml", body)
    proc = train(["--config-dir", "cfg", "hparams_search=mine", "hydra.sweep.dir=sw"], folder)
    ran = (folder / "sw/0/metrics.json").exists()
    report(
        "R4-T09",
        "T-trust",
        "GOT-THROUGH" if ran else "BLOCKED",
        "overlay hparams_search whose params sweep +hydra.job.env_set",
        proc,
    )


ATTEMPTS = [r4_t01, r4_t02, r4_t03, r4_t04, r4_t05, r4_t06, r4_t07, r4_t08, r4_t09]
