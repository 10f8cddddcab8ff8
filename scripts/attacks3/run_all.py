"""Run the round-3 attack battery in sequence; print a table and blocked X/Y per class and in all.

. .venv/bin/activate && nice -n 10 python scripts/attacks3/run_all.py [ID-prefix ...]
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import k_checkpoints  # noqa: E402
import l_dataloss  # noqa: E402
import p_paths  # noqa: E402
import s_secrets  # noqa: E402
import t_targets  # noqa: E402
import w_cwd  # noqa: E402
import y_hydra  # noqa: E402
from common import RESULTS  # noqa: E402

MODULES = [w_cwd, t_targets, p_paths, y_hydra, k_checkpoints, l_dataloss, s_secrets]


def main(only: list[str]) -> int:
    started = time.time()
    for module in MODULES:
        for attempt in module.ATTEMPTS:
            name = attempt.__name__.upper().replace("_", "-")
            if only and not any(name.startswith(o.upper()) for o in only):
                continue
            try:
                attempt()
            except Exception as error:  # the attempt's own set-up failed: say so, count nothing
                print(f"ATTEMPT {name} ? ERROR {type(error).__name__}: {error}", flush=True)
                traceback.print_exc(limit=2)
    by_class: dict[str, list[bool]] = defaultdict(list)
    for row in RESULTS:
        by_class[row["class"]].append(row["got"])
    print("\n| class | blocked | got through |")
    print("|---|---|---|")
    for cls, gots in by_class.items():
        ids = ", ".join(r["id"] for r in RESULTS if r["class"] == cls and r["got"])
        print(f"| {cls} | {gots.count(False)}/{len(gots)} | {ids} |")
    total = [r["got"] for r in RESULTS]
    print(f"\nblocked {total.count(False)}/{len(total)} in total ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
