"""The value checks live in checks.py: one function per rule, one-line messages naming the key,
the value and what is accepted; no module writes the "whole number >= 1" rule by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainer_cli import checks
from trainer_cli.errors import UserError

SRC = Path(checks.__file__).parent
# Rules of their own that start with the same test: ResNet's depth = 6n+2.
OWN_RULES = {"models/resnet.py"}


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({}, 0, "k: expected a whole number >= 1, got '0'"),
        ({}, True, "k: expected a whole number >= 1, got 'True'"),
        ({}, 2.0, "k: expected a whole number >= 1, got '2.0'"),
        ({"minimum": 0}, -1, "k: expected a whole number >= 0, got '-1'"),
        ({"maximum": 5}, 6, "k: expected a whole number in [1, 5], got '6'"),
        ({"optional": True}, "x", "k: expected a whole number >= 1 or null, got 'x'"),
    ],
)
def test_whole_number_refuses_with_one_line(kwargs, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        checks.whole_number("k", value, **kwargs)


def test_whole_number_accepts_and_raises_the_callers_error():
    assert checks.whole_number("k", 3, maximum=3) == 3
    assert checks.whole_number("k", None, optional=True) is None
    with pytest.raises(UserError, match=r"^epochs: expected a whole number >= 1, got '0'$"):
        checks.whole_number("epochs", 0, error=UserError)


def test_no_module_writes_the_whole_number_check_by_hand():
    """`isinstance(x, bool) or not isinstance(x, int) or x < 1` belongs in checks.py only."""
    by_hand = re.compile(r"not isinstance\((\w+), int\) or \1 < [0-9]")
    found = [
        f"{path.relative_to(SRC)}:{number}"
        for path in SRC.rglob("*.py")
        if path.name != "checks.py" and str(path.relative_to(SRC)) not in OWN_RULES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_hand.search(line)
    ]
    assert not found, f"use checks.whole_number: {found}"
