"""Test hook for the round-4 battery (put first on PYTHONPATH; runs in every process, loky
workers included, since they inherit the environment):

- A4_DISABLE_SHARE=1: `cli_startup.share_compositions` becomes a no-op: Hydra composes every
  job from scratch (the "Hydra alone" baseline);
- A4_TRACE=<folder>: after `share_compositions` installs its wrappers, log per composition
  whether the defaults list and the merged files came from the cache (proves the reuse ran).
Nothing else changes."""

import os

if os.environ.get("A4_DISABLE_SHARE") == "1" or os.environ.get("A4_TRACE"):
    try:
        import trainer_cli.cli_startup as _s
    except Exception:  # not the project's interpreter
        _s = None
    if _s is not None and os.environ.get("A4_DISABLE_SHARE") == "1":
        _s.share_compositions = lambda: None
    elif _s is not None:
        _orig = _s.share_compositions

        def _traced() -> None:
            from hydra._internal import config_loader_impl
            from hydra._internal.config_loader_impl import ConfigLoaderImpl

            already = getattr(config_loader_impl.create_defaults_list, "_trainer_cli_shared", False)
            _orig()
            if already or getattr(config_loader_impl.create_defaults_list, "_a4", False):
                return
            log = os.path.join(os.environ["A4_TRACE"], f"trace-{os.getpid()}.txt")
            dl, comp = config_loader_impl.create_defaults_list, ConfigLoaderImpl._compose_config_from_defaults_list

            def dl2(repo, config_name, overrides_list, prepend_hydra, skip_missing):
                key = _s._files_key(repo, config_name, overrides_list, prepend_hydra, skip_missing)
                hit = key is not None and key in _s._defaults_lists
                with open(log, "a") as f:
                    f.write(f"defaults {'HIT' if hit else 'miss'} {[o.input_line for o in overrides_list]}\n")
                return dl(repo, config_name, overrides_list, prepend_hydra, skip_missing)

            def comp2(self, defaults, repo):
                kept = _s._merged.get(id(defaults))
                hit = kept is not None and kept[0] is defaults
                with open(log, "a") as f:
                    f.write(f"merged {'HIT' if hit else 'miss'}\n")
                return comp(self, defaults, repo)

            dl2._trainer_cli_shared = True
            dl2._a4 = True
            config_loader_impl.create_defaults_list = dl2
            ConfigLoaderImpl._compose_config_from_defaults_list = comp2

        _s.share_compositions = _traced
