"""Every benchmark of the read path the performance issue's table names, in one command.

    python bench/run_all.py --quick                                # ~5 min
    python bench/run_all.py                                        # ~15 min
    git archive main | tar -x -C /tmp/base                         # a baseline checkout, then
    python bench/run_all.py --baseline-tree /tmp/base              # before/after in one run

Runs, in order, each writing its JSON to bench/results/:

1. ``handlers.py --callgrind``: memoized, after-usage, evaluated and cold handler cost, wall
   clock and instructions per call (against ``--baseline-tree`` too, when given);
2. ``latency.py``: hot reads over gRPC against the no-op server (pre-serialized bytes);
3. ``upstream.py``: upstream's own reads and usage writes over HTTP beside ``GET /livez``;
4. ``paths.py``: the non-hot paths through a real sidecar process against floors measured in
   the same run: the Redis-tier read (against the no-op server and raw ``HGETALL``), the
   upstream-miss read (against a direct ``GET`` of the state) and ``ReportUsage`` (against a
   direct ``POST /v1/usage``);
5. ``plots.py``: the SVG charts of docs/performance.md from 1 and 2.

The row of several worker processes is measured by ``workers.py`` (pinned cores), run on its
own. A step that fails is reported and the others still run; the exit status is 1 if any
failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument("--no-callgrind", action="store_true", help="wall clock only")
    args = parser.parse_args()
    python = sys.executable
    handlers = [python, str(BENCH_DIR / "handlers.py")]
    if not args.no_callgrind:
        handlers.append("--callgrind")
    if args.baseline_tree:
        handlers += ["--baseline-tree", str(args.baseline_tree)]
    latency = [python, str(BENCH_DIR / "latency.py")]
    upstream = [python, str(BENCH_DIR / "upstream.py")]
    paths = [python, str(BENCH_DIR / "paths.py")]
    if args.quick:
        handlers += ["--rounds", "3", "--passes", "2"]
        latency.append("--quick")
        upstream += ["--seconds", "2"]
        paths.append("--quick")
    steps = [
        ("handlers", handlers),
        ("latency", latency),
        ("upstream", upstream),
        ("paths", paths),
        ("plots", [python, str(BENCH_DIR / "plots.py")]),
    ]
    failed = []
    for name, command in steps:
        print(f"\n=== {name}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
