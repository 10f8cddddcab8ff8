"""What every diagnosis step is given, and the small pieces they share: the run's config
with regularization switched off, a fresh build of the run, a fixed sample of batches, and
the command line a user types next."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from trainer_cli.config import derive

if TYPE_CHECKING:
    import torch

    from trainer_cli.build import Pieces
    from trainer_cli.report import Reporter

# Keys of other nodes that regularization switches set (conf/regularization/*.yaml).
MODEL_NOISE_KEYS = ("dropout", "dropconnect", "drop_path")
# Overrides that say which procedure runs or which LR; the next command sets its own.
DROPPED_OVERRIDES = ("diagnose=", "+diagnose=", "mode=", "mode.", "lr=", "hydra.")


@dataclass
class Context:
    """The resolved config, the run folder, the procedure's options (`conf/mode/diagnose.yaml`)
    and the reporter that prints each verdict."""

    cfg: DictConfig
    run_dir: Path
    options: dict[str, Any]
    reporter: Reporter | None = None
    base_overrides: list[str] = field(default_factory=list)
    # What earlier steps found, for the later ones: `lr` (the lr / lr_range steps, then the
    # grids' best) and `weight_decay` (the grids' best).
    found: dict[str, float] = field(default_factory=dict)
    # The lecture's "step 7: GOTO step 5": grid and refine repeat in rounds (`mode.max_rounds`).
    round: int = 1

    def folder(self, step: str) -> Path:
        """A step's folder in the run folder: `grid`, then `grid_round2`, ..."""
        return self.run_dir / (step if self.round == 1 else f"{step}_round{self.round}")

    def command(self, *overrides: str) -> str:
        """The command line a user types next: their own overrides, less those `overrides`
        sets again (Hydra refuses a key given twice), plus `overrides`."""
        changed = {_key(o) for o in overrides}
        return " ".join(["train", *(o for o in self.base_overrides if _key(o) not in changed), *overrides])


def _key(override: str) -> str:
    return override.strip("'").split("=", 1)[0].lstrip("+~")


def diagnose_defaults() -> dict[str, Any]:
    """The diagnosis options as `conf/mode/diagnose.yaml` writes them (the one place they are
    set), for the curves' verdict at the end of a plain training run."""
    from trainer_cli.config import CONF_DIR

    options = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "mode" / "diagnose.yaml"))
    return {k: v for k, v in options.items() if not k.startswith("_")}


def user_overrides(run_dir: Path) -> list[str]:
    """The overrides this command was given, from the run record Hydra writes
    (`.hydra/overrides.yaml`), less the ones that choose the procedure or the LR."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    kept = []
    for item in OmegaConf.load(path):
        text = str(item)
        if not text.startswith(DROPPED_OVERRIDES):
            kept.append(f"'{text}'" if any(c in text for c in "[]() ") else text)
    return kept


def plain(cfg: DictConfig, weight_decay: float = 0.0) -> DictConfig:
    """The run's config with every regularizer and augmentation off and a constant LR: the
    lecture's conditions for the sanity checks (the optimizer's own coupled weight decay set
    to `weight_decay`, EMA and SWA off). A new config: `cfg` is read-only."""

    def switch_off(config: DictConfig) -> None:
        config.regularization = {}
        config.mix = {}  # cutout/mixup/cutmix (conf/regularization/*.yaml put them under `mix`)
        config.augmentation = {"preview": False}
        for key in MODEL_NOISE_KEYS:
            if key in config.model:
                config.model[key] = 0.0
        if "label_smoothing" in config.loss:
            config.loss.label_smoothing = 0.0
        if "weight_decay" in config.optimizer:  # L-BFGS takes none
            config.optimizer.weight_decay = weight_decay
        config.scheduler = {"_target_": "trainer_cli.optim.schedules.constant", "_partial_": True}
        config.trainer.ema_decay = None
        config.trainer.swa_start_epoch = None
        config.trainer.log_activations = False

    return derive(cfg, switch_off)


def with_lr(cfg: DictConfig, lr: float) -> DictConfig:
    """The config with another learning rate: a new config (`optimizer.lr`, the one value
    after `resolve`; `lr`, the shortcut, spent)."""

    def set_lr(config: DictConfig) -> None:
        config.lr = None
        config.optimizer.lr = lr

    return derive(cfg, set_lr)


def fresh(cfg: DictConfig) -> Pieces:
    """A new build of the run, seeded as `train` seeds it: each diagnosis run starts from the
    same initial weights."""
    from trainer_cli import build
    from trainer_cli.train import seed_everything

    seed_everything(int(cfg.seed), bool(cfg.trainer.deterministic))
    return build.pieces(cfg)


def fixed_sample(batches: Any, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` batches of one pass, kept: the same small sample every pass."""
    sample = []
    for batch in batches:
        if len(sample) == count:
            break
        sample.append(batch)
    return sample


def endless(batches: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches pass after pass, for runs counted in iterations rather than epochs."""
    while True:
        yield from batches


def train_steps(pieces: Pieces, batches: list, step: int = 0) -> tuple[dict[str, float], int]:
    """One pass of the run's own training step over `batches` (no penalties: the sanity
    checks run without them)."""
    from trainer_cli.loop import StepParts

    parts = StepParts(pieces.model, pieces.optimizer, pieces.scheduler, pieces.loss_fn, pieces.options)
    return pieces.train_epoch(parts, batches, step=step)
