"""The `train` command: the console script's `main()`, a layer above everything else.

It does the command line's steps in order, each in its own module: take the current folder
off `sys.path` and load the `--trust` modules by path (`trust.py`), rewrite argv into Hydra's
overrides (`cli_argv.py`), decide how many processes run (`cli_devices.py`), install the Hydra
guard (`cli_guard.py`), run Hydra's main (`cli_hydra.py`), and report any error as one line
(`cli_errors.py`). Nothing below imports this module.
"""

from __future__ import annotations

import os
import sys
import warnings

from trainer_cli import trust


def main() -> None:
    """The `train` console command: Hydra's main with one-line errors and no tracebacks."""
    trust.forget_current_folder()  # running `train` in a folder runs none of its files
    from trainer_cli import distributed
    from trainer_cli.cli_argv import rewrite_argv
    from trainer_cli.cli_devices import processes_to_start
    from trainer_cli.cli_errors import error_line, user_error_in
    from trainer_cli.config import register_resolvers
    from trainer_cli.faults import install_stop_handlers

    register_resolvers()
    install_stop_handlers()  # SIGTERM/SIGUSR1: finish the step, checkpoint, exit 75
    # Hydra re-raises instead of printing its own multi-line report; we print one line.
    # TRAINER_CLI_DEBUG=1 shows the whole traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    debug = os.environ.get("TRAINER_CLI_DEBUG") == "1"
    # conf/hydra/launcher/joblib.yaml and sweeper/basic.yaml replace Hydra's configs of those
    # names on purpose (trainer_cli/launchers.py, sweeper.py); Hydra checks them against its own and warns.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/(launcher/joblib|sweeper/basic)' is validated against ConfigStore schema"
    )
    try:
        if sys.argv[1:2] == ["compare"]:  # `train compare A B ...`: reads folders, composes no config
            from trainer_cli.compare import main as compare

            sys.exit(compare(sys.argv[2:]))
        from trainer_cli.sweep import expand_seeds  # seeds=N: the run or sweep over N seeds

        typed = expand_seeds(sys.argv[1:])
        trust.remember_typed_env(typed)
        argv = distributed.worker_overrides(rewrite_argv(typed))
        trust.load_user_modules()
        devices = processes_to_start(argv, launched=distributed.launched())
        if devices > 1:
            # `train trainer.devices=N`: this command line in N processes, started by torchrun;
            # they inherit this process's trust through the environment, not through argv.
            sys.exit(distributed.launch(trust.without_trust_flags(typed), devices))
        from trainer_cli.cli_guard import install_hydra_guard
        from trainer_cli.cli_hydra import hydra_main

        install_hydra_guard()
        from trainer_cli.cli_startup import share_compositions, share_group_listing, skip_mode_probe

        if {"--help", "-h", "--hydra-help"} & set(argv):
            share_group_listing()  # one config repository for the listing, not one per group
        # One composition for the run, not two, where nothing can set hydra.mode; in a sweep (or
        # what may be one), its jobs merge the same files once and each applies its own values.
        if not skip_mode_probe(argv) or {"-m", "--multirun"} & set(argv):
            share_compositions()
        sys.argv = [sys.argv[0], *argv]
        hydra_main()
    except KeyboardInterrupt:
        print("error: interrupted; continue with `train resume=<run folder>`", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        reported = error_line(error)
        if debug or reported is None:
            raise
        if user_error_in(error) is not None:
            from trainer_cli.cli_hydra import discard_hydra_run_folder

            discard_hydra_run_folder()  # e.g. a refused logging config, found after Hydra made the folder
        line, status = reported
        print(f"error: {line}", file=sys.stderr)
        sys.exit(status)


if __name__ == "__main__":
    main()
