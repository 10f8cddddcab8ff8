"""Class cwd: files in the current folder (or a config folder) that Python or Hydra might import."""

from __future__ import annotations

from common import fresh, payload, report, train, write

# Optional imports of torch, TensorBoard, PIL, matplotlib, mlflow, optuna, joblib, numpy...
BAIT = [
    "tensorflow",
    "triton",
    "numba",
    "pynvml",
    "dill",
    "cupy",
    "jax",
    "IPython",
    "boto3",
    "psutil",
    "tensorboard_plugin_profile",
    "sqlalchemy",
    "colorama",
    "pkg_resources",
    "setuptools",
    "six",
    "typing_extensions",
    "sitecustomize",
    "usercustomize",
    "coverage",
    "pandas",
    "scipy",
    "PIL",
    "yaml",
]


def baited(folder, mark):
    for name in BAIT:
        write(folder / f"{name}.py", payload(mark))
    write(folder / "evilpkg_x.pth", f"import os; {payload(mark).strip()}\n")


def a01():
    d = fresh("a01")
    mark = d / "MARK"
    baited(d, mark)
    p = train([], d)
    report(
        "A01",
        "cwd",
        mark.exists(),
        "cwd holds tensorflow.py, triton.py, dill.py, yaml.py, PIL.py ... (24 bait modules); `train`",
        p,
    )


def a02():
    d = fresh("a02")
    mark = d / "MARK"
    write(d / "hydra_plugins" / "evil_plugin" / "__init__.py", payload(mark))
    write(d / "hydra_plugins" / "evil2.py", payload(mark))
    p = train(["--help"], d, cheap=False)
    report("A02", "cwd", mark.exists(), "cwd holds hydra_plugins/evil_plugin/ (namespace) ; `train --help`", p)


def a03():
    d = fresh("a03")
    mark = d / "MARK"
    write(d / "hydra_plugins" / "__init__.py", "")  # a regular package this time
    write(d / "hydra_plugins" / "evil_sweeper" / "__init__.py", payload(mark))
    p = train(["-m", "seed=0"], d)
    report("A03", "cwd", mark.exists(), "cwd holds a regular hydra_plugins package; `train -m seed=0`", p)


def a04():
    d = fresh("a04")
    mark = d / "MARK"
    cfg = d / "cfg"
    baited(cfg, mark)
    write(cfg / "hydra_plugins" / "evil_plugin" / "__init__.py", payload(mark))
    write(cfg / "experiment" / "x.yaml", "# @package _global_\nepochs: 1\n")
    p = train(["--config-dir", str(cfg), "experiment=x"], d)
    report(
        "A04",
        "cwd",
        mark.exists(),
        "--config-dir folder holds bait .py files and hydra_plugins/; `train --config-dir cfg experiment=x`",
        p,
    )


def a05():
    d = fresh("a05")
    mark = d / "MARK"
    baited(d, mark)
    write(d / "matplotlibrc", "backend: module://tensorflow\n")
    p = train(["logger=[csv]", "augmentation.preview=true"], d)
    report(
        "A05",
        "cwd",
        mark.exists(),
        "cwd matplotlibrc names backend module://tensorflow (a cwd bait module); figures drawn",
        p,
    )


def a06():
    d = fresh("a06")
    mark = d / "MARK"
    baited(d, mark)
    p = train(["compare", "x"], d, cheap=False)
    report("A06", "cwd", mark.exists(), "cwd bait modules; `train compare x` (the path that skips Hydra)", p)


ATTEMPTS = [a01, a02, a03, a04, a05, a06]
