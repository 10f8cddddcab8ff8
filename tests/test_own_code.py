"""docs/extending.md's worked examples (your own model, data set, augmentation, optimizer,
hook and mode), written into an empty folder from the page itself and run."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.conftest import build_run, run_train
from trainer_cli import build
from trainer_cli.config import UserError, resolve
from trainer_cli.trust import TRUST_ENV

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def readme_example(folder: Path) -> list[list[str]]:
    """Write the page's files (each code block that starts with `# <path>`) into `folder`;
    return its `train` commands."""
    commands = []
    for language, body in re.findall(r"```(\w+)\n(.*?)```", PAGE.read_text(), flags=re.S):
        first = body.splitlines()[0]
        if language in ("python", "yaml") and first.startswith("# ") and "." in first:
            path = folder / first[2:].strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif language == "bash":
            commands += [shlex.split(line)[1:] for line in body.splitlines() if line.startswith("train ")]
    return commands


@pytest.fixture
def own_code(tmp_path, monkeypatch):
    """The example's files in a folder that is importable and trusted, as `train --trust mycode`
    from that folder makes it."""
    commands = readme_example(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(TRUST_ENV, "mycode")
    yield tmp_path, commands
    sys.modules.pop("mycode", None)


def test_own_model_gets_only_the_keys_its_constructor_takes(own_code, make_cfg):
    asked = {"model._target_"}  # as `train model._target_=mycode.Net` sets it
    pieces = build.pieces(resolve(make_cfg("model._target_=mycode.Net"), asked))
    assert type(pieces.model).__name__ == "Net" and type(pieces.model).__module__ == "mycode"
    assert pieces.model.layers[1].in_features == 64  # image_size 8, in_channels 1: passed on
    # A key the user set that the constructor rejects: one line naming it.
    with pytest.raises(UserError, match=r"^model\.width: not an argument of mycode\.Net; accepted: hidden, "):
        resolve(make_cfg("model._target_=mycode.Net", "model.width=16"), {"model._target_", "model.width"})


def test_own_config_folder_adds_choices(own_code, make_cfg):
    folder, _ = own_code
    import torch

    from trainer_cli.data.sources import load_digits

    cfg = make_cfg(
        f"hydra.searchpath=[file://{folder / 'myconf'}]",
        "model=net", "data=noisy_digits", "augmentation=[invert]", "optimizer=mysgd", "model.hidden=32",
    )  # fmt: skip
    pieces = build_run(cfg)
    assert type(pieces.model).__name__ == "Net" and pieces.model.layers[1].out_features == 32
    assert type(pieces.optimizer) is torch.optim.SGD and pieces.optimizer.defaults["momentum"] == 0.8
    assert [type(s).__name__ for s in pieces.data.train.augment.steps] == ["Invert"]
    plain = load_digits()
    noisy = sys.modules["mycode"].noisy_digits(0.1)
    assert torch.equal(plain.train_y, noisy.train_y) and not torch.equal(plain.train_x, noisy.train_x)


@pytest.mark.slow
def test_readme_commands_run_in_an_empty_folder(tmp_path):
    commands = readme_example(tmp_path)
    assert len(commands) == 4
    hook, mode, *own = commands
    for i, args in enumerate(own):
        run_train([*args, "trainer.device=cpu", f"hydra.run.dir=run{i}"], cwd=tmp_path)
        summary = json.loads((tmp_path / f"run{i}" / "metrics.json").read_text())
        assert summary["test/acc"] > 0.5
        assert "model: Net with" in (tmp_path / f"run{i}" / "train.log").read_text()
    run_train([*hook, "trainer.device=cpu", "hydra.run.dir=hook"], cwd=tmp_path)
    header, *rows = (tmp_path / "hook" / "metrics.csv").read_text().splitlines()
    assert "steps_so_far" in header.split(",") and len(rows) == 2  # the hook's column, each epoch
    run_train([*mode, "hydra.run.dir=mode"], cwd=tmp_path)  # the own mode ran (exit 0)
    # Without the trust switch, the same command is refused before anything is imported.
    refused = run_train([a for a in own[0] if a not in ("--trust", "mycode")], cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "mycode.Net" in refused.stderr
