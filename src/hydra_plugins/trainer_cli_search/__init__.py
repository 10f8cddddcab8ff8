"""Hydra instantiates sweepers only from classes defined in the `hydra_plugins` namespace:
these name trainer_cli's search sweepers (trainer_cli/sweeper.py, trainer_cli/search.py) for
conf/hparams_search. Importing this package imports no optuna (only a search does)."""

from trainer_cli import search, sweeper


class OptunaSweeper(sweeper.OptunaSweeper):
    """trainer_cli's Optuna sweeper: ask-and-tell, resumable, with pruning."""


class CoarseToFineSweeper(search.CoarseToFineSweeper):
    """Two-stage random search: wide and short, then narrow and long."""
