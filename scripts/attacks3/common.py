# ruff: noqa: E501
"""Shared helpers for the round-3 trust-door attack battery (copied from scripts/attacks/common.py): a fresh folder per attempt, the real
`train` of this worktree (niced, cheap settings), a marker file that attacker code writes,
and one result line per attempt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

BIN = Path(sys.executable).parent
TRAIN = str(BIN / "train")
PY = sys.executable
CHEAP = ["epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu", "logger=[]"]
ROOT = Path(os.environ.get("ATTACK_ROOT", "/tmp/trainer_cli_attacks3"))
SECRET = "S3CR3T_attack_value_91f2"
RESULTS: list[dict] = []


def fresh(name: str) -> Path:
    """An empty folder for one attempt."""
    folder = ROOT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def payload(mark: Path) -> str:
    """Python source that proves code ran: it writes `mark`."""
    return f"import pathlib; pathlib.Path({str(mark)!r}).write_text('pwned')\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def train(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 240, cheap: bool = True
) -> subprocess.CompletedProcess:
    """Run the worktree's `train` (niced) in `cwd`; never raises on a non-zero exit."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_CLI_")}
    full_env["ATTACK_SECRET"] = SECRET
    full_env["PATH"] = f"{BIN}:{full_env.get('PATH', '')}"
    full_env.update(env or {})
    cmd = ["nice", "-n", "10", TRAIN, *args, *(CHEAP if cheap else [])]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        proc = subprocess.CompletedProcess(cmd, 124, error.stdout or "", error.stderr or "")
    proc.cmdline = " ".join(cmd)  # type: ignore[attr-defined]
    return proc


def last_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or "").strip().splitlines() or (proc.stdout or "").strip().splitlines() or [""]
    line = text[-1]
    return line if isinstance(line, str) else line.decode(errors="replace")


def report(attempt_id: str, cls: str, got: bool, what: str, proc: subprocess.CompletedProcess | None = None) -> bool:
    """Print and record one attempt's line."""
    verdict = "GOT-THROUGH" if got else "BLOCKED"
    tail = f" [rc={proc.returncode}: {last_line(proc)[:140]}]" if proc is not None else ""
    print(f"ATTEMPT {attempt_id} {cls} {verdict} {what}{tail}", flush=True)
    RESULTS.append({"id": attempt_id, "class": cls, "got": got, "what": what})
    return got


def contains_secret(folder: Path) -> list[Path]:
    """Files under `folder` whose bytes hold the secret."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if SECRET.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


_FIXTURE: list[Path] = []


def finished_run() -> Path:
    """A real finished run folder (made once per battery), to copy and tamper with."""
    if _FIXTURE:
        return _FIXTURE[0]
    folder = fresh("_fixture")
    proc = train(["hydra.run.dir=run"], folder)
    run = folder / "run"
    if proc.returncode != 0 or not (run / "checkpoints" / "last.pt").is_file():
        raise RuntimeError(f"fixture run failed: {last_line(proc)}")
    _FIXTURE.append(run)
    return run


def copy_run(dest: Path) -> Path:
    shutil.copytree(finished_run(), dest, symlinks=True)
    return dest


def exp(folder: Path, body: str, name: str = "x", header: str = "# @package _global_\n") -> list[str]:
    """An experiment file in an attacker's config folder; the victim's flags to use it."""
    write(folder / "cfg" / "experiment" / f"{name}.yaml", header + textwrap.dedent(body))
    return ["--config-dir", str(folder / "cfg"), f"experiment={name}"]


def npy_input(folder: Path) -> Path:
    """Two digits-shaped images (1x8x8) as a .npy tensor file for mode=predict."""
    import numpy as np

    path = folder / "inputs.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.RandomState(0).rand(2, 1, 8, 8).astype("float32"))
    return path


def anything_in(folder: Path) -> bool:
    return folder.exists() and any(folder.rglob("*"))


def listing(folder: Path, limit: int = 2) -> str:
    """What an attempt left in `folder`: a few paths, and whether any is a file (not just folders)."""
    if not folder.exists():
        return "nothing"
    paths = sorted(p for p in folder.rglob("*"))
    files = [p for p in paths if p.is_file()]
    shown = ", ".join(str(p.relative_to(folder)) for p in (files or paths)[:limit])
    return f"{len(files)} files, {len(paths) - len(files)} folders: {shown}" if paths else "nothing"
