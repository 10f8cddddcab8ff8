"""`train diagnose=<step>` (mode=diagnose): the lecture's babysitting recipe as commands that
say what the numbers mean.

Each step builds the run with `build.pieces`, trains with the run's own step (`loop`),
evaluates with `loop.evaluate`, and returns a `Verdict` (PASS / WARN / FAIL, the numbers,
the likely causes in the lecture's words, the next command). The verdicts are printed as
panels and written to `diagnosis.md` (with PNG figures) in the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainer_cli.config import UserError, resolved
from trainer_cli.verdict import Verdict, panel, worst, write_markdown

log = logging.getLogger("trainer_cli")


def _steps() -> dict[str, Any]:
    """The steps by the names `mode.steps` lists (imported here: they import torch)."""
    from trainer_cli.diagnose.curves import curves
    from trainer_cli.diagnose.gradcheck import gradcheck
    from trainer_cli.diagnose.grid import grid, refine
    from trainer_cli.diagnose.initial_loss import initial_loss
    from trainer_cli.diagnose.lr import lr, lr_range
    from trainer_cli.diagnose.overfit import overfit

    return {
        "initial_loss": initial_loss,
        "overfit": overfit,
        "lr": lr,
        "lr_range": lr_range,
        "grid": grid,
        "refine": refine,
        "curves": curves,
        "gradcheck": gradcheck,
    }


STEP_NAMES = ("initial_loss", "overfit", "lr", "lr_range", "grid", "refine", "curves", "gradcheck")


def best_point(ctx: Any) -> tuple[float | None, float | None]:
    """The (lr, weight decay) the steps so far found."""
    return ctx.found.get("lr"), ctx.found.get("weight_decay")


def repeat_rounds(ctx: Any, step: Any, centre: tuple[float | None, float | None]) -> None:
    """The lecture's step 7, "GOTO step 5": while the refinement moved the best point away
    from the centre it searched around, search again around the new point (grid, then
    refine), up to `mode.max_rounds` rounds in all; `found rounds` says how many ran."""
    rounds = int(ctx.options["max_rounds"])
    while best_point(ctx) != centre and ctx.round < rounds:
        ctx.round += 1
        step("grid")
        centre = best_point(ctx)
        verdict = step("refine")
        verdict.numbers["rounds"] = f"{ctx.round} of at most {rounds}" + (
            " (the best point is stable)" if best_point(ctx) == centre else ""
        )


def run_diagnosis(
    cfg: DictConfig,
    run_dir: Path,
    hparams: dict[str, Any] | None = None,
    user_keys: set[str] | None = None,
    *,
    steps: list[str],
    **options: Any,
) -> dict[str, Any]:
    """Run `steps` in order on the composed config; returns a summary whose `verdict` is the
    worst step's (the command line exits 1 on FAIL)."""
    from trainer_cli.diagnose.context import Context, user_overrides
    from trainer_cli.report import Reporter

    cfg = resolved(cfg)
    steps = [steps] if isinstance(steps, str) else list(steps)
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown or not steps:
        raise UserError(f"mode.steps: unknown step '{(unknown or [''])[0]}'; accepted: {', '.join(STEP_NAMES)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    verdicts: list[Verdict] = []
    available = _steps()
    with Reporter(run_dir, []) as reporter:
        ctx = Context(cfg, run_dir, options, reporter, user_overrides(run_dir))

        def step(name: str) -> Verdict:
            log.info(f"diagnose: {name}" + (f" (round {ctx.round})" if ctx.round > 1 else ""))
            verdict = available[name](ctx)
            verdicts[:] = [v for v in verdicts if v.step != verdict.step] + [verdict]  # a later round replaces
            reporter.print(panel(verdict))
            write_markdown(verdicts, run_dir)  # after each step: an interrupted diagnosis keeps what it found
            return verdict

        for name in steps:
            centre = best_point(ctx)
            step(name)
            if name == "refine" and "grid" in steps:
                repeat_rounds(ctx, step, centre)
        write_markdown(verdicts, run_dir)
        overall = worst([v.status for v in verdicts])
        summary = {
            "status": "ok",
            "run_dir": str(run_dir),
            "verdict": overall,
            **{f"diagnose/{v.step}": v.status for v in verdicts},
        }
        reporter.finish(summary, hparams or {}, {})
    log.info(f"diagnosis: {overall} ({run_dir / 'diagnosis.md'})")
    return summary
