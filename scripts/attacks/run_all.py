"""Run the whole attack battery in sequence; print a table and blocked X/Y per class and in all.

. .venv/bin/activate && nice -n 10 python scripts/attacks/run_all.py [ID-prefix ...]
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import a_cwd  # noqa: E402,E401
import b_targets
import c_hydra
import d_checkpoints
import e_data
import f_secrets
import g_children
import h_dataloss
import i_more
from common import RESULTS  # noqa: E402

MODULES = [a_cwd, b_targets, c_hydra, d_checkpoints, e_data, f_secrets, h_dataloss, i_more, g_children]


def main(only: list[str]) -> int:
    started = time.time()
    for module in MODULES:
        for attempt in module.ATTEMPTS:
            name = attempt.__name__.upper()
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
