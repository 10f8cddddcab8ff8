"""Hydra instantiates sweepers only from classes defined in the `hydra_plugins` namespace:
these name trainer_cli's search sweepers (trainer_cli/search.py) for conf/hparams_search."""

from trainer_cli import search


class OptunaSweeper(search.OptunaSweeper):
    """Hydra's Optuna sweeper with a resumable study in the sweep folder."""


class CoarseToFineSweeper(search.CoarseToFineSweeper):
    """Two-stage random search: wide and short, then narrow and long."""
