"""Write docs/config-groups.md, the config-group reference, from conf/ (so it cannot go stale).

    python scripts/gen_config_reference.py           # rewrite docs/config-groups.md
    python scripts/gen_config_reference.py --check   # exit 1 if the committed page differs

Every group (a folder of conf/), every option (a file) with its header comment, its package
and every key with its default and the comment beside it. `tests/test_docs.py` checks that the
committed page equals this script's output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGE = ROOT / "docs" / "config-groups.md"

# The topic page that explains each group (the pages of mkdocs.yml's nav; `train --help` names
# the same pages). A group missing here is linked to nothing and fails the docs test.
GROUP_PAGES = {
    "mode": "inference.md",
    "data": "data.md",
    "model": "configuration.md",
    "finetune": "transfer.md",
    "loss": "optimization.md",
    "optimizer": "optimization.md",
    "scheduler": "optimization.md",
    "regularization": "regularization.md",
    "augmentation": "preprocessing-augmentation.md",
    "trainer": "configuration.md",
    "logger": "loggers.md",
    "callbacks": "extending.md",
    "experiment": "recipes.md",
    "hparams_search": "search.md",
    "diagnose": "diagnose.md",
    "hydra/launcher": "distributed.md",
    "hydra/sweeper": "search.md",
    "hydra/sweeper/pruner": "search.md",
    "hydra/sweeper/sampler": "search.md",
    "hydra/help": "config-groups.md",
    "hydra/job_logging": "console.md",
    "hydra/hydra_logging": "console.md",
}

# Groups whose files are Hydra's own texts (the help template, logging handlers): listed,
# their keys not shown.
KEYS_NOT_SHOWN = {"hydra/help", "hydra/job_logging", "hydra/hydra_logging"}

KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w.\-]*)\s*:(.*)$")


def comment_of(text: str) -> str:
    """The comment at the end of a YAML line (a `#` after a space, outside quotes), or ''."""
    quote = None
    for i, char in enumerate(text):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or text[i - 1] in " \t"):
            return text[i + 1 :].strip()
    return ""


def header_and_package(lines: list[str]) -> tuple[str, str | None]:
    """The file's leading comment block (its description) and its `# @package` directive."""
    header, package = [], None
    for line in lines:
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if body.startswith("@package"):
            package = body.split(None, 1)[1].strip()
        else:
            header.append(body)
    return " ".join(h for h in header if h), package


def key_comments(lines: list[str]) -> dict[str, str]:
    """Each mapping key's dotted path -> the comment beside it (or the comment lines above it)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    start = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    for line in lines[start:]:  # the leading comment block describes the file, not a key
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped[1:].strip())
            continue
        match = KEY_LINE.match(line)
        if not match or stripped.startswith("-"):
            above = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        note = comment_of(match.group(3)) or " ".join(a for a in above if a)
        if note:
            comments[path] = note
        stack.append((indent, key))
        above = []
    return comments


def flatten(node: object, prefix: str = "") -> list[tuple[str, object]]:
    """Dotted keys and leaf values of a mapping (lists and empty mappings are leaves)."""
    if isinstance(node, dict) and node:
        items = []
        for key, value in node.items():
            items += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, node)]


def key_rows(data: dict, notes: dict[str, str], package: str) -> list[str]:
    """Table rows of a node's leaves; a comment above a mapping goes with its first leaf."""
    rows, used = [], set()
    for key, value in flatten(data):
        if not key:
            continue
        parts = key.split(".")
        ancestors = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        note = next((notes[a] for a in ancestors if a in notes and a not in used), "")
        used.update(a for a in ancestors if a in notes)
        full = key if package == "_global_" else f"{package}.{key}"
        rows.append(f"| `{cell(full)}` | `{cell(show(value))}` | {cell(note)} |")
    return rows


def show(value: object) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value).replace('"', "")
    return str(value)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def option_section(group: str, path: Path) -> list[str]:
    """One option's heading, description, package and key table."""
    lines = path.read_text().splitlines()
    header, package = header_and_package(lines)
    package = package or group.replace("/", ".")
    data = yaml.safe_load(path.read_text()) or {}
    defaults = data.pop("defaults", None) if isinstance(data, dict) else None
    notes = key_comments(lines)
    out = [f"### `{group}={path.stem}`", ""]
    if header:
        out += [header, ""]
    out += [f"Package: `{package}`." + (f" Defaults: `{show(defaults)}`." if defaults else ""), ""]
    rows = key_rows(data, notes, package) if isinstance(data, dict) and group not in KEYS_NOT_SHOWN else []
    if rows:
        out += ["| key | default | note |", "|---|---|---|", *rows, ""]
    return out


def groups(conf: Path) -> list[str]:
    """Every config group: each folder of conf/ that holds YAML files, as `a/b`."""
    folders = {p.parent.relative_to(conf).as_posix() for p in conf.rglob("*.yaml") if p.parent != conf}
    return sorted(folders, key=lambda g: (g.startswith("hydra/"), g))


def default_choices(conf: Path) -> dict[str, str]:
    """Each group's default option(s), from conf/config.yaml's defaults list."""
    choices = {}
    for entry in yaml.safe_load((conf / "config.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                choices[key.replace("override ", "").strip()] = show(value)
    return choices


def render(conf: Path = CONF) -> str:
    """The whole reference page."""
    choices = default_choices(conf)
    out = [
        "# Config groups reference",
        "",
        "<!-- Generated by scripts/gen_config_reference.py from conf/; do not edit by hand. -->",
        "",
        "Every config group, every option and its keys with their defaults, as the files in `conf/`",
        "state them (interpolations such as `${data.num_classes}` are shown unresolved; `train --cfg job`",
        "prints a composed config). Choose an option with `train group=option` (a list for multi-select",
        "groups: `'regularization=[l2,dropout]'`), set a key with `train key=value`.",
        "",
        "| group | options | default | explained in |",
        "|---|---|---|---|",
    ]
    for group in groups(conf):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        page = GROUP_PAGES.get(group, "")
        anchor = "group-" + group.replace("/", "-").replace("_", "-")
        out.append(
            f"| [`{group}`](#{anchor}) | {', '.join(f'`{o}`' for o in options)} | `{choices.get(group, '-')}` "
            f"| {f'[{page[:-3]}]({page})' if page else ''} |"
        )
    out += ["", "## Top-level keys (`conf/config.yaml`)", ""]
    top = yaml.safe_load((conf / "config.yaml").read_text())
    top.pop("defaults", None)
    notes = key_comments((conf / "config.yaml").read_text().splitlines())
    out += ["| key | default | note |", "|---|---|---|", *key_rows(top, notes, "_global_")]
    for group in groups(conf):
        anchor = "group-" + group.replace("/", "-").replace("_", "-")
        out += ["", f"## `{group}` {{#{anchor}}}", ""]
        if group in choices:
            out += [f"Default: `{choices[group]}`.", ""]
        for path in sorted((conf / group).glob("*.yaml")):
            out += option_section(group, path)
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page differs")
    args = parser.parse_args()
    text = render()
    if args.check:
        if PAGE.read_text() != text:
            sys.exit(f"{PAGE} is stale: run python scripts/gen_config_reference.py")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
