"""The pathology zoo: runs built to have one known cause each (tests/diagnose_zoo/cases.yaml),
the split into a design half and a held-out half, and the confusion table of the diagnosis's
first-named cause against the true one (`scripts/diagnose_zoo.py` prints it)."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer_cli.data.sources import TensorData, load_digits
from trainer_cli.diagnose.causes import CAUSES, HEALTHY

CASES_FILE = Path(__file__).resolve().parents[3] / "tests" / "diagnose_zoo" / "cases.yaml"
# Every case: small and on the CPU (the whole zoo runs in a few minutes on a shared 2-core machine).
BASE = ["trainer.device=cpu", "logger=[]", "epochs=8", "trainer.log_every_n_steps=5"]
HALVES = ("design", "held_out")
ALL = "all"  # every case of a file, whatever its half (a new held-out file is run whole)


@dataclass
class Case:
    """One zoo entry: its name, the cause it was built to have, its overrides, its half."""

    name: str
    cause: str
    overrides: list[str]
    half: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """The cases in file order, each with its half (`split`)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path))["cases"]
    cases = [Case(c["name"], c["cause"], list(c["overrides"])) for c in raw]
    unknown = sorted({c.cause for c in cases} - set(CAUSES))
    if unknown:
        raise ValueError(f"{path}: unknown cause {unknown[0]}; accepted: {', '.join(CAUSES)}")
    return split(cases)


def split(cases: list[Case]) -> list[Case]:
    """The rule fixed before any diagnosis rule was written: within each cause, in file
    order, alternate design, held_out, design, ..."""
    seen: Counter[str] = Counter()
    for case in cases:
        case.half = HALVES[seen[case.cause] % 2]
        seen[case.cause] += 1
    return cases


def select(cases: list[Case], half: str, only: str | None = None) -> list[Case]:
    """The cases of one half (`ALL`: every case), or the one named `only`, in file order."""
    return [c for c in cases if half in (ALL, c.half) and (only is None or c.name == only)]


def scaled_digits(scale: float = 1.0, offset: float = 0.0, test_fraction: float = 0.2, seed: int = 0) -> TensorData:
    """Digits with pixels `scale * x + offset` (the zoo's "inputs not preprocessed" when
    `data.preprocess=none`): the raw data a user forgets to normalise."""
    data = load_digits(test_fraction, seed)
    return TensorData(
        data.train_x * scale + offset, data.train_y, data.test_x * scale + offset, data.test_y, data.classes
    )


@contextlib.contextmanager
def trusting_zoo_sources() -> Iterator[None]:
    """The zoo's own data source is built through the trust door like a user's module; the
    trust ends with the block (a process-wide setting would leak into whatever runs next)."""
    from trainer_cli.trust import TRUST_ENV

    before = os.environ.get(TRUST_ENV)
    names = [n for n in (before or "").split(",") if n]
    os.environ[TRUST_ENV] = ",".join([*names, __name__]) if __name__ not in names else before
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def confusion(results: list[tuple[str, str]]) -> str:
    """The confusion table (true cause x first-named cause) as Markdown rows."""
    named = sorted({n for _, n in results} | {t for t, _ in results}, key=list(CAUSES).index)
    counts = Counter(results)
    lines = ["| true \\ named | " + " | ".join(named) + " |", "|---" * (len(named) + 1) + "|"]
    for true in sorted({t for t, _ in results}, key=list(CAUSES).index):
        lines.append(f"| {true} | " + " | ".join(str(counts[(true, n)] or ".") for n in named) + " |")
    return "\n".join(lines)


def score(results: list[tuple[str, str]]) -> str:
    """ "right cause first X/Y; healthy passes X/Y" for one half's (true, named) pairs."""
    sick = [(t, n) for t, n in results if t != HEALTHY]
    healthy = [(t, n) for t, n in results if t == HEALTHY]
    right = sum(t == n for t, n in sick)
    passes = sum(n == HEALTHY for _, n in healthy)
    return f"right cause first {right}/{len(sick)}; healthy passes {passes}/{len(healthy)}"


def torch_threads() -> None:
    """One thread: the zoo's runs are tiny and the machine is shared."""
    torch.set_num_threads(1)


@dataclass
class Diagnosis:
    """A case's evidence and its ranked causes."""

    evidence: dict[str, Any]
    ranked: list[str]


def compose_case(case: Case) -> Any:
    """The case's run config: the real conf/ with the zoo's base and the case's overrides."""
    from hydra import compose, initialize_config_dir

    from trainer_cli.config import CONF_DIR, register_resolvers, resolve

    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return resolve(compose("config", [*BASE, *case.overrides]))


def diagnose_case(case: Case, run_dir: Path) -> Diagnosis:
    """Train the case in `run_dir` and rank the causes its evidence points at."""
    import shutil

    from trainer_cli.diagnose.examine import examine
    from trainer_cli.diagnose.rules import findings, rank

    if run_dir.exists():
        shutil.rmtree(run_dir)  # the zoo's own output folder: each measurement starts clean
    with trusting_zoo_sources():
        evidence = examine(compose_case(case), run_dir)
    return Diagnosis(evidence, [f.cause for f in rank(findings(evidence))])
