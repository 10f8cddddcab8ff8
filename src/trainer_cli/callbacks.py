"""Hooks: optional behaviour around the step, called by the run at fixed points.

A hook is a small class that overrides some of `Callback`'s methods; the `callbacks` config
group lists them (`conf/callbacks/*.yaml`, one node with a `_target_` per file). The run
calls every listed hook at each point, in the listed order; it knows none by name. A hook
never changes the step's math (it reads the run and writes to the reporter or the run
folder), and no hook depends on another. What each method receives:

- `run`: a `Run` (`run.pieces`: model, data, optimizer, loss_fn, device, cfg, loop state...;
  `run.reporter`; `run.run_dir`; `run.stop_vote`, added to the contract for the stop vote).
- `on_train_start(run)`: before the first epoch (also when resuming).
- `on_log_step(run, step, scalars)`: every `trainer.log_every_n_steps` optimizer steps, with
  that step's scalars (already logged).
- `on_step_end(run, step, totals)`: after every optimizer step, with the epoch's running sums.
  Only hooks that override it are called per step: the others cost nothing on the hot path.
- `on_epoch_end(run, epoch, row)`: after validation, before the row is recorded: may add cheap
  entries to the epoch's row (they reach metrics.csv and the curves).
- `on_end(run, summary)`: after the final evaluation, before the summary is written.

The required hooks (`REQUIRED`: the stop vote and mid-epoch checkpoints) run whatever the
list says: a list adds to them. Adding a hook: one class (here or in your own trusted module)
and one YAML file in `conf/callbacks/`, then `train 'callbacks=[mine]'` (docs/extending.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer_cli import checks
from trainer_cli.errors import UserError

if TYPE_CHECKING:
    from trainer_cli.report import Reporter

log = logging.getLogger("trainer_cli")


@dataclass
class Run:
    """What a hook sees of the run: its built pieces, its reporter and its folder."""

    pieces: Any  # trainer_cli.build.Pieces: a layer above this one, named here, not imported
    reporter: Reporter
    run_dir: Path
    # The run's stop vote (`distributed.StopVote`): a hook that stops mid-epoch votes with the
    # same object the run's end-of-epoch check uses, so every rank stops at the same step.
    stop_vote: Any = None


class Callback:
    """The base of every hook: each method does nothing; override the ones you need."""

    def on_train_start(self, run: Run) -> None:
        """Before the first epoch."""

    def on_log_step(self, run: Run, step: int, scalars: dict[str, float]) -> None:
        """At a logging step, with its scalars."""

    def on_step_end(self, run: Run, step: int, totals: dict[str, Any]) -> None:
        """After an optimizer step, with the epoch's running sums."""

    def on_epoch_end(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        """After validation; may add cheap entries to the epoch's row."""

    def on_end(self, run: Run, summary: dict[str, Any]) -> None:
        """After the final evaluation."""


def overriding(hooks: Sequence[Callback], method: str) -> list[Callback]:
    """The hooks whose `method` is their own, not `Callback`'s do-nothing one."""
    base = getattr(Callback, method)
    return [hook for hook in hooks if getattr(type(hook), method, base) is not base]


class Hooks:
    """The listed hooks, called at the run's fixed points (each point calls only the hooks
    that override it; `step_end` is None when none does, so the loop calls nothing per step)."""

    def __init__(self, hooks: Sequence[Callback], run: Run) -> None:
        self.run = run
        self.by_method = {
            method: overriding(hooks, method)
            for method in ("on_train_start", "on_log_step", "on_step_end", "on_epoch_end", "on_end")
        }

    def train_start(self) -> None:
        for hook in self.by_method["on_train_start"]:
            hook.on_train_start(self.run)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """The loop's `on_log`: the reporter logs the step, then each hook sees it."""
        self.run.reporter.log_step(step, scalars)
        for hook in self.by_method["on_log_step"]:
            hook.on_log_step(self.run, step, scalars)

    @property
    def step_end(self) -> Callable[[int, dict[str, Any]], None] | None:
        """The loop's `on_step`, or None when no hook acts after a step."""
        hooks = self.by_method["on_step_end"]
        if not hooks:
            return None
        run = self.run
        if len(hooks) == 1:
            only = hooks[0]
            return lambda step, totals: only.on_step_end(run, step, totals)

        def step_end(step: int, totals: dict[str, Any]) -> None:
            for hook in hooks:
                hook.on_step_end(run, step, totals)

        return step_end

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        for hook in self.by_method["on_epoch_end"]:
            hook.on_epoch_end(self.run, epoch, row)

    def end(self, summary: dict[str, Any]) -> None:
        for hook in self.by_method["on_end"]:
            hook.on_end(self.run, summary)


def _whole_number(key: str, value: Any, optional: bool = False) -> None:
    checks.whole_number(key, value, optional=optional, error=UserError)


class StepCheckpoints(Callback):
    """A mid-epoch `last.pt` every `trainer.checkpoint.every_n_steps` optimizer steps, and
    when SIGTERM/SIGUSR1 asked the run to stop (then `faults.Preempted`; a
    `distributed.StopVote`: every rank stops at the same step). The checkpoint holds the
    epoch's running sums and the loader's position in the epoch, so a resume continues the
    same epoch bit for bit. The end-of-epoch stop check is the run's own (train.run)."""

    def on_train_start(self, run: Run) -> None:
        from trainer_cli import distributed

        self.every = run.pieces.cfg.trainer.checkpoint.get("every_n_steps")
        _whole_number("trainer.checkpoint.every_n_steps", self.every, optional=True)
        self.vote = run.stop_vote or distributed.StopVote()

    def on_step_end(self, run: Run, step: int, totals: dict[str, Any]) -> None:
        from trainer_cli import faults

        stop = self.vote.step(faults.stop_requested())
        if not stop and not (self.every and step % self.every == 0):
            return
        from trainer_cli import checkpoint, distributed, run_folder

        pieces, state = run.pieces, run.pieces.loop
        state.step = step
        state.partial = {name: float(value) for name, value in totals.items()}
        if distributed.world_size() > 1:  # the sums over every rank's shard; rank 0 alone continues them
            from trainer_cli.loop import sum_over_ranks

            loss, correct, count = sum_over_ranks(totals["loss"], totals["correct"], totals["count"])
            state.partial = {"loss": float(loss), "correct": float(correct), "count": int(count)}
        run.reporter.flush()  # curves first, then the checkpoint
        snapshot = checkpoint.snapshot(pieces.stateful(), pieces.config_yaml, state.epoch, step)
        if distributed.is_main():
            checkpoint.save(snapshot, run_folder.last_checkpoint(run.run_dir))
        if stop:
            raise faults.preempted(run.run_dir, state.epoch, step, writer=distributed.is_main())


# The hooks every run has, whatever `callbacks=` lists: a user's list adds to them, so
# `callbacks=[mine]` keeps the stop vote (SIGTERM mid-epoch: last.pt, exit 75, resumable) and
# mid-epoch checkpoints. Listing one again (`[checkpoints,mine]`) does not run it twice.
REQUIRED: tuple[type[Callback], ...] = (StepCheckpoints,)


def with_required(listed: Sequence[Callback]) -> list[Callback]:
    """The required hooks the list lacks (first, in `REQUIRED`'s order), then the list."""
    missing = [kind() for kind in REQUIRED if not any(isinstance(hook, kind) for hook in listed)]
    return [*missing, *listed]


class LogProbes(Callback):
    """`trainer.log_activations=true`: each activation layer's statistics on a fixed probe
    batch (the first validation batch: mean, std, histogram, dead and saturated unit
    fractions) and each parameter's gradient histogram, at the start and then every
    `trainer.log_activations_every_n_steps` steps."""

    def on_train_start(self, run: Run) -> None:
        trainer = run.pieces.cfg.trainer
        self.enabled = bool(trainer.get("log_activations"))
        if not self.enabled:
            return
        from trainer_cli.models.stats import activation_stats
        from trainer_cli.report import print_activation_table

        self.every = trainer.get("log_activations_every_n_steps", 100)
        _whole_number("trainer.log_activations_every_n_steps", self.every)
        self.probe = next(iter(run.pieces.data.val))[0]
        print_activation_table(activation_stats(self.log_probe(run, run.pieces.loop.step)))
        self.due = run.pieces.loop.step + self.every

    def log_probe(self, run: Run, step: int) -> dict[str, Any]:
        from trainer_cli.models.stats import activation_values, unit_fractions

        model = run.pieces.model
        values = activation_values(model, self.probe)
        run.reporter.log_activations(step, values, unit_fractions(model, values, self.probe.shape[0]))
        run.reporter.log_gradients(step, model.named_parameters())  # none before the first step
        return values

    def on_log_step(self, run: Run, step: int, scalars: dict[str, float]) -> None:
        if self.enabled and step >= self.due:
            self.log_probe(run, step)
            self.due = step + self.every


class AugmentationPreview(Callback):
    """`augmentation.preview=true`: a grid of augmented training images (what the model sees),
    as `augmentation_preview.png` and in TensorBoard's Images tab."""

    def on_train_start(self, run: Run) -> None:
        from trainer_cli import distributed

        pieces = run.pieces
        augment = pieces.data.train.augment
        if not pieces.cfg.augmentation.get("preview") or augment is None or not distributed.is_main():
            return
        from trainer_cli.data import preview_images
        from trainer_cli.data.augment import save_preview

        path = run.run_dir / "augmentation_preview.png"
        grid = save_preview(preview_images(pieces.data.train), augment, path)
        run.reporter.log_image("augmentation/preview", grid, 0)
        log.info(f"augmentation preview: {path} (and TensorBoard's Images tab)")


class FirstLayer(Callback):
    """A conv net's first-layer filters (of the weights the final evaluation tested) as
    `first_layer.png` and in TensorBoard's Images tab: the lecture's "visualize the first layer"."""

    def on_end(self, run: Run, summary: dict[str, Any]) -> None:
        from trainer_cli import distributed
        from trainer_cli.figures import save_first_layer

        if not distributed.is_main():
            return
        grid = save_first_layer(run.pieces.model, run.run_dir / "first_layer.png")
        if grid is not None:
            run.reporter.log_image("first_layer", grid, run.pieces.loop.step)


class DiagnoseAtEnd(Callback):
    """`trainer.diagnose_at_end=true`: the curves' verdict on the run that just ended (the
    lecture's reading of its curves), printed and written to its `diagnosis.md`."""

    def on_end(self, run: Run, summary: dict[str, Any]) -> None:
        from trainer_cli import distributed

        if not run.pieces.cfg.trainer.get("diagnose_at_end") or not distributed.is_main():
            return
        from trainer_cli.diagnose.curves import diagnose_history, read_history

        run.reporter.flush()
        diagnose_history(read_history(run.run_dir), run.pieces.cfg, run.reporter, run.run_dir)
