"""A diagnosis step's answer: PASS / WARN / FAIL, the numbers behind it, the likely causes
in the lecture's words, and the command to try next; shown as a rich panel and written to
`diagnosis.md`. Also the one verdict every run gives (`judge_initial_loss`), so the training
run needs nothing from the `diagnose` procedures above it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("PASS", "WARN", "FAIL")  # in order of severity
COLOURS = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}


@dataclass
class Verdict:
    """One step's result. `causes` are ranked, the likeliest first."""

    step: str
    status: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    causes: list[str] = field(default_factory=list)
    next_command: str = ""
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {', '.join(STATUSES)}, got '{self.status}'")


def worst(statuses: list[str]) -> str:
    """The most severe status (PASS when there is none)."""
    return max(statuses, key=STATUSES.index, default="PASS")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    return str(value)


def panel(verdict: Verdict) -> Any:
    """The verdict as a rich panel, its border in the verdict's colour."""
    from rich.markup import escape
    from rich.panel import Panel

    colour = COLOURS[verdict.status]
    # escape: a command such as 'regularization=[l2]' must print as typed, not as a style
    lines = [f"[bold {colour}]{verdict.status}[/]  {escape(verdict.summary)}"]
    lines += [f"  {escape(name)}: {escape(_number(value))}" for name, value in verdict.numbers.items()]
    if verdict.causes:
        lines.append("likely causes:")
        lines += [f"  {i}. {escape(cause)}" for i, cause in enumerate(verdict.causes, 1)]
    if verdict.figures:
        lines.append("figures: " + escape(", ".join(verdict.figures)))
    if verdict.next_command:
        lines.append(f"next: [bold]{escape(verdict.next_command)}[/]")
    return Panel("\n".join(lines), title=f"diagnose: {verdict.step}", border_style=colour, expand=False)


def markdown(verdicts: list[Verdict]) -> str:
    """`diagnosis.md`: every step's verdict, numbers, causes and next command."""
    out = ["# Diagnosis", "", f"Overall: **{worst([v.status for v in verdicts])}**", ""]
    out += ["| step | verdict | summary |", "|---|---|---|"]
    out += [f"| {v.step} | {v.status} | {v.summary} |" for v in verdicts]
    for v in verdicts:
        out += ["", f"## {v.step}: {v.status}", "", v.summary, ""]
        out += [f"- {name}: {_number(value)}" for name, value in v.numbers.items()]
        if v.causes:
            out += ["", "Likely causes, the likeliest first:", ""]
            out += [f"{i}. {cause}" for i, cause in enumerate(v.causes, 1)]
        out += [""] + [f"![{name}]({name})" for name in v.figures]
        if v.next_command:
            out += ["", "Next:", "", "```", v.next_command, "```"]
    return "\n".join(out) + "\n"


def write_markdown(verdicts: list[Verdict], run_dir: Path) -> Path:
    path = run_dir / "diagnosis.md"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(verdicts))
    return path


# Why 0.25 nats: for logits with a small spread s around their mean, the expected
# cross-entropy is about ln C + s^2/2 (second-order expansion of log-sum-exp), so 0.25 nats
# above ln C means logits with a std of about 0.7: no longer "small random weights".
DEFAULT_TOLERANCE = 0.25


def judge_initial_loss(loss: float, num_classes: int, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """The verdict on an initial loss: PASS within `tolerance` nats of ln C, WARN beyond,
    FAIL when it is not a finite number."""
    expected = math.log(num_classes)
    numbers = {"initial loss": loss, "ln C": expected, "C": num_classes, "tolerance (nats)": tolerance}
    if not math.isfinite(loss):
        return Verdict(
            "initial_loss",
            "FAIL",
            f"the initial loss is {loss}",
            numbers,
            ["bug in code (a log of 0: a softmax applied twice, or a missing one)", "bad input data"],
        )
    excess = loss - expected
    numbers["difference"] = excess
    if abs(excess) <= tolerance:
        return Verdict("initial_loss", "PASS", f"initial loss {loss:.4f} is close to ln C = {expected:.4f}", numbers)
    if excess > 0:
        causes = [
            "initialization scale too large: the logits are not small (check model.init / model.init_std)",
            "a missing or doubled softmax / a wrong loss for the outputs",
            "label problems (labels outside 0..C-1 or shifted)",
        ]
        summary = f"initial loss {loss:.4f} is {excess:.2f} nats above ln C = {expected:.4f}"
    else:
        causes = [
            "the model already 'knows' the answer at step 0: labels leak into the inputs",
            "fewer classes really present than C (check data.num_classes)",
        ]
        summary = f"initial loss {loss:.4f} is {-excess:.2f} nats below ln C = {expected:.4f}"
    return Verdict("initial_loss", "WARN", summary, numbers, causes)
