"""Long fuzz run of the archive reader, the layout detector and the CSV parsers (the targets of
tests/hostile/fuzz.py, with many more hypothesis examples than the suite runs).

    python bench/bench_fuzz.py [--examples 5000]

Prints per target and in total "N inputs tried, C crashes, L lost", the time taken and `uptime`;
exits 1 on any crash or lost item (first ones printed)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.hostile.fuzz import CSV_TEXT, ENTRY_NAMES, check_archive, check_csv, check_layout, zip_bytes  # noqa: E402
from tests.hostile.tally import Tally  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="hypothesis examples per target")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # zipfile warns on the duplicate names the fuzzer writes on purpose
    run = settings(max_examples=args.examples, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
    total = Tally()
    targets = {
        "archive reader + layout (ZIPs, mutated ZIPs, random bytes)":
            (st.one_of(zip_bytes(), st.binary(max_size=2000)), lambda t: lambda data: check_archive(data, t)),
        "layout detector (names + CSVs)":
            (st.tuples(st.lists(ENTRY_NAMES, max_size=30), CSV_TEXT),
             lambda t: lambda pair: check_layout(pair[0], pair[1], t)),
        "CSV parsers (label CSV, multi-label CSV, URL lists)":
            (st.one_of(st.binary(max_size=2000), CSV_TEXT.map(str.encode)), lambda t: lambda data: check_csv(data, t)),
    }
    started = time.perf_counter()
    for label, (strategy, make) in targets.items():
        tally, begin = Tally(), time.perf_counter()
        run(given(strategy)(make(tally)))()
        print(f"{label}: {tally.line()} in {time.perf_counter() - begin:.1f} s")
        total.tried += tally.tried
        total.crashes += tally.crashes
        total.lost += tally.lost
    print(f"TOTAL: {total.line()} in {time.perf_counter() - started:.1f} s; load: {os.popen('uptime').read().strip()}")
    for problem in (total.crashes + total.lost)[:5]:
        print("  ", problem[:500])
    return 1 if total.crashes or total.lost else 0


if __name__ == "__main__":
    sys.exit(main())
