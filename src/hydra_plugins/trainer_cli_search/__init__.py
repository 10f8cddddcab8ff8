"""Hydra instantiates sweepers only from classes defined in the `hydra_plugins` namespace:
these name trainer_cli's search sweepers (trainer_cli/sweeper.py, trainer_cli/search.py) for
conf/hparams_search, and the resumable basic sweeper of every `train -m`. Importing this
package imports no optuna (only a search does)."""

from trainer_cli import search, sweeper


class OptunaSweeper(sweeper.OptunaSweeper):
    """trainer_cli's Optuna sweeper: ask-and-tell, resumable, with pruning."""


class CoarseToFineSweeper(search.CoarseToFineSweeper):
    """Two-stage random search: wide and short, then narrow and long."""


class BasicSweeper(sweeper.ResumableBasicSweeper):
    """Hydra's basic sweeper (every combination), resumable in its sweep folder."""


def _drop_replaced_plugin_configs() -> None:
    """Forget the configs hydra-optuna-sweeper registers when it is still installed (it is no
    longer a dependency): conf/hydra/sweeper/optuna.yaml and sampler/*.yaml replace them with
    other keys, which Hydra would check against the plugin's schemas and refuse."""
    from hydra.core.config_store import ConfigStore

    def prune(node: dict) -> None:
        for name, value in list(node.items()):
            if isinstance(value, dict):
                prune(value)
            elif getattr(value, "provider", None) == "optuna_sweeper":
                del node[name]

    prune(ConfigStore.instance().repo)


def _before_config_sources() -> None:
    """Drop those configs each time Hydra opens its config sources: after its plugin scan has
    imported every plugin (in an order we do not choose), before any config is composed."""
    from hydra._internal.config_repository import ConfigRepository

    initialize_sources = ConfigRepository.initialize_sources
    if getattr(initialize_sources, "_drops_optuna_plugin_configs", False):
        return

    def initialize_without_replaced_configs(self, config_search_path) -> None:  # noqa: ANN001
        _drop_replaced_plugin_configs()
        initialize_sources(self, config_search_path)

    initialize_without_replaced_configs._drops_optuna_plugin_configs = True  # type: ignore[attr-defined]
    ConfigRepository.initialize_sources = initialize_without_replaced_configs  # type: ignore[method-assign]


_before_config_sources()
