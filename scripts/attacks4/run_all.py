"""Run the round-4 battery (sweeps that reuse a composition) in sequence; a table by class and totals.

PYTHONPATH= nice -n 10 /work/venv-base/bin/python scripts/attacks4/run_all.py [ID-prefix ...]
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import d_folders  # noqa: E402
import t_trust  # noqa: E402
import v_values  # noqa: E402
from common import RESULTS, VERDICTS  # noqa: E402

MODULES = [v_values, t_trust, d_folders]


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
    by_class: dict[str, Counter] = defaultdict(Counter)
    for row in RESULTS:
        by_class[row["class"]][row["verdict"]] += 1
    print("\n| class | attempts | " + " | ".join(VERDICTS) + " | ids not BLOCKED/SAME |")
    print("|---|---|" + "---|" * len(VERDICTS) + "---|")
    for cls, counts in by_class.items():
        ids = ", ".join(r["id"] for r in RESULTS if r["class"] == cls and r["verdict"] in ("GOT-THROUGH", "DIFFERENT"))
        print(f"| {cls} | {sum(counts.values())} | " + " | ".join(str(counts[v]) for v in VERDICTS) + f" | {ids} |")
    total = Counter(r["verdict"] for r in RESULTS)
    counts = ", ".join(f"{v} {total[v]}" for v in VERDICTS)
    print(f"\ntotal {len(RESULTS)}: {counts} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
