"""One-line error formatting for the `train` command: Hydra's multi-line composition errors,
YAML syntax errors and long values, each as the one line a user reads (no traceback)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainer_cli.config import CONF_DIR


def _accepted_keys(key: str) -> str:
    """The keys beside `key` in the config this command line chose (its group options), and
    which options of that group do have the key, to suggest the right spelling or option."""
    from hydra import compose, initialize_config_dir

    parent = key.rpartition(".")[0]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            node = compose(config_name="config", overrides=_group_choices(sys.argv[1:]))
        node = OmegaConf.select(node, parent) if parent else node
        keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    except Exception:
        keys = []
    where = f"'{parent}'" if parent else "the top level"
    hint = f"accepted keys at {where}: {', '.join(keys)}" if keys else "see `train --cfg job` for the keys"
    group, _, name = key.rpartition(".")
    having = sorted(
        path.stem
        for path in Path(CONF_DIR, group.replace(".", "/")).glob("*.yaml")
        if group and re.search(rf"^{re.escape(name)}\s*:", path.read_text(), re.MULTILINE)
    )
    return hint + (f"; {group}={','.join(having)} {'has' if len(having) == 1 else 'have'} '{name}'" if having else "")


def _group_choices(argv: list[str]) -> list[str]:
    """The `group=option` overrides of a command line (no value overrides: they may be the error)."""
    groups = {p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()}
    return [arg for arg in argv if "=" in arg and arg.partition("=")[0] in groups]


def shorten(message: str, limit: int = 200) -> str:
    """One line, with any value longer than `limit` characters cut (a 1 MB override is not echoed)."""
    line = message.splitlines()[0] if message else message

    def cut(match: re.Match[str]) -> str:
        text = match.group(0)
        return f"{text[: limit // 2]}...({len(text):,} characters)"

    return re.sub(rf"[^\s',;]{{{limit + 1},}}", cut, line)


def hydra_error_line(error: Exception) -> str:
    """Hydra's multi-line composition errors, as one line that names the key or file."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException):
        missing = error.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        options = error.options or sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml"))
        if options:
            return f"{group}: unknown option '{option}'; available: {', '.join(sorted(options))}"
        return f"config file '{missing}' not found"
    if isinstance(error, OverrideParseException):
        line = str(error).splitlines()[0]
        if not line.isascii():
            key = line.rpartition(": ")[2].split("=", 1)[0]
            return f"{key}: cannot parse a value with non-ASCII characters unquoted; quote it: '{key}=\"...\"'"
        return f"cannot parse override: {line}"
    if isinstance(error, ConfigCompositionException):
        first = str(error).splitlines()[0]
        if "Could not override" in first or "Could not append" in first:
            key = first.split("'")[1] if "'" in first else ""
            return f"{key}: unknown key (misspelt?); {_accepted_keys(key)}"
        if "Could not load" in first and error.__cause__ is not None:
            return hydra_error_line(error.__cause__) if isinstance(error.__cause__, Exception) else first
        return first
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def error_line(error: BaseException) -> tuple[str, int] | None:
    """The one line and the exit status for an error `main()` reports; None: not a user's
    mistake (a bug: the traceback is shown)."""
    import yaml
    from hydra.errors import HydraException

    found = user_error_in(error)
    if found is not None:
        return shorten(str(found)), 2
    if isinstance(error, yaml.YAMLError):  # a config file that is not valid YAML
        mark = getattr(error, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"{where}: YAML syntax error ({problem}); fix the file", 2
    if isinstance(error, HydraException):
        return shorten(hydra_error_line(error)), 2
    if isinstance(error, PermissionError) and error.filename:  # e.g. a read-only run folder
        return shorten(
            f"hydra.run.dir: cannot write '{error.filename}' (permission denied); choose a writable folder"
        ), 2
    unreadable = unreadable_image(error)
    if unreadable is not None:
        return shorten(unreadable), 2
    if isinstance(error, OSError):
        return shorten(str(error)), 1
    return None


def unreadable_image(error: BaseException) -> str | None:
    """An image folder holding a file PIL cannot read, found by a DataLoader worker (torch
    re-raises it as "Caught UnidentifiedImageError in DataLoader worker process 0." with the
    worker's traceback below): the line naming the file."""
    text = str(error)
    if "UnidentifiedImageError" not in text and "cannot identify image file" not in text:
        return None
    # PIL names the file by its path, or by the open file object (`<_io.BufferedReader name='...'>`)
    found = re.search(r"cannot identify image file (?:<[^>]*name=)?('[^']*')", text)
    file = found.group(1) if found else "a file in it"
    return f"data.path: cannot read {file} as an image (not an image PIL can open); remove it or convert it"


def user_error_in(error: BaseException) -> BaseException | None:
    """The user's mistake behind an error (Hydra and OmegaConf wrap what a guard raises)."""
    from trainer_cli.errors import UserError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
