"""The `train` command line as the user typed it, made into Hydra's overrides.

Documented command lines work from any folder (`--config-path` relative to the current
folder, `resume=<run folder>`, the `data.kfold=`/`ensemble=` shortcuts), and `--trust <module>`
is taken off the command line here: the user's own act, the only way trust widens.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer_cli.errors import UserError
from trainer_cli.paths import CONF_DIR
from trainer_cli.trust import TRUST_ENV, user_trusted_modules

# Command-line shortcuts for the procedure switch: a value for the key chooses the mode.
MODE_SHORTCUTS = {"data.kfold": "kfold", "ensemble": "ensemble"}
# Command-line names for the search's Hydra groups: `hparams_search.pruner=median` is
# `hydra/sweeper/pruner=median` (the search's own keys read as one node's).
SEARCH_GROUPS = {"hparams_search.pruner": "hydra/sweeper/pruner", "hparams_search.sampler": "hydra/sweeper/sampler"}
# Hydra's flags that print and run nothing: answered in this process, whatever trainer.devices says.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve"}


def search_group(key: str, value: str) -> str:
    """`hparams_search.pruner=median` as Hydra's group override, the option checked by the name typed."""
    options = sorted(p.stem for p in Path(CONF_DIR, SEARCH_GROUPS[key]).glob("*.yaml"))
    if value not in options:
        raise UserError(f"{key}: unknown option '{value}'; available: {', '.join(options)}")
    return f"{SEARCH_GROUPS[key]}={value}"


def rewrite_argv(argv: list[str]) -> list[str]:
    """Make the documented command lines work from any folder.

    - `--config-path` relative to the current folder (Hydra reads it relative to this file);
    - `resume=<run folder>` continues in that folder, without rewriting its `.hydra/`;
    - `data.kfold=k` and `ensemble=<folders>` choose their procedure (`mode=`) unless the
      command line names one;
    - `hparams_search.pruner=` and `hparams_search.sampler=` choose the search's Hydra groups;
    - `--trust <module>` (repeatable) trusts the user's own module for `_target_`s: the
      user's act on the command line, passed on in $TRAINER_CLI_TRUST (sweep jobs inherit it).
    """
    out: list[str] = []
    trusted: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--trust" and i + 1 < len(argv):
            trusted.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--trust="):
            trusted.append(arg.split("=", 1)[1])
            i += 1
            continue
        if arg in ("--config-path", "-cp") and i + 1 < len(argv):
            out += [arg, os.path.abspath(argv[i + 1])]
            i += 2
            continue
        if arg.startswith("--config-path="):
            out.append("--config-path=" + os.path.abspath(arg.split("=", 1)[1]))
            i += 1
            continue
        key, equals, value = arg.partition("=")
        out.append(search_group(key, value) if equals and key in SEARCH_GROUPS else arg)
        i += 1
    searching = any(a.split("=", 1)[0].lstrip("+") == "hparams_search" for a in out)
    for key, group in SEARCH_GROUPS.items():
        if not searching and any(a.startswith(f"{group}=") for a in out):
            raise UserError(
                f"{key}: chooses the {key.rpartition('.')[2]} of an Optuna search; add "
                "hparams_search=random|bayes|grid|coarse_to_fine"
            )
    if trusted:
        os.environ[TRUST_ENV] = ",".join([*user_trusted_modules(), *trusted])
    if not any(a.split("=", 1)[0].lstrip("+~") == "mode" for a in out):
        for key, mode in MODE_SHORTCUTS.items():
            values = [a.split("=", 1)[1] for a in out if a.split("=", 1)[0] == key]
            if values and values[0] not in ("", "null"):
                out.append(f"mode={mode}")
                break
    resume = [unquoted(a.split("=", 1)[1]) for a in out if a.startswith("resume=")]
    if resume and resume[0] not in ("", "null"):
        run_dir = os.path.abspath(resume[0])
        if not os.path.isdir(run_dir):
            raise UserError(f"resume: '{resume[0]}' is not a run folder")
        # Quoted for Hydra's parser, so any folder name (non-ASCII, spaces) reaches the run as it is.
        out = [f"resume={quoted(run_dir)}" if a.startswith("resume=") else a for a in out]
        out = [*resume_overrides(out), f"hydra.run.dir={quoted(run_dir)}", "hydra.output_subdir=null"]
    if any(a in ("--config-path", "-cp") or a.startswith("--config-path=") for a in out):
        # A saved run config has no hydra section: keep run folders unique all the same (the
        # command line's own folder, or job name, stands: it comes first and is not replaced).
        defaults = {
            "hydra.run.dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}",
            "hydra.sweep.dir": "outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_suffix:}",
            "hydra.job.name": "train",
        }
        typed = {a.split("=", 1)[0] for a in out}
        out += [f"{key}={value}" for key, value in defaults.items() if key not in typed]
        out += saved_run_console(out)
    return out


def saved_run_console(argv: list[str]) -> list[str]:
    """A run folder's `.hydra/config.yaml` has no defaults list, so Hydra would fall back to its
    own `hydra/job_logging` (a second console handler in its `[..][name][LEVEL] -` format, which
    shows the lines meant for train.log only) and its own `--help`: a re-run printed every line
    twice. These overrides restore the project's shipped choices, as a fresh run has them (the
    same fixed names, never read from the saved hydra.yaml: logging comes from the command line
    or the project, not from a file), unless the command line names its own."""
    from trainer_cli.config import CONF_DIR

    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    if "hydra.searchpath" in given:  # the user's own search path: their choices, untouched
        return []
    extra = [f"hydra/{group}={name}" for group, name in (("job_logging", "rich"), ("help", "trainer"))]
    extra = [a for a in extra if a.split("=", 1)[0] not in given]
    return [*extra, f"hydra.searchpath=[file://{CONF_DIR}]"] if extra else []  # where they are found


# What a resumed run may change: its length (a larger N extends it) and the device it runs on.
RESUME_OVERRIDES = ("epochs", "trainer.device")


def resume_overrides(args: list[str]) -> list[str]:
    """With `resume=`, the run's own saved config is what runs: the few accepted overrides go
    to `resume_with.<key>`, any other is refused (it would be silently ignored)."""
    out: list[str] = []
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        takes_value = out and out[-1] in ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
        if arg.startswith("-") or key in ("resume", "trainer.devices") or takes_value:
            out.append(arg)  # trainer.devices: how many processes resume it, not part of the run's config
        elif key in RESUME_OVERRIDES and "=" in arg:
            out.append(f"+resume_with.{key}={arg.split('=', 1)[1]}")
        else:
            accepted = ", ".join(f"{k}=..." for k in (*RESUME_OVERRIDES, "trainer.devices"))
            raise UserError(
                f"{key[:80]}: cannot be changed when resuming (the run's saved config is what runs); "
                f"with resume= only {accepted} are accepted (a larger epochs extends the run)"
            )
    return out


def unquoted(value: str) -> str:
    """A value as the user meant it: one pair of surrounding quotes removed."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def quoted(path: str) -> str:
    """A path as one quoted Hydra override value (Hydra unescapes only a backslash before a quote)."""
    return "'" + path.replace("'", "\\'") + "'"
