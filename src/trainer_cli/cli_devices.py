"""How many processes run this command: `trainer.devices`, decided once, from the command line.

`train trainer.devices=N` starts N processes through torchrun (`distributed.launch`); a sweep
job with `trainer.devices=N` runs as one N-process run (`cli_hydra.run_job_in_processes`). The
value is read and checked here only; nothing turns a config value back into command-line text.
"""

from __future__ import annotations

from typing import Any

from trainer_cli.cli_argv import INFO_FLAGS
from trainer_cli.errors import UserError


def count(value: Any) -> int:
    """`trainer.devices` as a whole number >= 1 (a one-line error otherwise)."""
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1 or str(number) != text or isinstance(value, bool):
        raise UserError(f"trainer.devices: expected a whole number >= 1, got '{str(value)[:80]}'")
    return number


def typed(argv: list[str]) -> int:
    """The `trainer.devices=N` the command line sets (1 when absent; the last one wins, as in Hydra)."""
    values = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == "trainer.devices"]
    return count(values[-1]) if values else 1


def processes_to_start(argv: list[str], launched: bool) -> int:
    """How many processes `main()` starts for this command line: N for `train trainer.devices=N`;
    1 for a sweep (each job decides for itself), a `--help`/`--cfg` flag, or a rank torchrun started."""
    devices = typed(argv)  # checked even when not used: a bad value is a one-line error
    if launched or any(a in ("-m", "--multirun") for a in argv) or any(a in INFO_FLAGS for a in argv):
        return 1
    return devices
