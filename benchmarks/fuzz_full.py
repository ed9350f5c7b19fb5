"""The full fuzz run of issue 13: every family of bad input over many seeds, with a summary table.

Usage: python benchmarks/fuzz_full.py [--cases-per-family 130] [--timeout 120] [--json FILE]

Each case (tests/fuzz/cases.py) runs in-process through ``admc.cli.main`` under a timeout; the table counts,
per family: exit statuses, uncaught exceptions (incl. exit 70), hangs, reads of the decoy files outside
the bundle, tampered bundles accepted, refusals that were not exactly one line, and output left behind.
Deterministic: case k of a family is generated from the seed k.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cases import FAMILIES, make_base, make_case, run_case  # noqa: E402

COLUMNS = ("cases", "exit 0", "exit 1", "exit 2", "uncaught", "hangs", "outside reads", "tampered accepted",
           "not one line", "left behind")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases-per-family", type=int, default=130)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", help="write every failing case as JSON here")
    arguments = parser.parse_args()
    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="admc-fuzz-"))
    started = time.perf_counter()
    base = make_base(work / "base")
    table: dict[str, Counter] = {}
    failures = []
    for family in FAMILIES:
        counts: Counter = Counter()
        for seed in range(arguments.cases_per_family):
            directory = work / f"{family}-{seed}"
            case = make_case(family, seed, base, directory)
            outcome = run_case(case, base, arguments.timeout)
            counts["cases"] += 1
            if outcome.status in (0, 1, 2):
                counts[f"exit {outcome.status}"] += 1
            counts["uncaught"] += bool(outcome.uncaught)
            counts["hangs"] += outcome.hang
            counts["outside reads"] += bool(outcome.outside_reads)
            counts["tampered accepted"] += outcome.tampered_accepted
            counts["not one line"] += outcome.not_one_line
            counts["left behind"] += bool(outcome.left_behind)
            if not outcome.kept_contract:
                failures.append({"family": family, "seed": seed, "description": case.description,
                                 "argv": case.argv, "status": outcome.status, "uncaught": outcome.uncaught,
                                 "hang": outcome.hang, "stderr": outcome.stderr[-500:],
                                 "outside_reads": outcome.outside_reads, "left_behind": outcome.left_behind,
                                 "tampered_accepted": outcome.tampered_accepted})
            shutil.rmtree(directory, ignore_errors=True)
        table[family] = counts
        print(f"{family}: {counts['cases']} cases, {sum(counts[c] for c in COLUMNS[4:])} problems "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    total: Counter = Counter()
    for counts in table.values():
        total.update(counts)
    table["total"] = total
    width = max(len(name) for name in table)
    print("| family".ljust(width + 2) + " | " + " | ".join(COLUMNS) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * (len(column) + 2) for column in COLUMNS) + "|")
    for name, counts in table.items():
        print(f"| {name.ljust(width)} | " + " | ".join(str(counts[column]).rjust(len(column)) for column in COLUMNS)
              + " |")
    print(f"\n{total['cases']} cases in {time.perf_counter() - started:.0f} s; {len(failures)} broke the contract")
    for failure in failures[:20]:
        print(json.dumps(failure)[:600])
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(failures, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
