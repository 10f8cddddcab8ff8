# ruff: noqa: E501
"""Shared helpers for the round-4 battery (sweeps that reuse a composition): a fresh folder per
attempt, the worktree's real `train` (`python -m trainer_cli`, niced, cheap settings), the same
sweep again with the reuse switched off (Hydra alone, `hook/sitecustomize.py`), a comparison of
the jobs' saved configs, and one result line per attempt."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import yaml

WT = Path(__file__).resolve().parents[2]
SRC = WT / "src"
HOOK = Path(__file__).resolve().parent / "hook"
PY = os.environ.get("A4_PY", "/work/venv-base/bin/python")
CHEAP = ["epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu", "logger=[]"]
ROOT = Path(os.environ.get("ATTACK_ROOT", "/tmp/trainer_cli_attacks4"))
SECRET = "S3CR3T_attack_value_r4_77aa"
RESULTS: list[dict] = []
VERDICTS = ("BLOCKED", "GOT-THROUGH", "SAME", "DIFFERENT")


def fresh(name: str) -> Path:
    folder = ROOT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def payload(mark: Path) -> str:
    return f"import pathlib; pathlib.Path({str(mark)!r}).write_text('pwned')\n"


def train(
    args: list[str],
    cwd: Path,
    *,
    hydra_only: bool = False,
    env: dict | None = None,
    timeout: int = 300,
    cheap: bool = True,
) -> subprocess.CompletedProcess:
    """The worktree's `train` in `cwd` (niced); `hydra_only`: with the reuse switched off.
    The reuse is traced into `cwd/_trace/` (which compositions came from the cache)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_CLI_", "A4_", "PYTHONPATH"))}
    full["ATTACK_SECRET"] = SECRET
    full["PYTHONPATH"] = f"{HOOK}:{SRC}"
    trace = cwd / "_trace"
    if hydra_only:
        full["A4_DISABLE_SHARE"] = "1"
    else:
        shutil.rmtree(trace, ignore_errors=True)
        trace.mkdir(parents=True)
        full["A4_TRACE"] = str(trace)
    full.update(env or {})
    cmd = ["nice", "-n", "10", PY, "-m", "trainer_cli", *args, *(CHEAP if cheap else [])]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        proc = subprocess.CompletedProcess(cmd, 124, str(error.stdout or ""), str(error.stderr or ""))
    proc.cmdline = "train " + " ".join(args + (CHEAP if cheap else []))  # type: ignore[attr-defined]
    return proc


def hits(cwd: Path) -> tuple[int, int]:
    """(defaults-list hits, merged-files hits) the last traced run logged: the reuse did run."""
    text = "".join(p.read_text() for p in (cwd / "_trace").glob("trace-*.txt")) if (cwd / "_trace").is_dir() else ""
    return text.count("defaults HIT"), text.count("merged HIT")


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
    lines = lines or (proc.stdout or "").strip().splitlines() or [""]
    return lines[-1]


def report(attempt_id: str, cls: str, verdict: str, what: str, proc: subprocess.CompletedProcess | None = None) -> str:
    assert verdict in VERDICTS
    tail = f" [rc={proc.returncode}: {last_line(proc)[:150]}]" if proc is not None else ""
    print(f"ATTEMPT {attempt_id} {cls} {verdict} {what}{tail}", flush=True)
    RESULTS.append({"id": attempt_id, "class": cls, "verdict": verdict, "what": what})
    return verdict


def _normal(text: str, folder: Path) -> str:
    text = text.replace(str(folder), "<CWD>")
    text = re.sub(r"\b\d{4}-\d{2}-\d{2}[_ T/]\d{2}[-:]\d{2}[-:]\d{2}(_[0-9a-f]+)?", "<TIME>", text)
    return text


# Keys whose value differs between any two runs (time, process): not compared.
VOLATILE = ("hydra.runtime.output_dir", "hydra.runtime.cwd", "hydra.runtime.config_sources")


def _flat(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flat(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def sweep_dir(folder: Path, sweep: str = "sw") -> Path:
    """The sweep's folder: `sweep`, or where the sweep wrote its multirun.yaml (a --config-path
    command line gets `outputs/multirun/<time>` from cli_argv, whatever hydra.sweep.dir says)."""
    if (folder / sweep).is_dir():
        return folder / sweep
    found = sorted(folder.rglob("multirun.yaml"))
    return found[0].parent if found else folder / sweep


def job_files(folder: Path, sweep: str = "sw") -> dict[str, dict]:
    """{job folder: {file: flat dict}} of a sweep's saved configs (normalized)."""
    out: dict[str, dict] = {}
    base = sweep_dir(folder, sweep)
    for hydra_dir in sorted(base.rglob(".hydra")):
        job = str(hydra_dir.parent.relative_to(base))
        files = {}
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            path = hydra_dir / name
            if path.is_file():
                data = yaml.safe_load(_normal(path.read_text(), folder))
                if isinstance(data, list):
                    data = {"overrides": data}
                files[name] = {k: v for k, v in _flat(data or {}) if k not in VOLATILE}
        out[job] = files
    return out


def diff_jobs(a: dict, b: dict) -> list[str]:
    """Differences between two sweeps' saved job configs, as short lines."""
    lines = []
    for job in sorted(set(a) | set(b)):
        if job not in a or job not in b:
            lines.append(f"job {job}: only in {'shared' if job in a else 'hydra-only'}")
            continue
        for name in sorted(set(a[job]) | set(b[job])):
            fa, fb = a[job].get(name, {}), b[job].get(name, {})
            for key in sorted(set(fa) | set(fb)):
                if fa.get(key, "<absent>") != fb.get(key, "<absent>"):
                    lines.append(
                        f"job {job} {name} {key}: shared={fa.get(key, '<absent>')!r} hydra={fb.get(key, '<absent>')!r}"
                    )
    return lines


def compare_sweep(
    attempt_id: str,
    cls: str,
    what: str,
    args: list[str],
    setup=None,
    sweep: str = "sw",
    env: dict | None = None,
    expect_jobs: int | None = None,
    cheap: bool = True,
) -> str:
    """Run the same sweep twice in two fresh folders set up alike (`setup(folder)`): with the
    reuse (as shipped) and with Hydra alone; SAME where every job's saved .hydra/ files agree."""
    runs = {}
    for variant in ("shared", "hydra"):
        folder = fresh(f"{attempt_id}-{variant}")
        if setup is not None:
            setup(folder)
        extra = [] if cheap else CHEAP[:3]  # a saved config has no logger group
        proc = train(
            [*args, *extra, f"hydra.sweep.dir={sweep}"], folder, hydra_only=variant == "hydra", env=env, cheap=cheap
        )
        runs[variant] = (folder, proc)
    (fa, pa), (fb, pb) = runs["shared"], runs["hydra"]
    ja, jb = job_files(fa, sweep), job_files(fb, sweep)
    dh, mh = hits(fa)
    lines = diff_jobs(ja, jb)
    if pa.returncode != pb.returncode:
        lines.insert(
            0,
            f"exit status shared={pa.returncode} ({last_line(pa)[:100]}) hydra={pb.returncode} ({last_line(pb)[:100]})",
        )
    if expect_jobs is not None and len(ja) != expect_jobs:
        lines.append(f"{len(ja)} jobs, {expect_jobs} expected")
    verdict = "DIFFERENT" if lines else "SAME"
    detail = f"{what}; {len(ja)} jobs, reuse hits: defaults {dh}, merged {mh}"
    if lines:
        detail += "; " + " | ".join(lines[:4])
    return report(attempt_id, cls, verdict, detail, pa)


def exp(
    folder: Path, body: str, name: str = "x", header: str = "# @package _global_\n", group: str = "experiment"
) -> list[str]:
    write(folder / "cfg" / group / f"{name}.yaml", header + textwrap.dedent(body))
    return ["--config-dir", str(folder / "cfg")]


def contains_secret(folder: Path) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if SECRET.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found
