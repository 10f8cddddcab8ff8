"""Where the shipped config groups are. Imports nothing of the project, so both the config
checks and the trust door (which must know the shipped files) read it without importing each other."""

from __future__ import annotations

from pathlib import Path


def _conf_dir() -> str:
    """The config groups: the copy an installed wheel ships as `trainer_cli/conf` (setup.py),
    else `conf/` at the repository's root (a source checkout; tests and scripts read it)."""
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "config.yaml").is_file():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "conf")


CONF_DIR = _conf_dir()
