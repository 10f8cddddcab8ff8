"""Hydra instantiates launchers only from classes defined in the `hydra_plugins` namespace:
this names trainer_cli's joblib launcher (trainer_cli/launchers.py) for
conf/hydra/launcher/joblib.yaml."""

from trainer_cli import launchers


class JoblibLauncher(launchers.JoblibLauncher):
    """Hydra's joblib launcher; a job whose worker process dies is recorded as killed and the sweep goes on."""
