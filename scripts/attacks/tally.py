# ruff: noqa: E501, SIM115
"""Combine battery logs (later logs win per attempt id) into the same table as run_all.py."""

import re
import sys
from collections import defaultdict

latest: dict[str, tuple[str, bool]] = {}
for name in sys.argv[1:]:
    for line in open(name, errors="replace"):
        m = re.match(r"ATTEMPT (\S+) (\S+) (BLOCKED|GOT-THROUGH) ", line)
        if m:
            latest[m.group(1)] = (m.group(2), m.group(3) == "GOT-THROUGH")
by_class = defaultdict(list)
for attempt_id, (cls, got) in sorted(latest.items()):
    by_class[cls].append((attempt_id, got))
print("| class | blocked | got through |\n|---|---|---|")
for cls, rows in by_class.items():
    print(f"| {cls} | {sum(not g for _, g in rows)}/{len(rows)} | {', '.join(i for i, g in rows if g)} |")
total = [g for rows in by_class.values() for _, g in rows]
print(f"blocked {total.count(False)}/{len(total)} in total")
