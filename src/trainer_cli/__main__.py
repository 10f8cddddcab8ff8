"""`python -m trainer_cli <overrides>`: the same as the `train` command."""

from trainer_cli.cli import main

main()
