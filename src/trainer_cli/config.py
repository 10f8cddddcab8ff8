"""Config checks and shortcuts: everything that happens to the composed config before a run.

This module imports no torch, so `train --help` and config errors stay fast.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from trainer_cli import checks, trust
from trainer_cli.errors import UserError
from trainer_cli.paths import CONF_DIR

__all__ = ["CONF_DIR", "UserError", "derive", "resolve", "resolved", "with_facts"]


# Keys of an optimizer node that are not constructor arguments: the linear scaling rule
# (applied here) and the optimizer's capability to step on a full-batch closure.
NOT_CONSTRUCTOR_KEYS = ("scale_lr_with_batch", "base_batch_size", "full_batch")


def full_batch(cfg: DictConfig) -> bool:
    """An optimizer that says `full_batch: true` (L-BFGS) takes one step per epoch on a
    closure over the whole training set."""
    return bool(cfg.optimizer.get("full_batch", False))


def docs_url(page: str) -> str:
    """The address of a docs page (`optimization`): under the site root that pyproject.toml's
    [project.urls] Documentation states (read from the installed package's metadata); the
    source's docs/<page>.md when the metadata has none (an install made before it had one)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        entries = metadata("trainer_cli").get_all("Project-URL") or []
    except PackageNotFoundError:
        entries = []
    for entry in entries:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation":
            return f"{url.strip().rstrip('/')}/{page.strip('/')}/"  # MkDocs' directory URLs
    return f"docs/{page}.md"


def register_resolvers() -> None:
    """Register the `${run_suffix:}` resolver used in run folder names and `${docs_url:page}`
    used by `train --help`."""
    if not OmegaConf.has_resolver("docs_url"):
        OmegaConf.register_new_resolver("docs_url", docs_url)
    if not OmegaConf.has_resolver("run_suffix"):
        # Cached so the run folder's name is computed once per process; the pid and a
        # random part keep two runs started in the same second in different folders.
        OmegaConf.register_new_resolver("run_suffix", lambda: f"{os.getpid()}{os.urandom(2).hex()}", use_cache=True)


@functools.cache
def known_top_level_keys() -> frozenset[str]:
    """The keys a run config may have at its top: conf/config.yaml's own, one per config group,
    and `resume_with` (what `train resume=<run> epochs=N` changes). Read once a process."""
    own = OmegaConf.load(Path(CONF_DIR) / "config.yaml")
    groups = {p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()}
    return frozenset({str(key) for key in own if key != "defaults"} | groups | {"resume_with"})


def _number(cfg: DictConfig, key: str) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}: expected a number, got '{value}'")
    if not math.isfinite(value):
        raise UserError(f"{key}: expected a finite number, got '{value}'")
    return float(value)


def _positive_int(cfg: DictConfig, key: str) -> int:
    return checks.whole_number(key, OmegaConf.select(cfg, key), error=UserError)


def _refuse_two_learning_rates(resolved: DictConfig, user_keys: set[str]) -> None:
    """`lr` is the shortcut for `optimizer.lr`: a command line that sets both to different
    values is refused (which one was meant is a guess)."""
    asked = user_keys
    given = resolved.optimizer.get("lr")
    if {"lr", "optimizer.lr"} <= asked and given != resolved.lr:
        raise UserError(
            f"lr: '{resolved.lr}' and optimizer.lr: '{given}' both set; set one (lr is the shortcut for optimizer.lr)"
        )


def resolve(cfg: DictConfig, user_keys: set[str] | None = None) -> DictConfig:
    """Apply the top-level shortcuts, validate, and return the effective config, read-only.

    Called once, where the command line becomes a config (`cli_hydra.execute`); a procedure
    that needs another config derives one (`derive`). The result has every interpolation
    resolved, so it is exactly what ran: it is written to the run folder and into every
    checkpoint (with what the build found: `build.Pieces.cfg`). It is read-only: a write
    into it raises, so facts found later go into the built pieces, not back into the input.

    Args:
        cfg: the composed config.
        user_keys: the dotted keys the command line set (`model.width`, the keys a chosen
            `# @package _global_` switch sets); None for a config built in Python, where
            every key counts as asked for.
    """
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except Exception as error:  # a missing value (???) or a broken interpolation
        message = str(error).splitlines()[0]
        key = getattr(error, "full_key", "") or ""
        if "Unsupported interpolation type" in message:
            name = message.rsplit(" ", 1)[-1]
            raise UserError(
                f"{key or 'config'}: unknown resolver '{name}' (configs cannot evaluate code); "
                "known: oc.env, oc.select, oc.create, oc.decode, now, run_suffix, docs_url"
            ) from None
        if "Missing mandatory value" in message:
            raise UserError(f"{key}: a value is required (set it with {key}=...)") from None
        raise UserError(f"{key or 'config'}: {message}") from None
    # The trust check, stage 1 (no import): after interpolations, every `_target_` under a
    # trusted root; no config may widen trust. `build.instantiate` checks the objects.
    trust.check_no_widening(resolved)
    trust.check_targets(resolved, resolve_objects=False)
    trust.strip_widening_keys(resolved)
    known = known_top_level_keys()
    unknown = [str(key) for key in resolved if str(key) not in known]
    if unknown:
        raise UserError(
            f"{unknown[0][:80]}: unknown key (misspelt, or a `+key=` outside the config groups); "
            f"accepted top-level keys: {', '.join(sorted(known - {'hydra', 'resume_with'}))}"
        )

    # lr=auto: the run starts with an LR range test and trains with its suggestion (the
    # `automatic_lr` step of cli_hydra.execute, which derives the config that trains).
    auto_lr = resolved.get("lr") == "auto"
    if resolved.get("lr") is not None and not auto_lr:
        _number(resolved, "lr")
        _refuse_two_learning_rates(resolved, user_keys or set())
        # The shortcut is spent: `optimizer.lr` (the constructor's own argument) is the one
        # value from here on, and `lr: null` says so ("the optimizer's own lr").
        resolved.optimizer.lr = resolved.lr
        resolved.lr = None
    if "lr" in resolved.optimizer:
        lr = _number(resolved, "optimizer.lr")
        if lr <= 0:
            raise UserError(f"lr: expected a number > 0, got '{lr}'")
    if resolved.optimizer.get("scale_lr_with_batch") and not auto_lr:
        # Linear scaling rule (Goyal et al. 2017): k times the batch, k times the rate. The
        # rule is applied once: the resolved config records the scaled rate and the rule off.
        base = _positive_int(resolved, "optimizer.base_batch_size")
        resolved.optimizer.lr = resolved.optimizer.lr * _positive_int(resolved, "batch_size") / base
        resolved.optimizer.scale_lr_with_batch = False
    _positive_int(resolved, "epochs")
    _positive_int(resolved, "batch_size")
    _number(resolved, "seed")
    # Rules that relate several keys; a single value is checked by the constructor it feeds.
    swa_start = resolved.trainer.get("swa_start_epoch")
    checks.whole_number("trainer.swa_start_epoch", swa_start, optional=True, maximum=resolved.epochs, error=UserError)
    with open_dict(resolved):
        resolved.pop("hydra", None)
    if user_keys is not None:
        resolved.model = fitted_model_node(resolved.model, user_keys)
    OmegaConf.set_readonly(resolved, True)
    return resolved


def resolved(cfg: DictConfig) -> DictConfig:
    """The config a procedure runs: as given when it is read-only (resolved already, by the
    command line or `derive`), else resolved here (a config composed in Python, as the tests
    and scripts build them)."""
    return cfg if OmegaConf.is_readonly(cfg) else resolve(cfg)


def derive(cfg: DictConfig, change: Callable[[DictConfig], None]) -> DictConfig:
    """A new config from `cfg`: a writable copy, `change(copy)`, resolved and read-only.

    The way a procedure runs another config (a k-fold fold, a diagnosis round, a resumed run,
    the LR `lr=auto` found): `cfg` itself is never written.
    """
    copy = OmegaConf.create(OmegaConf.to_container(cfg))  # no flags: writable, not struct
    change(copy)
    return resolve(copy)


def with_facts(cfg: DictConfig, facts: dict[str, Any]) -> DictConfig:
    """The run record: `cfg` (resolved) with what the build found (`data.num_classes` counted
    from the data, the exact file `init_from` read), as a new read-only config. Facts are not
    choices: nothing is validated again."""
    record = OmegaConf.create(OmegaConf.to_container(cfg))
    for key, value in facts.items():
        OmegaConf.update(record, key, value, merge=False, force_add=True)
    OmegaConf.set_readonly(record, True)
    return record


def fitted_model_node(node: DictConfig, user_keys: set[str]) -> DictConfig:
    """The model node with only the keys its target's constructor accepts.

    A model option's keys (`width`, `norm`, ...) stay in the node when the command line names
    another class (`model._target_=mymodels.Net`); they are dropped, unless the user set one
    (`model.width=64`, `+model.k=3`, a switch such as `regularization=[dropout]`): that is a
    one-line error naming it. A constructor that takes `**kwargs` gets every key. Looking the
    target up imports its module: after the trust check, which `trust.check_object` repeats.
    """
    import inspect

    target = trust.check_object("model._target_", trust.plain(node, "model").get("_target_"))
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return node  # no signature to read: instantiate reports what is wrong
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return node
    accepted = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    rejected = [str(k) for k in node if not str(k).startswith("_") and k not in accepted]
    chosen = [k for k in rejected if f"model.{k}" in user_keys]
    if chosen:
        raise UserError(
            f"model.{chosen[0]}: not an argument of {node._target_}; accepted: {', '.join(sorted(accepted))}"
        )
    return OmegaConf.masked_copy(node, [k for k in node if str(k) not in rejected])
