"""A normal (non-editable) install, as a user gets it: the wheel carries conf/, and `train`
works from an empty folder, with a user's own config folder overlaid by `--config-dir`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """`pip wheel` on a copy of the sources (pip builds inside the source folder)."""
    pytest.importorskip("setuptools")
    source = out / "source"
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    (wheel,) = out.glob("trainer_cli-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_ships_every_config_file(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"trainer_cli/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert expected and expected <= names, sorted(expected - names)
    assert "hydra_plugins/trainer_cli_search/__init__.py" in names


@pytest.mark.slow
def test_installed_wheel_runs_from_an_empty_folder(tmp_path):
    """The wheel in a fresh venv that sees this environment's packages (torch is not copied),
    then `train --help`, `train --cfg job`, `--config-dir` and a one-epoch run from an empty folder."""
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    work.mkdir()
    dist.mkdir()
    wheel = build_wheel(dist)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # A plain path line: this environment's packages are importable, its .pth files (an
    # editable install of trainer_cli) are not processed, so the wheel's copy is the one used.
    Path(site, "shared-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Without PYTHONPATH: a source checkout on it would count as trainer_cli already installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    env["COLUMNS"] = "200"

    def train(*args: str) -> str:
        result = subprocess.run([venv / "bin" / "train", *args], cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    where = subprocess.run([python, "-c", "import trainer_cli; print(trainer_cli.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stderr
    assert "Config groups" in train("--help")
    assert "optimized_metric" in train("--cfg", "job")
    mine = work / "mine" / "optimizer"
    mine.mkdir(parents=True)
    (mine / "myopt.yaml").write_text("_target_: torch.optim.SGD\n_partial_: true\nlr: 0.0123\nmomentum: 0.5\n")
    assert "lr: 0.0123" in train("--config-dir", "mine", "optimizer=myopt", "--cfg", "job")
    train("epochs=1", "trainer.device=cpu", "hydra.run.dir=run")
    assert (work / "run" / "metrics.json").is_file()
