"""The pathology zoo measured like a classifier: each case (tests/diagnose_zoo/cases.yaml) is
trained and diagnosed; the first-named cause is compared with the known one.

    nice -n 10 python scripts/diagnose_zoo.py --half design [--only NAME] [--out outputs/zoo]
    nice -n 10 python scripts/diagnose_zoo.py --cases NEW.yaml --half all

Prints, per half, the confusion table (true cause x first-named cause) and
"right cause first X/Y; healthy passes X/Y". Both halves of cases.yaml have been measured
once (docs/diagnose.md), so that whole file is now the design set. `--half all` takes every
case of `--cases` regardless of its split: a new held-out file is run whole, once, after the
rules are fixed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from trainer_cli.diagnose import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=[*zoo.HALVES, "both", zoo.ALL], default="design")
    parser.add_argument("--cases", type=Path, default=zoo.CASES_FILE, help="the cases file (YAML)")
    parser.add_argument("--only", default=None, help="one case's name")
    parser.add_argument("--out", default="outputs/diagnose_zoo")
    parser.add_argument("--evidence", action="store_true", help="print every case's evidence too")
    args = parser.parse_args()
    if not args.cases.is_file():
        parser.error(f"--cases: no such file '{args.cases}'; expected a YAML file like {zoo.CASES_FILE.name}")
    zoo.torch_threads()
    cases = zoo.load_cases(args.cases)
    halves = zoo.HALVES if args.half == "both" else (args.half,)
    for half in halves:
        results = []
        for case in zoo.select(cases, half, args.only):
            started = time.perf_counter()
            diagnosis = zoo.diagnose_case(case, Path(args.out) / case.name)
            named = diagnosis.ranked[0] if diagnosis.ranked else "healthy"
            results.append((case.cause, named))
            mark = "ok " if named == case.cause else "BAD"
            print(f"{mark} {case.name:28s} true {case.cause:24s} named {' > '.join(diagnosis.ranked) or 'healthy'}"
                  f"  ({time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip
            if args.evidence:
                print("    " + json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v
                                         for k, v in diagnosis.evidence.items()}))  # fmt: skip
        title = f"every case of {args.cases.name}" if half == zoo.ALL else f"{half} half"
        print(f"\n## {title}\n\n{zoo.confusion(results)}\n\n{half}: {zoo.score(results)}\n", flush=True)


if __name__ == "__main__":
    main()
