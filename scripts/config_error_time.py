"""How fast a config error answers, beside the cost of importing torch, and what the trust check costs.

    python scripts/config_error_time.py --runs 3

Side by side, alternating, `--runs` times each: `train epochs=0` (a config error, reported
before torch is imported) and `python -c "import torch"` (the floor of any error found after
torch loads). Then in-process: the trust check of the default run config (stage 1, no import;
stage 2, every target resolved to its object) and of Hydra's own node. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("train"))


def wall(command: list[str], cwd: str) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as cwd:
        error, torch_import = [], []
        for _ in range(runs):
            error.append(wall([TRAIN, "epochs=0"], cwd))
            torch_import.append(wall([sys.executable, "-c", "import torch"], cwd))
    e, t = statistics.median(error), statistics.median(torch_import)
    print(f"train epochs=0 (config error): median {e:.2f} s over {runs} runs")
    print(f"python -c 'import torch':       median {t:.2f} s over {runs} runs (ratio {e / t:.2f})")

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainer_cli import trust
    from trainer_cli.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    hydra_node = cfg.hydra
    began = time.perf_counter()
    trust.check_targets({k: v for k, v in cfg.items() if k != "hydra"}, resolve_objects=False)
    stage1 = time.perf_counter() - began

    def stage2_check() -> None:
        for key in ("model", "optimizer", "scheduler", "loss", "mode", "data.source"):
            trust.check_targets(OmegaConf.select(cfg, key), key)
        trust.check_targets(hydra_node.callbacks, "hydra.callbacks")

    began = time.perf_counter()
    stage2_check()  # the first call imports the targets' modules (torch, torchvision, trainer_cli.models)
    first = time.perf_counter() - began
    began = time.perf_counter()
    stage2_check()
    stage2 = time.perf_counter() - began
    print(f"trust check stage 1 (default config, no import): {stage1 * 1000:.1f} ms")
    print(
        f"trust check stage 2 (model, optimizer, scheduler, loss, mode, data.source, hydra.callbacks resolved to "
        f"objects): {stage2 * 1000:.1f} ms once their modules are imported ({first:.1f} s with the imports, "
        "which the run does anyway)"
    )


if __name__ == "__main__":
    main()
