# ruff: noqa: E501
"""Class V: does a sweep job's config (the reuse on) equal Hydra's own composition of the same
overrides (the reuse off)? Every job's `.hydra/{config,hydra,overrides}.yaml` compared."""

from __future__ import annotations

import shutil

from common import WT, compare_sweep, exp, train, write

JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def r4_v01():
    compare_sweep(
        "R4-V01", "V-values", "basic: lr x seed (values only)", ["-m", "lr=0.1,0.01", "seed=0,1"], expect_jobs=4
    )


def r4_v02():
    compare_sweep(
        "R4-V02",
        "V-values",
        "basic: group x value (model=mlp,cnn lr=...), runtime.choices",
        ["-m", "model=mlp,cnn", "lr=0.1,0.01"],
        expect_jobs=4,
    )


def r4_v03():
    # A dict value on a config group is a value (applied after the merge): job 1's keys must not
    # keep job 0's (a shallow copy of the merged files would leak limit_val_batches into job 1).
    compare_sweep(
        "R4-V03",
        "V-values",
        "dict value on a group: trainer={limit_val_batches:2},{limit_test_batches:3}",
        ["-m", "trainer={limit_val_batches:2},{limit_test_batches:3}", "seed=0,1"],
        expect_jobs=4,
    )


def r4_v04():
    compare_sweep(
        "R4-V04",
        "V-values",
        "list-valued group sweep regularization=[l2],[dropout] x lr",
        ["-m", "regularization=[l2],[dropout]", "lr=0.1,0.01"],
        expect_jobs=4,
    )


def r4_v05():
    compare_sweep(
        "R4-V05",
        "V-values",
        "hydra value overrides + override_dirname subdir (output folders per job)",
        ["-m", "hydra.job.name=foo", "hydra.sweep.subdir=${hydra.job.override_dirname}", "lr=0.1,0.01", "seed=0,1"],
        expect_jobs=4,
    )


def r4_v06():
    compare_sweep(
        "R4-V06", "V-values", "joblib n_jobs=2: lr x seed", ["-m", *JOBLIB, "lr=0.1,0.01", "seed=0,1"], expect_jobs=4
    )


def r4_v07():
    compare_sweep(
        "R4-V07",
        "V-values",
        "joblib n_jobs=2: model x optimizer (every job its own files)",
        ["-m", *JOBLIB, "model=mlp,cnn", "optimizer=adam,sgd"],
        expect_jobs=4,
    )


def r4_v08():
    compare_sweep(
        "R4-V08",
        "V-values",
        "hparams_search=random, 3 trials (Optuna's values)",
        ["hparams_search=random", "hydra.sweeper.n_trials=3"],
        expect_jobs=3,
    )


def r4_v09():
    compare_sweep(
        "R4-V09",
        "V-values",
        "hparams_search=grid, 3 trials, joblib",
        ["hparams_search=grid", "hydra.sweeper.n_trials=3", *JOBLIB],
        expect_jobs=3,
    )


def r4_v10():
    # A group option from a --config-dir overlay (foreign: never reused) beside shipped ones.
    def setup(folder):
        exp(folder, "width: 16\ndepth: 1\n", name="tiny", header="", group="model")
        shutil.copy(WT / "conf/model/mlp.yaml", folder / "cfg/model/tiny.yaml")
        text = (folder / "cfg/model/tiny.yaml").read_text().replace("width: 256", "width: 16")
        (folder / "cfg/model/tiny.yaml").write_text(text + "\n# overlay option\n")

    compare_sweep(
        "R4-V10",
        "V-values",
        "--config-dir overlay option model=mlp,tiny x lr",
        ["-m", "--config-dir", "cfg", "model=mlp,tiny", "lr=0.1,0.01"],
        setup=setup,
        expect_jobs=4,
    )


def r4_v11():
    # A whole copy of conf/ as the main source (--config-path): every file byte for byte the shipped one
    # (trust.same_as_shipped: not foreign, so the merge IS reused) - and one changed file.
    def setup(folder):
        shutil.copytree(WT / "conf", folder / "cfg")
        path = folder / "cfg/optimizer/sgd.yaml"
        path.write_text(path.read_text() + "\nmomentum: 0.5  # changed in the copy\n")

    compare_sweep(
        "R4-V11",
        "V-values",
        "--config-path <copy of conf/> (sgd.yaml changed): optimizer=adam,sgd x lr",
        ["-m", "--config-path", "cfg", "--config-name", "config", "optimizer=adam,sgd", "lr=0.1,0.01"],
        setup=setup,
        expect_jobs=4,
    )


def r4_v12():
    # A saved run's .hydra/ as the primary config (--config-path): foreign, never reused.
    def setup(folder):
        proc = train(["hydra.run.dir=saved"], folder)
        assert proc.returncode == 0, proc.stderr[-300:]

    compare_sweep(
        "R4-V12",
        "V-values",
        "--config-path <saved run>/.hydra --config-name config, lr x seed",
        ["-m", "--config-path", "saved/.hydra", "--config-name", "config", "lr=0.1,0.01", "seed=0,1"],
        setup=setup,
        expect_jobs=4,
        cheap=False,
    )


def r4_v13():
    # hydra.searchpath on the command line (a folder with a new scheduler option).
    def setup(folder):
        write(folder / "sp/scheduler/flat.yaml", (WT / "conf/scheduler/constant.yaml").read_text() + "\n# flat\n")

    compare_sweep(
        "R4-V13",
        "V-values",
        "hydra.searchpath=[file://sp] + scheduler=cosine,flat x seed",
        ["-m", "hydra.searchpath=[file://sp]", "scheduler=cosine,flat", "seed=0,1"],
        setup=setup,
        expect_jobs=4,
    )


def r4_v14():
    # The same choosing overrides in another order and spelling (+/~, group@pkg) across jobs.
    compare_sweep(
        "R4-V14",
        "V-values",
        "order/spelling: seed=.. before groups, '~callbacks' fixed, +augmentation list",
        ["-m", "seed=0,1", "augmentation=[flip],[none]", "model=cnn", "lr=0.05"],
        expect_jobs=4,
    )


def r4_v15():
    # The cache keeps the defaults list computed before job 0 ran (validation): a file that
    # appears in the overlay during the sweep (job 0's own saved config, which an attacker's
    # experiment pulls in with an `optional` default) is merged by Hydra into job 1, not by the reuse.
    body = """
    defaults:
      - optional /sw/0/.hydra@late0: config
    """

    def setup(folder):
        exp(folder, body, name="late")

    compare_sweep(
        "R4-V15",
        "V-values",
        "a config file appearing mid-sweep in the overlay (job 0's .hydra/config.yaml, optional default)",
        ["-m", "--config-dir", "cfg", "experiment=late", "seed=0,1"],
        setup=setup,
        sweep="cfg/sw",
        expect_jobs=2,
    )


def r4_v16():
    # hydra.searchpath pointing into the sweep folder itself: job folders (j0/, j1/) appear there
    # during the sweep (as config groups Hydra could see); the group listing must not go stale.
    def setup(folder):
        write(folder / "sw/.keep", "")

    compare_sweep(
        "R4-V16",
        "V-values",
        "hydra.searchpath=[file://sw] into the sweep folder (group folders j0/ appear mid-sweep) x seed",
        ["-m", "hydra.searchpath=[file://sw]", "hydra.sweep.subdir=j${hydra.job.num}", "seed=0,1"],
        setup=setup,
        expect_jobs=2,
    )


ATTEMPTS = [
    r4_v01,
    r4_v02,
    r4_v03,
    r4_v04,
    r4_v05,
    r4_v06,
    r4_v07,
    r4_v08,
    r4_v09,
    r4_v10,
    r4_v11,
    r4_v12,
    r4_v13,
    r4_v14,
    r4_v15,
    r4_v16,
]
