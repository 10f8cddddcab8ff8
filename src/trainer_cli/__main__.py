"""`python -m trainer_cli <overrides>`: the same as the `train` command.

`python -m` puts the current folder first on `sys.path`: it comes off here, before anything
else is imported (omegaconf would find a `yaml.py` there), so no file of the folder `train`
runs in shadows a module (see `trust.forget_current_folder`)."""

import os
import sys

_here = os.path.realpath(os.getcwd())
sys.path[:] = [entry for entry in sys.path if entry and os.path.realpath(entry) != _here]
os.environ["PYTHONSAFEPATH"] = "1"  # and off in the processes this one starts

from trainer_cli.cli import main  # noqa: E402

main()
