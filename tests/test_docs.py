"""The docs stay true: every `train` command in README.md and docs/*.md runs (slow, shrunk) or
says why not, composes (fast), the generated config reference equals conf/, the README's
test commands are CI's, and `train --help` names a docs page for each group."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_train
from trainer_cli.config import CONF_DIR, register_resolvers

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = "# not run:"
# Appended to every documented command: one short epoch of two batches on the CPU.
SHRINK = [
    "epochs=1",
    "trainer.device=cpu",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
# Pages other helpers write (in mkdocs.yml's nav); the strict build test stubs those missing.
PAGES_OF_OTHERS = [
    "trust.md", "extending.md", "run-folder.md", "regularization.md", "diagnose.md",
    "search.md", "sweep-report.md", "benchmarks.md",
]  # fmt: skip


@dataclass
class Command:
    """A `train` command line of a docs page, and why it is not run (None: it is run)."""

    page: str
    line: int
    text: str
    not_run: str | None

    @property
    def args(self) -> list[str]:
        """argv after `train`, without the comment and a pipe or redirection's part."""
        words = shlex.split(self.text, comments=True)[1:]
        cut = [i for i, word in enumerate(words) if word in ("|", ">", ">>", "2>", "&>")]
        return words[: cut[0]] if cut else words


def bash_blocks(text: str) -> list[tuple[int, str]]:
    """The fenced ```bash blocks of a Markdown text: (line number of the first line, body)."""
    return [(text[: m.start(1)].count("\n") + 1, m.group(1)) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)]


def commands(path: Path) -> list[Command]:
    """Each `train ...` line of a page's bash blocks (backslash continuations joined), with the
    reason of a `# not run: <reason>` line right above it."""
    found = []
    for start, body in bash_blocks(path.read_text()):
        reason, pending = None, ""
        for offset, raw in enumerate(body.splitlines()):
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line.startswith(NOT_RUN):
                reason = line[len(NOT_RUN) :].strip()
                continue
            if line.startswith("train ") or line == "train":
                found.append(Command(path.name, start + offset, line, reason))
            reason = None
    return found


ALL = [c for page in PAGES for c in commands(page)]


def test_commands_are_found_and_reasons_given():
    """The extraction sees the README's commands; a `# not run:` line always gives a reason."""
    readme = [c.text for c in ALL if c.page == "README.md"]
    assert "train experiment=digits_mlp              # a recipe" in readme
    assert all(c.not_run for c in ALL if c.not_run is not None), "a '# not run:' line without a reason"
    assert len([c for c in ALL if c.not_run is None]) >= 30


def test_readme_is_a_front_door():
    """At most 250 lines; it links to pages that exist (or that another page's owner writes)."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file() or Path(link).name in PAGES_OF_OTHERS, link


def test_readme_test_commands_are_ci():
    """The README's "Test" block lists exactly the checks `.ci/run` runs, in its order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Test") : text.index("\n## ", text.index("## Test") + 1)]
    readme = [line.split("  #")[0].strip() for line in bash_blocks(section)[0][1].splitlines() if line.strip()]
    ci = [line.split("  #")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    positions = [ci.index(command) for command in readme]  # ValueError: not in CI
    assert positions == sorted(positions)


@pytest.mark.parametrize("page", ["README.md", "docs/recipes.md"])
def test_recipes_are_the_experiment_headers(page):
    """Each recipe row's command is the one its conf/experiment file's header states."""
    text = (ROOT / page).read_text()
    rows = re.findall(r"^\| `(\w+)` \| `(train experiment=[^`]+)` \|", text, re.M)
    assert len(rows) >= 5
    for name, command in rows:
        header = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert f"#   {command}" in header, (name, command)


def load_generator():
    """scripts/gen_config_reference.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_generated_from_conf():
    """docs/config-groups.md is what the generator makes of conf/ now: it cannot go stale."""
    generator = load_generator()
    assert (ROOT / "docs" / "config-groups.md").read_text() == generator.render(), (
        "stale: run python scripts/gen_config_reference.py"
    )


def test_config_reference_lists_every_option_and_key(tmp_path):
    """A new option file and a new key appear in the reference the moment they exist."""
    generator = load_generator()
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "optimizer" / "mine.yaml").write_text(
        "# My optimizer.\n_target_: torch.optim.SGD\n_partial_: true\nlr: 0.5  # its own lr\n"
    )
    page = generator.render(conf)
    assert "### `optimizer=mine`" in page and "My optimizer." in page
    assert "| `optimizer.lr` | `0.5` | its own lr |" in page
    for group in generator.groups(conf):
        for option in (conf / group).glob("*.yaml"):
            assert f"### `{group}={option.stem}`" in page


def test_every_group_has_a_docs_page_and_help_names_it():
    """Each group links to a page of the nav, and `train --help`'s template names that page."""
    generator = load_generator()
    nav = nav_pages()
    help_text = (ROOT / "conf" / "hydra" / "help" / "trainer.yaml").read_text()
    for group in generator.groups(Path(CONF_DIR)):
        page = generator.GROUP_PAGES.get(group)
        assert page in nav, f"{group}: no docs page in generator.GROUP_PAGES / mkdocs.yml"
        if group.startswith("hydra/") and group != "hydra/launcher":
            continue  # chosen through another group (hparams_search) or set once by us
        line = next((line for line in help_text.splitlines() if re.match(rf"\s+([\w/]+, )*{group}\b", line)), "")
        assert f"${{docs_url:{page[:-3]}}}" in line, f"{group}: train --help names no docs page"


def test_docs_url_reads_the_site_root_from_the_package_metadata():
    """`train --help`'s links: [project.urls] Documentation + the page, as the wheel states it."""
    from importlib.metadata import metadata

    from trainer_cli.config import docs_url

    roots = [e.split(",", 1)[1].strip() for e in metadata("trainer_cli").get_all("Project-URL") or []]
    if not roots:
        pytest.skip("this install's metadata predates [project.urls]; reinstall with pip install -e .")
    assert docs_url("optimization") == roots[0].rstrip("/") + "/optimization/"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'Documentation = "{roots[0]}"' in pyproject


def nav_pages() -> set[str]:
    """Every page mkdocs.yml's nav lists."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages: set[str] = set()

    def walk(node):
        if isinstance(node, str):
            pages.add(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(nav)
    return pages


def test_nav_lists_every_page():
    """No page is left out of the site's navigation; every nav entry is a page."""
    nav = nav_pages()
    on_disk = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert on_disk <= nav, on_disk - nav
    assert nav <= on_disk | set(PAGES_OF_OTHERS), nav - on_disk


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    """`mkdocs build --strict` (as CI runs it), in a copy where a page another helper has not
    delivered yet is a one-line stub."""
    pytest.importorskip("mkdocs")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    for name in PAGES_OF_OTHERS:
        if not (tmp_path / "docs" / name).exists():
            (tmp_path / "docs" / name).write_text(f"# {name}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def compose_args(args: list[str]) -> list[str] | None:
    """A command's overrides for an in-process compose: a sweep's first value of each simple
    list; None for commands that need more than composing (their own code, a run folder)."""
    if any(a.startswith(("--trust", "--config", "-cp", "-cn", "resume=", "checkpoint=", "init_from=")) for a in args):
        return None
    out = []
    for previous, arg in zip(["", *args], args, strict=False):
        if arg.startswith("-") or previous in ("--cfg", "-c", "--package", "-p", "--info", "-i"):
            continue  # flags, and the value of a flag that takes one (--cfg job)
        key, _, value = arg.partition("=")
        if "," in value and not re.search(r"[\[\(]", value):
            value = value.split(",")[0]
        elif "(" in value:
            continue  # a sweep expression such as tag(log, interval(...))
        out.append(f"{key}={value}")
    return out


@pytest.mark.slow
def test_every_documented_command_composes():
    """Each runnable documented command names options and keys that exist (composed in this
    process, not run: ~0.4 s a command on 2 busy cores, so slow too; the next test runs them)."""
    from hydra import compose, initialize_config_dir

    from trainer_cli.cli_argv import rewrite_argv
    from trainer_cli.sweep import expand_seeds

    register_resolvers()
    failures = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for command in ALL:
            # seeds=N is expanded by the command line (cli.main) before Hydra sees it.
            overrides = None if command.not_run else compose_args(expand_seeds(command.args))
            if overrides is None:
                continue
            try:
                compose(config_name="config", overrides=rewrite_argv(overrides))
            except Exception as error:  # noqa: BLE001 - collected, reported together
                failures.append(f"{command.page}:{command.line}: {command.text}\n    {str(error).splitlines()[0]}")
    assert not failures, "\n".join(failures)


def shrunk(args: list[str], index: int) -> list[str]:
    """The command with SHRINK appended and its outputs in the test's folder."""
    out = list(args)
    sweep = any(a in ("-m", "--multirun") for a in args) or any(a.startswith("hparams_search=") for a in args)
    if any(a.startswith("resume=") for a in args):
        return out  # a resumed run takes only its own config (epochs and device may change)
    searches = any(a.startswith("hparams_search=") and a.split("=")[1] in ("random", "bayes") for a in args)
    if searches and not any(a.startswith("hydra.sweeper.n_trials=") for a in args):
        out.append("hydra.sweeper.n_trials=2")
    out += [a for a in SHRINK if not any(b.startswith(a.split("=")[0] + "=") for b in args)]
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    if not any(a.startswith(key + "=") for a in args):
        out.append(f"{key}=docs_runs/{index}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page", [p.name for p in PAGES if any(c.not_run is None for c in commands(p))])
def test_documented_commands_run(page, tmp_path):
    """Every `train` command of a page runs, shrunk, in order, in one folder (so a command may
    use what an earlier one of the same page wrote, such as `hydra.run.dir=outputs/pre`)."""
    failures = []
    for index, command in enumerate(c for c in ALL if c.page == page and c.not_run is None):
        result = run_train(shrunk(command.args, index), cwd=tmp_path, check=False, timeout=600)
        if result.returncode != 0:
            failures.append(f"{page}:{command.line}: {command.text}\n{result.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
