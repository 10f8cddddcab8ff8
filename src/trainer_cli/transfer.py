"""Transfer learning: start from trained weights (`init_from=`), then fine-tune all, some or
none of the blocks (`finetune=full|linear_probe|last_k|probe_stage|lora`).

The lectures' table: with little data close to the pretraining data, a linear classifier on
the top layer (`linear_probe`); with little and different data, linear classifiers on
earlier stages (`probe_stage`); with more data, fine-tune a few layers (`last_k`) or more
(`full`, with `layer_lr_decay` for smaller steps in earlier blocks). LoRA (`lora`) trains a
low-rank change W* = W + (alpha/r) B A of each weight instead of W itself.

Each `finetune` option is an object built from its config node that `build.pieces` applies
to the model: `prepare` (structural changes, before the optimizer), `param_groups` (the
optimizer's groups, per block), `start_epoch` (what trains this epoch: a pure function of
the epoch, so a resumed run needs no extra state), `finish` (the plain weights to save).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainer_cli import checks, run_folder
from trainer_cli.config import UserError
from trainer_cli.models.stages import blocks_of

log = logging.getLogger("trainer_cli")

NORMS = (nn.modules.batchnorm._BatchNorm,)


# ---------------------------------------------------------------- init_from


def initial_state(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict `init_from` names, and the exact file or weights it came from.

    A run folder gives its best checkpoint (else its last); a file is a trainer_cli
    checkpoint (its `model` entry) or a plain state_dict; any other value is a torchvision
    weights name (`ResNet18_Weights.IMAGENET1K_V1`), read from torch's cache (offline-safe).
    Every file is read with `torch.load(weights_only=True)`.
    """
    path, state = _source_checkpoint(source)
    if isinstance(state.get("model"), dict):
        state = state["model"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"init_from: '{path}' is not a state_dict or a trainer_cli checkpoint")
    return state, str(path.resolve())


def initial_preprocess(source: str, kind: str) -> dict[str, Any] | None:
    """The preprocessing statistics of the run `init_from` names, when it has them and they
    are of the same `kind`: pretrained features expect the inputs they were trained on (the
    lecture's "use the pretrained model's normalisation"), and statistics refitted on a few
    target images are noise. None for a plain state_dict or torchvision weights."""
    path, state = _source_checkpoint(source)
    carried = state.get("preprocess")
    if not isinstance(carried, dict) or carried.get("kind") != kind:
        return None
    log.info(f"init_from: preprocessing statistics ({kind}) from {path}")
    return carried


def _source_checkpoint(source: str) -> tuple[Path, dict[str, Any]]:
    """The file `init_from` names (a run folder: its best checkpoint, else its last) and its contents."""
    from trainer_cli import checkpoint

    path = Path(source).expanduser()
    if path.is_dir():
        path = run_folder.trained_weights(path, key="init_from")
    elif not path.is_file():
        if "/" in source or source.endswith((".pt", ".pth")):
            raise UserError(f"init_from: no file or folder at '{source}'")
        path = _torchvision_weights_file(source)
    return path, checkpoint.load(path, key="init_from")


def _torchvision_weights_file(name: str) -> Path:
    import torchvision

    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise UserError(
            f"init_from: '{name}' is not a run folder, a file or a torchvision weights name "
            "(e.g. ResNet18_Weights.IMAGENET1K_V1)"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise UserError(f"init_from: {name} is not in torch's cache; download {weights.url} to {cached}")
    return cached


def load_matching(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, keep_fresh: set[str] | None = None
) -> list[str]:
    """Copy `state` into `model`; returns the layers left as initialised (shapes differ).

    Every tensor name must match: a layer whose shapes differ (a head for another class
    count, a first conv for other input channels) keeps its fresh initialisation, whole.
    A 3-channel first conv going to 1 channel is summed over its RGB kernels instead (a grey
    image is R = G = B, so the first activations are unchanged). Any other difference is an
    error: the checkpoint is of another architecture. Layers named in `keep_fresh` keep their
    initialisation too (the head, for a new task).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:3])}" if missing else "", f"unexpected {', '.join(unexpected[:3])}"]
        raise UserError(
            f"init_from: '{source}' does not fit {type(model).__name__} "
            f"({'; '.join(p for p in parts if p and not p.endswith('unexpected '))}); "
            "use the model and options the weights were trained with"
        )
    state = dict(state)
    for name, tensor in own.items():
        theirs = state[name]
        grey = tensor.ndim == 4 and tensor.shape[1] == 1 and theirs.ndim == 4 and theirs.shape[1] == 3
        if grey and tensor.shape[0] == theirs.shape[0] and tensor.shape[2:] == theirs.shape[2:]:
            state[name] = theirs.sum(1, keepdim=True)
    different = sorted({k.rpartition(".")[0] for k in own if own[k].shape != state[k].shape} | (keep_fresh or set()))
    kept = {k: v for k, v in state.items() if k.rpartition(".")[0] not in different}
    model.load_state_dict(kept, strict=False)
    return different


# ---------------------------------------------------------------- fine-tuning


class Finetune:
    """Which blocks train (the last `last_k` plus the head; None: all) and at what rate.

    Args:
        last_k: blocks before the head that train (0: the head only, a linear probe);
            None: every block.
        layer_lr_decay: each block's learning rate is the next one's times this (the head
            at `lr`): discriminative fine-tuning. 1: one rate.
        unfreeze_at_epoch: from this epoch on, frozen blocks train too (all at once, or one
            more block every `unfreeze_every` epochs: gradual unfreezing).
        frozen_norm_eval: batch-norm layers of frozen blocks stay in eval mode (their running
            statistics are frozen too), even while the model trains.
        reset_head: with `init_from`, the head keeps its fresh initialisation (a new task,
            even with as many classes as the old one); false: the head is loaded too.
    """

    def __init__(
        self,
        last_k: int | None = None,
        layer_lr_decay: float = 1.0,
        unfreeze_at_epoch: int | None = None,
        unfreeze_every: int | None = None,
        frozen_norm_eval: bool = True,
        reset_head: bool = True,
    ) -> None:
        if last_k is not None:
            checks.whole_number("last_k", last_k, minimum=0)
        checks.positive("layer_lr_decay", layer_lr_decay)
        checks.number("layer_lr_decay", layer_lr_decay, high=1.0)
        if unfreeze_at_epoch is not None:
            checks.whole_number("unfreeze_at_epoch", unfreeze_at_epoch, minimum=1)
            if last_k is None:
                raise ValueError("unfreeze_at_epoch: needs last_k (what is frozen before that epoch)")
        if unfreeze_every is not None:
            checks.whole_number("unfreeze_every", unfreeze_every, minimum=1)
        self.last_k, self.layer_lr_decay = last_k, float(layer_lr_decay)
        self.unfreeze_at_epoch, self.unfreeze_every = unfreeze_at_epoch, unfreeze_every
        self.frozen_norm_eval, self.reset_head = frozen_norm_eval, reset_head
        self._hooks: list[Any] = []

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
        """The model to train (this one, or a structural change of it), its parameters that
        ever train marked `requires_grad` (those the optimizer gets)."""
        self.start_epoch(model, None)
        return model

    def _splits(self) -> bool:
        return self.last_k is not None or self.layer_lr_decay != 1.0

    def blocks(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        try:
            return blocks_of(model)
        except ValueError as error:
            raise UserError(f"finetune: {error}") from None

    def trained_blocks(self, count: int, epoch: int | None) -> int:
        """How many blocks, from the head back, train at `epoch` (None: ever)."""
        if self.last_k is None:
            return count
        trained = self.last_k + 1
        if self.unfreeze_at_epoch is not None and (epoch is None or epoch >= self.unfreeze_at_epoch):
            if self.unfreeze_every is None or epoch is None:
                return count
            trained += 1 + (epoch - self.unfreeze_at_epoch) // self.unfreeze_every
        return min(trained, count)

    def _trains(self, name: str, block_trains: bool) -> bool:
        """Whether the parameter `name` (of a block that trains or not) trains."""
        return block_trains

    def start_epoch(self, model: nn.Module, epoch: int | None) -> list[str]:
        """Set what trains in `epoch` (None: everything that trains in some epoch); returns
        the names of the blocks that train."""
        if not self._splits():
            return []
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        blocks = self.blocks(model)
        trained = self.trained_blocks(len(blocks), epoch)
        ids = {id(p): n for n, p in model.named_parameters()}
        for index, (_, block) in enumerate(blocks):
            block_trains = index >= len(blocks) - trained
            for parameter in block.parameters():
                parameter.requires_grad_(self._trains(ids[id(parameter)], block_trains))
            if not block_trains and self.frozen_norm_eval:
                for module in block.modules():
                    if isinstance(module, NORMS):
                        self._hooks.append(module.register_forward_pre_hook(_stay_in_eval))
        return [name for index, (name, _) in enumerate(blocks) if index >= len(blocks) - trained]

    def param_groups(self, model: nn.Module, groups: list[dict], lr: float) -> list[dict]:
        """Split the optimizer's groups by block, the head at `lr` and block i of n at
        lr * layer_lr_decay**(n-1-i); each group is named `<block>.<group>` (its `lr/` curve)."""
        if self.layer_lr_decay == 1.0:
            return groups
        blocks = self.blocks(model)
        block_of = {id(p): i for i, (_, block) in enumerate(blocks) for p in block.parameters()}
        split = []
        for group in groups:
            for index, (block_name, _) in enumerate(blocks):
                params = [p for p in group["params"] if block_of.get(id(p), 0) == index]
                if params:
                    scale = self.layer_lr_decay ** (len(blocks) - 1 - index)
                    name = f"{block_name}.{group.get('name', 'params')}"
                    split.append({**group, "params": params, "lr": lr * scale, "name": name})
        return split

    def finish(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The state_dict of the plain model to save instead of `model`'s, or None when it is plain."""
        return None

    def saved_structure(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
        """The structure a finished run's checkpoints hold the model in (what `model` is
        rebuilt into before its saved weights load): the trained one, unless `finish` saved
        a plain model instead."""
        if type(self).finish is not Finetune.finish:
            return model
        return self.prepare(model, input_shape)


def _stay_in_eval(module: nn.Module, _inputs: Any) -> None:
    """A frozen block's batch norm normalizes with its running statistics and never updates them."""
    module.eval()


class StageProbe(nn.Module):
    """The blocks of a model up to one stage, global average pooling and a linear head."""

    def __init__(self, features: nn.Sequential, head: nn.Linear) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head((x.mean((2, 3)) if x.ndim == 4 else x).flatten(1))


class ProbeStage(Finetune):
    """A linear classifier on the features of block `stage` (0: the first), the blocks up to
    it frozen: the lecture's "linear classifiers from different stages" (sweep `stage`)."""

    def __init__(self, stage: int = 0, frozen_norm_eval: bool = True) -> None:
        super().__init__(last_k=0, frozen_norm_eval=frozen_norm_eval, reset_head=False)  # a new head anyway
        checks.whole_number("stage", stage, minimum=0)
        self.stage = stage

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
        blocks = self.blocks(model)
        if self.stage >= len(blocks) - 1:
            names = ", ".join(f"{i} ({n})" for i, (n, _) in enumerate(blocks[:-1]))
            raise UserError(f"finetune.stage: {self.stage} is not a block before the head; choose {names}")
        features = nn.Sequential(*[m for _, block in blocks[: self.stage + 1] for m in block])
        head = [m for m in blocks[-1][1].modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            parameter = next(model.parameters())
            x = features(torch.zeros(2, *input_shape, device=parameter.device))
        model.train(was_training)
        width = x.shape[1] if x.ndim == 4 else x.flatten(1).shape[1]
        num_classes = head.out_features if isinstance(head, nn.Linear) else head.out_channels
        probe = StageProbe(features, nn.Linear(width, num_classes))
        self.start_epoch(probe, None)
        return probe

    def blocks(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        if isinstance(model, StageProbe):
            return [(f"stage{self.stage}", model.features), ("head", model.head)]
        return super().blocks(model)


class LowRankDelta(nn.Module):
    """The parametrization W -> W + (alpha/r) B A of a Linear or Conv2d weight (LoRA, Hu et
    al. 2021): A (r x fan_in) random as a Linear's weight, B (out x r) zero, so training
    starts from the pretrained function exactly."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float) -> None:
        super().__init__()
        fan_in = weight[0].numel()
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)  # as nn.Linear initialises its weight
        self.lora_B = nn.Parameter(torch.zeros(weight.shape[0], rank, device=weight.device, dtype=weight.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A).view_as(weight)


class LoRA(Finetune):
    """Low-rank adaptation: every Linear/Conv2d weight (of `targets`) before the head is
    frozen and changed by a trained rank-`rank` delta; the head (new for the target
    classes) trains whole. `finish` merges the deltas: a plain model with equal outputs."""

    def __init__(
        self,
        rank: int = 4,
        alpha: float = 8.0,
        targets: tuple[str, ...] = ("Linear", "Conv2d"),
        reset_head: bool = True,
    ) -> None:
        super().__init__(last_k=0, reset_head=reset_head)
        checks.whole_number("rank", rank, minimum=1)
        checks.positive("alpha", alpha)
        kinds = {"Linear": nn.Linear, "Conv2d": nn.Conv2d}
        unknown = [t for t in targets if t not in kinds]
        if unknown or not targets:
            raise ValueError(f"targets: {unknown or targets} not accepted; choose from Linear, Conv2d")
        self.rank, self.alpha, self.targets = rank, float(alpha), tuple(kinds[t] for t in targets)

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
        for _, block in self.blocks(model)[:-1]:
            for module in block.modules():
                if isinstance(module, self.targets) and not parametrize.is_parametrized(module, "weight"):
                    parametrize.register_parametrization(
                        module, "weight", LowRankDelta(module.weight, self.rank, self.alpha)
                    )
        self.start_epoch(model, None)
        return model

    def _trains(self, name: str, block_trains: bool) -> bool:
        return block_trains or ".lora_" in name

    def finish(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The merged weights W + (alpha/r) B A under the plain names (`0.weight`): the
        state_dict of the plain model. (torch's `remove_parametrizations` would change the
        class that a deep copy shares with the model, so the merge is computed here.)"""
        state = {k: v for k, v in model.state_dict().items() if ".parametrizations.weight." not in k}
        with torch.no_grad():
            for name, module in model.named_modules():
                if parametrize.is_parametrized(module, "weight"):
                    state[f"{name}.weight"] = module.weight.detach().clone()
        return state


def adapt(cfg: Any, model: nn.Module, tuning: Finetune, init_weights: bool) -> tuple[nn.Module, str | None]:
    """The model to train: `init_from`'s weights loaded (unless resuming: the checkpoint has
    them), then `tuning.prepare`; and the exact file the weights came from (None when none
    were loaded), for the run record."""
    source, where = cfg.get("init_from"), None
    if source and init_weights:
        state, where = initial_state(str(source))
        head = set()
        if tuning.reset_head:  # a new task: the old task's classifier is no start
            head_modules = {id(m) for m in tuning.blocks(model)[-1][1].modules()}
            head = {n for n, m in model.named_modules() if id(m) in head_modules and m._parameters}
        fresh = load_matching(model, state, str(source), head)
        reinitialised = f"; re-initialised (new head, or shapes differ): {', '.join(fresh)}" if fresh else ""
        log.info(f"init_from: {where}{reinitialised}")
    shape = (int(cfg.data.in_channels), int(cfg.data.image_size), int(cfg.data.image_size))
    return tuning.prepare(model, shape), where


def merge_saved_models(tuning: Finetune, model: nn.Module, run_dir: Path) -> None:
    """After a LoRA run: best.pt, last.pt and the snapshots hold the merged, plain model (any
    `model` config builds it, `init_from` and ensembles read it). Each also keeps the model as
    it trained, adapters and all (`trained_model`), so `resume=<run> epochs=N` extends the run
    exactly."""
    from trainer_cli import checkpoint

    if type(tuning).finish is Finetune.finish:
        return
    for path in sorted(run_folder.checkpoint_dir(run_dir).glob("*.pt")):
        state = checkpoint.load(path)
        if "trained_model" in state:  # merged already (an extended run's older files)
            continue
        model.load_state_dict(state["model"])
        state["trained_model"] = state["model"]
        state["model"] = tuning.finish(model)
        checkpoint.save(state, path)
